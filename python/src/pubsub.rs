//! Pub-sub: `Publisher`, `Subscriber` (iterating `Message`s, or their
//! values), and `Watcher` (iterating the registry's `Change`s).
//!
//! Waits are cut into slices of [`SLICE`], with the GIL released during
//! each and Python's signal handlers run between them, so that Ctrl-C
//! interrupts a subscriber or watcher waiting for ever.

use crate::binary::{binaries, PyAttachment};
use crate::client::seconds;
use crate::convert::{to_py, to_value};
use crate::errors::{to_py as error_to_py, IntoPy};
use pycom_client::pubsub::{Change, GapPolicy, Message, Start, Stats, TopicStats};
use pycom_client::{Publisher, ServiceInfo, Subscriber, Watcher};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PySlice};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a blocking wait goes without checking for Ctrl-C.
const SLICE: Duration = Duration::from_millis(100);
/// Messages taken from the socket in one release of the GIL, when they are
/// already there: a burst costs one GIL round trip, not one each.
const BATCH: usize = 256;

pub fn parse_start(start: &str) -> PyResult<Start> {
    match start {
        "new" => Ok(Start::New),
        "last" => Ok(Start::Last),
        other => Err(PyValueError::new_err(format!(
            "start must be \"new\" or \"last\", not {other:?}"
        ))),
    }
}

pub fn parse_gaps(gaps: &str) -> PyResult<GapPolicy> {
    match gaps {
        "log" => Ok(GapPolicy::Log),
        "ignore" => Ok(GapPolicy::Ignore),
        "error" => Ok(GapPolicy::Error),
        other => Err(PyValueError::new_err(format!(
            "gaps must be \"log\", \"ignore\" or \"error\", not {other:?}"
        ))),
    }
}

/// Publishes on a topic through pycomd's forwarder. Publishing never
/// blocks: past the high-water mark publications are dropped (subscribers
/// then see a gap).
#[pyclass(module = "pycom_client", name = "Publisher", frozen)]
pub struct PyPublisher {
    inner: Mutex<Publisher>,
}

