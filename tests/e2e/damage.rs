//! A damaged data dir: pycomd verifies every log frame and snapshot it
//! uses before it serves, refuses to start on damage (exit 2, naming the
//! file, the place, and what `--recover` would drop) without changing a
//! byte, and with `--recover` keeps a copy of the damaged files, drops what
//! cannot be read and serves. A frame a crash cut short at the very end of
//! the log is not damage: it was never acknowledged, and is cut off.
//!
//! The tests damage the files the way a disk does (a flipped byte) or a
//! crash does (a partial frame at the end), by hand, between runs of the
//! real pycomd.

use pycom_client::Code;
use pycom_e2e::{free_port, leased, pycomd_command, run_to_exit, wait_until, Daemon, Exited};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Owner address of every record (leased records are never probed).
const ADDRESS: &str = "tcp://127.0.0.1:1";
/// Lease of every record: far longer than any test.
const TTL_MS: u64 = 600_000;
/// How long a start that must be refused may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(15);
/// Log segment magic.
const WAL_MAGIC: &[u8] = b"PYCWAL01";
/// Frame header: length, payload crc32c, header crc32c.
const FRAME_HEADER: usize = 12;
/// Snapshot header: magic, payload length (u64), payload crc32c.
const SNAPSHOT_HEADER: usize = 8 + 8 + 4;
/// Small snapshot and segment thresholds (the minimum), so that a few
/// hundred registers write several of each.
const SMALL_FILES: &[(&str, &str)] = &[
    ("PYCOMD_SNAPSHOT_LOG_BYTES", "4096"),
    ("PYCOMD_LOG_SEGMENT_BYTES", "4096"),
];

#[test]
fn a_flipped_byte_in_a_frame_in_the_middle_of_the_log_refuses_the_start_and_recover_cuts_it() {
    log_damage("payload", 9, |f| f.payload_at + f.len / 2);
}

#[test]
fn a_flipped_byte_in_a_frame_header_in_the_middle_of_the_log_refuses_the_start_and_recover_cuts_it() {
    // The length field: the header's own checksum tells it from a torn write.
    log_damage("header", 9, |f| f.start + 1);
}

#[test]
fn a_flipped_byte_in_the_last_frame_of_the_log_refuses_the_start_and_recover_cuts_it() {
    // A whole frame without a zeroed block: damage, not a torn write.
    log_damage("last", 49, |f| f.payload_at + f.len / 2);
}

/// 50 acknowledged registers, then one bit flipped at `offset(frame)` of
/// frame `victim` (0-based) of the log: the start is refused without
/// changing anything, and `--recover` keeps the frames before the victim.
fn log_damage(what: &str, victim: usize, offset: impl Fn(&Frame) -> usize) {
    let mut d = Daemon::start();
    let interface = format!("damage{what}");
    let names: Vec<String> = (0..50).map(|i| format!("/damage/{what}/{i:02}")).collect();
    register_all(&d, &names, &interface);
    assert_exit_0(d.terminate(), &d);

    let segments = wal_segments(&d.data_dir);
    assert_eq!(
        segments.len(),
        1,
        "50 registers should fit in one log segment: {segments:?}"
    );
    let segment = segments[0].1.clone();
    let frames = frames(&std::fs::read(&segment).unwrap());
    assert_eq!(
        frames.len(),
        50,
        "one frame per register in {}",
        segment.display()
    );
    let logged: Vec<&str> = frames.iter().map(|f| f.service()).collect();
    assert_eq!(logged, names, "the log holds the registers in order");

    let frame = &frames[victim];
    flip(&segment, offset(frame));
    let damaged = std::fs::read(&segment).unwrap();
    let before = contents(&d.data_dir);

    let refused = refused_start(&d.data_dir, &[]);
    // The damaged frame and every one after it: all acknowledged.
    let dropped = frames.len() - victim;
    assert_refused(&refused, &d.data_dir, &segment);
    for expected in [
        format!("is damaged at byte {}", frame.start),
        format!("dropping at least {dropped} acknowledged change(s)"),
    ] {
        assert!(
            refused.stderr.contains(&expected),
            "the refusal should say {expected:?} (the damaged frame is entry {} of {}, at byte {}); \
             it said:\n{}",
            victim + 1,
            frames.len(),
            frame.start,
            refused.stderr
        );
    }
    assert_unchanged(&before, &d.data_dir);

    // --recover: a copy of the damaged segment, the log cut before the frame.
    let mut r = Daemon::with_data_dir(&d.data_dir, &[], &["--recover"]);
    let present = services(&r, &interface);
    let kept: BTreeSet<String> = names[..victim].iter().cloned().collect();
    assert_eq!(
        present,
        kept,
        "after --recover, exactly the records before the damaged frame should be there; log:\n{}",
        r.log()
    );
    assert_copy_kept(&d.data_dir, &segment, &damaged);
    assert_recovery_logged(&r, dropped);

    // The recovered dir is whole: it takes writes and starts without --recover.
    r.ns()
        .register(&leased(
            &format!("/damage/{what}/after"),
            ADDRESS,
            &[&interface],
            TTL_MS,
        ))
        .expect("a register after --recover");
    assert_exit_0(r.terminate(), &r);
    d.spawn();
    let mut expected = kept;
    expected.insert(format!("/damage/{what}/after"));
    assert_eq!(services(&d, &interface), expected, "after a plain restart");
    assert_exit_0(d.terminate(), &d);
}

