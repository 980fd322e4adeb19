//! The log on this machine: one writer thread, group commit, a real
//! fdatasync before anything is acknowledged; snapshots on a thread of
//! their own.
//!
//! The server queues [`Proposal`]s; the writer takes every proposal
//! waiting (up to [`MAX_BATCH`]), gives them the next indices, appends them
//! as one write and makes them durable with one fdatasync, so many writers
//! share one sync. Only then does it hand them back to the server as
//! committed; a batch that fails (disk full, I/O error) is cut off the
//! segment again and handed back as not durable. Either way the server
//! hears in log order.
//!
//! Snapshots: once the log has grown by `snapshot_log_bytes` (or by the
//! size of the last snapshot, if larger) since the last one, the writer
//! tells the server (`SnapshotDue`), which hands back the state as of that
//! entry, its records shared, not copied (a few milliseconds for a million);
//! the compactor thread writes it, keeps the newest two, and the writer
//! removes the log segments before the older one.

use super::recovery::LogFiles;
use super::snapshot::{self, Snapshot};
use super::wal::{self, local_id};
use super::{Committed, Entry, Log, LogStats, Payload, Proposal, Refused};
use crate::mailbox::{Event, Poster};
use pycom_client::proto::Fault;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::{debug, error, info, warn};

/// Most proposals waiting for the disk before writes get code 7.
pub const QUEUE_CAPACITY: usize = 16 * 1024;
/// Most entries written with one fdatasync.
const MAX_BATCH: usize = 4096;

#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub data_dir: PathBuf,
    pub sync: bool,
    /// Log bytes between snapshots (at least; more once the state is larger).
    pub snapshot_log_bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    writes: AtomicU64,
    flushes: AtomicU64,
    errors: AtomicU64,
    last_index: AtomicU64,
    snapshots: AtomicU64,
}

// Nearly every job is a proposal: boxing them would add an allocation per write.
#[allow(clippy::large_enum_variant)]
enum Job {
    Propose(Proposal),
    /// The compactor wrote a snapshot; the log before `index` may go.
    Purge {
        index: u64,
    },
    /// Write what came before, then stop.
    Stop,
}

pub struct LocalLog {
    /// The data dir's lock, held as long as the log is open.
    _lock: std::fs::File,
    /// Snapshots to write, to the compactor thread.
    compact: mpsc::Sender<Snapshot>,
    jobs: Option<SyncSender<Job>>,
    counters: Arc<Counters>,
    writer: Option<JoinHandle<()>>,
}

