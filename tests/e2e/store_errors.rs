//! A full disk: a write pycomd cannot make durable is answered code 7
//! (Unavailable) and changes nothing, neither now nor after a restart;
//! pycomd goes on serving, and takes writes again as soon as there is space,
//! without a restart. Stopped while such a write is in flight, it exits 1.
//!
//! The data dir is on a small filesystem the test mounts and then fills
//! with a filler file: a 2 MiB tmpfs, or (to freeze it with `fsfreeze`, so
//! that a write is held in flight) ext4 in a loop-mounted image file.
//!
//! Needs root and `mount`; the freeze test also `mkfs.ext4`, a free loop
//! device and `fsfreeze`. Without them the tests print `SKIPPED: ...` and
//! pass, unless `CI=true`, where they fail.

use pycom_client::{Code, Connection, NameserverClient, Registration};
use pycom_e2e::mounts::{prerequisites, skip, Ext4Image, Mount};
use pycom_e2e::{leased, wait_until, Daemon};
use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Owner address of every record (leased records are never probed).
const ADDRESS: &str = "tcp://127.0.0.1:1";
/// Lease of every record: far longer than the test.
const TTL_MS: u64 = 600_000;
/// errno ENOSPC on Linux.
const ENOSPC: i32 = 28;
/// Size of the (sparse) ext4 image.
const IMAGE_BYTES: u64 = 32 * 1024 * 1024;
/// What the reply to a write that could not be made durable says.
const NOT_WRITTEN: &str = "not written, nothing was changed";
/// How the OS error of a full disk reads.
const DISK_FULL: &str = "No space left on device";

