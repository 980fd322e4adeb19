//! The durable copy of the registry, in sled, written by one thread.
//!
//! The server thread queues [`StoreJob`]s; this thread takes every job that
//! is waiting, writes them as one sled batch, flushes once (group commit:
//! one fsync serves many writers) and only then sends their replies back
//! to the server over the events socket. So no register is acknowledged
//! before it is on disk, and `kill -9` after an ack loses nothing.

use super::record::Record;
use pycom_client::proto::{self, Fault};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use tracing::{error, warn};

/// Most jobs waiting for the store before writes get code 7 (retry later).
pub const QUEUE_CAPACITY: usize = 16 * 1024;
/// Most jobs written in one batch.
const MAX_BATCH: usize = 4096;
/// First frame of a reply the store hands back to the server.
pub const EVENT_ACK: &[u8] = b"ACK";
/// Sent once the store has written everything and stopped.
pub const EVENT_STORE_DONE: &[u8] = b"STORE_DONE";

#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    Put(Record),
    Delete(String),
}

/// A reply held back until its write is on disk.
#[derive(Debug)]
pub struct PendingReply {
    /// ROUTER envelope: identity frames and the empty delimiter, if any.
    pub envelope: Vec<Vec<u8>>,
    /// The response body to send once the write is flushed.
    pub ok_body: Vec<u8>,
}

#[derive(Debug)]
pub struct StoreJob {
    pub op: StoreOp,
    pub reply: Option<PendingReply>,
}

pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    counters: Arc<StoreCounters>,
}

/// What the store has done, for `stat`: with many writers, `flushes` stays
/// well below `writes` (group commit).
#[derive(Debug, Default)]
pub struct StoreCounters {
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            // The registry is read once at start-up and then only written:
            // sled's default 1 GiB page cache would only hold memory.
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(|e| {
                format!(
                    "cannot open the registry in {}: {e} (is another pycomd using it?)",
                    dir.display()
                )
            })?;
        let tree = db
            .open_tree("records")
            .map_err(|e| format!("cannot open the records tree in {}: {e}", dir.display()))?;
        Ok(Store {
            db,
            tree,
            counters: Arc::default(),
        })
    }

    pub fn counters(&self) -> Arc<StoreCounters> {
        self.counters.clone()
    }

    /// Every stored record. A record that does not decode is logged and skipped.
    pub fn load(&self) -> Result<Vec<Record>, String> {
        let mut records = Vec::with_capacity(self.tree.len());
        for item in self.tree.iter() {
            let (key, value) = item.map_err(|e| format!("cannot read the registry: {e}"))?;
            match serde_json::from_slice::<Record>(&value) {
                Ok(record) => records.push(record),
                Err(e) => {
                    warn!(key = %String::from_utf8_lossy(&key), "skipping a stored record that does not decode: {e}")
                }
            }
        }
        Ok(records)
    }

    /// Start the writer thread. Replies go to `events` (a PUSH socket
    /// connected to the server's events endpoint).
    pub fn spawn(self, events: zmq::Socket) -> (SyncSender<StoreJob>, JoinHandle<()>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CAPACITY);
        let handle = std::thread::Builder::new()
            .name("pycomd-store".into())
            .spawn(move || self.run(rx, events))
            .unwrap_or_else(|e| panic!("cannot start the store thread: {e}"));
        (tx, handle)
    }

    fn run(self, rx: Receiver<StoreJob>, events: zmq::Socket) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let outcome = self.write(&jobs);
            if let Err(e) = &outcome {
                error!(
                    "registry write failed, {} change(s) not acknowledged: {e}",
                    jobs.len()
                );
            }
            for job in jobs {
                let Some(reply) = job.reply else { continue };
                let body = match &outcome {
                    Ok(()) => reply.ok_body,
                    Err(e) => proto::encode_fault(
                        &Fault::unavailable(format!("the registry could not be written: {e}")),
                        None,
                    ),
                };
                let mut frames: Vec<&[u8]> = Vec::with_capacity(reply.envelope.len() + 3);
                frames.push(EVENT_ACK);
                frames.extend(reply.envelope.iter().map(Vec::as_slice));
                frames.push(proto::STATUS_OK);
                frames.push(&body);
                if let Err(e) = events.send_multipart(frames, 0) {
                    error!("cannot hand a reply back to the server: {e}");
                }
            }
        }
        if let Err(e) = self.db.flush() {
            error!("final flush of the registry failed: {e}");
        }
        if let Err(e) = events.send(EVENT_STORE_DONE, 0) {
            error!("cannot tell the server the store stopped: {e}");
        }
    }

    fn write(&self, jobs: &[StoreJob]) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        for job in jobs {
            match &job.op {
                StoreOp::Put(record) => {
                    let value = serde_json::to_vec(record).map_err(|e| e.to_string())?;
                    batch.insert(record.service.as_bytes(), value);
                }
                StoreOp::Delete(service) => batch.remove(service.as_bytes()),
            }
        }
        self.tree.apply_batch(batch).map_err(|e| e.to_string())?;
        self.db.flush().map_err(|e| e.to_string())?;
        self.counters
            .writes
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