#[test]
fn a_flipped_byte_in_the_newest_snapshot_refuses_the_start_and_recover_loses_nothing() {
    let mut d = Daemon::with(SMALL_FILES, &[]);
    let names: Vec<String> = (0..300).map(|i| format!("/damage/snap/{i:03}")).collect();
    register_all(&d, &names, "damagesnap");
    let mut ns = d.ns();
    assert!(
        wait_until(Duration::from_secs(30), || {
            ns.stat().unwrap()["store"]["snapshots"].as_u64().unwrap_or(0) >= 2
        }),
        "pycomd wrote fewer than 2 snapshots for 300 registers with 4 KiB thresholds; stat: {}; log:\n{}",
        ns.stat().unwrap(),
        d.log()
    );
    assert_exit_0(d.terminate(), &d);

    let snapshots = snapshot_files(&d.data_dir);
    assert!(
        snapshots.len() >= 2,
        "pycomd keeps the newest two snapshots: {snapshots:?}"
    );
    let (index, newest) = snapshots.last().cloned().unwrap();
    let len = std::fs::metadata(&newest).unwrap().len() as usize;
    assert!(len > SNAPSHOT_HEADER + 100, "{} is {len} bytes", newest.display());
    flip(&newest, SNAPSHOT_HEADER + (len - SNAPSHOT_HEADER) / 2);
    let damaged = std::fs::read(&newest).unwrap();
    let before = contents(&d.data_dir);

    let refused = refused_start(&d.data_dir, SMALL_FILES);
    assert_refused(&refused, &d.data_dir, &newest);
    for expected in ["fails verification", "dropping no acknowledged change"] {
        assert!(
            refused.stderr.contains(expected),
            "the refusal should say {expected:?} (the snapshot at entry {index} is damaged; the \
             older one and the log still hold everything); it said:\n{}",
            refused.stderr
        );
    }
    assert_unchanged(&before, &d.data_dir);

    let mut r = Daemon::with_data_dir(&d.data_dir, SMALL_FILES, &["--recover"]);
    let all: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(
        services(&r, "damagesnap"),
        all,
        "after --recover every acknowledged record should be back; log:\n{}",
        r.log()
    );
    assert_copy_kept(&d.data_dir, &newest, &damaged);
    assert!(
        !newest.exists(),
        "--recover should set the damaged snapshot {} aside",
        newest.display()
    );
    assert_recovery_logged(&r, 0);
    assert_exit_0(r.terminate(), &r);
    d.spawn();
    assert_eq!(services(&d, "damagesnap"), all, "after a plain restart");
}

