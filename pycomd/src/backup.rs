//! Backups: `org.pycom.admin` on pycomd's request endpoint hands a
//! consistent snapshot of the registry to `pycomctl snapshot save`, and
//! [`restore`] (`pycomd --restore FILE --data-dir DIR`) makes a data dir of
//! one.
//!
//! `snapshot` takes the state as of the last applied entry on the server
//! thread (the records are shared, not copied: milliseconds for a
//! million), encodes it on a thread of its own in pycomd's snapshot file
//! format (`log::snapshot`: a header with the payload's length and crc32c),
//! and answers with its size and SHA-256. `snapshot_chunk {id, offset}` then
//! hands it out in pieces that fit `max_reply_bytes`, base64 in the JSON
//! reply, so that a remote pycomctl takes a registry of any size over the
//! ordinary endpoint. One backup is kept at a time, and dropped
//! [`IDLE`] after its last chunk was asked for.
//!
//! With access control on, only the admin role may take one: a backup holds
//! every record and login.

use crate::log::snapshot::{self, Snapshot};
use crate::log::LogId;
use crate::metrics::Label;
use base64::Engine;
use pycom_client::proto::Fault;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The interface of pycomd's operator methods.
pub const INTERFACE: &str = "org.pycom.admin";
/// A backup not asked for a chunk for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(60);
/// Largest chunk handed out (less when `max_reply_bytes` is smaller).
pub const MAX_CHUNK: usize = 1024 * 1024;

/// A snapshot encoded for a backup.
#[derive(Debug)]
pub struct Encoded {
    /// The snapshot file's bytes, header included.
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub last: LogId,
    pub revision: u64,
    pub records: usize,
    pub tokens: usize,
}

/// What `snapshot` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Taken {
    pub id: u64,
    /// The registry's revision the snapshot holds.
    pub revision: u64,
    /// The last log entry it includes.
    pub index: u64,
    pub term: u64,
    pub records: usize,
    pub tokens: usize,
    /// The file's size and SHA-256 (hex).
    pub bytes: usize,
    pub sha256: String,
    /// The size of the chunks `snapshot_chunk` hands out.
    pub chunk_bytes: usize,
}

/// What `snapshot_chunk` answers.
#[derive(Debug, Serialize, Deserialize)]
pub struct Chunk {
    pub offset: usize,
    /// The bytes from `offset`, base64 (standard, padded).
    pub data: String,
    /// Nothing follows.
    pub eof: bool,
}

/// The backup in progress, if any.
#[derive(Default)]
pub struct Backups {
    next_id: u64,
    current: Option<Backup>,
}

enum Backup {
    /// Being encoded: its caller waits for the answer.
    Encoding {
        id: u64,
        envelope: Vec<zmq::Message>,
        label: Label,
    },
    Ready {
        encoded: Arc<Encoded>,
        id: u64,
        touched: Instant,
    },
}

impl Backups {
    /// Whether a backup is being encoded now.
    pub fn encoding(&self) -> bool {
        matches!(self.current, Some(Backup::Encoding { .. }))
    }

    /// A new backup's id; the caller waits for `finish`.
    pub fn begin(&mut self, envelope: Vec<zmq::Message>, label: Label) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.current = Some(Backup::Encoding { id, envelope, label });
        id
    }

    /// The encoding of `id` is done: whom to answer, with what.
    pub fn finish(
        &mut self,
        id: u64,
        result: Result<Encoded, String>,
        chunk_bytes: usize,
        now: Instant,
    ) -> Option<(Vec<zmq::Message>, Label, Result<Taken, Fault>)> {
        let Some(Backup::Encoding { id: waiting, .. }) = &self.current else {
            return None;
        };
        if *waiting != id {
            return None;
        }
        let Some(Backup::Encoding { envelope, label, .. }) = self.current.take() else {
            return None;
        };
        let answer = match result {
            Ok(encoded) => {
                let taken = Taken {
                    id,
                    revision: encoded.revision,
                    index: encoded.last.index,
                    term: encoded.last.term,
                    records: encoded.records,
                    tokens: encoded.tokens,
                    bytes: encoded.bytes.len(),
                    sha256: encoded.sha256.clone(),
                    chunk_bytes,
                };
                self.current = Some(Backup::Ready {
                    encoded: Arc::new(encoded),
                    id,
                    touched: now,
                });
                Ok(taken)
            }
            Err(e) => Err(Fault::unavailable(format!("snapshot: {e}"))),
        };
        Some((envelope, label, answer))
    }

    /// `snapshot_chunk {id, offset}`.
    pub fn chunk(
        &mut self,
        id: u64,
        offset: usize,
        chunk_bytes: usize,
        now: Instant,
    ) -> Result<Chunk, Fault> {
        self.expire(now);
        let Some(Backup::Ready {
            encoded,
            id: ready,
            touched,
        }) = &mut self.current
        else {
            return Err(Fault::not_found(format!(
                "snapshot_chunk: there is no backup {id} (none was taken, or it was dropped after {} s unused, or pycomd restarted): take another with snapshot",
                IDLE.as_secs()
            )));
        };
        if *ready != id {
            return Err(Fault::not_found(format!(
                "snapshot_chunk: backup {id} was replaced by backup {ready}: take another with snapshot"
            )));
        }
        let len = encoded.bytes.len();
        if offset > len {
            return Err(Fault::bad_request(format!(
                "snapshot_chunk: offset {offset} is past the backup's end ({len} bytes)"
            )));
        }
        *touched = now;
        let end = len.min(offset.saturating_add(chunk_bytes));
        Ok(Chunk {
            offset,
            data: base64::engine::general_purpose::STANDARD.encode(&encoded.bytes[offset..end]),
            eof: end == len,
        })
    }

    /// Drop a finished backup nobody asked anything of for [`IDLE`].
    pub fn expire(&mut self, now: Instant) {
        if let Some(Backup::Ready { touched, .. }) = &self.current {
            if now.duration_since(*touched) > IDLE {
                self.current = None;
            }
        }
    }
}

