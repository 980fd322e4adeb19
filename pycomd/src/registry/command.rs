//! What can change the registry: one [`Command`] per change, as it is
//! written to the log and applied on every start (and, in a cluster, on
//! every node). Plain data: no clock readings, nothing local to a process.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Register or re-register `service` at `address`.
    Register {
        service: String,
        address: String,
        interfaces: Vec<String>,
        /// `interfaces` (true) replaces the set; `interface` (false) adds to it.
        replace: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl_ms: Option<u64>,
        /// `None` keeps the metadata already registered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<BTreeMap<String, String>>,
        /// The revision of a record whose lease the proposer saw run out:
        /// that version of the name is free even if its `Expire` is not
        /// applied yet.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lapsed: Option<u64>,
    },
    /// The owner removes its record.
    Unregister { service: String, address: String },
    /// The lease of this version of the record ran out.
    Expire { service: String, revision: u64 },
    /// The probes of this version of a lease-less record went unanswered.
    ProbeFailed { service: String, revision: u64 },
}

impl Command {
    /// The method-like name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Register { .. } => "register",
            Command::Unregister { .. } => "unregister",
            Command::Expire { .. } => "expire",
            Command::ProbeFailed { .. } => "probe_failed",
        }
    }
}