#[test]
fn a_header_cut_short_at_the_end_of_the_log_is_cut_off_silently() {
    torn_tail("header", |last| last[..7].to_vec());
}

#[test]
fn a_frame_cut_short_at_the_end_of_the_log_is_cut_off_silently() {
    torn_tail("frame", |last| last[..last.len() - 5].to_vec());
}

#[test]
fn a_frame_ending_in_zeroed_blocks_at_the_end_of_the_log_is_cut_off_silently() {
    torn_tail("zeroed", |last| {
        let mut copy = last.to_vec();
        let n = copy.len();
        copy[n - 10..].fill(0);
        copy
    });
}

/// What a crash mid-write leaves: `tail(bytes of the last frame)` appended
/// to the last segment. pycomd must start without `--recover`, with every
/// acknowledged record, and cut the tail off.
fn torn_tail(what: &str, tail: impl Fn(&[u8]) -> Vec<u8>) {
    let mut d = Daemon::start();
    let interface = format!("torn{what}");
    let names: Vec<String> = (0..20).map(|i| format!("/torn/{what}/{i:02}")).collect();
    register_all(&d, &names, &interface);
    assert_exit_0(d.terminate(), &d);

    let (_, segment) = wal_segments(&d.data_dir).pop().expect("a log segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let clean_len = bytes.len();
    let last = frames(&bytes).pop().expect("a frame");
    let torn = tail(&bytes[last.start..last.payload_at + last.len]);
    bytes.extend_from_slice(&torn);
    std::fs::write(&segment, &bytes).unwrap();

    d.spawn();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    assert_eq!(
        services(&d, &interface),
        all,
        "every acknowledged record after a torn tail ({what}); log:\n{}",
        d.log()
    );
    let warned = d
        .log()
        .lines()
        .any(|l| l.contains("WARN") && l.contains("cutting off the unacknowledged end of the log"));
    assert!(
        warned,
        "pycomd should warn that it cut off the torn tail ({} bytes: {what}); log:\n{}",
        torn.len(),
        d.log()
    );
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len() as usize,
        clean_len,
        "the torn tail should be cut off {}",
        segment.display()
    );
    assert!(damaged_dirs(&d.data_dir).is_empty(), "a torn tail is not damage");
    // And the log goes on from there.
    d.ns()
        .register(&leased(
            &format!("/torn/{what}/after"),
            ADDRESS,
            &[&interface],
            TTL_MS,
        ))
        .unwrap();
    assert_exit_0(d.terminate(), &d);
    d.spawn();
    assert_eq!(services(&d, &interface).len(), names.len() + 1);
}

