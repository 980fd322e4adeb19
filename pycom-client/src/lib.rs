//! pycom-client: the thin library that talks ZeroJSON, PyCOM's wire protocol.
//!
//! - [`proto`] is the wire format and nothing else: frames to and from
//!   [`Request`](proto::Request) and [`Response`](proto::Response), result
//!   [`Code`](proto::Code)s, and the [`Fault`](proto::Fault) a handler returns.
//!   `pycomd` and `pycomctl` use it, so the format is written down once.
//! - [`Connection`] makes calls to one endpoint over a DEALER socket, with a
//!   timeout, and recovers its socket after a timeout.
//! - [`NameserverClient`] wraps the `org.pycom.nameserver` methods.
//! - [`Error`] is the one error type: a remote fault or a transport failure.
//!
//! ```no_run
//! // no_run: needs a pycomd listening on the default endpoint.
//! use pycom_client::{Connection, NameserverClient, nameserver};
//! let ctx = zmq::Context::new();
//! let conn = Connection::open(&ctx, nameserver::DEFAULT_ENDPOINT)?;
//! let mut ns = NameserverClient::new(conn);
//! let info = ns.locate("com.foo.example", None)?;
//! println!("{} at {}", info.service, info.address);
//! # Ok::<(), pycom_client::Error>(())
//! ```

pub mod connection;
pub mod error;
pub mod nameserver;
pub mod proto;
pub mod router;

pub use connection::{Connection, Reply, DEFAULT_TIMEOUT};
pub use error::{Error, Result};
pub use nameserver::{NameserverClient, Registration, ServiceInfo};
pub use proto::{Code, Fault};
