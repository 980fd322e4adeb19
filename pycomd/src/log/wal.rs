//! Log segments: append-only files of checksummed frames, one entry each.
//!
//! A segment is `log/<first index, 20 digits>.wal`: the 8-byte magic
//! [`MAGIC`], then frames `[len u32][crc32c(payload) u32][crc32c(len, crc)
//! u32][payload]` (little-endian), the payload an [`Entry`] in JSON. The
//! header has its own checksum so that a damaged length is told from a
//! frame cut short by a crash.
//!
//! A crash (or power cut) can leave the frames of the last, unacknowledged
//! batch partly written: a *torn tail*. Every acknowledged frame was
//! fdatasync'ed before its reply, so a torn tail is only ever unacknowledged
//! data, and it is cut off when the log is next opened for writing. Damage
//! is anything else: a bad checksum followed by valid frames, a bad header,
//! a payload that does not decode. JSON never contains a NUL byte, so a
//! frame whose payload does (blocks the crash left zeroed) is torn, while
//! one that fails its checksum without one is damaged.

use super::{Entry, LogId};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"PYCWAL01";
const HEADER: usize = 12;
/// Largest frame read back: bounds the allocation a damaged length could ask for.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The end of a segment, as read.
#[derive(Debug, Clone, PartialEq)]
pub enum Tail {
    /// Every byte is part of a valid frame.
    Clean,
    /// Unacknowledged bytes left by a crash, from this offset on.
    Torn { at: u64 },
    /// Damage at this offset: frames from here on cannot be trusted.
    Damaged { at: u64, what: String },
}

/// One segment as read: its valid frames and how it ends.
#[derive(Debug)]
pub struct Scan {
    pub path: PathBuf,
    /// Index of its first entry (from the file name).
    pub first: u64,
    /// The entries decoded (those from `decode_from` on; the frames
    /// before it are only verified).
    pub entries: Vec<Entry>,
    /// Whole, verified frames: the entries from `first` to `first + count - 1`.
    pub count: u64,
    /// Offset just after each entry's frame.
    pub ends: Vec<u64>,
    /// Length of the valid part (magic and whole frames).
    pub valid_len: u64,
    pub tail: Tail,
    /// Frames after damage whose header still reads: a lower bound on the
    /// entries `--recover` would drop with them.
    pub frames_after_damage: u64,
}

pub fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.wal"))
}

/// The segments in `dir`, oldest first, by the index in their names.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    files_by_index(dir, "", ".wal")
}

