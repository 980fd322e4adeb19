//! A live copy of the registry, kept from pycomd's registry events.
//!
//! Subscribe first, then list, then apply the events above the listed
//! revision (PROTOCOL.md 5, "Registry events"). The registry's revision
//! grows by exactly one per event, so a missed event shows as a jump; the
//! watcher then asks the nameserver's `changes` for what it missed (or
//! lists again when pycomd no longer keeps that far back). When no event
//! came for a while it asks `changes` too, so that a lost *last* event,
//! which no later one would reveal, is noticed all the same.

use super::subscriber::{GapPolicy, Subscriber};
use super::wire;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::nameserver::ServiceInfo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// How long without events before the watcher asks `changes` whether it
/// missed one.
pub const DEFAULT_IDLE_CHECK: Duration = Duration::from_secs(5);
/// Events asked of `changes` at a time.
const CHANGES_LIMIT: u64 = 1000;
/// Records per `list_services` page.
const PAGE: u64 = 10_000;

/// What happened to a registry record, as pycomd publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A new record.
    Registered,
    /// Its interfaces, metadata or address changed.
    Updated,
    /// Its owner removed it.
    Unregistered,
    /// Its lease ran out.
    Expired,
    /// Its probes failed.
    Dropped,
}

impl EventKind {
    /// True when the record is gone after the event.
    pub fn is_removal(self) -> bool {
        !matches!(self, EventKind::Registered | EventKind::Updated)
    }

    /// The name in the event's topic and body.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Updated => "updated",
            EventKind::Unregistered => "unregistered",
            EventKind::Expired => "expired",
            EventKind::Dropped => "dropped",
        }
    }
}

/// The body of a registry event (topic `org.pycom.nameserver.events.<event>`,
/// and each entry of `changes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEvent {
    /// What happened.
    pub event: EventKind,
    /// The record's service path.
    pub service: String,
    /// Its address (for removals: the one it had).
    #[serde(default)]
    pub address: String,
    /// Its interfaces (for removals: those it had).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Its metadata (for removals: what it had).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The registry's revision after the change.
    pub revision: u64,
}

impl RegistryEvent {
    /// The record the event describes.
    pub fn record(&self) -> ServiceInfo {
        ServiceInfo {
            service: self.service.clone(),
            address: self.address.clone(),
            interfaces: self.interfaces.clone(),
            metadata: self.metadata.clone(),
            state: None,
        }
    }
}

/// Why a record entered, changed in or left a watcher's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A registry event.
    Event(EventKind),
    /// Found new or different when the watcher listed the registry again
    /// (pycomd no longer had the events it missed): what happened exactly
    /// is unknown.
    Appeared,
    /// Found gone when the watcher listed the registry again.
    Vanished,
}

impl ChangeKind {
    /// A short name: the event's, `appeared` or `vanished`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Event(kind) => kind.as_str(),
            ChangeKind::Appeared => "appeared",
            ChangeKind::Vanished => "vanished",
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of a watcher's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Why it changed.
    pub kind: ChangeKind,
    /// The service path.
    pub service: String,
    /// The record in the view now; `None` when it left the view (removed,
    /// or changed so that the watcher's filter no longer takes it).
    pub record: Option<ServiceInfo>,
    /// The record in the view before; `None` when it entered the view.
    pub previous: Option<ServiceInfo>,
    /// The registry revision of the change.
    pub revision: u64,
}

/// What `changes` answered.
#[derive(Debug, Deserialize)]
struct ChangesAnswer {
    revision: u64,
    #[serde(default)]
    compacted: bool,
    #[serde(default)]
    events: Vec<Value>,
}

type Filter = Box<dyn Fn(&ServiceInfo) -> bool + Send>;

/// An always-correct view of the registry (the records a filter takes),
/// kept from pycomd's registry events.
///
/// [`view`](Watcher::view) is the view as of [`revision`](Watcher::revision);
/// [`next_change`](Watcher::next_change) waits for the next change of it,
/// applies it and says what it was. The records there when the watcher is
/// made are in the view, not reported as changes. The view moves on only
/// inside `next_change`: call it regularly (a thread of its own, or a loop).
///
/// Errors (the nameserver not answering a `changes` or a listing) leave the
/// view as it was and are not final: the next call tries again.
pub struct Watcher {
    ctx: Context,
    events: Subscriber,
    filter: Filter,
    view: BTreeMap<String, ServiceInfo>,
    /// The registry revision `view` is at.
    revision: u64,
    /// The highest revision known to exist: above `revision` means events
    /// were missed and must be fetched.
    announced: u64,
    pending: VecDeque<Change>,
    idle_check: Duration,
    last_heard: Instant,
    /// pycomd answers `changes` (older ones do not: then the watcher lists
    /// again on every gap and cannot notice a lost last event).
    has_changes: bool,
    malformed_events: u64,
    fetched_events: u64,
    relists: u64,
}

