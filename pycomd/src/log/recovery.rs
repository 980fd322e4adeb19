//! Opening the data dir: verify every snapshot and log frame it will use,
//! rebuild the state (newest good snapshot, then the log after it), and only
//! then open the log for writing.
//!
//! Damage is never repaired silently and damaged files are never written:
//! pycomd refuses to start with a message naming the file, the place, what
//! is wrong and what `--recover` would do. With `--recover` it first copies
//! the damaged files to `damaged-<unix time>/` in the data dir, then sets
//! aside a damaged snapshot (rebuilding from the older one and the log) or
//! cuts the log before the damaged frame, and says how many acknowledged
//! changes that dropped.

use super::snapshot;
use super::wal::{self, Tail};
use super::{LogId, Payload};
use crate::registry::State;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::{info, warn};

/// How to open the log.
#[derive(Debug, Clone)]
pub struct Options {
    pub segment_bytes: u64,
    pub sync: bool,
    /// Repair damage (keeping a copy) instead of refusing to start.
    pub recover: bool,
}

/// A data dir, verified and read: the state, and the files the log goes on with.
pub struct Opened {
    pub state: State,
    pub files: LogFiles,
}

/// The log's files, open for writing.
pub struct LogFiles {
    /// The newest entry the state includes.
    pub last: LogId,
    pub writer: wal::Writer,
    /// The snapshots kept, oldest first.
    pub snapshots: Vec<(u64, PathBuf)>,
    /// Held while the log is open: a second pycomd on the same dir is refused.
    pub lock: File,
}

/// Take the data dir's LOCK: a second pycomd on the same dir is refused.
pub fn lock_data_dir(data_dir: &Path) -> Result<File, String> {
    let dir_err = |e: std::io::Error| format!("cannot use the data dir {}: {e}", data_dir.display());
    create_dir(data_dir, data_dir)?;
    let lock = File::create(data_dir.join("LOCK")).map_err(dir_err)?;
    if lock.try_lock().is_err() {
        return Err(format!(
            "the data dir {} is in use by another pycomd (its LOCK file is locked)",
            data_dir.display()
        ));
    }
    Ok(lock)
}

/// Make `dir` (the data dir or one in it) and its parents. What stands
/// where a directory should be is named: "File exists" alone does not say
/// which path.
fn create_dir(data_dir: &Path, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| {
        let in_the_way =
            dir.ancestors()
                .find_map(|p| match (std::fs::metadata(p), std::fs::symlink_metadata(p)) {
                    (Ok(m), _) if !m.is_dir() => Some(format!("{} is not a directory", p.display())),
                    (Err(_), Ok(l)) if l.file_type().is_symlink() => Some(format!(
                        "{} is a symbolic link to nothing that can be reached",
                        p.display()
                    )),
                    _ => None,
                });
        let why = match in_the_way {
            Some(why) => why,
            None if dir == data_dir => e.to_string(),
            None => format!("cannot create {}: {e}", dir.display()),
        };
        format!("cannot use the data dir {}: {why}", data_dir.display())
    })
}

pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