#[test]
fn a_full_disk_refuses_writes_with_code_7_and_they_change_nothing() {
    if let Err(missing) = prerequisites(&[], false) {
        skip("store-error test", &missing);
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir for the mount point");
    let mount = match Mount::tmpfs(&dir.path().join("mnt"), "2m") {
        Ok(m) => m,
        Err(e) => {
            skip("store-error test", &format!("a tmpfs mount: {e}"));
            return;
        }
    };
    // Declared after the mount: dropped (killed) before it is unmounted.
    // Records big enough that a refused one cannot fit in what the filler
    // leaves (about 64 KB of metadata): past the default max_record_bytes.
    let mut d = Daemon::with_data_dir(
        &mount.path().join("data"),
        &[("PYCOMD_MAX_RECORD_BYTES", "1048576")],
        &[],
    );
    let mut accepted: BTreeSet<String> = (0..5).map(|i| format!("/full/ok/{i}")).collect();
    for name in &accepted {
        d.ns()
            .register(&leased(name, ADDRESS, &["accepted"], TTL_MS))
            .unwrap_or_else(|e| panic!("register {name} with space left: {e}"));
    }
    let errors_before = store_errors(&d);

    let filler = mount.path().join("filler");
    let filled = fill(&filler);
    eprintln!("filled {} with {filled} bytes", mount.path().display());
    let err = d
        .ns()
        .register(&big("/full/refused", "refused"))
        .expect_err("a register on a full disk must not be acknowledged");
    assert_not_written(&err, &d);
    let mut ns = d.ns();
    let located = ns.locate("refused", None);
    assert_eq!(
        located.as_ref().map_err(|e| e.code()).err(),
        Some(Some(Code::ServiceNotFound)),
        "a register answered code 7 must change nothing, but locate finds: {located:?}"
    );
    assert!(
        store_errors(&d) > errors_before,
        "stat's store.errors should count the failed write: {}",
        ns.stat().unwrap()
    );
    assert_eq!(
        services(&d, "accepted"),
        accepted,
        "reads go on while the disk is full"
    );

    // Space again: writes succeed again, without a restart.
    std::fs::remove_file(&filler).expect("remove the filler");
    let mut last = None;
    let recovered = wait_until(Duration::from_secs(10), || {
        match d.ns().register(&big("/full/after", "after")) {
            Ok(_) => true,
            Err(e) => {
                last = Some(e.to_string());
                false
            }
        }
    });
    assert!(
        recovered,
        "a register should succeed once there is space again (last error: {last:?}); log:\n{}",
        d.log()
    );
    assert_eq!(d.ns().locate("after", None).unwrap().service, "/full/after");
    let status = d.terminate();
    assert!(
        status.success(),
        "SIGTERM with nothing in flight should exit 0, got {status}; log:\n{}",
        d.log()
    );

    // After a restart: the refused register is not there, the others are.
    d.spawn();
    let located = d.ns().locate("refused", None);
    assert_eq!(
        located.as_ref().map_err(|e| e.code()).err(),
        Some(Some(Code::ServiceNotFound)),
        "a register answered code 7 must not appear after a restart: {located:?}"
    );
    accepted.insert("/full/after".to_string());
    let mut present = services(&d, "accepted");
    present.extend(services(&d, "after"));
    assert_eq!(present, accepted, "after a restart, every acknowledged register");
    assert!(d.terminate().success());
}

/// The register is made to be in flight at SIGTERM: the filesystem is
/// frozen, so that pycomd's log writer blocks in write(2) on it (seen in
/// /proc as state D), and thawed only once pycomd has begun to stop; then
/// the write finds the disk full.
#[test]
fn sigterm_while_a_write_that_cannot_be_made_durable_is_in_flight_exits_1() {
    if let Err(missing) = prerequisites(&[("mkfs.ext4", "-V"), ("fsfreeze", "--version")], true) {
        skip("store-error test", &missing);
        return;
    }
    let Some(disk) = Ext4Image::mounted("store-error test", IMAGE_BYTES) else {
        return;
    };
    let mount = &disk.mount;
    // Records big enough that a refused one cannot fit in what the filler
    // leaves (about 64 KB of metadata): past the default max_record_bytes.
    let mut d = Daemon::with_data_dir(
        &mount.path().join("data"),
        &[("PYCOMD_MAX_RECORD_BYTES", "1048576")],
        &[],
    );
    let accepted: BTreeSet<String> = (0..3).map(|i| format!("/inflight/ok/{i}")).collect();
    for name in &accepted {
        d.ns()
            .register(&leased(name, ADDRESS, &["accepted"], TTL_MS))
            .unwrap_or_else(|e| panic!("register {name} with space left: {e}"));
    }
    let filler = mount.path().join("filler");
    let filled = fill(&filler);
    eprintln!("filled {} with {filled} bytes", mount.path().display());

    // Declared after the daemon: thawed before it is killed (a process
    // blocked on a frozen filesystem cannot die).
    let mut freeze = Freeze::new(mount.path());
    let endpoint = d.endpoint.clone();
    let client = std::thread::spawn(move || {
        let ctx = zmq::Context::new();
        let mut conn = Connection::open(&ctx, &endpoint).expect("a client connection to pycomd");
        conn.set_timeout(Duration::from_secs(10));
        NameserverClient::new(conn).register(&big("/inflight/refused", "refused"))
    });
    let pid = d.pid();
    assert!(
        wait_until(Duration::from_secs(10), || log_writer_blocked(pid)),
        "pycomd's log writer (pid {pid}, thread pycomd-log) should block writing to the frozen \
         filesystem; log:\n{}",
        d.log()
    );
    d.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(10), || d.log().contains("stopping")),
        "pycomd should log that it is stopping; log:\n{}",
        d.log()
    );
    freeze.thaw();

    let status = d.wait_for_exit(Duration::from_secs(20));
    assert_eq!(
        status.code(),
        Some(1),
        "SIGTERM while a write that could not be made durable was in flight should exit 1, got \
         {status}; log:\n{}",
        d.log()
    );
    // The write in flight is answered before pycomd exits.
    let reply = client.join().expect("the client thread panicked");
    let err = reply.expect_err("a register that found the disk full must not be acknowledged");
    assert_not_written(&err, &d);

    std::fs::remove_file(&filler).expect("remove the filler");
    d.spawn();
    let located = d.ns().locate("refused", None);
    assert_eq!(
        located.as_ref().map_err(|e| e.code()).err(),
        Some(Some(Code::ServiceNotFound)),
        "a register answered code 7 must not appear after a restart: {located:?}"
    );
    assert_eq!(services(&d, "accepted"), accepted, "after a restart");
    assert!(d.terminate().success());
}

