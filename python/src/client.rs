//! Calling: `Context` (nameservers, token, defaults) and `Component` (one
//! remote interface), over pycom-client's.

use crate::binary::{binaries, PyAttachment};
use crate::convert::{to_py, to_value};
use crate::errors::IntoPy;
use crate::pubsub::{parse_gaps, parse_start, PyPublisher, PySubscriber, PyWatcher};
use pycom_client::{Component, Context};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use std::sync::Mutex;
use std::time::Duration;

/// Seconds from Python as a Duration; negative, NaN or huge ones refused.
pub fn seconds(what: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| PyValueError::new_err(format!("{what} must be a number of seconds >= 0, not {s}")))
}

/// Which nameservers to ask, and the token and timeout every call made
/// through it carries. Cheap to share between threads.
#[pyclass(module = "pycom_client", name = "Context", frozen)]
pub struct PyContext {
    pub inner: Context,
}

#[pymethods]
impl PyContext {
    /// `Context("tcp://host:2012")`, several separated by commas (tried in
    /// order); without one, `PYCOM_NAMESERVER` (else tcp://127.0.0.1:2012),
    /// with `PYCOM_TOKEN` and `PYCOM_SERVER_KEY` if set.
    #[new]
    #[pyo3(signature = (nameservers=None, *, timeout=None, token=None))]
    fn new(
        py: Python<'_>,
        nameservers: Option<&str>,
        timeout: Option<f64>,
        token: Option<&str>,
    ) -> PyResult<Self> {
        let inner = match nameservers {
            Some(spec) => Context::new(spec),
            None => Context::from_env(),
        }
        .py(py)?;
        if let Some(timeout) = timeout {
            inner.set_default_timeout(seconds("timeout", timeout)?);
        }
        if let Some(token) = token {
            inner.set_token(token);
        }
        Ok(PyContext { inner })
    }

    /// The nameserver endpoints, in the order they are tried.
    #[getter]
    fn nameservers(&self) -> Vec<String> {
        self.inner.nameservers().to_vec()
    }

    /// Seconds each call waits for its reply (components copy it when made).
    #[getter]
    fn get_timeout(&self) -> f64 {
        self.inner.default_timeout().as_secs_f64()
    }

    #[setter]
    fn set_timeout(&self, timeout: f64) -> PyResult<()> {
        self.inner.set_default_timeout(seconds("timeout", timeout)?);
        Ok(())
    }

    /// A component for any live provider of `interface` (or the one the
    /// service `service` provides).
    #[pyo3(signature = (interface, service=None))]
    fn locate(&self, py: Python<'_>, interface: &str, service: Option<&str>) -> PyResult<PyComponent> {
        let ctx = &self.inner;
        let timeout = ctx.default_timeout();
        let component = py
            .detach(|| match service {
                Some(service) => ctx.locate_service(interface, service),
                None => ctx.locate(interface),
            })
            .py(py)?;
        Ok(PyComponent::new(component, timeout))
    }

    /// A component for `interface` at a known address (never re-located).
    fn connect(&self, py: Python<'_>, address: &str, interface: &str) -> PyResult<PyComponent> {
        let timeout = self.inner.default_timeout();
        let component = self.inner.connect(address, interface).py(py)?;
        Ok(PyComponent::new(component, timeout))
    }

    /// The workflow served at `service`: a component whose `invoke(task,
    /// args)` runs a task of it.
    fn workflow(&self, py: Python<'_>, service: &str) -> PyResult<PyComponent> {
        self.locate(py, pycom_client::workflow::INTERFACE, Some(service))
    }

    /// A publisher on `topic` through pycomd's forwarder, ready when returned.
    #[pyo3(signature = (topic, *, timeout=None))]
    fn publisher(&self, py: Python<'_>, topic: &str, timeout: Option<f64>) -> PyResult<PyPublisher> {
        let mut builder = pycom_client::Publisher::builder(&self.inner, topic);
        if let Some(timeout) = timeout {
            builder = builder.timeout(seconds("timeout", timeout)?);
        }
        let publisher = py.detach(|| builder.connect()).py(py)?;
        Ok(PyPublisher::new(publisher))
    }

    /// A subscriber to one or more patterns (`a.b.c`, `a.*.c`, `a.>`),
    /// ready when returned. `start="last"` begins with each topic's last
    /// value; `gaps` is "log" (the default), "ignore" or "error" (raise
    /// `Gap`).
    #[pyo3(signature = (*patterns, start="new", gaps="log", timeout=None))]
    fn subscribe(
        &self,
        py: Python<'_>,
        patterns: Vec<String>,
        start: &str,
        gaps: &str,
        timeout: Option<f64>,
    ) -> PyResult<PySubscriber> {
        let mut builder = self
            .inner
            .subscriber()
            .patterns(patterns)
            .start(parse_start(start)?)
            .gaps(parse_gaps(gaps)?);
        if let Some(timeout) = timeout {
            builder = builder.timeout(seconds("timeout", timeout)?);
        }
        let subscriber = py.detach(|| builder.connect()).py(py)?;
        Ok(PySubscriber::new(subscriber))
    }