impl PyPublisher {
    pub fn new(publisher: Publisher) -> PyPublisher {
        PyPublisher {
            inner: Mutex::new(publisher),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Publisher> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl PyPublisher {
    /// Publish `value` (JSON-shaped) on the publisher's topic, or on
    /// `topic`, with attachments if given; returns its sequence number.
    #[pyo3(signature = (value, *, topic=None, attachments=None))]
    fn publish(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        topic: Option<&str>,
        attachments: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let value = to_value(value, "the publication")?;
        let files = binaries(attachments)?;
        // No GIL release: the send never waits (DONTWAIT), and releasing
        // costs more than it.
        let mut publisher = self.lock();
        match topic {
            Some(topic) => publisher.publish_to_with(topic, &value, &files),
            None => publisher.publish_with(&value, &files),
        }
        .py(py)
    }

    /// The topic `publish` publishes on.
    #[getter]
    fn topic(&self) -> String {
        self.lock().topic().to_string()
    }

    /// This publisher instance's id, the `src` of its publications.
    #[getter]
    fn src(&self) -> String {
        self.lock().src().to_string()
    }

    fn __repr__(&self) -> String {
        format!("Publisher({:?})", self.lock().topic())
    }
}

/// One publication.
#[pyclass(module = "pycom_client", name = "Message", frozen, get_all)]
pub struct PyMessage {
    /// The topic it was published on.
    topic: String,
    /// The publisher instance.
    src: String,
    /// Its place in the publisher's sequence on this topic, from 1.
    seq: u64,
    /// When it was published, in ms since the Unix epoch.
    ts: u64,
    /// True for a last value re-sent by the forwarder (start="last").
    replay: bool,
    /// The body, decoded.
    value: Py<PyAny>,
    /// Binary frames after the body.
    attachments: Py<PyList>,
}

#[pymethods]
impl PyMessage {
    fn __repr__(&self, py: Python<'_>) -> String {
        let value = self
            .value
            .bind(py)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_default();
        format!("Message(topic={:?}, seq={}, value={value})", self.topic, self.seq)
    }
}

fn message_to_py(py: Python<'_>, message: Message) -> PyResult<PyMessage> {
    let value = to_py(py, &message.json())?.unbind();
    let attachments = PyList::empty(py);
    for attachment in message.attachments {
        attachments.append(Bound::new(py, PyAttachment::new(attachment))?)?;
    }
    Ok(PyMessage {
        topic: message.topic,
        src: message.src,
        seq: message.seq,
        ts: message.ts,
        replay: message.replay,
        value,
        attachments: attachments.unbind(),
    })
}

/// Receives what matches its patterns, in order per publisher, without
/// duplicates, with gaps counted (see `stats`). Iterate it for `Message`s;
/// `values()` for their bodies; `recv(timeout)` for one.
#[pyclass(module = "pycom_client", name = "Subscriber", frozen)]
pub struct PySubscriber {
    inner: Mutex<Inbox>,
}

/// The subscriber and what was taken from it but not yet handed to Python.
struct Inbox {
    subscriber: Subscriber,
    ready: VecDeque<Result<Message, pycom_client::Error>>,
}

impl Inbox {
    /// Wait up to `wait` for one message, then take those already there.
    fn fill(&mut self, wait: Duration) {
        match self.subscriber.recv_timeout(wait) {
            Ok(Some(message)) => self.ready.push_back(Ok(message)),
            Ok(None) => return,
            Err(e) => {
                self.ready.push_back(Err(e));
                return;
            }
        }
        while self.ready.len() < BATCH {
            match self.subscriber.recv_timeout(Duration::ZERO) {
                Ok(Some(message)) => self.ready.push_back(Ok(message)),
                Ok(None) => return,
                Err(e) => {
                    self.ready.push_back(Err(e));
                    return;
                }
            }
        }
    }
}

impl PySubscriber {
    pub fn new(subscriber: Subscriber) -> PySubscriber {
        PySubscriber {
            inner: Mutex::new(Inbox {
                subscriber,
                ready: VecDeque::new(),
            }),
        }
    }

    /// The next message, waiting up to `timeout` (None: for ever), in
    /// slices with Ctrl-C checked between them.
    fn next_message(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Message>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                None => SLICE,
            };
            let inner = &self.inner;
            // What an earlier wait took in, without waiting for the lock
            // with the GIL held (another thread may be inside a wait).
            let taken = inner
                .try_lock()
                .ok()
                .and_then(|mut inbox| inbox.ready.pop_front());
            let taken = match taken {
                Some(taken) => Some(taken),
                None => py.detach(|| {
                    let mut inbox = inner.lock().unwrap_or_else(|p| p.into_inner());
                    inbox.fill(wait);
                    inbox.ready.pop_front()
                }),
            };
            match taken {
                Some(Ok(message)) => return Ok(Some(message)),
                Some(Err(e)) => return Err(error_to_py(py, e)),
                None => {}
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

#[pymethods]
impl PySubscriber {
    /// The next message, or None after `timeout` seconds without one
    /// (None: wait for ever).
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyMessage>> {
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        self.next_message(py, timeout)?
            .map(|m| message_to_py(py, m))
            .transpose()
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<PyMessage> {
        loop {
            if let Some(message) = self.next_message(py, None)? {
                return message_to_py(py, message);
            }
        }
    }

    /// The messages' bodies, for ever: slice it for a few
    /// (`sub.values()[:10]`).
    fn values(slf: Py<Self>) -> PyValues {
        PyValues { subscriber: slf }
    }

    /// What it received and dropped so far: `received`, `gaps`, `missed`,
    /// `duplicates` (all topics), `per_topic`, `malformed`, `unmatched`,
    /// `replays_skipped`.
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats: Stats = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .subscriber
            .stats()
            .clone();
        let out = topic_stats(py, &stats.total)?;
        let per_topic = PyDict::new(py);
        for (topic, t) in &stats.topics {
            per_topic.set_item(topic, topic_stats(py, t)?)?;
        }
        out.set_item("per_topic", per_topic)?;
        out.set_item("malformed", stats.malformed)?;
        out.set_item("unmatched", stats.unmatched)?;
        out.set_item("replays_skipped", stats.replays_skipped)?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        let inbox = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let patterns: Vec<String> = inbox
            .subscriber
            .patterns()
            .iter()
            .map(|p| p.to_string())
            .collect();
        format!("Subscriber({patterns:?})")
    }
}

fn topic_stats<'py>(py: Python<'py>, t: &TopicStats) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("received", t.received)?;
    d.set_item("gaps", t.gaps)?;
    d.set_item("missed", t.missed)?;
    d.set_item("duplicates", t.duplicates)?;
    Ok(d)
}

/// A subscriber's message bodies, for ever; `[:n]` takes the next n.
#[pyclass(module = "pycom_client", name = "Values", frozen)]
pub struct PyValues {
    subscriber: Py<PySubscriber>,
}

#[pymethods]
impl PyValues {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let subscriber = self.subscriber.get();
        loop {
            if let Some(message) = subscriber.next_message(py, None)? {
                return to_py(py, &message.json());
            }
        }
    }

    /// `values[:10]`: an iterator of the next ten (`itertools.islice`).
    fn __getitem__<'py>(slf: Bound<'py, Self>, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let Ok(slice) = key.cast::<PySlice>() else {
            return Err(PyTypeError::new_err(
                "values() is a stream: slice it (values()[:10]) rather than index it",
            ));
        };
        let islice = py.import("itertools")?.getattr("islice")?;
        islice.call1((
            slf,
            slice.getattr("start")?,
            slice.getattr("stop")?,
            slice.getattr("step")?,
        ))
    }
}

/// A live view of the registry (the records it was asked for): `view`
/// is the records by service as of `revision`; iterating it waits for each
/// change, applies it and yields it.
#[pyclass(module = "pycom_client", name = "Watcher", frozen)]
pub struct PyWatcher {
    inner: Mutex<Watcher>,
}

impl PyWatcher {
    pub fn new(watcher: Watcher) -> PyWatcher {
        PyWatcher {
            inner: Mutex::new(watcher),
        }
    }

