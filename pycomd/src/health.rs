//! What the log writers and the prober report for `/metrics` and `/ready`,
//! kept in process-wide atomics: they are written by the threads that do
//! the work (the local log's writer, the Raft log's writer, the prober),
//! once per batch or probe, and read by the HTTP thread.
//!
//! `/ready` needs to know that the store takes writes. The last write
//! says so; when no write came for [`PROBE_IDLE`], [`spawn_write_probe`]
//! writes and fdatasyncs a small file in the data dir, removed again, as a
//! write of the log would (a full disk or a read-only filesystem fails it).

use crate::metrics::{bucket_of, BUCKETS};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// After this long without a write, the write probe checks the disk.
pub const PROBE_IDLE: Duration = Duration::from_secs(5);
/// Bytes the write probe writes: a block, which a full disk cannot give.
const PROBE_BYTES: usize = 4096;
/// The write probe's file in the data dir.
pub const PROBE_FILE: &str = "ready-probe.tmp";

/// The store's writes: syncs, their latency, errors, the last outcome.
pub struct Store {
    syncs: AtomicU64,
    errors: AtomicU64,
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    /// The last write (or write probe) succeeded.
    last_ok: AtomicBool,
    /// The last write's error, for `/ready`'s body.
    last_error: std::sync::Mutex<String>,
    /// When the last write (or probe) was done: ms since [`epoch`].
    last_at_ms: AtomicU64,
}

/// A copy of [`Store`]'s counters.
#[derive(Debug, Clone, Default)]
pub struct StoreNumbers {
    pub syncs: u64,
    pub errors: u64,
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum_ns: u64,
}

pub static STORE: Store = Store {
    syncs: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
    sum_ns: AtomicU64::new(0),
    last_ok: AtomicBool::new(true),
    last_error: std::sync::Mutex::new(String::new()),
    last_at_ms: AtomicU64::new(0),
};

/// The probes of lease-less records.
pub struct Probes {
    answered: AtomicU64,
    missed: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ProbeNumbers {
    pub answered: u64,
    pub missed: u64,
}

pub static PROBES: Probes = Probes {
    answered: AtomicU64::new(0),
    missed: AtomicU64::new(0),
};

impl Probes {
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn missed(&self) {
        self.missed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> ProbeNumbers {
        ProbeNumbers {
            answered: self.answered.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
        }
    }
}

/// A fixed point in this process's life for [`Store::last_at_ms`].
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Store {
    /// One batch written and synced (or not), taking `took`.
    pub fn synced(&self, result: Result<(), &dyn std::fmt::Display>, took: Duration) {
        match result {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                self.counts[bucket_of(took)].fetch_add(1, Ordering::Relaxed);
                self.sum_ns.fetch_add(
                    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                self.last_ok.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = self.last_error.lock() {
                    *last = e.to_string();
                }
                self.last_ok.store(false, Ordering::Relaxed);
            }
        }
        self.last_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The write probe's outcome: counts for readiness, not as a sync.
    fn probed(&self, result: std::io::Result<()>) {
        match result {
            Ok(()) => self.last_ok.store(true, Ordering::Relaxed),
            Err(e) => {
                if let Ok(mut last) = self.last_error.lock() {
                    *last = format!("the write probe failed: {e}");
                }
                self.last_ok.store(false, Ordering::Relaxed);
            }
        }
        self.last_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the last write (or probe) succeeded; if not, why.
    pub fn ready(&self) -> Result<(), String> {
        if self.last_ok.load(Ordering::Relaxed) {
            return Ok(());
        }
        let why = self.last_error.lock().map(|e| e.clone()).unwrap_or_default();
        Err(format!("the store's last write failed: {why}"))
    }

    pub fn read(&self) -> StoreNumbers {
        let mut counts = [0; BUCKETS.len() + 1];
        for (n, c) in counts.iter_mut().zip(&self.counts) {
            *n = c.load(Ordering::Relaxed);
        }
        StoreNumbers {
            syncs: self.syncs.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            counts,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// Write, fdatasync and remove the probe file.
fn probe(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let written = std::fs::File::create(path).and_then(|mut file| {
        file.write_all(&[0u8; PROBE_BYTES])?;
        file.sync_data()
    });
    // Removed whatever happened: it must not hold space for the next probe.
    let removed = std::fs::remove_file(path);
    written.and(removed)
}

/// The idle write probe's thread: every second, if nothing was written for
/// [`PROBE_IDLE`], probe the data dir.
pub fn spawn_write_probe(data_dir: PathBuf) -> Result<(), String> {
    let path = data_dir.join(PROBE_FILE);
    let _ = epoch();
    std::thread::Builder::new()
        .name("pycomd-health".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let idle = now_ms().saturating_sub(STORE.last_at_ms.load(Ordering::Relaxed));
            if idle >= PROBE_IDLE.as_millis() as u64 {
                STORE.probed(probe(&path));
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the write probe's thread: {e}"))
}