#[test]
fn restart_from_snapshots_and_log_after_kill_9_has_exactly_the_acknowledged_records() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 125;
    let mut d = Daemon::with(SMALL_FILES, &[]);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let endpoint = d.endpoint.clone();
            std::thread::spawn(move || {
                let ctx = zmq::Context::new();
                let conn = pycom_client::Connection::open(&ctx, &endpoint).unwrap();
                let mut ns = pycom_client::NameserverClient::new(conn);
                let mut kept = Vec::new();
                for i in 0..PER_THREAD {
                    let name = format!("/restart/{t}/{i:03}");
                    ns.register(&leased(&name, ADDRESS, &["restart"], TTL_MS))
                        .unwrap();
                    // Every fourth record is unregistered again.
                    if i % 4 == 3 {
                        ns.unregister(&name, ADDRESS).unwrap();
                    } else {
                        kept.push(name);
                    }
                }
                kept
            })
        })
        .collect();
    let expected: BTreeSet<String> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let unregistered = THREADS * PER_THREAD - expected.len();
    assert_eq!(unregistered, THREADS * (PER_THREAD / 4));

    // Snapshots are written in the background, and old segments removed
    // after them: wait for both.
    let mut ns = d.ns();
    assert!(
        wait_until(Duration::from_secs(30), || {
            ns.stat().unwrap()["store"]["snapshots"].as_u64().unwrap_or(0) >= 2
        }),
        "fewer than 2 snapshots; stat: {}; log:\n{}",
        ns.stat().unwrap(),
        d.log()
    );
    assert!(
        wait_until(Duration::from_secs(30), || first_segment(&d.data_dir) > 1),
        "the log segments before the older snapshot should be removed; segments: {:?}; snapshots: {:?}",
        wal_segments(&d.data_dir),
        snapshot_files(&d.data_dir)
    );
    let stat = ns.stat().unwrap();
    let last_index = stat["store"]["last_index"].as_u64().unwrap();
    assert_eq!(
        last_index,
        (THREADS * PER_THREAD + unregistered) as u64,
        "one log entry per register and unregister"
    );
    d.kill9();

    let first = first_segment(&d.data_dir);
    let oldest_snapshot = snapshot_files(&d.data_dir).first().map(|s| s.0).unwrap_or(0);
    assert!(
        first > 1 && oldest_snapshot > 0 && first <= oldest_snapshot + 1,
        "the log should start after entry 1 and reach back to the oldest snapshot (entry \
         {oldest_snapshot}): it starts at entry {first}"
    );
    d.spawn();
    assert_eq!(
        services(&d, "restart"),
        expected,
        "after kill -9, a restart from the snapshots and the log; log:\n{}",
        d.log()
    );
    let loaded = d
        .log()
        .lines()
        .rfind(|l| l.contains("registry loaded"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(
        !loaded.is_empty() && !loaded.contains("snapshot=0"),
        "the restart should start from a snapshot: {loaded:?}"
    );
    assert_eq!(
        d.ns().stat().unwrap()["store"]["last_index"].as_u64(),
        Some(last_index),
        "the restart continues the log where it ended"
    );
}

#[test]
fn what_stands_where_the_data_dir_or_its_log_should_be_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).expect("mkdir");
    let log = data_dir.join("log");
    std::fs::write(&log, b"not a log").expect("write");
    let as_file = dir.path().join("file");
    std::fs::write(&as_file, b"not a dir").expect("write");
    let dangling = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("gone"), &dangling).expect("symlink");
    for (data_dir, what) in [
        (&data_dir, format!("{} is not a directory", log.display())),
        (&as_file, format!("{} is not a directory", as_file.display())),
        (
            &dangling,
            format!(
                "{} is a symbolic link to nothing that can be reached",
                dangling.display()
            ),
        ),
    ] {
        let refused = refused_start(data_dir, &[]);
        let expected = format!("cannot use the data dir {}: {what}", data_dir.display());
        assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
        assert!(
            refused.stderr.contains(&expected),
            "the refusal should say {expected:?}; it said:\n{}",
            refused.stderr
        );
    }
    assert_eq!(std::fs::read(&log).expect("read"), b"not a log");
}

#[test]
fn a_second_pycomd_on_the_same_data_dir_is_refused() {
    let d = Daemon::start();
    d.ns()
        .register(&leased("/lock/first", ADDRESS, &["lock"], TTL_MS))
        .unwrap();
    let before = contents(&d.data_dir);
    let second = refused_start(&d.data_dir, &[]);
    assert_eq!(
        second.status.code(),
        Some(2),
        "a second pycomd on {} should exit 2, got {}; stderr:\n{}",
        d.data_dir.display(),
        second.status,
        second.stderr
    );
    for expected in [
        "in use by another pycomd".to_string(),
        d.data_dir.display().to_string(),
    ] {
        assert!(
            second.stderr.contains(&expected),
            "the refusal should say {expected:?}; it said:\n{}",
            second.stderr
        );
    }
    assert_unchanged(&before, &d.data_dir);
    // The first one goes on serving.
    assert_eq!(d.ns().locate("lock", None).unwrap().service, "/lock/first");
    d.ns()
        .register(&leased("/lock/second", ADDRESS, &["lock"], TTL_MS))
        .unwrap();
}