impl LocalLog {
    /// Start the writer (and compactor) on a verified, opened data dir.
    /// `poster` is the writer's handle on the server's mailbox.
    pub fn start(opened: LogFiles, settings: LocalSettings, poster: Poster) -> Result<LocalLog, String> {
        let counters = Arc::new(Counters::default());
        counters.last_index.store(opened.last.index, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let (compact_tx, compact_rx) = mpsc::channel::<Snapshot>();
        let snapshot_bytes = opened
            .snapshots
            .last()
            .and_then(|(_, p)| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let compactor = Compactor {
            data_dir: settings.data_dir.clone(),
            sync: settings.sync,
            jobs: tx.clone(),
            snapshots: opened.snapshots.clone(),
            counters: counters.clone(),
            last_size: Arc::new(AtomicU64::new(snapshot_bytes)),
        };
        let last_size = compactor.last_size.clone();
        std::thread::Builder::new()
            .name("pycomd-compactor".into())
            .spawn(move || compactor.run(compact_rx))
            .map_err(|e| format!("cannot start the compactor thread: {e}"))?;
        let writer = Writer {
            wal: opened.writer,
            counters: counters.clone(),
            poster,
            since_snapshot: 0,
            snapshot_log_bytes: settings.snapshot_log_bytes,
            last_snapshot_size: last_size,
            buf: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("pycomd-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| format!("cannot start the log thread: {e}"))?;
        Ok(LocalLog {
            _lock: opened.lock,
            compact: compact_tx,
            jobs: Some(tx),
            counters,
            writer: Some(handle),
        })
    }
}

impl Log for LocalLog {
    fn propose(&mut self, proposal: Proposal) -> Result<(), Box<Refused>> {
        let Some(jobs) = &self.jobs else {
            let fault = Fault::unavailable("pycomd is shutting down; retry against its successor");
            return Err(Box::new(Refused { proposal, fault }));
        };
        match jobs.try_send(Job::Propose(proposal)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Job::Propose(p))) => {
                warn!("the log's queue is full ({QUEUE_CAPACITY} writes waiting for the disk); a write was refused");
                let fault = Fault::unavailable(format!(
                    "{}: pycomd has {QUEUE_CAPACITY} writes waiting for the disk (the log's queue is full); nothing was changed, retry shortly",
                    p.command.name()
                ));
                Err(Box::new(Refused { proposal: p, fault }))
            }
            Err(TrySendError::Disconnected(Job::Propose(p))) => {
                error!("the log thread is gone");
                Err(Box::new(Refused {
                    proposal: p,
                    fault: Fault::unavailable("pycomd cannot write its log; nothing was changed"),
                }))
            }
            // try_send hands back the job it was given, a Propose.
            Err(_) => Ok(()),
        }
    }

    fn snapshot(&mut self, snapshot: Snapshot) {
        // The compactor only stops with the process.
        let _ = self.compact.send(snapshot);
    }

    fn close(&mut self) {
        if let Some(jobs) = self.jobs.take() {
            // Blocks only while the queue is full, and the writer is
            // emptying it; it reports LogStopped through the mailbox.
            if jobs.send(Job::Stop).is_err() {
                error!("the log thread is gone");
            }
        }
        // Not joined here: the server thread keeps serving its mailbox meanwhile.
        drop(self.writer.take());
    }

    fn stats(&self) -> LogStats {
        let c = &self.counters;
        LogStats {
            writes: c.writes.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            last_index: c.last_index.load(Ordering::Relaxed),
            snapshots: c.snapshots.load(Ordering::Relaxed),
        }
    }
}

struct Writer {
    wal: wal::Writer,
    counters: Arc<Counters>,
    poster: Poster,
    since_snapshot: u64,
    snapshot_log_bytes: u64,
    last_snapshot_size: Arc<AtomicU64>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Job>) {
        let mut failed_batches = 0u64;
        let mut stop = false;
        while !stop {
            let Ok(first) = rx.recv() else { break };
            let mut batch = Vec::new();
            stop = self.take(first, &mut batch);
            while batch.len() < MAX_BATCH && !stop {
                match rx.try_recv() {
                    Ok(job) => stop = self.take(job, &mut batch),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() && !self.write(batch) {
                failed_batches += 1;
            }
        }
        self.poster.post(Event::LogStopped { failed_batches });
    }

    /// Add a proposal to the batch, or do a purge; true for the last job.
    fn take(&mut self, job: Job, batch: &mut Vec<Proposal>) -> bool {
        match job {
            Job::Propose(p) => batch.push(p),
            Job::Purge { index } => match self.wal.purge_before(index) {
                Ok(0) => {}
                Ok(n) => debug!(segments = n, before = index, "log segments removed"),
                Err(e) => warn!("cannot remove old log segments: {e}"),
            },
            Job::Stop => return true,
        }
        false
    }

    /// Append and sync one batch; hand it back committed or not durable.
    fn write(&mut self, batch: Vec<Proposal>) -> bool {
        self.buf.clear();
        let first = self.wal.next_index();
        let mut ids = Vec::with_capacity(batch.len());
        for (i, p) in batch.iter().enumerate() {
            let entry = Entry {
                log_id: local_id(first + i as u64),
                payload: Payload::Command(p.command.clone()),
            };
            // Serializing plain data into a Vec cannot fail.
            let payload = serde_json::to_vec(&entry).unwrap_or_default();
            wal::encode_frame(&mut self.buf, &payload);
            ids.push(entry.log_id);
        }
        let started = std::time::Instant::now();
        let appended = self.wal.append(&self.buf, batch.len() as u64);
        crate::health::STORE.synced(
            appended
                .as_ref()
                .map(|_| ())
                .map_err(|e| e as &dyn std::fmt::Display),
            started.elapsed(),
        );
        match appended {
            Ok(()) => {
                let n = batch.len() as u64;
                self.counters.writes.fetch_add(n, Ordering::Relaxed);
                self.counters.flushes.fetch_add(1, Ordering::Relaxed);
                self.counters.last_index.store(first + n - 1, Ordering::Relaxed);
                let committed = batch
                    .into_iter()
                    .zip(ids)
                    .map(|(p, log_id)| Committed {
                        log_id,
                        command: p.command,
                        reply: p.reply,
                        request: None,
                    })
                    .collect();
                self.poster.post(Event::Committed(committed));
                self.since_snapshot += self.buf.len() as u64;
                let threshold = self
                    .snapshot_log_bytes
                    .max(self.last_snapshot_size.load(Ordering::Relaxed));
                if self.since_snapshot >= threshold {
                    self.since_snapshot = 0;
                    self.poster.post(Event::SnapshotDue {
                        upto: local_id(first + n - 1),
                    });
                }
                true
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                let error = format!("the log could not be written: {e}");
                error!(writes = batch.len(), "{error}; nothing of the batch was applied");
                self.poster.post(Event::NotDurable {
                    proposals: batch,
                    error,
                    outcome: None,
                });
                false
            }
        }
    }
}

struct Compactor {
    data_dir: PathBuf,
    sync: bool,
    jobs: SyncSender<Job>,
    snapshots: Vec<(u64, PathBuf)>,
    counters: Arc<Counters>,
    last_size: Arc<AtomicU64>,
}

impl Compactor {
    fn run(mut self, rx: Receiver<Snapshot>) {
        while let Ok(mut snapshot) = rx.recv() {
            // Only the newest matters.
            while let Ok(later) = rx.try_recv() {
                snapshot = later;
            }
            if let Err(e) = self.write(snapshot) {
                warn!("cannot write a snapshot (the log keeps growing until one succeeds): {e}");
            }
        }
    }

    fn write(&mut self, snapshot: Snapshot) -> Result<(), String> {
        let started = std::time::Instant::now();
        let last = snapshot.last;
        let (path, size) = snapshot::write(&self.data_dir, &snapshot, self.sync)
            .map_err(|e| format!("writing the snapshot at entry {}: {e}", last.index))?;
        let records = snapshot.records.len();
        drop(snapshot);
        self.snapshots.push((last.index, path));
        self.last_size.store(size, Ordering::Relaxed);
        self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
        info!(
            index = last.index,
            records,
            bytes = size,
            ms = started.elapsed().as_millis() as u64,
            "snapshot written"
        );
        // Keep the newest two, and the log since the older one.
        while self.snapshots.len() > 2 {
            let (_, old) = self.snapshots.remove(0);
            if let Err(e) = std::fs::remove_file(&old) {
                warn!("cannot remove the old snapshot {}: {e}", old.display());
            }
        }
        let keep_from = self.snapshots[0].0 + 1;
        let _ = self.jobs.send(Job::Purge { index: keep_from });
        Ok(())
    }
}