/// The chunk size for replies of at most `max_reply_bytes`: base64 takes
/// 4 bytes for 3, and the JSON around it a few dozen.
pub fn chunk_bytes(max_reply_bytes: usize) -> usize {
    (max_reply_bytes.saturating_sub(256) / 4 * 3).clamp(256, MAX_CHUNK)
}

/// Encode `snapshot` as a snapshot file (the server took it; this runs on
/// another thread).
pub fn encode(snapshot: &Snapshot) -> Result<Encoded, String> {
    let payload = snapshot
        .encode()
        .map_err(|e| format!("the registry could not be encoded: {e}"))?;
    let bytes = snapshot::file_bytes(&payload);
    drop(payload);
    Ok(Encoded {
        sha256: hex(&Sha256::digest(&bytes)),
        bytes,
        last: snapshot.last,
        revision: snapshot.revision,
        records: snapshot.records.len(),
        tokens: snapshot.tokens.len(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The args of `snapshot_chunk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkArgs {
    pub id: u64,
    pub offset: usize,
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub records: usize,
    pub tokens: usize,
    pub revision: u64,
    pub index: u64,
    /// Where the data dir's former contents went (`--force`).
    pub moved_aside: Option<std::path::PathBuf>,
}

/// `pycomd --restore FILE --data-dir DIR`: verify the snapshot in `file`
/// and make `data_dir` hold it, as pycomd opens a data dir. A damaged file
/// is refused; so is a data dir with anything in it, unless `force`, which
/// moves what it holds into `DIR/replaced-<unix time>/` (a pycomd running
/// on it is refused by its lock).
pub fn restore(file: &Path, data_dir: &Path, force: bool) -> Result<Restored, String> {
    let bytes =
        std::fs::read(file).map_err(|e| format!("cannot read the snapshot {}: {e}", file.display()))?;
    let data = snapshot::verify(&bytes).map_err(|what| {
        format!(
            "{} is not a usable pycomd snapshot: it {what}. Nothing was restored; take the backup again (pycomctl snapshot save), or use an older one",
            file.display()
        )
    })?;
    drop(bytes);
    let entries: Vec<std::path::PathBuf> = match std::fs::read_dir(data_dir) {
        Ok(dir) => dir
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot read the data dir {}: {e}", data_dir.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read the data dir {}: {e}", data_dir.display())),
    };
    // An empty LOCK file alone is what a data dir pycomd never wrote to holds.
    let held: Vec<&std::path::PathBuf> = entries
        .iter()
        .filter(|p| p.file_name().is_none_or(|n| n != "LOCK"))
        .collect();
    if !held.is_empty() && !force {
        return Err(format!(
            "the data dir {} is not empty ({} entries, e.g. {}): restoring would replace the registry it holds. Restore into an empty or new directory, or give --force to move what it holds into {}/replaced-<time>/",
            data_dir.display(),
            held.len(),
            held[0].display(),
            data_dir.display()
        ));
    }
    let lock = crate::log::recovery::lock_data_dir(data_dir)?;
    let mut moved_aside = None;
    if !held.is_empty() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let aside = data_dir.join(format!("replaced-{secs}"));
        std::fs::create_dir(&aside).map_err(|e| format!("cannot create {}: {e}", aside.display()))?;
        for path in &held {
            let Some(name) = path.file_name() else { continue };
            std::fs::rename(path, aside.join(name))
                .map_err(|e| format!("cannot move {} into {}: {e}", path.display(), aside.display()))?;
        }
        moved_aside = Some(aside);
    }
    // The entry a single node's log goes on from: the snapshot's index, as
    // the local log numbers entries (term 1, node 0), whatever log it came
    // from (a cluster's leader's).
    let index = data.last.index;
    let (state, _) = data.into_state();
    let snap = Snapshot::of(&state, crate::log::wal::local_id(index));
    let restored = Restored {
        records: state.len(),
        tokens: state.tokens().len(),
        revision: state.revision(),
        index,
        moved_aside,
    };
    drop(state);
    snapshot::write(data_dir, &snap, true)
        .map_err(|e| format!("cannot write the snapshot into {}: {e}", data_dir.display()))?;
    drop(snap);
    drop(lock);
    // Open it as pycomd will: what is restored is what pycomd reads.
    let opened = crate::log::recovery::open(
        data_dir,
        &crate::log::recovery::Options {
            segment_bytes: crate::config::Settings::default().log_segment_bytes,
            sync: true,
            recover: false,
        },
    )?;
    if opened.state.len() != restored.records || opened.state.revision() != restored.revision {
        return Err(format!(
            "the restored data dir {} reads back {} records at revision {}, not {} at {}",
            data_dir.display(),
            opened.state.len(),
            opened.state.revision(),
            restored.records,
            restored.revision
        ));
    }
    Ok(restored)
}