#[test]
fn a_config_file_that_is_not_toml_is_refused_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pycomd.toml");
    std::fs::write(
        &config,
        "# pycomd settings\nprobe_failures = 3\nprobe_interval_ms = = 500\nttl_min_ms = 1000\n",
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let exited = run_to_exit(
        pycomd_command()
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen")
            .arg(format!("tcp://127.0.0.1:{}", free_port())),
        REFUSAL_TIMEOUT,
    );
    assert_eq!(
        exited.status.code(),
        Some(2),
        "a config file with invalid TOML should make pycomd exit 2, got {}; stderr:\n{}",
        exited.status,
        exited.stderr
    );
    // The file as the operator named it (not rewritten relative to the
    // working dir), and the line with the error.
    assert!(
        names_path(&exited.stderr, &config),
        "the error should name the config file as given, {}; it said:\n{}",
        config.display(),
        exited.stderr
    );
    assert!(
        exited.stderr.contains("line 3"),
        "the error should name line 3; it said:\n{}",
        exited.stderr
    );
    assert!(
        !data_dir.exists(),
        "nothing is created before the settings are read"
    );
}

// --- Helpers ---------------------------------------------------------------

/// One frame of a log segment, as found by its length fields.
struct Frame {
    /// Offset of its header in the segment.
    start: usize,
    /// Offset of its payload.
    payload_at: usize,
    /// Payload length.
    len: usize,
    /// The payload, a log entry in JSON.
    entry: Value,
}

impl Frame {
    /// The service its register or unregister names (the command is
    /// `{"<op>": {"service": ...}}`).
    fn service(&self) -> &str {
        self.entry["payload"]["command"]
            .as_object()
            .and_then(|op| op.values().next())
            .and_then(|args| args["service"].as_str())
            .unwrap_or_else(|| panic!("a frame without a service: {}", self.entry))
    }
}

/// The frames of a whole, undamaged segment (checked: it starts with the
/// magic, and the frames end where the file does).
fn frames(bytes: &[u8]) -> Vec<Frame> {
    assert_eq!(
        &bytes[..WAL_MAGIC.len()],
        WAL_MAGIC,
        "a log segment starts with its magic"
    );
    let mut at = WAL_MAGIC.len();
    let mut found = Vec::new();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let payload_at = at + FRAME_HEADER;
        let payload = bytes
            .get(payload_at..payload_at + len)
            .unwrap_or_else(|| panic!("the frame at byte {at} runs past the end of the segment"));
        let entry = serde_json::from_slice(payload)
            .unwrap_or_else(|e| panic!("the frame at byte {at} does not hold JSON: {e}"));
        found.push(Frame {
            start: at,
            payload_at,
            len,
            entry,
        });
        at = payload_at + len;
    }
    found
}

/// Whether `text` holds `path` as a whole path: not as the tail of a
/// longer one, such as `../../tmp/x` for `/tmp/x`.
fn names_path(text: &str, path: &Path) -> bool {
    let path = path.display().to_string();
    text.match_indices(&path).any(|(at, _)| {
        text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || "./_-".contains(c)))
    })
}

/// Register `names` under `interface`, in order, each acknowledged.
fn register_all(d: &Daemon, names: &[String], interface: &str) {
    let mut ns = d.ns();
    for name in names {
        ns.register(&leased(name, ADDRESS, &[interface], TTL_MS))
            .unwrap_or_else(|e| panic!("register {name}: {e}"));
    }
}

/// The services that provide `interface`.
fn services(d: &Daemon, interface: &str) -> BTreeSet<String> {
    let found = match d.ns().list_services(Some(interface), None) {
        Ok(found) => found,
        Err(e) if e.code() == Some(Code::ServiceNotFound) => Vec::new(),
        Err(e) => panic!("list_services {interface}: {e}"),
    };
    found.into_iter().map(|s| s.service).collect()
}

fn assert_exit_0(status: std::process::ExitStatus, d: &Daemon) {
    assert!(
        status.success(),
        "SIGTERM should exit 0, got {status}; log:\n{}",
        d.log()
    );
}

/// Files named `<20 digits><suffix>` (with `prefix`) in `dir`, by number.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let n = name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?;
            Some((n, p))
        })
        .collect();
    found.sort();
    found
}

