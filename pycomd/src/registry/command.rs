//! What can change the registry: one [`Command`] per change, as it is
//! written to the log and applied on every start (and, in a cluster, on
//! every node). Plain data: no clock readings, nothing local to a process.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        /// The principal registering (access control on, with a token):
        /// it owns the name wherever it runs. `None`: the address does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// The owner (or an admin) removes its record.
    Unregister {
        service: String,
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// An admin removes it whoever owns it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        admin: bool,
    },
    /// The lease of this version of the record ran out.
    Expire { service: String, revision: u64 },
    /// The probes of this version of a lease-less record went unanswered.
    ProbeFailed { service: String, revision: u64 },
    /// A login: the token's SHA-256 (hex; the token itself is never
    /// written), whose it is and until when (unix ms). `keep` bounds the
    /// user's tokens: the oldest beyond it are dropped.
    Login {
        token_sha256: String,
        name: String,
        roles: Vec<String>,
        expires_ms: u64,
        keep: usize,
    },
    /// A logout: that token no longer counts.
    Logout { token_sha256: String },
    /// Tokens that expired by `now_ms` are forgotten.
    ExpireTokens { now_ms: u64 },
    /// A workflow run's start, step, end (`registry::runs`).
    Run(Box<super::runs::RunCommand>),
}

impl Command {
    /// The method-like name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Register { .. } => "register",
            Command::Unregister { .. } => "unregister",
            Command::Expire { .. } => "expire",
            Command::ProbeFailed { .. } => "probe_failed",
            Command::Login { .. } => "login",
            Command::Logout { .. } => "logout",
            Command::ExpireTokens { .. } => "expire_tokens",
            Command::Run(run) => match **run {
                super::runs::RunCommand::Start { .. } => "run_start",
                super::runs::RunCommand::StepEnd { .. } => "run_step_end",
                super::runs::RunCommand::End { .. } => "run_end",
                super::runs::RunCommand::Redrive { .. } => "run_redrive",
                super::runs::RunCommand::Forget { .. } => "runs_forget",
            },
        }
    }
}
