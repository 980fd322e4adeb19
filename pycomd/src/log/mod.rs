//! The log: every change to the registry is a [`Command`] appended here,
//! and only a durable entry is applied and answered.
//!
//! [`Log`] is what the server proposes to; [`local::LocalLog`] keeps the log
//! on this machine (group commit, fdatasync before any reply) and the
//! cluster keeps it on openraft behind the same trait. Either way, entries
//! come back through the server's mailbox as
//! [`Event::Committed`](crate::mailbox::Event) in log order, and the server
//! applies them; a write that could not be made durable comes back as
//! `NotDurable` and changes nothing.
//!
//! On disk (`data_dir`): `log/*.wal` segments of checksummed frames
//! ([`wal`]) and `snapshot-*.snap` files of the state ([`snapshot`]), both
//! verified before anything is opened for writing ([`recovery`]).

pub mod local;
pub mod raft;
pub mod recovery;
pub mod snapshot;
pub mod wal;

use crate::registry::Command;
use pycom_client::proto::Fault;
use serde::{Deserialize, Serialize};

/// Where an entry sits in the log: Raft's (term, leader node, index). The
/// local log writes term 1, node 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogId {
    pub term: u64,
    pub node: u64,
    pub index: u64,
}

/// What an entry carries: a registry command, or Raft's own entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Payload {
    Command(Command),
    /// A new leader's first entry.
    Blank,
    /// A cluster membership change (the cluster's business).
    Membership(serde_json::Value),
}

/// One log entry, as written to disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub log_id: LogId,
    pub payload: Payload,
}

/// Where the reply to a write goes once it is durable: the ROUTER envelope
/// of the request, and the method for the log line.
#[derive(Debug)]
pub struct ReplyTo {
    pub envelope: Vec<zmq::Message>,
    /// A login's new token, for its reply only: the log holds its hash.
    pub token: Option<String>,
    /// What the request was, for `/metrics`.
    pub label: crate::metrics::Label,
    /// When the request arrived: a register's latency runs to its reply.
    pub received: std::time::Instant,
}

impl ReplyTo {
    pub fn to(
        envelope: Vec<zmq::Message>,
        label: crate::metrics::Label,
        received: std::time::Instant,
    ) -> ReplyTo {
        ReplyTo {
            envelope,
            token: None,
            label,
            received,
        }
    }
}

/// A command waiting to be made durable.
#[derive(Debug)]
pub struct Proposal {
    pub command: Command,
    pub reply: Option<ReplyTo>,
}

/// A command now durable, to apply and answer.
#[derive(Debug)]
pub struct Committed {
    pub log_id: LogId,
    pub command: Command,
    pub reply: Option<ReplyTo>,
    /// In a cluster: the node that proposed it, that node's run and its
    /// sequence number, so that node finds the reply waiting ([`Log::claim`]).
    pub request: Option<(u64, u64, u64)>,
}

/// A proposal the log could not even queue, handed back with the fault to
/// answer it with.
#[derive(Debug)]
pub struct Refused {
    pub proposal: Proposal,
    pub fault: Fault,
}

/// What pycomd writes changes through.
pub trait Log {
    /// Queue `command` to be made durable. It comes back through the
    /// mailbox as committed or not durable; or, when it cannot even be
    /// queued, the proposal is handed back with the fault to answer.
    fn propose(&mut self, proposal: Proposal) -> Result<(), Box<Refused>>;

    /// Stop taking proposals; what is queued is still written, then the
    /// log reports `LogStopped` through the mailbox.
    fn close(&mut self);

    /// Keep this snapshot of the state (asked for with `SnapshotDue`), so
    /// that the log before it can go.
    fn snapshot(&mut self, snapshot: snapshot::Snapshot);

    /// Counters for `stat`.
    fn stats(&self) -> LogStats;

    /// The reply waiting for the entry proposed as `seq` by node `origin`
    /// (a replicated log keeps replies itself), now at `index`.
    fn claim(&mut self, _origin: u64, _boot: u64, _seq: u64, _index: u64) -> Option<ReplyTo> {
        None
    }

    /// The reply of the proposal `seq`, which will not be committed here.
    fn refused(&mut self, _seq: u64) -> Option<ReplyTo> {
        None
    }

    /// Replies whose entries were not committed within the write timeout.
    fn overdue(&mut self, _now: std::time::Instant) -> Vec<ReplyTo> {
        Vec::new()
    }

    /// Ask the cluster for a change (a cluster member's log only); the
    /// answer comes back as `AdminDone` with `id`.
    fn admin(&mut self, _op: crate::cluster::Admin, _id: u64) -> Result<(), Fault> {
        Err(Fault::not_found(
            "this pycomd is a single node, not a cluster member (no [cluster] in its configuration)",
        ))
    }

    /// How long a write may take before it answers code 7 (a cluster's).
    fn write_timeout(&self) -> Option<std::time::Duration> {
        None
    }
}

/// What the log has done, for `stat`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LogStats {
    /// Entries made durable.
    pub writes: u64,
    /// fdatasync calls that made them durable (group commit: with many
    /// writers, far fewer than `writes`).
    pub flushes: u64,
    /// Batches that could not be written (disk full, I/O error); their
    /// writes were answered code 7 and changed nothing.
    pub errors: u64,
    /// The newest durable entry.
    pub last_index: u64,
    /// Snapshots written since start.
    pub snapshots: u64,
}