pub fn open(data_dir: &Path, options: &Options) -> Result<Opened, String> {
    let started = Instant::now();
    let dir_err = |e: std::io::Error| format!("cannot use the data dir {}: {e}", data_dir.display());
    let log_dir = log_dir(data_dir);
    // The data dir first: an error then names the path that failed.
    let lock = lock_data_dir(data_dir)?;
    create_dir(data_dir, &log_dir)?;
    wal::sync_dir(data_dir).map_err(dir_err)?;
    refuse_old_format(data_dir)?;
    snapshot::remove_leftovers(data_dir).map_err(dir_err)?;

    let mut recovery = Recovery {
        data_dir,
        recover: options.recover,
        copy_dir: None,
        dropped: 0,
    };
    let mut snapshots = snapshot::list(data_dir).map_err(dir_err)?;
    let segments = wal::list(&log_dir).map_err(dir_err)?;
    let log_start = segments.first().map(|(first, _)| *first);

    // Read the log on one core while the snapshot is read on the other:
    // the segments are decoded from the newest snapshot's index on, which
    // is what they are needed for unless that snapshot turns out damaged.
    let hint = snapshots.last().map_or(0, |(index, _)| *index);
    let (snapshot_read, mut prescanned) = std::thread::scope(|scope| {
        let log_reader = scope.spawn(|| {
            segments
                .iter()
                .map(|(first, path)| wal::scan_from(path, *first, hint + 1))
                .collect::<Vec<_>>()
        });
        let snapshot_read = (|| -> Result<(State, LogId), String> {
            // The newest snapshot that verifies; a damaged one is set aside only with --recover.
            let (mut state, mut last) = (State::default(), LogId::default());
            while let Some((index, path)) = snapshots.last().cloned() {
                match snapshot::read(&path) {
                    Ok(data) => {
                        (state, last) = data.into_state();
                        break;
                    }
                    Err(what) => {
                        let older = snapshots
                            .len()
                            .checked_sub(2)
                            .map(|i| snapshots[i].0)
                            .unwrap_or(0);
                        let reaches_back = log_start.is_some_and(|s| s <= older + 1);
                        let consequence = if reaches_back {
                            format!(
                                "set it aside and rebuild the state from {} and the log, dropping no acknowledged change",
                                if older > 0 { format!("the snapshot at entry {older}") } else { "the start".into() }
                            )
                        } else {
                            format!("set it aside, but the log does not reach back to entry {}: changes up to entry {index} would be lost", older + 1)
                        };
                        recovery.damage(
                            &path,
                            &format!("fails verification: it {what}"),
                            &consequence,
                            std::slice::from_ref(&path),
                        )?;
                        recovery.remove(&path)?;
                        snapshots.pop();
                        if !reaches_back {
                            recovery.dropped += index - older;
                        }
                    }
                }
            }
            Ok((state, last))
        })();
        (snapshot_read, log_reader.join().ok())
    });
    let (mut state, mut last) = snapshot_read?;
    if last.index != hint {
        // A damaged snapshot was set aside: the log is decoded afresh below.
        prescanned = None;
    }
    let mut prescanned = prescanned.map(Vec::into_iter);

    // The log after the snapshot.
    let mut kept: Vec<(u64, PathBuf)> = Vec::new();
    let mut valid_len = 0;
    let mut replayed = 0;
    let mut expected: Option<u64> = None;
    let mut iter = segments.iter().peekable();
    while let Some((first, path)) = iter.next() {
        let scan = match prescanned.as_mut().and_then(Iterator::next) {
            Some(scan) => scan,
            None => wal::scan_from(path, *first, last.index + 1),
        }
        .map_err(|e| format!("cannot read the log segment {}: {e}", path.display()))?;
        if let Some(expected) = expected {
            if *first != expected {
                let rest: Vec<PathBuf> = std::iter::once(path.clone())
                    .chain(iter.map(|(_, p)| p.clone()))
                    .collect();
                let what = format!(
                    "starts at entry {first}, but the segment before it ends at entry {}",
                    expected - 1
                );
                recovery.damage(path, &what, "drop it and every later segment", &rest)?;
                for p in &rest {
                    recovery.remove(p)?;
                }
                break;
            }
        } else if *first > last.index + 1 {
            return Err(format!(
                "the log in {} starts at entry {first}, but the newest usable snapshot ends at entry {}: the entries in between are missing. Restore a backup of the data dir.",
                log_dir.display(),
                last.index
            ));
        }
        for entry in &scan.entries {
            if entry.log_id.index <= last.index {
                continue;
            }
            if let Payload::Command(command) = &entry.payload {
                let _ = state.apply(command);
            }
            last = entry.log_id;
            replayed += 1;
        }
        // The log id of entries the snapshot covers, when the log has none after it.
        expected = Some(first + scan.count);
        valid_len = scan.valid_len;
        kept.push((*first, path.clone()));
        let is_last = iter.peek().is_none();
        match &scan.tail {
            Tail::Clean => {}
            Tail::Torn { at } if is_last => {
                warn!(
                    file = %path.display(),
                    offset = at,
                    "cutting off the unacknowledged end of the log a crash left behind"
                );
            }
            Tail::Torn { at } | Tail::Damaged { at, .. } => {
                let what = match &scan.tail {
                    Tail::Damaged { what, .. } => what.clone(),
                    _ => "a frame is cut short in the middle of the log".to_string(),
                };
                let later: Vec<PathBuf> = iter.map(|(_, p)| p.clone()).collect();
                let mut files = vec![path.clone()];
                files.extend(later.iter().cloned());
                // The damaged frame itself, and every readable one after it.
                let mut drops = 1 + scan.frames_after_damage;
                for p in &later {
                    if let Some(n) = p
                        .file_stem()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse::<u64>().ok())
                    {
                        drops += wal::scan(p, n)
                            .map(|s| s.count + s.frames_after_damage)
                            .unwrap_or(0);
                    }
                }
                let what = format!("is damaged at byte {at} (after entry {}): {what}", last.index);
                let consequence = format!(
                    "cut the log there, dropping at least {drops} acknowledged change(s) from entry {} on",
                    last.index + 1
                );
                recovery.damage(path, &what, &consequence, &files)?;
                recovery.dropped += drops;
                for p in &later {
                    recovery.remove(p)?;
                }
                break;
            }
        }
    }
    let next = last.index + 1;
    let writer = wal::Writer::open(
        &log_dir,
        kept,
        valid_len,
        next,
        options.segment_bytes,
        options.sync,
    )
    .map_err(|e| format!("cannot open the log in {} for writing: {e}", log_dir.display()))?;
    if let Some(dir) = &recovery.copy_dir {
        warn!(
            copy = %dir.display(),
            dropped = recovery.dropped,
            "recovered from damage: {} acknowledged change(s) dropped; the damaged files are kept",
            recovery.dropped
        );
    }
    info!(
        snapshot = snapshots.last().map_or(0, |s| s.0),
        replayed,
        records = state.len(),
        ms = started.elapsed().as_millis() as u64,
        "registry loaded"
    );
    Ok(Opened {
        state,
        files: LogFiles {
            last,
            writer,
            snapshots,
            lock,
        },
    })
}

