//! Raft's log storage: the entries in memory (a few snapshot intervals at
//! most), and on disk an append-only file of operations (`raft/log`)
//! written by one writer thread with group commit: every operation
//! waiting, one write, one fdatasync, then each is reported done. One
//! writer keeps them in the order issued, as openraft requires.
//!
//! Each operation is a frame of `log::wal` (length, crc32c, JSON), so a
//! torn frame at the end (a crash mid-write, never acknowledged) is cut
//! off and anything else damaged stops pycomd naming the byte. A purge
//! (after a snapshot) rewrites the file with what is left, so it stays a
//! few snapshot intervals long.

use super::{Entry, RaftLogId, TypeConfig, Vote};
use crate::log::wal::{encode_frame, read_frame, sync_dir, ReadFrame};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use tracing::{error, warn};

#[derive(Serialize, Deserialize)]
enum Op {
    Append(Entry),
    TruncateAfter(Option<RaftLogId>),
    Purge(RaftLogId),
    Vote(Vote),
    Committed(Option<RaftLogId>),
}

#[derive(Default)]
struct Inner {
    log: BTreeMap<u64, Entry>,
    last_purged: Option<RaftLogId>,
    vote: Option<Vote>,
    committed: Option<RaftLogId>,
}

impl Inner {
    fn replay(&mut self, op: Op) {
        match op {
            Op::Append(e) => {
                self.log.insert(e.index(), e);
            }
            Op::TruncateAfter(id) => self.truncate_after(id.as_ref()),
            Op::Purge(id) => self.purge(&id),
            Op::Vote(v) => self.vote = Some(v),
            Op::Committed(c) => self.committed = c,
        }
    }

    fn truncate_after(&mut self, id: Option<&RaftLogId>) {
        let from = id.map_or(0, |id| id.index + 1);
        self.log.split_off(&from);
    }

    fn purge(&mut self, id: &RaftLogId) {
        self.log = self.log.split_off(&(id.index + 1));
        self.last_purged = Some(*id);
    }

    /// Everything still needed, as operations: what a rewrite keeps.
    fn as_ops(&self) -> Vec<Op> {
        let mut ops = Vec::with_capacity(self.log.len() + 3);
        ops.extend(self.last_purged.map(Op::Purge));
        ops.extend(self.vote.map(Op::Vote));
        ops.push(Op::Committed(self.committed));
        ops.extend(self.log.values().cloned().map(Op::Append));
        ops
    }
}

enum Done {
    /// `append`: openraft's callback, once on disk.
    Flushed(IOFlushed<TypeConfig>),
    /// vote, truncate, purge: the caller waits for this.
    Ack(tokio::sync::oneshot::Sender<io::Result<()>>),
    /// `save_committed`: nobody waits.
    Nothing,
}

enum Job {
    Write {
        bytes: Vec<u8>,
        done: Done,
    },
    /// After a purge: write the file anew with what is left.
    Rewrite {
        bytes: Vec<u8>,
        done: tokio::sync::oneshot::Sender<io::Result<()>>,
    },
}

/// Shared by openraft's storage and its log readers.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    writer: mpsc::Sender<Job>,
}

fn encode(op: &Op, out: &mut Vec<u8>) {
    // Entries and ids always serialize.
    let payload = serde_json::to_vec(op).unwrap_or_default();
    encode_frame(out, &payload);
}