impl Watcher {
    /// Watch the records `filter` takes (`|_| true` for all): subscribe to
    /// the registry events, list, and return the watcher with its view.
    pub fn new(ctx: &Context, filter: impl Fn(&ServiceInfo) -> bool + Send + 'static) -> Result<Watcher> {
        let events = Subscriber::builder(ctx)
            .pattern(format!("{}>", wire::EVENTS_PREFIX))
            // Gaps are seen by revision, across all event topics.
            .gaps(GapPolicy::Ignore)
            .connect()?;
        let mut watcher = Watcher {
            ctx: ctx.clone(),
            events,
            filter: Box::new(filter),
            view: BTreeMap::new(),
            revision: 0,
            announced: 0,
            pending: VecDeque::new(),
            idle_check: DEFAULT_IDLE_CHECK,
            last_heard: Instant::now(),
            has_changes: true,
            malformed_events: 0,
            fetched_events: 0,
            relists: 0,
        };
        watcher.relist(false)?;
        Ok(watcher)
    }

    /// The records in view, by service.
    pub fn view(&self) -> &BTreeMap<String, ServiceInfo> {
        &self.view
    }

    /// The registry revision the view is at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How long without events before asking pycomd whether one was
    /// missed (default 5 s).
    pub fn set_idle_check(&mut self, idle: Duration) {
        self.idle_check = idle;
    }

    /// Event messages that could not be read (each is then fetched again
    /// with `changes`, as a missed one).
    pub fn malformed_events(&self) -> u64 {
        self.malformed_events
    }

    /// Events missed on the way (pycomd or this process too slow, a
    /// restart) and fetched with `changes` instead.
    pub fn fetched_events(&self) -> u64 {
        self.fetched_events
    }

    /// How often the watcher had to list the registry again after the
    /// first time.
    pub fn relists(&self) -> u64 {
        self.relists
    }

