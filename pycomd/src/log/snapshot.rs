//! Snapshots: the whole registry state as of one log entry, so that the
//! log before it can be removed and a restart need not replay it all.
//!
//! `snapshot-<index, 20 digits>.snap`: the magic [`MAGIC`], the payload's
//! length (u64) and crc32c (u32), little-endian, then the payload (JSON
//! [`SnapshotData`]). Written to a temporary file, fsync'ed, renamed into
//! place, and the directory fsync'ed: a snapshot is either whole and
//! durable or absent. pycomd keeps the newest two, and the log since the
//! older one, so a damaged newest snapshot loses nothing (`--recover`).

use super::wal::sync_dir;
use super::LogId;
use crate::registry::runs::Run;
use crate::registry::tokens::Token;
use crate::registry::{Record, State};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const MAGIC: &[u8; 8] = b"PYCSNAP1";
const HEADER: usize = 8 + 8 + 4;

#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotData {
    /// The last entry the state includes.
    pub last: LogId,
    pub revision: u64,
    pub records: Vec<Record>,
    /// Live logins (none in snapshots from before access control).
    #[serde(default)]
    pub tokens: Vec<Token>,
    /// Workflow runs (none in snapshots from before workflows).
    #[serde(default)]
    pub runs: Vec<Run>,
}

/// The state as of one entry, taken by the server in a blink: the records,
/// tokens and runs are shared (`Arc`), not copied, and written out on
/// another thread.
#[derive(Debug)]
pub struct Snapshot {
    pub last: LogId,
    pub revision: u64,
    pub records: Vec<Arc<Record>>,
    pub tokens: Vec<Arc<Token>>,
    pub runs: Vec<Arc<Run>>,
}

impl Snapshot {
    pub fn of(state: &State, last: LogId) -> Snapshot {
        Snapshot {
            last,
            revision: state.revision(),
            records: state.shared().cloned().collect(),
            tokens: state.tokens().shared().cloned().collect(),
            runs: state.runs().shared().cloned().collect(),
        }
    }
}

/// [`Snapshot`] as written: the same fields as [`SnapshotData`].
#[derive(Serialize)]
struct SnapshotRef<'a> {
    last: LogId,
    revision: u64,
    records: &'a [Arc<Record>],
    tokens: &'a [Arc<Token>],
    runs: &'a [Arc<Run>],
}

impl SnapshotData {
    pub fn into_state(self) -> (State, LogId) {
        (
            State::from_parts(self.revision, self.records, self.tokens, self.runs),
            self.last,
        )
    }
}

pub fn path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("snapshot-{index:020}.snap"))
}

/// Snapshots in `dir`, oldest first, by the index in their names.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    super::wal::files_by_index(dir, "snapshot-", ".snap")
}

/// Write `snapshot` durably; returns its path and size in bytes.
impl Snapshot {
    /// The state as JSON ([`SnapshotData`]): a file's payload, or what a
    /// cluster's leader sends a follower far behind.
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let data = SnapshotRef {
            last: self.last,
            revision: self.revision,
            records: &self.records,
            tokens: &self.tokens,
            runs: &self.runs,
        };
        serde_json::to_vec(&data).map_err(io::Error::other)
    }
}

pub fn write(dir: &Path, snapshot: &Snapshot, sync: bool) -> io::Result<(PathBuf, u64)> {
    let payload = snapshot.encode()?;
    let target = path(dir, snapshot.last.index);
    let tmp = target.with_extension("snap.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(MAGIC)?;
    file.write_all(&(payload.len() as u64).to_le_bytes())?;
    file.write_all(&crc32c::crc32c(&payload).to_le_bytes())?;
    file.write_all(&payload)?;
    if sync {
        file.sync_all()?;
    }
    drop(file);
    std::fs::rename(&tmp, &target)?;
    if sync {
        sync_dir(dir)?;
    }
    Ok((target, (HEADER + payload.len()) as u64))
}

/// A snapshot file's bytes: the header, then `payload` ([`Snapshot::encode`]).
pub fn file_bytes(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Read and verify a snapshot. The error says what is wrong with the file.
pub fn read(path: &Path) -> Result<SnapshotData, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    verify(&bytes)
}

/// Verify a snapshot file's bytes and decode them; the error says what is
/// wrong ("it ...").
pub fn verify(bytes: &[u8]) -> Result<SnapshotData, String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("does not start with pycomd's snapshot header".into());
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[8..16]);
    let len = u64::from_le_bytes(len);
    let crc = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let payload = &bytes[HEADER..];
    if payload.len() as u64 != len {
        return Err(format!(
            "holds {} bytes of state where its header says {len}",
            payload.len()
        ));
    }
    if crc32c::crc32c(payload) != crc {
        return Err("fails its checksum".into());
    }
    serde_json::from_slice(payload).map_err(|e| format!("does not decode: {e}"))
}

/// Remove temporary files a crash left behind while writing a snapshot.
pub fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        if path.extension().is_some_and(|e| e == "tmp")
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snapshot-"))
        {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
