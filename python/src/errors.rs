//! pycom-client's errors as Python exceptions.
//!
//! The classes live in Python (`pycom_client/errors.py`), so that they can
//! also derive from Python's own (`Timeout` is a `TimeoutError`); each
//! remote one has its result code as the class attribute `code`.

use pycom_client::Error;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// The exception class `name` of `pycom_client.errors`.
fn class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    let module = ERRORS.get_or_try_init(py, || py.import("pycom_client.errors").map(Bound::unbind))?;
    module.bind(py).getattr(name)
}

/// A Python exception of class `name` saying `message`, with attributes.
pub fn raise(py: Python<'_>, name: &str, message: String, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let made = class(py, name).and_then(|cls| {
        let exc = cls.call1((message.clone(),))?;
        for (key, value) in attrs {
            exc.setattr(*key, value)?;
        }
        Ok(PyErr::from_value(exc))
    });
    // Only when pycom_client.errors cannot be imported (a broken install).
    made.unwrap_or_else(|e| PyRuntimeError::new_err(format!("{message} (and {e})")))
}

/// The Python exception for a pycom-client error. A call interrupted by a
/// signal (Ctrl-C) raises what the signal's handler raises instead
/// (KeyboardInterrupt), which is what Python code expects.
pub fn to_py(py: Python<'_>, e: Error) -> PyErr {
    if let Err(interrupted) = py.check_signals() {
        return interrupted;
    }
    let message = e.to_string();
    let name = match &e {
        Error::MethodNotFound(_) => "MethodNotFound",
        Error::ServiceNotFound(_) => "ServiceNotFound",
        Error::BadRequest(_) => "BadRequest",
        Error::AccessDenied(_) => "AccessDenied",
        Error::SessionExpired(_) => "SessionExpired",
        Error::Unavailable(_) => "Unavailable",
        Error::Remote(_) => "RemoteError",
        Error::Failed { .. } => "Failed",
        Error::Malformed { .. } => "MalformedReply",
        Error::Timeout { .. } => "Timeout",
        Error::Endpoint { .. } => "EndpointError",
        Error::Data(_) => "DataError",
        Error::Attachment(_) => "AttachmentError",
        Error::NotReady { .. } => "NotReady",
        Error::Gap { .. } => "Gap",
        Error::Transport { .. } => "TransportError",
        // The enum may grow; anything new is at least a PycomError.
        #[allow(unreachable_patterns)]
        _ => "PycomError",
    };
    let attrs: Vec<(&str, Py<PyAny>)> = match e {
        Error::Gap { topic, src, missed } => vec![
            ("topic", topic.into_pyobject(py).map(|o| o.into_any().unbind())),
            ("src", src.into_pyobject(py).map(|o| o.into_any().unbind())),
            ("missed", missed.into_pyobject(py).map(|o| o.into_any().unbind())),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.ok().map(|v| (k, v)))
        .collect(),
        Error::Timeout { endpoint, .. }
        | Error::Failed { endpoint, .. }
        | Error::Malformed { endpoint, .. }
        | Error::Transport { endpoint, .. }
        | Error::Endpoint { endpoint, .. }
        | Error::NotReady { endpoint, .. } => endpoint
            .into_pyobject(py)
            .map(|o| vec![("endpoint", o.into_any().unbind())])
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    raise(py, name, message, &attrs)
}

/// `Result<T, pycom_client::Error>` to `PyResult<T>`.
pub trait IntoPy<T> {
    /// Raise the matching Python exception on error.
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py(py, e))
    }
}