    /// A live view of the registry: the records whose service matches the
    /// regular expression `service`, and one of whose interfaces matches
    /// `interface` (both anchored at the start, as `re.match`; None: any).
    /// Iterate it for the changes.
    #[pyo3(signature = (*, interface=None, service=None))]
    fn watch(&self, py: Python<'_>, interface: Option<&str>, service: Option<&str>) -> PyResult<PyWatcher> {
        let interface = anchored("interface", interface)?;
        let service = anchored("service", service)?;
        let ctx = &self.inner;
        let watcher = py
            .detach(|| {
                ctx.watch_where(move |info| {
                    service.as_ref().is_none_or(|re| re.is_match(&info.service))
                        && interface
                            .as_ref()
                            .is_none_or(|re| info.interfaces.iter().any(|i| re.is_match(i)))
                })
            })
            .py(py)?;
        Ok(PyWatcher::new(watcher))
    }

    /// Log in to pycomd as `user`: every call through this context (and
    /// what it made) carries the token from then on.
    fn login(&self, py: Python<'_>, user: &str, password: &str) -> PyResult<PyLogin> {
        let ctx = &self.inner;
        let login = py.detach(|| ctx.login(user, password)).py(py)?;
        Ok(PyLogin::from(login))
    }

    /// End the token's life at pycomd; carry none from now on.
    fn logout(&self, py: Python<'_>) -> PyResult<()> {
        let ctx = &self.inner;
        py.detach(|| ctx.logout()).py(py)
    }

    /// Who pycomd says the caller is, from the token carried.
    fn whoami(&self, py: Python<'_>) -> PyResult<PyCaller> {
        let ctx = &self.inner;
        let caller = py.detach(|| ctx.whoami()).py(py)?;
        Ok(PyCaller::from(caller))
    }

    /// The token calls carry (None: none); setting it carries another
    /// (None: none) without telling pycomd.
    #[getter]
    fn get_token(&self) -> Option<String> {
        self.inner.token()
    }

    #[setter]
    fn set_token(&self, token: Option<&str>) {
        match token {
            Some(token) => self.inner.set_token(token),
            None => self.inner.clear_token(),
        }
    }

    /// pycomd's statistics (`stat`).
    fn stat<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let ctx = &self.inner;
        let stat = py.detach(|| ctx.nameserver().stat()).py(py)?;
        to_py(py, &stat)
    }

    /// The registry's records (dicts) whose service and one of whose
    /// interfaces match the start-anchored regular expressions.
    #[pyo3(signature = (*, interface=None, service=None))]
    fn list_services<'py>(
        &self,
        py: Python<'py>,
        interface: Option<&str>,
        service: Option<&str>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ctx = &self.inner;
        let records = py
            .detach(|| ctx.nameserver().list_all(interface, service, false))
            .py(py)?;
        let value = serde_json::to_value(records).map_err(|e| PyValueError::new_err(e.to_string()))?;
        to_py(py, &value)
    }

    fn __repr__(&self) -> String {
        format!("Context({:?})", self.inner.nameservers().join(","))
    }
}

/// `^(?:re)`: matches at the start, as pycomd's `list_services` does.
fn anchored(what: &str, re: Option<&str>) -> PyResult<Option<regex::Regex>> {
    re.map(|re| {
        regex::Regex::new(&format!("^(?:{re})")).map_err(|e| {
            PyValueError::new_err(format!("{what}={re:?} is not a valid regular expression: {e}"))
        })
    })
    .transpose()
}

/// One remote interface: `invoke` with a timeout, retried on a live
/// provider after its service restarts or moves.
///
/// Calls from several threads on one component take turns; make one per
/// thread for parallel calls (the context is shared).
#[pyclass(module = "pycom_client", name = "Component", frozen)]
pub struct PyComponent {
    inner: Mutex<State>,
    interface: String,
}

/// A component and the timeout its calls have (pycom-client's Component
/// does not say; it is the context's default until `timeout` is set here).
struct State {
    component: Component,
    timeout: Duration,
}

impl PyComponent {
    pub fn new(component: Component, timeout: Duration) -> PyComponent {
        PyComponent {
            interface: component.interface().to_string(),
            inner: Mutex::new(State { component, timeout }),
        }
    }
}