impl LogStore {
    /// Open `dir/log` (created if missing), replaying it; a damaged frame
    /// that is not the torn end stops pycomd.
    pub fn open(dir: &Path, sync: bool) -> Result<LogStore, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("log");
        let mut inner = Inner::default();
        let mut valid = 0u64;
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let mut at = 0usize;
            loop {
                match read_frame(&bytes, at) {
                    ReadFrame::Whole(payload, next) => {
                        let op: Op = serde_json::from_slice(payload).map_err(|e| {
                            format!("{} is damaged at byte {at}: an operation does not parse: {e}", path.display())
                        })?;
                        inner.replay(op);
                        at = next;
                    }
                    ReadFrame::End => break,
                    ReadFrame::Torn => {
                        warn!(
                            file = %path.display(),
                            byte = at,
                            "the Raft log ends in a torn write (a crash while writing it, never acknowledged); cut off"
                        );
                        break;
                    }
                    ReadFrame::Damaged(why) => {
                        return Err(format!(
                            "{} is damaged at byte {at}: {why}; restore the node from a backup, or remove its data dir and add it to the cluster again",
                            path.display()
                        ))
                    }
                }
            }
            valid = at as u64;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        file.set_len(valid)
            .map_err(|e| format!("cannot cut {} to its valid part: {e}", path.display()))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let dir = dir.to_path_buf();
        std::thread::Builder::new()
            .name("pycomd-raft-log".into())
            .spawn(move || writer(dir, path, file, valid, rx, sync))
            .map_err(|e| format!("cannot start the Raft log writer: {e}"))?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(inner)),
            writer: tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write_and_wait(&self, op: &Op) -> io::Result<()> {
        let mut bytes = Vec::new();
        encode(op, &mut bytes);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer
            .send(Job::Write {
                bytes,
                done: Done::Ack(tx),
            })
            .map_err(|_| io::Error::other("the Raft log writer is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("the Raft log writer is gone"))?
    }
}

/// Group commit: every job waiting, one write each, one fdatasync for all,
/// then all reported, in order. A rewrite (after a purge) first settles
/// what came before it.
fn writer(dir: PathBuf, path: PathBuf, mut file: File, mut end: u64, jobs: mpsc::Receiver<Job>, sync: bool) {
    use std::io::{Seek, SeekFrom};
    let mut waiting: Vec<(io::Result<()>, Done)> = Vec::new();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while let Ok(job) = jobs.try_recv() {
            batch.push(job);
        }
        for job in batch {
            match job {
                Job::Write { bytes, done } => {
                    let result = file
                        .seek(SeekFrom::Start(end))
                        .and_then(|_| file.write_all(&bytes))
                        .map(|()| end += bytes.len() as u64);
                    waiting.push((result, done));
                }
                Job::Rewrite { bytes, done } => {
                    settle(&mut file, &mut waiting, sync);
                    let result = rewrite(&dir, &path, &bytes, sync).map(|f| {
                        file = f;
                        end = bytes.len() as u64;
                    });
                    if let Err(e) = &result {
                        error!("cannot rewrite the Raft log after a purge: {e}");
                    }
                    let _ = done.send(result);
                }
            }
        }
        settle(&mut file, &mut waiting, sync);
    }
}

/// One fdatasync for the writes waiting, then their reports.
fn settle(file: &mut File, waiting: &mut Vec<(io::Result<()>, Done)>, sync: bool) {
    if waiting.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let synced = if sync { file.sync_data() } else { Ok(()) };
    if let Err(e) = &synced {
        error!("the Raft log could not be made durable: {e}");
    }
    let written = waiting.iter().find_map(|(r, _)| r.as_ref().err());
    let outcome = match (written, &synced) {
        (Some(e), _) | (None, Err(e)) => Err(e as &dyn std::fmt::Display),
        (None, Ok(())) => Ok(()),
    };
    crate::health::STORE.synced(outcome, started.elapsed());
    for (result, done) in waiting.drain(..) {
        let result = match (&result, &synced) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(e), _) | (_, Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match done {
            Done::Flushed(callback) => callback.io_completed(result),
            Done::Ack(tx) => {
                let _ = tx.send(result);
            }
            Done::Nothing => {}
        }
    }
}

fn rewrite(dir: &Path, path: &Path, bytes: &[u8], sync: bool) -> io::Result<File> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    if sync {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if sync {
        sync_dir(dir)?;
    }
    OpenOptions::new().write(true).open(path)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.lock().log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock();
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.lock().vote = Some(*vote);
        self.write_and_wait(&Op::Vote(*vote)).await
    }

    async fn save_committed(&mut self, committed: Option<RaftLogId>) -> Result<(), io::Error> {
        self.lock().committed = committed;
        let mut bytes = Vec::new();
        encode(&Op::Committed(committed), &mut bytes);
        // Kept in order by the one writer; losing the newest is harmless
        // (it is learnt again from the leader), so nobody waits.
        let _ = self.writer.send(Job::Write {
            bytes,
            done: Done::Nothing,
        });
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<RaftLogId>, io::Error> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut bytes = Vec::new();
        {
            let mut inner = self.lock();
            for entry in entries {
                encode(&Op::Append(entry.clone()), &mut bytes);
                inner.log.insert(entry.index(), entry);
            }
        }
        self.writer
            .send(Job::Write {
                bytes,
                done: Done::Flushed(callback),
            })
            .map_err(|_| io::Error::other("the Raft log writer is gone"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<RaftLogId>) -> Result<(), io::Error> {
        self.lock().truncate_after(last_log_id.as_ref());
        self.write_and_wait(&Op::TruncateAfter(last_log_id)).await
    }

    async fn purge(&mut self, log_id: RaftLogId) -> Result<(), io::Error> {
        let bytes = {
            let mut inner = self.lock();
            inner.purge(&log_id);
            let mut bytes = Vec::new();
            for op in inner.as_ops() {
                encode(&op, &mut bytes);
            }
            bytes
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer
            .send(Job::Rewrite { bytes, done: tx })
            .map_err(|_| io::Error::other("the Raft log writer is gone"))?;
        rx.await
            .map_err(|_| io::Error::other("the Raft log writer is gone"))?
    }
}