/// The files in `dir` named `<prefix><index><suffix>`, by index.
pub fn files_by_index(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let path = item?.path();
        let index = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(index) = index {
            found.push((index, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Append one frame holding `payload` to `buf`.
pub fn encode_frame(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c(payload).to_le_bytes();
    let mut head = [0u8; 8];
    head[..4].copy_from_slice(&len);
    head[4..].copy_from_slice(&crc);
    buf.extend_from_slice(&head);
    buf.extend_from_slice(&crc32c::crc32c(&head).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// One frame read from a file of frames without magic or indices (the
/// Raft log's operations).
pub enum ReadFrame<'a> {
    /// A verified payload, and the offset after it.
    Whole(&'a [u8], usize),
    /// No bytes left.
    End,
    /// A frame cut short, or zeros, at the end: a crash mid-write.
    Torn,
    /// Damage with whole frames after it, or a frame that cannot be right.
    Damaged(&'static str),
}

pub fn read_frame(bytes: &[u8], at: usize) -> ReadFrame<'_> {
    if at >= bytes.len() {
        return ReadFrame::End;
    }
    match frame_at(bytes, at) {
        Frame::Whole(payload, next) => ReadFrame::Whole(payload, next),
        Frame::Short => ReadFrame::Torn,
        Frame::Bad(what) if torn_from(bytes, at) => {
            let _ = what;
            ReadFrame::Torn
        }
        Frame::Bad(what) => ReadFrame::Damaged(what),
    }
}

/// Read and verify a whole segment.
pub fn scan(path: &Path, first: u64) -> io::Result<Scan> {
    scan_from(path, first, 0)
}

/// Read and verify a whole segment, decoding the entries from index
/// `decode_from` on: the checksums of the others are verified, which is
/// all a restart needs of entries a snapshot already holds.
pub fn scan_from(path: &Path, first: u64, decode_from: u64) -> io::Result<Scan> {
    let bytes = std::fs::read(path)?;
    let mut scan = Scan {
        path: path.to_path_buf(),
        first,
        entries: Vec::new(),
        count: 0,
        ends: Vec::new(),
        valid_len: 0,
        tail: Tail::Clean,
        frames_after_damage: 0,
    };
    if bytes.len() < MAGIC.len() {
        // Created by a crash before its magic was written.
        if bytes.iter().any(|&b| b != 0) && !MAGIC.starts_with(&bytes) {
            scan.tail = damaged(0, "the file is too short to be a log segment");
        } else if !bytes.is_empty() {
            scan.tail = Tail::Torn { at: 0 };
        }
        return Ok(scan);
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        if bytes[..MAGIC.len()].iter().all(|&b| b == 0) && bytes.iter().all(|&b| b == 0) {
            scan.tail = Tail::Torn { at: 0 };
        } else {
            scan.tail = damaged(0, "the file does not start with pycomd's log magic");
        }
        return Ok(scan);
    }
    let mut at = MAGIC.len();
    let mut expected = first;
    scan.valid_len = at as u64;
    while at < bytes.len() {
        match frame_at(&bytes, at) {
            Frame::Whole(_, next) if expected < decode_from => {
                scan.ends.push(next as u64);
                scan.count += 1;
                expected += 1;
                at = next;
                scan.valid_len = at as u64;
            }
            Frame::Whole(payload, next) => match serde_json::from_slice::<Entry>(payload) {
                Ok(entry) if entry.log_id.index == expected => {
                    scan.entries.push(entry);
                    scan.count += 1;
                    scan.ends.push(next as u64);
                    expected += 1;
                    at = next;
                    scan.valid_len = at as u64;
                }
                Ok(entry) => {
                    scan.tail = damaged(
                        at,
                        &format!(
                            "the entry has index {} where {expected} was expected",
                            entry.log_id.index
                        ),
                    );
                    break;
                }
                Err(e) => {
                    scan.tail = damaged(at, &format!("the entry does not decode: {e}"));
                    break;
                }
            },
            Frame::Short => {
                scan.tail = Tail::Torn { at: at as u64 };
                break;
            }
            Frame::Bad(what) => {
                scan.tail = if torn_from(&bytes, at) {
                    Tail::Torn { at: at as u64 }
                } else {
                    damaged(at, what)
                };
                break;
            }
        }
    }
    if let Tail::Damaged { at, .. } = scan.tail {
        scan.frames_after_damage = count_readable_frames(&bytes, at as usize);
    }
    Ok(scan)
}

enum Frame<'a> {
    /// A verified payload and the offset after it.
    Whole(&'a [u8], usize),
    /// The bytes end before the frame does.
    Short,
    Bad(&'static str),
}

fn frame_at(bytes: &[u8], at: usize) -> Frame<'_> {
    let Some(head) = bytes.get(at..at + HEADER) else {
        return Frame::Short;
    };
    let stored = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if crc32c::crc32c(&head[..8]) != stored {
        return Frame::Bad("a frame header fails its checksum");
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > MAX_FRAME {
        return Frame::Bad("a frame header gives an impossible length");
    }
    let start = at + HEADER;
    let Some(payload) = bytes.get(start..start + len) else {
        return Frame::Short;
    };
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if crc32c::crc32c(payload) != crc {
        return Frame::Bad("a frame fails its checksum");
    }
    Frame::Whole(payload, start + len)
}

/// Whether the bad frame at `at` is the start of a torn tail: no whole
/// frame follows it, and it holds bytes a write never put there (zeros).
fn torn_from(bytes: &[u8], at: usize) -> bool {
    let head = &bytes[at..bytes.len().min(at + HEADER)];
    let payload = bytes.get(at + HEADER..).unwrap_or_default();
    let never_written = head.iter().all(|&b| b == 0) || payload.contains(&0);
    never_written && count_readable_frames(bytes, at) == 0
}

/// Whole, verified frames found after `at`, resynchronising on headers.
fn count_readable_frames(bytes: &[u8], at: usize) -> u64 {
    let mut count = 0;
    let mut i = at + 1;
    while i + HEADER <= bytes.len() {
        match frame_at(bytes, i) {
            Frame::Whole(payload, next) if serde_json::from_slice::<Entry>(payload).is_ok() => {
                count += 1;
                i = next;
            }
            _ => i += 1,
        }
    }
    count
}

fn damaged(at: usize, what: &str) -> Tail {
    Tail::Damaged {
        at: at as u64,
        what: what.to_string(),
    }
}

/// fsync a directory, so that files created, renamed or removed in it stay so.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment being appended to.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    file: File,
    /// Bytes of the current segment known durable (or about to be): where a
    /// failed write is rolled back to.
    len: u64,
    segment_bytes: u64,
    /// fdatasync after each batch; off only with `unsafe_no_fsync`.
    sync: bool,
    /// Index of the next entry appended.
    next: u64,
    /// A failed write may have left bytes past `len`: cut them off before
    /// anything else is appended.
    dirty: bool,
    /// Segments (first index, path), the current one last.
    segments: Vec<(u64, PathBuf)>,
}

impl Writer {
    /// Continue the last segment at `valid_len` (cutting off a torn tail),
    /// or start the first one. `next` is the index the next entry gets.
    pub fn open(
        dir: &Path,
        mut segments: Vec<(u64, PathBuf)>,
        valid_len: u64,
        next: u64,
        segment_bytes: u64,
        sync: bool,
    ) -> io::Result<Writer> {
        let Some((_, path)) = segments.last().cloned() else {
            let mut writer = Writer {
                dir: dir.to_path_buf(),
                file: File::open(dir)?,
                len: 0,
                segment_bytes,
                sync,
                next,
                dirty: false,
                segments,
            };
            writer.start_segment()?;
            return Ok(writer);
        };
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut writer = Writer {
            dir: dir.to_path_buf(),
            file,
            len: valid_len,
            segment_bytes,
            sync,
            next,
            dirty: false,
            segments: std::mem::take(&mut segments),
        };
        if valid_len < MAGIC.len() as u64 {
            // A segment whose creation a crash interrupted: write it anew.
            writer.file.set_len(0)?;
            writer.file.write_all_at_end(MAGIC)?;
            writer.len = MAGIC.len() as u64;
            writer.file.sync_all()?;
        } else if writer.file.metadata()?.len() != valid_len {
            writer.file.set_len(valid_len)?;
            writer.file.sync_all()?;
        }
        Ok(writer)
    }

    pub fn next_index(&self) -> u64 {
        self.next
    }

    pub fn segments(&self) -> &[(u64, PathBuf)] {
        &self.segments
    }

    /// Append `frames` (holding `count` entries) and make them durable. On
    /// error the segment is cut back to where it was: nothing of the batch
    /// remains to be read back later.
    pub fn append(&mut self, frames: &[u8], count: u64) -> io::Result<()> {
        if self.dirty {
            self.rollback()?;
        }
        let written = self.file.write_all_at_end(frames).and_then(|()| {
            if self.sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // If this fails too, the next append tries it again first.
            self.dirty = true;
            let _ = self.rollback();
            return Err(e);
        }
        self.len += frames.len() as u64;
        self.next += count;
        if self.len >= self.segment_bytes {
            self.start_segment()?;
        }
        Ok(())
    }

    fn rollback(&mut self) -> io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_all()?;
        self.dirty = false;
        Ok(())
    }

    /// Start a new segment at the next index: the file with its magic, made
    /// durable, and the directory entry too.
    fn start_segment(&mut self) -> io::Result<()> {
        let path = segment_path(&self.dir, self.next);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(MAGIC)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.len = MAGIC.len() as u64;
        self.segments.push((self.next, path));
        Ok(())
    }

    /// Remove every entry after `index` (a new Raft leader overwrites a
    /// follower's uncommitted tail), durably, before returning.
    pub fn truncate_after(&mut self, index: u64) -> io::Result<()> {
        if index + 1 >= self.next {
            return Ok(());
        }
        while self.segments.len() > 1 && self.segments.last().is_some_and(|(first, _)| *first > index) {
            if let Some((_, path)) = self.segments.pop() {
                std::fs::remove_file(&path)?;
            }
        }
        let Some((first, path)) = self.segments.last().cloned() else {
            return Ok(());
        };
        if first > index + 1 {
            return Err(io::Error::other(format!(
                "cannot truncate the log after entry {index}: it now starts at entry {first}"
            )));
        }
        let scan = scan(&path, first)?;
        let keep = (index + 1 - first) as usize;
        let len = match keep {
            0 => MAGIC.len() as u64,
            n => scan
                .ends
                .get(n - 1)
                .copied()
                .ok_or_else(|| io::Error::other(format!("entry {index} is not in {}", path.display())))?,
        };
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        file.set_len(len)?;
        file.sync_all()?;
        sync_dir(&self.dir)?;
        self.file = file;
        self.len = len;
        self.next = index + 1;
        self.dirty = false;
        Ok(())
    }

    /// Remove whole segments whose entries all come before `index`.
    pub fn purge_before(&mut self, index: u64) -> io::Result<usize> {
        let mut removed = 0;
        // A segment's entries end where the next segment's begin.
        while self.segments.len() > 1 && self.segments[1].0 <= index {
            let (_, path) = self.segments.remove(0);
            std::fs::remove_file(&path)?;
            removed += 1;
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }
}

trait AppendAtEnd {
    fn write_all_at_end(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl AppendAtEnd for File {
    /// Write at the current end of the valid data (the file is opened at
    /// its valid length, and rolled back to it after a failed write).
    fn write_all_at_end(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::io::{Seek, SeekFrom};
        self.seek(SeekFrom::End(0))?;
        self.write_all(bytes)
    }
}

/// Raft's vote: the term and the node voted for (or the leader), and
/// whether a quorum granted it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Vote {
    pub term: u64,
    pub node: Option<u64>,
    pub committed: bool,
}

/// What the log keeps beside its entries: Raft's vote and the newest entry
/// known committed. One small file, replaced whole and durably.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
}

const META_MAGIC: &[u8; 8] = b"PYCMETA1";
const META_FILE: &str = "meta";

/// Replace the meta file durably: a temporary file, fsync, rename, and the
/// directory fsync'ed, so that either the old or the new one is read back.
pub fn save_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    let payload = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let mut file = File::create(&tmp)?;
    let mut bytes = META_MAGIC.to_vec();
    encode_frame(&mut bytes, &payload);
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    sync_dir(dir)
}

/// The meta file, verified; the default when there is none yet.
pub fn read_meta(dir: &Path) -> Result<Meta, String> {
    let path = dir.join(META_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Meta::default()),
        Err(e) => return Err(format!("{} cannot be read: {e}", path.display())),
    };
    let damaged = |what: &str| format!("{} is damaged: {what}", path.display());
    if !bytes.starts_with(META_MAGIC) {
        return Err(damaged("it does not start with pycomd's meta header"));
    }
    match frame_at(&bytes, META_MAGIC.len()) {
        Frame::Whole(payload, _) => serde_json::from_slice(payload).map_err(|e| damaged(&e.to_string())),
        Frame::Short => Err(damaged("it is cut short")),
        Frame::Bad(what) => Err(damaged(what)),
    }
}

/// The id a new entry gets in the local log.
pub fn local_id(index: u64) -> LogId {
    LogId {
        term: 1,
        node: 0,
        index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Payload;
    use crate::registry::Command;

    fn entry(index: u64) -> Vec<u8> {
        let entry = Entry {
            log_id: local_id(index),
            payload: Payload::Command(Command::Unregister {
                service: format!("/s/{index}"),
                address: "tcp://a:1".into(),
                owner: None,
                admin: false,
            }),
        };
        let mut buf = Vec::new();
        encode_frame(&mut buf, &serde_json::to_vec(&entry).unwrap());
        buf
    }

    fn segment(frames: &[Vec<u8>]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        let mut bytes = MAGIC.to_vec();
        for f in frames {
            bytes.extend_from_slice(f);
        }
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    #[test]
    fn whole_frames_read_back() {
        let (_d, path) = segment(&[entry(1), entry(2), entry(3)]);
        let scan = scan(&path, 1).unwrap();
        assert_eq!(scan.entries.len(), 3);
        assert_eq!(scan.tail, Tail::Clean);
    }

    #[test]
    fn a_frame_cut_short_is_a_torn_tail() {
        let mut last = entry(3);
        last.truncate(last.len() - 5);
        let (_d, path) = segment(&[entry(1), entry(2), last]);
        let scan = scan(&path, 1).unwrap();
        assert_eq!(scan.entries.len(), 2);
        assert!(matches!(scan.tail, Tail::Torn { .. }), "{:?}", scan.tail);
    }

    #[test]
    fn zeroed_blocks_at_the_end_are_a_torn_tail() {
        let mut last = entry(3);
        let n = last.len();
        last[n - 10..].fill(0);
        let (_d, path) = segment(&[entry(1), entry(2), last]);
        assert!(matches!(scan(&path, 1).unwrap().tail, Tail::Torn { .. }));
    }

    #[test]
    fn a_flipped_byte_is_damage_wherever_it_is() {
        for victim in 0..3 {
            let mut frames = vec![entry(1), entry(2), entry(3)];
            let n = frames[victim].len();
            frames[victim][n - 3] ^= 0x01;
            let (_d, path) = segment(&frames);
            let scan = scan(&path, 1).unwrap();
            assert_eq!(scan.entries.len(), victim);
            assert!(matches!(scan.tail, Tail::Damaged { .. }), "{:?}", scan.tail);
            assert_eq!(scan.frames_after_damage, 2 - victim as u64);
        }
    }

    #[test]
    fn truncate_after_removes_the_tail_durably() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), Vec::new(), 0, 1, 4096, true).unwrap();
        for i in 1..=200 {
            w.append(&entry(i), 1).unwrap();
        }
        assert!(w.segments().len() > 1, "the test needs several segments");
        w.truncate_after(57).unwrap();
        w.append(&entry(58), 1).unwrap();
        let mut indices = Vec::new();
        for (first, path) in list(dir.path()).unwrap() {
            let s = scan(&path, first).unwrap();
            assert_eq!(s.tail, Tail::Clean);
            indices.extend(s.entries.iter().map(|e| e.log_id.index));
        }
        assert_eq!(indices, (1..=58).collect::<Vec<u64>>());
    }

    #[test]
    fn purge_before_removes_whole_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::open(dir.path(), Vec::new(), 0, 1, 4096, true).unwrap();
        for i in 1..=200 {
            w.append(&entry(i), 1).unwrap();
        }
        w.purge_before(100).unwrap();
        let segments = list(dir.path()).unwrap();
        assert!(segments[0].0 <= 100 && segments[0].0 > 1, "{segments:?}");
    }

    #[test]
    fn meta_round_trips_and_damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), Meta::default());
        let meta = Meta {
            vote: Some(Vote {
                term: 3,
                node: Some(2),
                committed: true,
            }),
            committed: Some(local_id(41)),
        };
        save_meta(dir.path(), &meta).unwrap();
        assert_eq!(read_meta(dir.path()).unwrap(), meta);
        let path = dir.path().join(META_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = read_meta(dir.path()).unwrap_err();
        assert!(err.contains("meta is damaged"), "{err}");
    }

    #[test]
    fn a_damaged_header_is_damage() {
        let mut frames = vec![entry(1), entry(2)];
        frames[0][1] ^= 0x40;
        let (_d, path) = segment(&frames);
        assert!(matches!(scan(&path, 1).unwrap().tail, Tail::Damaged { .. }));
    }
}