struct Recovery<'a> {
    data_dir: &'a Path,
    recover: bool,
    copy_dir: Option<PathBuf>,
    dropped: u64,
}

impl Recovery<'_> {
    /// Damage found in `file`: refuse, or (with --recover) copy `files` aside first.
    fn damage(
        &mut self,
        file: &Path,
        what: &str,
        consequence: &str,
        files: &[PathBuf],
    ) -> Result<(), String> {
        if !self.recover {
            return Err(format!(
                "{} {what}. Nothing in {} has been changed. Run `pycomd --recover` to {consequence} (a copy of the damaged files is kept in {}), or restore a backup of the data dir.",
                file.display(),
                self.data_dir.display(),
                self.data_dir.join("damaged-<time>").display()
            ));
        }
        warn!(file = %file.display(), "damaged: {what}; --recover will {consequence}");
        let dir = match &self.copy_dir {
            Some(dir) => dir.clone(),
            None => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let dir = self.data_dir.join(format!("damaged-{secs}"));
                std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                self.copy_dir = Some(dir.clone());
                dir
            }
        };
        for f in files {
            let name = f.file_name().unwrap_or_default();
            let copy = dir.join(name);
            std::fs::copy(f, &copy)
                .and_then(|_| File::open(&copy)?.sync_all())
                .map_err(|e| format!("cannot keep a copy of {} in {}: {e}", f.display(), dir.display()))?;
        }
        wal::sync_dir(&dir).map_err(|e| format!("cannot sync {}: {e}", dir.display()))?;
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<(), String> {
        std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
    }
}

/// A data dir written by pycomd before the log (sled's files) is not read:
/// say so rather than start empty beside it.
fn refuse_old_format(data_dir: &Path) -> Result<(), String> {
    if data_dir.join("conf").is_file() && data_dir.join("db").is_file() {
        return Err(format!(
            "{} holds a registry in the format of pycomd before 0.2 (sled), which this pycomd does not read. Move it away and start with an empty data dir: leased services register again on their next renewal, PyCOM services when they restart.",
            data_dir.display()
        ));
    }
    Ok(())
}
