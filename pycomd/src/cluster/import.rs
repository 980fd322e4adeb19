//! A single node's registry becoming a one-member cluster's (README,
//! "Clusters"): the records and logins of the old data dir are proposed
//! again as ordinary commands through Raft, so that the cluster's log
//! holds them like any other change (new members get them by replication
//! or snapshot) and nothing is written around the log.
//!
//! The leader proposes in batches what the state does not show yet,
//! until every record and login has been seen once (a record seen and
//! later removed is not brought back); then a marker file, written
//! durably, says the import is done, and later starts skip it. A crash
//! half-way imports again: a register of the same record changes nothing.
//! The registry's revision starts again from the import (watchers list
//! again: `changes` answers `compacted`).

use crate::registry::tokens::Token;
use crate::registry::{Command, Record, State};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Commands proposed at once; the rest wait for the next turn.
const BATCH: usize = 5_000;
/// Between batches, and before proposing again what did not commit.
const PAUSE: Duration = Duration::from_millis(500);

/// The marker of a finished import, in the Raft dir.
pub fn marker(raft_dir: &Path) -> PathBuf {
    raft_dir.join("imported-single-node")
}

pub struct Import {
    records: Vec<Arc<Record>>,
    tokens: Vec<Arc<Token>>,
    marker: PathBuf,
    next: Instant,
    pub total: usize,
}

impl Import {
    /// What `state` (the single node's) holds, minus logins already expired.
    pub fn new(state: &State, marker: PathBuf, now_ms: u64) -> Import {
        let records: Vec<Arc<Record>> = state.shared().cloned().collect();
        let tokens: Vec<Arc<Token>> = state
            .tokens()
            .shared()
            .filter(|t| t.expires_ms > now_ms)
            .cloned()
            .collect();
        let total = records.len() + tokens.len();
        Import {
            records,
            tokens,
            marker,
            next: Instant::now(),
            total,
        }
    }

    /// The commands to propose now (the leader asks each turn): those
    /// `state` does not show yet, a batch at a time. `Some(empty)`: all
    /// seen, the import is done.
    pub fn due(&mut self, state: &State, now: Instant) -> Option<Vec<Command>> {
        if now < self.next {
            return None;
        }
        self.next = now + PAUSE;
        self.records.retain(|r| state.get(&r.service).is_none());
        self.tokens.retain(|t| {
            crate::registry::tokens::parse_hex(&t.sha256).is_some_and(|d| state.tokens().get(&d).is_none())
        });
        let records = self.records.iter().take(BATCH).map(|r| Command::Register {
            service: r.service.to_string(),
            address: r.address.clone(),
            interfaces: r.interfaces.clone(),
            replace: true,
            ttl_ms: r.ttl_ms,
            metadata: Some(r.metadata.clone()),
            lapsed: None,
            owner: r.owner.as_deref().map(str::to_string),
        });
        let left = BATCH.saturating_sub(self.records.len());
        let tokens = self.tokens.iter().take(left).map(|t| Command::Login {
            token_sha256: t.sha256.clone(),
            name: t.name.to_string(),
            roles: t.roles.clone(),
            expires_ms: t.expires_ms,
            keep: usize::MAX,
        });
        Some(records.chain(tokens).collect())
    }

    /// Say durably that the import is done.
    pub fn finish(&self) -> std::io::Result<()> {
        let file = std::fs::File::create(&self.marker)?;
        file.sync_all()?;
        if let Some(dir) = self.marker.parent() {
            crate::log::wal::sync_dir(dir)?;
        }
        Ok(())
    }
}