#[pymethods]
impl PyComponent {
    /// Call `method` with `args` (JSON-shaped). With `with_binary=True`,
    /// returns `(result, attachments)`. `timeout` (seconds) is this
    /// call's, each try.
    #[pyo3(signature = (method, args=None, *, attachments=None, with_binary=false, timeout=None))]
    fn invoke<'py>(
        &self,
        py: Python<'py>,
        method: &str,
        args: Option<&Bound<'py, PyAny>>,
        attachments: Option<&Bound<'py, PyAny>>,
        with_binary: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = match args {
            Some(args) => to_value(args, "args")?,
            None => serde_json::Value::Null,
        };
        let files = binaries(attachments)?;
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        let inner = &self.inner;
        let output = py
            .detach(|| {
                let mut state = inner.lock().unwrap_or_else(|p| p.into_inner());
                match timeout {
                    Some(timeout) => {
                        let previous = state.timeout;
                        state.component.set_timeout(timeout);
                        let output = state.component.call(method, &args, &files);
                        state.component.set_timeout(previous);
                        output
                    }
                    None => state.component.call(method, &args, &files),
                }
            })
            .py(py)?;
        let result = to_py(py, &output.result)?;
        if !with_binary {
            return Ok(result);
        }
        let files = PyList::empty(py);
        for attachment in output.attachments {
            files.append(Bound::new(py, PyAttachment::new(attachment))?)?;
        }
        Ok(PyTuple::new(py, [result, files.into_any()])?.into_any())
    }

    /// Log in at this component's own service (one that checks a password
    /// file of its own): only this component carries the token.
    fn login(&self, py: Python<'_>, user: &str, password: &str) -> PyResult<PyLogin> {
        let inner = &self.inner;
        let login = py
            .detach(|| {
                let mut state = inner.lock().unwrap_or_else(|p| p.into_inner());
                state.component.login(user, password)
            })
            .py(py)?;
        Ok(PyLogin::from(login))
    }

    /// End the component's own token at its service.
    fn logout(&self, py: Python<'_>) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| inner.lock().unwrap_or_else(|p| p.into_inner()).component.logout())
            .py(py)
    }

    /// The interface this component calls.
    #[getter]
    fn interface(&self) -> String {
        self.interface.clone()
    }

    /// The address calls go to now (it changes when the service moves).
    #[getter]
    fn address(&self) -> String {
        self.lock().component.address().to_string()
    }

    /// The session the service gave this component, if any.
    #[getter]
    fn session_id(&self) -> Option<String> {
        self.lock().component.session_id().map(str::to_string)
    }

    /// Seconds each try of each call waits for its reply.
    #[getter]
    fn get_timeout(&self) -> f64 {
        self.lock().timeout.as_secs_f64()
    }

    #[setter]
    fn set_timeout(&self, timeout: f64) -> PyResult<()> {
        let timeout = seconds("timeout", timeout)?;
        let mut state = self.lock();
        state.component.set_timeout(timeout);
        state.timeout = timeout;
        Ok(())
    }

    /// Tries in all after a transport failure (timeout, service gone), the
    /// first included; `never` lists methods that must not run twice.
    #[pyo3(signature = (attempts, *, never=None))]
    fn set_retry(&self, attempts: u32, never: Option<Vec<String>>) {
        let policy = pycom_client::RetryPolicy::default()
            .attempts(attempts)
            .except(never.unwrap_or_default());
        self.lock().component.set_retry(policy);
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) {}

    fn __repr__(&self) -> String {
        format!(
            "Component({:?} at {:?})",
            self.interface,
            self.lock().component.address()
        )
    }
}

impl PyComponent {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who pycomd says a caller is: its name and roles.
#[pyclass(module = "pycom_client", name = "Caller", frozen, get_all)]
#[derive(Clone)]
pub struct PyCaller {
    /// The user name.
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
}

impl From<pycom_client::Caller> for PyCaller {
    fn from(c: pycom_client::Caller) -> PyCaller {
        PyCaller {
            name: c.name,
            roles: c.roles,
        }
    }
}

#[pymethods]
impl PyCaller {
    /// Whether it holds `role` (or `admin`, which holds every role).
    fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role || r == "admin")
    }

    fn __repr__(&self) -> String {
        format!("Caller(name={:?}, roles={:?})", self.name, self.roles)
    }
}

/// What a login gave: the token, when it expires, who the caller is.
#[pyclass(module = "pycom_client", name = "Login", frozen, get_all)]
pub struct PyLogin {
    /// The token every call carries from then on.
    pub token: String,
    /// When it expires, in ms since the Unix epoch.
    pub expires_ms: u64,
    /// Who pycomd says the caller is.
    pub caller: PyCaller,
}

impl From<pycom_client::Login> for PyLogin {
    fn from(l: pycom_client::Login) -> PyLogin {
        PyLogin {
            token: l.token,
            expires_ms: l.expires_ms,
            caller: l.caller.into(),
        }
    }
}

#[pymethods]
impl PyLogin {
    fn __repr__(&self) -> String {
        format!(
            "Login(caller={:?}, expires_ms={})",
            self.caller.name, self.expires_ms
        )
    }
}
