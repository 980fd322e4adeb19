//! `pycom_client._native`: pycom-client (the Rust library) for Python,
//! with PyO3. One implementation of the wire, recovery, pub-sub and access
//! control, not two: this crate only converts and hands over.
//!
//! The crate in a minute:
//! - [`client`]: `Context` (nameservers, token, timeout; `locate`,
//!   `workflow`, `login`...) and `Component` (`invoke`, with attachments,
//!   sessions, retries on a restarted or moved service).
//! - [`pubsub`]: `Publisher`, `Subscriber` (iterates `Message`s; `values()`),
//!   `Watcher` (iterates registry `Change`s).
//! - [`service`]: hosting Python handlers (`Interface`, `Request`, `Reply`,
//!   `Auth`, `start_service` giving a `Server`).
//! - [`binary`]: `Binary` attachments out, `Attachment`s in.
//! - [`convert`]: Python objects to JSON values and back.
//! - [`errors`]: pycom-client's errors as the exception classes of
//!   `pycom_client/errors.py` (one per result code, with `.code`).
//!
//! The Python package `pycom_client` (python/pycom_client/) re-exports all
//! of this and adds the PyCOM-style decorators, `serve`, and the
//! exceptions; `_native.pyi` types it for editors.
//!
//! Threads and the GIL: every call that waits on the network releases the
//! GIL. Waits with no end of their own (a subscriber's or a watcher's next
//! item) wait in slices of 100 ms and let Python's signal handlers run in
//! between, so Ctrl-C interrupts them; a call (`invoke`, `locate`,
//! `login`) ends at its timeout or when a signal interrupts its wait,
//! then raises what the handler raised (KeyboardInterrupt). Hosted Python
//! handlers run on the service's worker threads, taking the GIL per call.
//!
//! Logs: pycom-client logs with `tracing` (gaps seen, services moving,
//! retries); set `PYCOM_LOG` (e.g. `warn`, `pycom_client=debug`) before
//! importing to have them on stderr.

mod binary;
mod client;
mod convert;
mod errors;
mod pubsub;
mod service;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    m.add_class::<client::PyContext>()?;
    m.add_class::<client::PyComponent>()?;
    m.add_class::<client::PyCaller>()?;
    m.add_class::<client::PyLogin>()?;
    m.add_class::<binary::PyBinary>()?;
    m.add_class::<binary::PyAttachment>()?;
    m.add_class::<pubsub::PyPublisher>()?;
    m.add_class::<pubsub::PySubscriber>()?;
    m.add_class::<pubsub::PyValues>()?;
    m.add_class::<pubsub::PyMessage>()?;
    m.add_class::<pubsub::PyWatcher>()?;
    m.add_class::<pubsub::PyChange>()?;
    m.add_class::<service::PyAuth>()?;
    m.add_class::<service::PyInterface>()?;
    m.add_class::<service::PyRequest>()?;
    m.add_class::<service::PyReply>()?;
    m.add_class::<service::PyServer>()?;
    m.add_function(wrap_pyfunction!(service::start_service, m)?)?;
    m.add("DEFAULT_NAMESERVER", "tcp://127.0.0.1:2012")?;
    Ok(())
}

/// pycom-client's logs on stderr, filtered by `PYCOM_LOG`, when it is set.
fn init_logging() {
    let Ok(filter) = std::env::var("PYCOM_LOG") else {
        return;
    };
    let Ok(filter) = tracing_subscriber::EnvFilter::try_new(filter.trim()) else {
        eprintln!("pycom_client: PYCOM_LOG={filter:?} is not a log filter (e.g. warn, pycom_client=debug); logging stays off");
        return;
    };
    // Another extension in the process may have set one up already.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
