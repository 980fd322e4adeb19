//! The registry's recent changes, for `changes {since}`: a watcher that
//! missed events catches up from here instead of listing everything again.
//! Derived from the [`Change`]s, like the index; bounded in changes and in
//! bytes; after a restart it starts empty (older `since` answer
//! `compacted`: list again).

use super::{Change, ChangeKind, Record};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// What one retained change costs beyond its record's strings.
const CHANGE_OVERHEAD: usize = 64;

#[derive(Debug)]
pub struct History {
    changes: VecDeque<(ChangeKind, u64, Arc<Record>)>,
    /// Every change up to this revision has been let go (or predates the
    /// start): `since` below it cannot be answered.
    floor: u64,
    bytes: usize,
    max_changes: usize,
    max_bytes: usize,
}

/// An event as published and as `changes` returns it.
#[derive(Debug, Serialize)]
pub struct EventBody<'a> {
    pub event: &'static str,
    pub service: &'a str,
    pub address: &'a str,
    pub interfaces: &'a [String],
    pub metadata: &'a BTreeMap<String, String>,
    pub revision: u64,
}

/// The event's name: the last token of its topic.
pub fn event_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Registered => "registered",
        ChangeKind::Updated => "updated",
        ChangeKind::Unregistered => "unregistered",
        ChangeKind::Expired => "expired",
        ChangeKind::Dropped => "dropped",
    }
}

pub fn event<'a>(kind: ChangeKind, record: &'a Record, revision: u64) -> EventBody<'a> {
    EventBody {
        event: event_name(kind),
        service: &record.service,
        address: &record.address,
        interfaces: &record.interfaces,
        metadata: &record.metadata,
        revision,
    }
}

/// The event as JSON.
pub fn event_body(kind: ChangeKind, record: &Record, revision: u64) -> Vec<u8> {
    // Strings and numbers always serialize.
    serde_json::to_vec(&event(kind, record, revision)).unwrap_or_default()
}

impl History {
    /// An empty history of a registry at `revision`.
    pub fn new(revision: u64, max_changes: usize, max_bytes: usize) -> History {
        History {
            changes: VecDeque::new(),
            floor: revision,
            bytes: 0,
            max_changes,
            max_bytes,
        }
    }

    pub fn limits(&self) -> (usize, usize) {
        (self.max_changes, self.max_bytes)
    }

    pub fn set_limits(&mut self, max_changes: usize, max_bytes: usize) {
        self.max_changes = max_changes;
        self.max_bytes = max_bytes;
        self.trim();
    }

    pub fn push(&mut self, change: &Change) {
        self.bytes += CHANGE_OVERHEAD + change.record.size();
        self.changes
            .push_back((change.kind, change.revision, change.record.clone()));
        self.trim();
    }

    fn trim(&mut self) {
        while self.changes.len() > self.max_changes || self.bytes > self.max_bytes {
            let Some((_, revision, record)) = self.changes.pop_front() else {
                break;
            };
            self.bytes -= CHANGE_OVERHEAD + record.size();
            self.floor = revision;
        }
    }

    /// The oldest `since` that can be answered.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The changes after revision `since`, oldest first; `None` when some
    /// of them are no longer retained.
    pub fn since(&self, since: u64) -> Option<impl Iterator<Item = EventBody<'_>>> {
        if since < self.floor {
            return None;
        }
        let start = self
            .changes
            .partition_point(|(_, revision, _)| *revision <= since);
        Some(
            self.changes
                .range(start..)
                .map(|(kind, revision, record)| event(*kind, record, *revision)),
        )
    }
}
