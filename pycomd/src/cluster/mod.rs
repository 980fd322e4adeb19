//! pycomd as a member of a replicated cluster (PROTOCOL.md 9).
//!
//! The registry's log is replicated with Raft ([`crate::log::raft`]); what
//! the rest of pycomd needs to know about the cluster is here: this node's
//! [`Status`] (role, leader, term, indices), posted by the Raft thread
//! whenever it changes; the [`relay`] that takes a follower's writes to the
//! leader; and how a write's code 7 says whether it may still happen
//! ([`Outcome`]).

pub mod import;
pub mod relay;

use pycom_client::proto::{self, Fault};
use serde::Serialize;
use std::collections::BTreeMap;

/// The interface of a member's cluster operations.
pub const INTERFACE: &str = "org.pycom.cluster";

/// A change to the cluster, asked of its leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    /// Join a node: as a learner (it catches up), then as a voter.
    Add { id: u64, peer: String, client: String },
    /// Remove a voter.
    Remove { id: u64 },
    /// Hand leadership to another voter.
    TransferLeader { id: u64 },
}

impl Admin {
    /// Decode `add {id, peer, client}`, `remove {id}`, `transfer_leader {id}`.
    pub fn parse(method: &str, args: Option<&serde_json::value::RawValue>) -> Result<Admin, Fault> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Args {
            id: u64,
            #[serde(default)]
            peer: Option<String>,
            #[serde(default)]
            client: Option<String>,
        }
        let args: Args = args
            .ok_or_else(|| Fault::bad_request(format!("{method}: args {{id, ...}} are required")))
            .and_then(|raw| {
                serde_json::from_str(raw.get()).map_err(|e| Fault::bad_request(format!("{method}: {e}")))
            })?;
        match method {
            "add" => match (args.peer, args.client) {
                (Some(peer), Some(client)) if client.contains("://") && peer.contains(':') => {
                    Ok(Admin::Add {
                        id: args.id,
                        peer,
                        client,
                    })
                }
                _ => Err(Fault::bad_request(
                    "add: 'peer' (host:port) and 'client' (tcp://host:port) are required",
                )),
            },
            "remove" => Ok(Admin::Remove { id: args.id }),
            "transfer_leader" => Ok(Admin::TransferLeader { id: args.id }),
            other => Err(Fault::new(
                pycom_client::Code::MethodNotFound,
                format!("interface {INTERFACE} has no method '{other}'"),
            )),
        }
    }
}

/// The key of the cluster's extension in replies.
pub const EXTENSION: &str = "org.pycom.cluster";

/// What this node is in the cluster now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Stopped or not started.
    Shutdown,
}

/// The leader as `stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leader {
    pub id: u64,
    /// Its request endpoint.
    pub client: String,
}

/// This node's view of the cluster, for `stat` and for what the server
/// does as leader or follower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub node: u64,
    pub role: Role,
    pub leader: Option<Leader>,
    pub term: u64,
    /// Voters and learners: id to request endpoint.
    pub members: BTreeMap<u64, String>,
    pub commit_index: u64,
    pub applied_index: u64,
    /// A leader that has not heard from a majority for longer than an
    /// election timeout (cut off, or stalled): it takes no writes and keeps
    /// no leases, and its reads may be behind, until it hears again or
    /// steps down. A follower or learner that has not heard from a leader
    /// for that long: it answers reads from its state, which may be behind.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cut_off: bool,
}

impl Status {
    /// Whether this node leads and knows it does (a majority heard it
    /// lately): only then does it take writes and keep leases.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader && !self.cut_off
    }
}

/// The server's part of the cluster: this node's status, and the relay
/// of its writes to the leader while it is not the leader.
pub struct Node {
    pub status: Status,
    pub relay: relay::Relay,
}

impl Node {
    /// The leader's request endpoint, if another node leads.
    pub fn leader_elsewhere(&self) -> Option<&str> {
        self.status
            .leader
            .as_ref()
            .filter(|l| l.id != self.status.node)
            .map(|l| l.client.as_str())
    }
}

/// Methods a follower relays to the leader: the writes, and `renew`
/// (leases are the leader's).
pub fn relayed(interface: &str, method: &str) -> bool {
    match interface {
        pycom_client::nameserver::INTERFACE => matches!(method, "register" | "unregister" | "renew"),
        // The leader checks the password and writes the login.
        pycom_client::auth::INTERFACE => matches!(method, "authenticate" | "logout"),
        _ => false,
    }
}

/// Whether a write answered code 7 may still take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Refused before it was proposed: it did not happen and will not.
    NotApplied,
    /// Proposed, then the answer was lost (the leader changed, or the
    /// commit took longer than `write_timeout_ms`): it may still commit.
    Unknown,
}

impl Outcome {
    /// Code 7 for a write that ended this way: why, then what it means
    /// for a retry (the one wording of both).
    pub fn fault(self, why: impl std::fmt::Display) -> Fault {
        Fault::unavailable(match self {
            Outcome::Unknown => format!(
                "{why}; the write may or may not have been applied (outcome unknown): read before retrying"
            ),
            Outcome::NotApplied => format!("{why}; nothing was changed: retry"),
        })
    }
}

/// A write's fault with `extensions["org.pycom.cluster"] = {outcome,
/// leader}`, encoded.
pub fn outcome_fault(fault: &Fault, outcome: Outcome, leader: Option<&str>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Cluster<'a> {
        outcome: Outcome,
        leader: Option<&'a str>,
    }
    let extensions = serde_json::json!({ EXTENSION: Cluster { outcome, leader } });
    proto::encode_response_with::<serde_json::Value, _>(Err(fault), None, Some(&extensions))
}