/// A registration whose log frame (about 64 KB) is larger than any space
/// the filler leaves: the free end of the log's last page or block, or
/// blocks ext4 hands back after a sync.
fn big(service: &str, interface: &str) -> Registration {
    let mut reg = leased(service, ADDRESS, &[interface], TTL_MS);
    for i in 0..64 {
        reg.metadata.insert(format!("pad{i:02}"), "x".repeat(1000));
    }
    reg
}

/// Code 7, saying nothing was written and why.
fn assert_not_written(err: &pycom_client::Error, d: &Daemon) {
    assert_eq!(
        err.code(),
        Some(Code::Unavailable),
        "a write that cannot be made durable should be answered code 7, got: {err}; log:\n{}",
        d.log()
    );
    let message = err.to_string();
    for expected in [NOT_WRITTEN, DISK_FULL] {
        assert!(
            message.contains(expected),
            "the code-7 reply should say {expected:?}: {message}"
        );
    }
}

fn store_errors(d: &Daemon) -> u64 {
    let stat = d.ns().stat().expect("stat");
    stat["store"]["errors"]
        .as_u64()
        .unwrap_or_else(|| panic!("stat has no store.errors: {stat}"))
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

/// Fill the filesystem holding `path` with the file `path`: write until
/// ENOSPC, sync (ext4 may hand back blocks it had reserved), and again,
/// until a write right after a sync finds no space. Returns the bytes
/// written.
fn fill(path: &Path) -> u64 {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create the filler {}: {e}", path.display()));
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut total = 0;
    for _ in 0..100 {
        let mut wrote = 0;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => wrote += n as u64,
                Err(e) if e.raw_os_error() == Some(ENOSPC) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("write the filler {}: {e}", path.display()),
            }
        }
        file.sync_all()
            .unwrap_or_else(|e| panic!("sync the filler {}: {e}", path.display()));
        total += wrote;
        if wrote == 0 {
            return total;
        }
    }
    panic!("{} is still not full after {total} bytes", path.display());
}

/// Whether pycomd's log writer thread is blocked in the kernel (state D):
/// here, writing to the frozen filesystem.
fn log_writer_blocked(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        comm.trim() == "pycomd-log"
            && std::fs::read_to_string(task.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    // "tid (comm) S ...": comm may hold spaces and parentheses.
                    let state = stat.get(stat.rfind(')')? + 1..)?.trim_start().chars().next()?;
                    Some(state == 'D')
                })
                .unwrap_or(false)
    })
}

/// A filesystem frozen with `fsfreeze -f` (writes to it block until it is
/// thawed); thawed when dropped.
struct Freeze {
    dir: PathBuf,
    frozen: bool,
}

impl Freeze {
    fn new(dir: &Path) -> Freeze {
        let out = Command::new("fsfreeze")
            .arg("-f")
            .arg(dir)
            .output()
            .expect("fsfreeze should run");
        assert!(
            out.status.success(),
            "fsfreeze -f {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Freeze {
            dir: dir.to_path_buf(),
            frozen: true,
        }
    }

    /// Thaw; never panics (it runs in `drop`, possibly while unwinding).
    fn thaw(&mut self) {
        if !self.frozen {
            return;
        }
        self.frozen = false;
        let ok = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: could not thaw {}", self.dir.display());
        }
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        self.thaw();
    }
}
