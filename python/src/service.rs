//! Hosting: Python handlers behind pycom-client's `Service` (bind,
//! register with a lease, renew, sessions, access control, unregister).
//!
//! Handlers run on the service's worker threads, each call taking the GIL
//! for as long as the Python handler runs: handlers of one process run one
//! at a time unless they release the GIL themselves (I/O, time.sleep, or
//! calls made through this module do).

use crate::binary::{binaries, PyAttachment};
use crate::client::{seconds, PyCaller, PyContext};
use crate::convert::{map_to_dict, to_py, to_value, type_name};
use crate::errors::IntoPy;
use pycom_client::service::{Auth, Interface, Method, Reply, Request, RunningService, Service};
use pycom_client::{Code, Context, Fault};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Who may call an interface or a method: `Auth.required()` (anyone
/// logged in whom pycomd's grants allow), `Auth.roles("billing", ...)`,
/// `Auth.public()`, or `Auth.password_file(path)` (the service checks a
/// users file of its own).
#[pyclass(module = "pycom_client", name = "Auth", frozen)]
pub struct PyAuth {
    inner: Auth,
}

#[pymethods]
impl PyAuth {
    /// A caller with a valid token, whom pycomd's grants allow.
    #[staticmethod]
    fn required() -> PyAuth {
        PyAuth {
            inner: Auth::required(),
        }
    }

    /// A caller holding one of these roles (`admin` holds all).
    #[staticmethod]
    #[pyo3(signature = (*roles))]
    fn roles(roles: Vec<String>) -> PyResult<PyAuth> {
        if roles.is_empty() {
            return Err(PyValueError::new_err("Auth.roles needs at least one role"));
        }
        Ok(PyAuth {
            inner: Auth::roles(roles),
        })
    }

    /// Anyone: no token looked at (to open one method of a guarded interface).
    #[staticmethod]
    fn public() -> PyAuth {
        PyAuth {
            inner: Auth::public(),
        }
    }

    /// Tokens checked against this users file (htpasswd lines) by the
    /// service itself, which then serves `org.pycom.authenticator` for its
    /// clients to log in (`Component.login`).
    #[staticmethod]
    fn password_file(path: std::path::PathBuf) -> PyAuth {
        PyAuth {
            inner: Auth::password_file(path),
        }
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// A call as a handler sees it.
#[pyclass(module = "pycom_client", name = "Request", frozen, get_all)]
pub struct PyRequest {
    /// The interface called.
    interface: String,
    /// The method called.
    method: String,
    /// The arguments (any JSON; None when absent).
    args: Py<PyAny>,
    /// Per-client state: store anything JSON-shaped and the next call of
    /// the same client finds it.
    session: Py<PyDict>,
    /// Who made the call (name, roles), for a method guarded by an Auth;
    /// None for unguarded ones.
    caller: Option<PyCaller>,
    /// The token the call carried, if any (not checked: `caller` is).
    token: Option<String>,
    /// The attachments sent with the call.
    attachments: Py<PyList>,
    /// The request's extensions, by dotted name.
    extensions: Py<PyAny>,
}

#[pymethods]
impl PyRequest {
    fn __repr__(&self) -> String {
        format!("Request({}.{})", self.interface, self.method)
    }
}

/// A handler's result with attachments: `return Reply(value, [Binary(...)])`.
#[pyclass(module = "pycom_client", name = "Reply", frozen, get_all)]
pub struct PyReply {
    /// The result.
    value: Py<PyAny>,
    /// Attachments sent back after it.
    attachments: Py<PyAny>,
}

#[pymethods]
impl PyReply {
    #[new]
    #[pyo3(signature = (value=None, attachments=None))]
    fn new(py: Python<'_>, value: Option<Py<PyAny>>, attachments: Option<Py<PyAny>>) -> PyReply {
        PyReply {
            value: value.unwrap_or_else(|| py.None()),
            attachments: attachments.unwrap_or_else(|| PyList::empty(py).into_any().unbind()),
        }
    }
}

/// An interface to serve: a name and methods, each run by a Python callable
/// taking a `Request`. The decorators (`@interface`, `@method`) make these.
#[pyclass(module = "pycom_client", name = "Interface", frozen)]
pub struct PyInterface {
    inner: Mutex<Option<Interface>>,
}

#[pymethods]
impl PyInterface {
    #[new]
    #[pyo3(signature = (name, *, doc="", auth=None, data=None))]
    fn new(
        name: &str,
        doc: &str,
        auth: Option<&Bound<'_, PyAuth>>,
        data: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyInterface> {
        let mut interface = Interface::new(name).doc(doc);
        if let Some(auth) = auth {
            interface = interface.auth(auth.get().inner.clone());
        }
        if let Some(data) = data {
            let data = to_value(data, "data")?;
            if !data.is_object() {
                return Err(PyValueError::new_err("an interface's data must be a dict"));
            }
            interface = interface.data(data);
        }
        Ok(PyInterface {
            inner: Mutex::new(Some(interface)),
        })
    }

    /// Add the method `name`, run by `handler(request)`; the rest is what
    /// `introspect` says of it (and `auth`, who may call it).
    #[pyo3(signature = (name, handler, *, doc="", required=Vec::new(), optional=Vec::new(), results=Vec::new(), attachments=(None, None), auth=None))]
    #[allow(clippy::too_many_arguments)]
    fn method(
        &self,
        name: &str,
        handler: Py<PyAny>,
        doc: &str,
        required: Vec<String>,
        optional: Vec<String>,
        results: Vec<String>,
        attachments: (Option<String>, Option<String>),
        auth: Option<&Bound<'_, PyAuth>>,
    ) -> PyResult<()> {
        let mut method = Method::new(name, move |req: &mut Request| {
            Python::attach(|py| run(py, &handler, req))
        })
        .doc(doc)
        .required(&as_refs(&required))
        .optional(&as_refs(&optional))
        .results(&as_refs(&results))
        .attachments(attachments.0.as_deref(), attachments.1.as_deref());
        if let Some(auth) = auth {
            method = method.auth(auth.get().inner.clone());
        }
        let mut slot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let interface = slot
            .take()
            .ok_or_else(|| PyValueError::new_err("this interface is already being served"))?;
        *slot = Some(interface.method(method));
        Ok(())
    }
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Run a Python handler for one call, with the GIL (taken by the caller).
fn run(py: Python<'_>, handler: &Py<PyAny>, req: &mut Request) -> Result<Reply, Fault> {
    let request = build_request(py, req).map_err(|e| fault(py, &req.method, e))?;
    let request = Bound::new(py, request).map_err(|e| fault(py, &req.method, e))?;
    let result = handler.bind(py).call1((request.clone(),));
    // The session as the handler left it, whatever it returned.
    match to_value(request.get().session.bind(py).as_any(), "the session") {
        Ok(serde_json::Value::Object(session)) => req.session = session,
        Ok(_) => {}
        Err(e) => return Err(fault(py, &req.method, e)),
    }
    let result = result.map_err(|e| fault(py, &req.method, e))?;
    reply(&result).map_err(|e| fault(py, &req.method, e))
}

fn build_request(py: Python<'_>, req: &mut Request) -> PyResult<PyRequest> {
    let attachments = PyList::empty(py);
    for attachment in std::mem::take(&mut req.attachments) {
        attachments.append(Bound::new(py, PyAttachment::new(attachment))?)?;
    }
    Ok(PyRequest {
        interface: req.interface.clone(),
        method: req.method.clone(),
        args: to_py(py, &req.args)?.unbind(),
        session: map_to_dict(py, &req.session)?.unbind(),
        caller: req.caller().cloned().map(PyCaller::from),
        token: req.token().map(str::to_string),
        attachments: attachments.unbind(),
        extensions: to_py(py, &serde_json::Value::Object(req.extensions.clone()))?.unbind(),
    })
}

/// What a handler returned, as a reply: a `Reply`, or any JSON-shaped value.
fn reply(result: &Bound<'_, PyAny>) -> PyResult<Reply> {
    if let Ok(r) = result.cast::<PyReply>() {
        let r = r.get();
        let py = result.py();
        let mut out = Reply::new(to_value(r.value.bind(py), "the result")?);
        out.attachments = binaries(Some(r.attachments.bind(py)))?;
        return Ok(out);
    }
    Ok(Reply::new(to_value(result, "the result")?))
}

/// A Python exception as the fault the caller gets: one with a result code
/// (`code`, as pycom_client's exceptions have) keeps it and its message;
/// any other is code 1 naming its type.
fn fault(py: Python<'_>, method: &str, e: PyErr) -> Fault {
    let value = e.value(py);
    let code = value
        .getattr("code")
        .ok()
        .and_then(|c| c.extract::<i64>().ok())
        .and_then(Code::from_number)
        .filter(|c| *c != Code::Ok);
    let text = value.str().map(|s| s.to_string()).unwrap_or_default();
    match code {
        Some(code) => Fault::new(code, text),
        None => Fault::new(
            Code::Unknown,
            format!("{method} failed: {}: {text}", type_name(value.as_any())),
        ),
    }
}

/// A service being served: registered with a lease, renewed, unregistered
/// by `stop()` (or when garbage-collected).
#[pyclass(module = "pycom_client", name = "Server", frozen)]
pub struct PyServer {
    running: Mutex<Option<RunningService>>,
    endpoint: String,
    service: String,
}

#[pymethods]
impl PyServer {
    /// The address clients reach it at.
    #[getter]
    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// The service path it is registered under.
    #[getter]
    fn service(&self) -> String {
        self.service.clone()
    }

    /// Whether it still serves.
    #[getter]
    fn running(&self) -> bool {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Unregister, finish the calls in hand, stop. Calls in hand may be
    /// Python handlers waiting for the GIL: it is released meanwhile.
    fn stop(&self, py: Python<'_>) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(running) = running {
            py.detach(|| running.stop());
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) {
        self.stop(py);
    }

    fn __repr__(&self) -> String {
        format!("Server({:?} at {:?})", self.service, self.endpoint)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let running = self.running.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(running) = running {
            // Its workers may be waiting for the GIL this thread holds.
            Python::attach(|py| py.detach(|| running.stop()));
        }
    }
}

/// Start serving `interfaces` as `service`: bind, register with a lease of
/// `lease` seconds (renewed every third of it), and return the `Server`.
#[pyfunction]
#[pyo3(signature = (service, interfaces, *, ctx=None, bind="tcp://127.0.0.1:*", advertise=None, lease=10.0, workers=4, metadata=None, register=true))]
#[allow(clippy::too_many_arguments)]
pub fn start_service(
    py: Python<'_>,
    service: &str,
    interfaces: Vec<Bound<'_, PyInterface>>,
    ctx: Option<&Bound<'_, PyContext>>,
    bind: &str,
    advertise: Option<&str>,
    lease: f64,
    workers: usize,
    metadata: Option<BTreeMap<String, String>>,
    register: bool,
) -> PyResult<PyServer> {
    let ctx = match ctx {
        Some(ctx) => ctx.get().inner.clone(),
        None => Context::from_env().py(py)?,
    };
    let mut builder = Service::builder(service)
        .context(ctx)
        .bind(bind)
        .lease(seconds("lease", lease)?)
        .workers(workers);
    if let Some(advertise) = advertise {
        builder = builder.advertise(advertise);
    }
    if !register {
        builder = builder.without_registration();
    }
    for (key, value) in metadata.unwrap_or_default() {
        builder = builder.metadata(&key, &value);
    }
    for interface in &interfaces {
        let taken = interface
            .get()
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| PyValueError::new_err("an interface can be served once"))?;
        builder = builder.interface(taken);
    }
    let running = py.detach(|| builder.start()).py(py)?;
    Ok(PyServer {
        endpoint: running.endpoint().to_string(),
        service: running.service().to_string(),
        running: Mutex::new(Some(running)),
    })
}