fn wal_segments(data_dir: &Path) -> Vec<(u64, PathBuf)> {
    numbered(&data_dir.join("log"), "", ".wal")
}

fn snapshot_files(data_dir: &Path) -> Vec<(u64, PathBuf)> {
    numbered(data_dir, "snapshot-", ".snap")
}

/// Index of the first entry of the oldest log segment.
fn first_segment(data_dir: &Path) -> u64 {
    wal_segments(data_dir).first().map(|s| s.0).unwrap_or(0)
}

fn damaged_dirs(data_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("damaged-"))
        })
        .collect()
}

/// Flip one bit of the byte at `offset` of `path`.
fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, &bytes).unwrap();
}

/// Every file under `dir` with its bytes, except the leftovers of a
/// snapshot a stop interrupted (`*.tmp`, removed on the next start).
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_none_or(|x| x != "tmp") {
                found.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// Nothing under `dir` changed since `before`: no file added, removed or
/// rewritten.
fn assert_unchanged(before: &BTreeMap<PathBuf, Vec<u8>>, dir: &Path) {
    let after = contents(dir);
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&after),
        names(before),
        "the refused start added or removed files in {}",
        dir.display()
    );
    for (path, bytes) in before {
        assert!(
            after[path] == *bytes,
            "the refused start changed {} ({} bytes before, {} after)",
            path.display(),
            bytes.len(),
            after[path].len()
        );
    }
}

/// Start pycomd on `data_dir` and wait for it to exit, as it must.
fn refused_start(data_dir: &Path, env: &[(&str, &str)]) -> Exited {
    let mut cmd = pycomd_command();
    cmd.arg("--listen")
        .arg(format!("tcp://127.0.0.1:{}", free_port()))
        .arg("--data-dir")
        .arg(data_dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_to_exit(&mut cmd, REFUSAL_TIMEOUT)
}

/// Exit 2 with a message naming `file`, saying nothing was changed and
/// pointing to `--recover`.
fn assert_refused(refused: &Exited, data_dir: &Path, file: &Path) {
    assert_eq!(
        refused.status.code(),
        Some(2),
        "pycomd should refuse to start on damage in {} with exit code 2, got {}; stderr:\n{}",
        file.display(),
        refused.status,
        refused.stderr
    );
    for expected in [
        file.display().to_string(),
        format!("Nothing in {} has been changed", data_dir.display()),
        "Run `pycomd --recover` to".to_string(),
    ] {
        assert!(
            refused.stderr.contains(&expected),
            "the refusal should say {expected:?}; it said:\n{}",
            refused.stderr
        );
    }
}

/// `--recover` kept a copy of `file`, identical to its damaged `bytes`, in
/// the one `damaged-*` dir.
fn assert_copy_kept(data_dir: &Path, file: &Path, bytes: &[u8]) {
    let dirs = damaged_dirs(data_dir);
    assert_eq!(
        dirs.len(),
        1,
        "--recover should keep the damaged files in one damaged-* dir: {dirs:?}"
    );
    let copy = dirs[0].join(file.file_name().unwrap());
    let kept = std::fs::read(&copy).unwrap_or_else(|e| {
        panic!(
            "--recover should keep a copy of {} as {}: {e}",
            file.display(),
            copy.display()
        )
    });
    assert!(
        kept == bytes,
        "the copy {} differs from the damaged file ({} bytes, {} damaged)",
        copy.display(),
        kept.len(),
        bytes.len()
    );
}

/// A WARN line saying pycomd recovered from damage and how many
/// acknowledged changes that dropped.
fn assert_recovery_logged(d: &Daemon, dropped: usize) {
    let log = d.log();
    let line = log.lines().find(|l| l.contains("recovered from damage"));
    let Some(line) = line else {
        panic!("--recover should log that it recovered from damage; log:\n{log}");
    };
    assert!(line.contains("WARN"), "a WARN line: {line}");
    assert!(
        line.contains(&format!("{dropped} acknowledged change")),
        "the recovery line should say {dropped} acknowledged change(s) were dropped: {line}"
    );
}
