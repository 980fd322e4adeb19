//! The server thread's mailbox: typed [`Event`]s from pycomd's other
//! threads (the log, the prober, signals).
//!
//! Events travel on a channel; a ZeroMQ inproc socket only rings a bell,
//! so the server waits on one `zmq::poll` for requests and events alike.
//! A bell that cannot be rung because the server already has many pending
//! is not needed: the server empties the channel whenever it wakes.

use crate::log::{Committed, LogId, Proposal};
use std::sync::mpsc::{self, Receiver, Sender};

const BELL_ENDPOINT: &str = "inproc://pycomd-mailbox";

/// What other threads tell the server.
#[derive(Debug)]
pub enum Event {
    /// Entries now durable, in log order: apply and answer them.
    Committed(Vec<Committed>),
    /// Proposals that could not be made durable: answer code 7, change nothing.
    NotDurable {
        proposals: Vec<Proposal>,
        error: String,
        /// In a cluster, whether they may still commit (the reply says).
        outcome: Option<crate::cluster::Outcome>,
    },
    /// The cluster's view from this node changed (role, leader, term).
    Cluster(crate::cluster::Status),
    /// A cluster proposal of this node that will not be committed (or
    /// whose fate is unknown): answer it with code 7.
    Refused {
        seq: u64,
        outcome: crate::cluster::Outcome,
        /// The leader's request endpoint, if known.
        leader: Option<String>,
        why: String,
    },
    /// A cluster change asked with `Log::admin` is done (or refused).
    AdminDone {
        id: u64,
        result: Result<serde_json::Value, pycom_client::proto::Fault>,
    },
    /// Raft applied entries up to here (commands come as `Committed`).
    Applied(LogId),
    /// Raft wants a snapshot: the state as of everything posted before, as
    /// `log::snapshot` JSON.
    SnapshotWanted(tokio::sync::oneshot::Sender<Vec<u8>>),
    /// A snapshot from the leader replaces the state.
    InstallSnapshot {
        state: crate::registry::State,
        last: LogId,
        ack: tokio::sync::oneshot::Sender<()>,
    },
    /// The log has grown enough since the last snapshot: once the state
    /// includes `upto`, hand the log a snapshot of it.
    SnapshotDue {
        upto: LogId,
    },
    /// The log wrote everything it was given and stopped.
    LogStopped {
        failed_batches: u64,
    },
    /// A probed record's address stopped answering.
    Unreachable {
        service: String,
        address: String,
        revision: u64,
    },
    /// Probes of an address went unanswered this many times in a row
    /// (0: it answered again, or is no longer probed), for `list_services`
    /// with `long`.
    ProbeFailures {
        address: String,
        failures: u32,
    },
    /// A password checked off the server thread.
    Verified(crate::auth::hasher::Verdict),
    /// A workflow step's call came back.
    WorkflowCalled(Box<crate::workflow::calls::Called>),
    /// The HTTP endpoint wants the numbers for `/metrics`, `/health`, `/ready`.
    Scrape(std::sync::mpsc::SyncSender<Box<crate::metrics::Numbers>>),
    /// A backup's snapshot, encoded off the server thread (or why not).
    BackupEncoded {
        id: u64,
        result: Result<crate::backup::Encoded, String>,
    },
    Signal(Signal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload the configuration.
    Reload,
    /// SIGTERM or SIGINT: finish what is in flight and stop.
    Stop(&'static str),
}

/// The server's end.
pub struct Mailbox {
    events: Receiver<Event>,
    sender: Sender<Event>,
    bell: zmq::Socket,
    ctx: zmq::Context,
}

/// What makes [`Poster`]s later, away from the mailbox (threads started
/// only when needed: each poster's socket costs file descriptors).
#[derive(Clone)]
pub struct Posters {
    sender: Sender<Event>,
    ctx: zmq::Context,
}

impl Posters {
    pub fn poster(&self) -> Result<Poster, String> {
        let bell = self
            .ctx
            .socket(zmq::PUSH)
            .and_then(|s| s.connect(BELL_ENDPOINT).map(|()| s))
            .map_err(|e| format!("cannot connect to the server's mailbox: {e}"))?;
        Ok(Poster {
            events: self.sender.clone(),
            bell,
        })
    }
}

/// Another thread's end: one per thread (the bell is a ZeroMQ socket).
pub struct Poster {
    events: Sender<Event>,
    bell: zmq::Socket,
}

impl Mailbox {
    pub fn new(ctx: &zmq::Context) -> Result<Mailbox, String> {
        let bell = ctx
            .socket(zmq::PULL)
            .and_then(|s| s.bind(BELL_ENDPOINT).map(|()| s))
            .map_err(|e| format!("cannot create the server's mailbox: {e}"))?;
        let (sender, events) = mpsc::channel();
        Ok(Mailbox {
            events,
            sender,
            bell,
            ctx: ctx.clone(),
        })
    }

    /// A handle for another thread to post with.
    pub fn poster(&self) -> Result<Poster, String> {
        self.posters().poster()
    }

    /// What makes posters later.
    pub fn posters(&self) -> Posters {
        Posters {
            sender: self.sender.clone(),
            ctx: self.ctx.clone(),
        }
    }

    /// For `zmq::poll`: readable when a bell rang.
    pub fn as_poll_item(&self) -> zmq::PollItem<'_> {
        self.bell.as_poll_item(zmq::POLLIN)
    }

    /// Every event waiting, in the order posted.
    pub fn drain(&self) -> impl Iterator<Item = Event> + '_ {
        while self.bell.recv_bytes(zmq::DONTWAIT).is_ok() {}
        self.events.try_iter()
    }
}

impl Poster {
    pub fn post(&self, event: Event) {
        // The server outlives every poster; if it is gone, so is the process.
        if self.events.send(event).is_ok() {
            let _ = self.bell.send(&[][..], zmq::DONTWAIT);
        }
    }
}
