//! Raft's state machine as a proxy to the server thread, which owns the
//! registry state: `apply` posts the entries to the server's mailbox
//! (`Committed`, in log order); a snapshot is asked of the server (the
//! mailbox is in order, so its answer covers exactly what was posted
//! before) and kept in `raft/snapshot`; a snapshot from the leader is
//! handed to the server, which replaces its state, before Raft goes on.
//!
//! `raft/snapshot`: the magic [`MAGIC`], the payload's length (u64) and
//! crc32c (u32), little-endian, then the payload (JSON: the Raft metadata
//! and the state as `log::snapshot` writes it); written to a temporary
//! file, fsync'ed and renamed, so it is whole or absent.

use super::{log_id, post, RaftLogId, Request, Response, SharedPoster, Snapshot, SnapshotData, SnapshotMeta};
use super::{StoredMembership, TypeConfig};
use crate::log::wal::sync_dir;
use crate::log::Committed;
use crate::mailbox::Event;
use futures_util::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const MAGIC: &[u8; 8] = b"PYCRSNP1";
const HEADER: usize = 8 + 8 + 4;

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    /// The state, as `log::snapshot::SnapshotData` JSON.
    data: Box<serde_json::value::RawValue>,
}

struct Inner {
    applied: Option<RaftLogId>,
    membership: StoredMembership,
    current: Option<(SnapshotMeta, SnapshotData)>,
}

/// The snapshot the state machine started from, for the server's state.
pub struct Opened {
    pub state: crate::registry::State,
    pub applied: Option<RaftLogId>,
}

#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Inner>>,
    poster: SharedPoster,
    path: PathBuf,
}

impl StateMachine {
    /// Open with the snapshot in `dir`, if any. Damage stops pycomd.
    pub fn open(dir: &Path, poster: SharedPoster) -> Result<(StateMachine, Opened), String> {
        let path = dir.join("snapshot");
        let loaded = read(&path)?;
        let (state, applied, membership, current) = match loaded {
            Some((meta, data)) => {
                let parsed: crate::log::snapshot::SnapshotData = serde_json::from_slice(&data)
                    .map_err(|e| format!("{}: the state does not parse: {e}", path.display()))?;
                let (state, _) = parsed.into_state();
                (
                    state,
                    meta.last_log_id,
                    meta.last_membership.clone(),
                    Some((meta, data)),
                )
            }
            None => (
                crate::registry::State::default(),
                None,
                StoredMembership::default(),
                None,
            ),
        };
        let inner = Inner {
            applied,
            membership,
            current,
        };
        Ok((
            StateMachine {
                inner: Arc::new(Mutex::new(inner)),
                poster,
                path,
            },
            Opened { state, applied },
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
        let raw = std::str::from_utf8(data)
            .ok()
            .and_then(|s| serde_json::value::RawValue::from_string(s.to_string()).ok())
            .ok_or_else(|| io::Error::other("a snapshot's state is not JSON"))?;
        let payload = serde_json::to_vec(&SnapshotFile {
            meta: meta.clone(),
            data: raw,
        })?;
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(&(payload.len() as u64).to_le_bytes())?;
        file.write_all(&crc32c::crc32c(&payload).to_le_bytes())?;
        file.write_all(&payload)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        match self.path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        }
    }
}

/// The snapshot file's metadata and state bytes; `None` when there is none.
fn read(path: &Path) -> Result<Option<(SnapshotMeta, SnapshotData)>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let damaged = |why: &str| {
        format!("{} is damaged: {why}; restore it from a backup, or remove the node's data dir and add it to the cluster again", path.display())
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(damaged("it does not start with a snapshot header"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(bytes[16..20].try_into().unwrap_or_default());
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return Err(damaged(&format!(
            "{} bytes of payload, the header says {len}",
            payload.len()
        )));
    }
    if crc32c::crc32c(payload) != crc {
        return Err(damaged("its checksum does not match"));
    }
    let file: SnapshotFile = serde_json::from_slice(payload).map_err(|e| damaged(&e.to_string()))?;
    Ok(Some((file.meta, file.data.get().as_bytes().to_vec())))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        // What was applied is what was posted (no await between the two in
        // `apply`), and the server answers after everything posted before.
        let meta = {
            let inner = self.lock();
            SnapshotMeta {
                last_log_id: inner.applied,
                last_membership: inner.membership.clone(),
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        post(&self.poster, Event::SnapshotWanted(tx));
        let data = rx
            .await
            .map_err(|_| io::Error::other("the server thread is gone"))?;
        self.persist(&meta, &data)?;
        self.lock().current = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<RaftLogId>, StoredMembership), io::Error> {
        let inner = self.lock();
        Ok((inner.applied, inner.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut batch = Vec::new();
        let mut last = None;
        while let Some((entry, responder)) = entries.try_next().await? {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Normal(Request {
                    origin,
                    boot,
                    seq,
                    command,
                }) => batch.push(Committed {
                    log_id: log_id(&entry.log_id),
                    command,
                    reply: None,
                    request: Some((origin, boot, seq)),
                }),
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    self.lock().membership = stored;
                }
                EntryPayload::Blank => {}
            }
            if let Some(responder) = responder {
                responder.send(Response {});
            }
        }
        if let Some(last) = last {
            self.lock().applied = Some(last);
            if !batch.is_empty() {
                post(&self.poster, Event::Committed(batch));
            }
            post(&self.poster, Event::Applied(log_id(&last)));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let parsed: crate::log::snapshot::SnapshotData = serde_json::from_slice(&snapshot)
            .map_err(|e| io::Error::other(format!("a snapshot from the leader does not parse: {e}")))?;
        self.persist(meta, &snapshot)?;
        let (ack, done) = tokio::sync::oneshot::channel();
        let (state, _) = parsed.into_state();
        let last = meta.last_log_id.as_ref().map(log_id).unwrap_or_default();
        post(&self.poster, Event::InstallSnapshot { state, last, ack });
        done.await
            .map_err(|_| io::Error::other("the server thread is gone"))?;
        let mut inner = self.lock();
        inner.applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.current = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let inner = self.lock();
        Ok(inner
            .current
            .clone()
            .map(|(meta, data)| Snapshot { meta, snapshot: data }))
    }
}
