//! pycom-client: call pycom services and host them, over ZeroJSON (PyCOM's
//! wire protocol).
//!
//! Calling:
//! - [`Context`]: the nameserver endpoint(s) (with failover), shared across
//!   threads; [`Context::locate`] gives a [`Component`].
//! - [`Component::invoke`] / [`invoke_as`](Component::invoke_as): a call
//!   with a timeout, retried on a live provider after the service restarts
//!   or moves ([`RetryPolicy`] says which methods are safe to retry). A
//!   component re-locates through a [`Locator`] ([`locate`]), which the
//!   context implements, and does not hold the context itself.
//! - [`Binary`] attachments out, [`Attachment`]s back (spilled to temporary
//!   files above a threshold, bounded by [`Limits`]).
//!
//! Hosting: [`service::Service::builder`] binds, registers with a lease,
//! renews, dispatches to handlers on worker threads, keeps sessions,
//! answers `introspect`, and unregisters on stop.
//!
//! Pub-sub ([`pubsub`]): [`Context::publisher`] gives a [`Publisher`],
//! [`Context::subscribe`] a [`Subscriber`] (patterns such as `a.*.c`,
//! `a.>`), both through pycomd's forwarder and ready when returned: nothing
//! published after both are made is lost to a slow join. Subscribers drop
//! duplicates, see gaps, and may start with each topic's last value.
//! [`Context::watch`] gives a [`Watcher`]: a live copy of the registry.
//!
//! Access control ([`auth`], PROTOCOL.md 7): [`Context::login`] exchanges a
//! user's password with pycomd for a token (or take one with
//! [`Context::set_token`], or `PYCOM_TOKEN` through [`Context::from_env`]);
//! from then on every call made through the context carries it as PyCOM
//! 0.6 does, in `extensions["org.pycom.auth"]`: nameserver calls, located
//! components, pub-sub look-ups, its services' registrations.
//! [`Context::whoami`] and [`Context::logout`] do what they say; a refusal
//! is [`Error::AccessDenied`] ("access denied: svc-billing may not register
//! /com/other/x"). A hosted service guards an interface or a method with
//! [`service::Auth`] (`Auth::required()`, `Auth::roles(["billing"])`): a
//! call without a token gets code 5 "Authentication required" and its
//! handler does not run; a token is checked with pycomd's `validate`
//! (answers kept up to 30 s) and the handler reads
//! [`service::Request::caller`]. With `Auth::password_file(path)` the
//! service checks a users file of its own instead, serving
//! `org.pycom.authenticator` itself; its clients log in with
//! [`Component::login`].
//!
//! Workflows ([`workflow`], PROTOCOL.md 8): [`Context::workflow`] gives a
//! workflow hosted by pycomd as a [`Component`] (each task a method);
//! [`workflow::admin`] starts and follows runs.
//!
//! Declaring: [`interface!`] turns a list of method signatures into a typed
//! client and a handler trait with introspection ([`proxy`]).
//!
//! Underneath: [`proto`] is the wire format and nothing else; [`router`]
//! frames server-side messages; [`Connection`] is one DEALER socket to one
//! endpoint; [`Error`] is the one error type.
//!
//! ```no_run
//! // no_run: needs a pycomd on the default endpoint and a service there.
//! use pycom_client::Context;
//! let ctx = Context::from_env()?;
//! let mut calc = ctx.locate("com.example.calc")?;
//! let sum: i64 = calc.invoke_as("add", serde_json::json!({"a": 1, "b": 2}))?;
//! # Ok::<(), pycom_client::Error>(())
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod binary;
pub mod component;
pub mod connection;
pub mod context;
pub mod error;
pub mod locate;
pub mod nameserver;
pub mod proto;
pub mod proxy;
pub mod pubsub;
pub mod router;
pub mod service;
pub mod workflow;

pub use auth::{Caller, Login};
pub use binary::{Attachment, Binary, Limits};
pub use component::{Component, Output, RetryPolicy};
pub use connection::{Connection, Reply, DEFAULT_TIMEOUT};
pub use context::{Context, NameserverHandle};
pub use error::{Error, Result};
pub use locate::Locator;
pub use nameserver::{NameserverClient, Page, RecordState, Registration, ServiceInfo};
pub use proto::{Code, Fault};
pub use pubsub::{Change, GapPolicy, Message, Publisher, Start, Subscriber, Watcher};
#[doc(hidden)]
pub use serde_json;