    fn next_change(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<PyChange>> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let wait = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
                None => SLICE,
            };
            let inner = &self.inner;
            let change = py
                .detach(|| inner.lock().unwrap_or_else(|p| p.into_inner()).next_change(wait))
                .py(py)?;
            if let Some(change) = change {
                return change_to_py(py, change).map(Some);
            }
            py.check_signals()?;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

#[pymethods]
impl PyWatcher {
    /// The next change, or None after `timeout` seconds without one
    /// (None: wait for ever).
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<PyChange>> {
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        self.next_change(py, timeout)
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<PyChange> {
        loop {
            if let Some(change) = self.next_change(py, None)? {
                return Ok(change);
            }
        }
    }

    /// The records in view (dicts), by service.
    #[getter]
    fn view<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let watcher = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let out = PyDict::new(py);
        for (service, info) in watcher.view() {
            out.set_item(service, record(py, info)?)?;
        }
        Ok(out)
    }

    /// The registry revision the view is at.
    #[getter]
    fn revision(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).revision()
    }
}

/// One change of a watcher's view.
#[pyclass(module = "pycom_client", name = "Change", frozen, get_all)]
pub struct PyChange {
    /// Why: "registered", "unregistered", "expired"... (the registry
    /// event's name), or "appeared" / "vanished" when found on a re-list.
    kind: String,
    /// The service path.
    service: String,
    /// The record now (a dict); None when it left the view.
    record: Py<PyAny>,
    /// The record before; None when it entered the view.
    previous: Py<PyAny>,
    /// The registry revision of the change.
    revision: u64,
}

#[pymethods]
impl PyChange {
    fn __repr__(&self) -> String {
        format!(
            "Change(kind={:?}, service={:?}, revision={})",
            self.kind, self.service, self.revision
        )
    }
}

fn record<'py>(py: Python<'py>, info: &ServiceInfo) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(info).map_err(|e| PyValueError::new_err(e.to_string()))?;
    to_py(py, &value)
}

fn change_to_py(py: Python<'_>, change: Change) -> PyResult<PyChange> {
    let optional = |info: &Option<ServiceInfo>| -> PyResult<Py<PyAny>> {
        match info {
            Some(info) => Ok(record(py, info)?.unbind()),
            None => Ok(py.None()),
        }
    };
    Ok(PyChange {
        kind: change.kind.as_str().to_string(),
        service: change.service.clone(),
        record: optional(&change.record)?,
        previous: optional(&change.previous)?,
        revision: change.revision,
    })
}
