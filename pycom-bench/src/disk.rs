//! `--op fdatasync`: the disk's own cost of a durable append, the floor
//! under every durable `register`. One thread appends a small record (one
//! log entry's worth) to a file and calls `File::sync_data` (fdatasync)
//! after each, for the run's duration. No nameserver, no ZeroMQ, and so no
//! raw echo baseline: this measures the filesystem and the device.

use crate::load::Measured;
use std::fs::OpenOptions;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file goes back to empty (untimed) when it reaches this size, so a
/// fast device or a RAM-backed filesystem cannot fill up during a run.
const MAX_FILE: u64 = 64 << 20;

pub struct Fdatasync<'a> {
    /// Directory to write in: on the filesystem being measured.
    pub dir: &'a Path,
    /// Bytes per record (each record is one `write` followed by one `fdatasync`).
    pub record_bytes: usize,
    pub duration: Duration,
    /// Show a progress line on stderr.
    pub progress: bool,
}

/// Removes the scratch file however the run ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Fdatasync<'_> {
    /// Where the records go: a fresh file in `dir`, removed afterwards.
    pub fn path(&self) -> PathBuf {
        self.dir
            .join(format!(".pycom-bench-fdatasync.{}", std::process::id()))
    }

    /// Each timed sample is one `write` of a record at the end of the file
    /// and the `fdatasync` after it, as a write-ahead log commits an entry.
    pub fn run(&self) -> Result<Measured, String> {
        let path = self.path();
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let _scratch = Scratch(path.clone());
        let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", path.display());
        // The file's creation is not part of what is measured.
        file.sync_all().map_err(|e| fail("cannot sync", e))?;
        let mut record = vec![b'.'; self.record_bytes.max(1)];
        if let Some(last) = record.last_mut() {
            *last = b'\n';
        }
        let mut m = Measured::default();
        let mut size = 0u64;
        let started = Instant::now();
        let deadline = started + self.duration;
        let mut next_progress = started + Duration::from_millis(500);
        let mut last_count = 0u64;
        let mut seq = 0u64;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self.progress && now >= next_progress {
                eprint!(
                    "\r  {:<10} {:>8.1} s  {:>10} syncs    {:>9.0} /s      ",
                    "fdatasync",
                    started.elapsed().as_secs_f64(),
                    m.ok,
                    (m.ok - last_count) as f64 * 2.0
                );
                last_count = m.ok;
                next_progress += Duration::from_millis(500);
            }
            if size + record.len() as u64 > MAX_FILE {
                file.set_len(0).map_err(|e| fail("cannot truncate", e))?;
                file.rewind().map_err(|e| fail("cannot rewind", e))?;
                file.sync_all().map_err(|e| fail("cannot sync", e))?;
                size = 0;
            }
            // Vary the record a little, as real entries do.
            let stamp = seq.to_le_bytes();
            let n = stamp.len().min(record.len().saturating_sub(1));
            record[..n].copy_from_slice(&stamp[..n]);
            let sent = Instant::now();
            file.write_all(&record).map_err(|e| fail("cannot write", e))?;
            file.sync_data().map_err(|e| fail("cannot fdatasync", e))?;
            let took = sent.elapsed();
            size += record.len() as u64;
            seq += 1;
            m.ok += 1;
            m.latencies_us.push(took.as_micros().min(u32::MAX as u128) as u32);
        }
        if self.progress {
            eprint!("\r{:80}\r", "");
        }
        m.elapsed = started.elapsed();
        drop(file);
        Ok(m)
    }
}

/// Refuses a directory that does not exist rather than creating one
/// somewhere unintended (another filesystem, say).
pub fn check_dir(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("--dir {}: not a directory", dir.display())),
        Err(e) => Err(format!("--dir {}: {e}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_and_cleans_up() {
        let dir = std::env::temp_dir();
        let f = Fdatasync {
            dir: &dir,
            record_bytes: 200,
            duration: Duration::from_millis(200),
            progress: false,
        };
        let m = f.run().unwrap();
        assert!(m.ok > 0);
        assert_eq!(m.latencies_us.len() as u64, m.ok);
        assert!(!f.path().exists(), "the scratch file is removed");
    }
}