    /// The next change of the view, waiting at most `timeout`; `None` when
    /// nothing changed in that time.
    pub fn next_change(&mut self, timeout: Duration) -> Result<Option<Change>> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(Some(change));
            }
            if self.announced > self.revision {
                self.catch_up(false)?;
                continue;
            }
            let now = Instant::now();
            let idle_at = self.last_heard.checked_add(self.idle_check);
            if self.has_changes && idle_at.is_some_and(|at| now >= at) {
                // Set first: a nameserver that does not answer is asked
                // again after another idle period, not in a tight loop.
                self.last_heard = now;
                self.catch_up(true)?;
                continue;
            }
            let until = match (deadline, idle_at.filter(|_| self.has_changes)) {
                (Some(d), Some(i)) => Some(d.min(i)),
                (d, i) => d.or(i),
            };
            let wait = until.map_or(Duration::from_secs(3600), |u| u.saturating_duration_since(now));
            if let Some(message) = self.events.recv_timeout(wait)? {
                self.last_heard = Instant::now();
                match message.value::<RegistryEvent>() {
                    Ok(event) => self.on_event(event),
                    Err(e) => {
                        // Its revision is unknown: the next event's jump, or
                        // the idle check, fetches it.
                        self.malformed_events += 1;
                        tracing::debug!(topic = %message.topic, "unreadable registry event: {e}");
                    }
                }
            }
            if self.pending.is_empty()
                && self.announced <= self.revision
                && deadline.is_some_and(|d| Instant::now() >= d)
            {
                return Ok(None);
            }
        }
    }

    fn on_event(&mut self, event: RegistryEvent) {
        self.announced = self.announced.max(event.revision);
        if event.revision == self.revision + 1 {
            self.apply(&event);
        }
        // Older: already applied (a restart's replays, `changes` having
        // brought it). Newer by more than one: `next_change` catches up.
    }

    fn apply(&mut self, event: &RegistryEvent) {
        let record = (!event.event.is_removal()).then(|| event.record());
        self.set(
            ChangeKind::Event(event.event),
            &event.service,
            record,
            event.revision,
        );
        self.revision = event.revision;
    }

    /// Put `record` (or nothing) in the view for `service`, noting the
    /// change if the view changes.
    fn set(&mut self, kind: ChangeKind, service: &str, record: Option<ServiceInfo>, revision: u64) {
        let record = record.filter(|r| (self.filter)(r));
        let previous = match &record {
            Some(r) if self.view.get(service) == Some(r) => return,
            Some(r) => self.view.insert(service.to_string(), r.clone()),
            None => self.view.remove(service),
        };
        if record.is_none() && previous.is_none() {
            return;
        }
        self.pending.push_back(Change {
            kind,
            service: service.to_string(),
            record,
            previous,
            revision,
        });
    }

    /// Fetch the events after `revision` with `changes` until caught up
    /// with `announced` (with `force`, ask at least once: the idle check).
    fn catch_up(&mut self, mut force: bool) -> Result<()> {
        if !self.has_changes {
            return self.relist(true);
        }
        let mut stalled = 0;
        while force || self.announced > self.revision {
            force = false;
            let answer = match self.ctx.nameserver().changes(self.revision, Some(CHANGES_LIMIT)) {
                Ok(answer) => answer,
                Err(Error::MethodNotFound(_)) => {
                    self.has_changes = false;
                    return self.relist(true);
                }
                Err(e) => return Err(e),
            };
            let answer: ChangesAnswer = serde_json::from_value(answer)
                .map_err(|e| Error::Data(format!("unexpected result from changes: {e}")))?;
            if answer.compacted || answer.revision < self.revision {
                // Older than pycomd keeps, or a registry younger than our
                // view (its data was wiped): only a listing can tell.
                return self.relist(true);
            }
            self.announced = self.announced.max(answer.revision);
            let before = self.revision;
            for event in answer.events {
                let Ok(event) = serde_json::from_value::<RegistryEvent>(event) else {
                    return self.relist(true);
                };
                if event.revision <= self.revision {
                    continue;
                }
                if event.revision != self.revision + 1 {
                    // A hole in the history itself: list.
                    return self.relist(true);
                }
                self.fetched_events += 1;
                self.apply(&event);
            }
            if self.revision == before {
                stalled += 1;
                if stalled >= 2 && self.announced > self.revision {
                    return self.relist(true);
                }
            }
        }
        Ok(())
    }

    /// List the whole registry and make it the view (with `emit`, noting
    /// each difference as an `Appeared` or `Vanished` change).
    fn relist(&mut self, emit: bool) -> Result<()> {
        let mut ns = self.ctx.nameserver();
        let (mut records, mut after, mut base) = (Vec::new(), None::<String>, None);
        loop {
            let page = ns.list_page(None, None, PAGE, after.as_deref())?;
            // Later pages may be read at later revisions: the events after
            // the first page's revision are applied on top, and they carry
            // whole records, so applying one again changes nothing.
            if base.is_none() {
                base = Some(page.revision.ok_or_else(|| {
                    Error::Data(
                        "the nameserver does not say which registry revision it listed: it is too \
                         old to watch"
                            .into(),
                    )
                })?);
            }
            records.extend(page.services);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let base = base.unwrap_or(0);
        let fresh: BTreeMap<String, ServiceInfo> = records
            .into_iter()
            .filter(|r| (self.filter)(r))
            .map(|r| (r.service.clone(), r))
            .collect();
        if emit {
            self.relists += 1;
            tracing::info!(revision = base, "registry watcher listed the registry again");
            let gone: Vec<String> = self
                .view
                .keys()
                .filter(|s| !fresh.contains_key(*s))
                .cloned()
                .collect();
            for service in gone {
                self.set(ChangeKind::Vanished, &service, None, base);
            }
            for (service, record) in &fresh {
                self.set(ChangeKind::Appeared, service, Some(record.clone()), base);
            }
        }
        self.view = fresh;
        self.revision = base;
        // What the listing shows is the truth now; were it behind an event
        // already seen (a lagging node answered), that event comes again
        // through `changes` once a later one reveals the jump.
        self.announced = base;
        self.last_heard = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, service: &str, address: &str, revision: u64) -> RegistryEvent {
        RegistryEvent {
            event: kind,
            service: service.into(),
            address: address.into(),
            interfaces: vec!["com.example.x".into()],
            metadata: BTreeMap::new(),
            revision,
        }
    }

    /// A watcher without a pycomd: its subscriber talks to a socket
    /// nobody answers on and is never read in these tests.
    fn offline(filter: impl Fn(&ServiceInfo) -> bool + Send + 'static) -> Watcher {
        let ctx = Context::new("tcp://127.0.0.1:1").unwrap();
        let zctx = zmq::Context::new();
        let fwd = zctx.socket(zmq::XPUB).unwrap();
        fwd.set_xpub_verbose(true).unwrap();
        fwd.set_rcvtimeo(10_000).unwrap();
        fwd.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = fwd.get_last_endpoint().unwrap().unwrap();
        let answer = std::thread::spawn(move || loop {
            let sub = fwd.recv_bytes(0).unwrap();
            let topic = String::from_utf8_lossy(&sub[1..]).to_string();
            if topic.starts_with(wire::READY_PREFIX) {
                fwd.send_multipart([topic.as_bytes(), br#"{"src":"f","seq":1,"ts":0}"#, b"null"], 0)
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        });
        let events = Subscriber::builder(&ctx)
            .pattern("org.pycom.nameserver.events.>")
            .endpoint(endpoint)
            .connect()
            .unwrap();
        answer.join().unwrap();
        Watcher {
            ctx,
            events,
            filter: Box::new(filter),
            view: BTreeMap::new(),
            revision: 10,
            announced: 10,
            pending: VecDeque::new(),
            idle_check: DEFAULT_IDLE_CHECK,
            last_heard: Instant::now(),
            has_changes: true,
            malformed_events: 0,
            fetched_events: 0,
            relists: 0,
        }
    }

    #[test]
    fn events_in_order_change_the_view_and_say_how() {
        let mut w = offline(|_| true);
        w.on_event(event(EventKind::Registered, "/a", "tcp://h:1", 11));
        w.on_event(event(EventKind::Updated, "/a", "tcp://h:2", 12));
        w.on_event(event(EventKind::Updated, "/a", "tcp://h:2", 12)); // again: ignored
        w.on_event(event(EventKind::Expired, "/a", "tcp://h:2", 13));
        assert_eq!(w.revision(), 13);
        assert!(w.view().is_empty());
        let changes: Vec<Change> = w.pending.drain(..).collect();
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[0].kind, ChangeKind::Event(EventKind::Registered));
        assert!(changes[0].previous.is_none());
        assert_eq!(changes[1].previous.as_ref().unwrap().address, "tcp://h:1");
        assert_eq!(changes[1].record.as_ref().unwrap().address, "tcp://h:2");
        assert_eq!(changes[2].kind.as_str(), "expired");
        assert!(changes[2].record.is_none());
        assert_eq!(changes[2].revision, 13);
    }

    #[test]
    fn a_jump_is_not_applied_but_remembered() {
        let mut w = offline(|_| true);
        w.on_event(event(EventKind::Registered, "/a", "tcp://h:1", 13));
        assert_eq!(w.revision(), 10);
        assert_eq!(w.announced, 13);
        assert!(w.view().is_empty() && w.pending.is_empty());
        w.on_event(event(EventKind::Registered, "/b", "tcp://h:1", 9));
        assert!(w.view().is_empty(), "older than the view: already in it");
    }

    #[test]
    fn the_filter_decides_what_enters_and_leaves_the_view() {
        let mut w = offline(|r| r.address.ends_with(":1"));
        w.on_event(event(EventKind::Registered, "/other", "tcp://h:9", 11));
        assert!(w.pending.is_empty(), "filtered out: no change");
        assert_eq!(w.revision(), 11, "but the revision moves on");
        w.on_event(event(EventKind::Registered, "/a", "tcp://h:1", 12));
        w.on_event(event(EventKind::Updated, "/a", "tcp://h:2", 13));
        let changes: Vec<Change> = w.pending.drain(..).collect();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[1].kind, ChangeKind::Event(EventKind::Updated));
        assert!(
            changes[1].record.is_none(),
            "updated out of the filter: left the view"
        );
        assert!(w.view().is_empty());
    }

    #[test]
    fn event_bodies_decode_as_published() {
        let body = serde_json::json!({"event": "dropped", "service": "/a", "address": "tcp://h:1",
                                      "interfaces": ["x"], "metadata": {"k": "v"}, "revision": 7});
        let e: RegistryEvent = serde_json::from_value(body).unwrap();
        assert_eq!(e.event, EventKind::Dropped);
        assert!(e.event.is_removal());
        assert_eq!(e.record().metadata["k"], "v");
        let answer: ChangesAnswer =
            serde_json::from_value(serde_json::json!({"revision": 9, "compacted": true})).unwrap();
        assert!(answer.compacted && answer.events.is_empty());
    }
}
