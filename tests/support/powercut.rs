//! A power cut for pycomd: its data dir on ext4 in a loop-mounted image
//! file; pycomd frozen (SIGSTOP) right after an ack and the image copied,
//! so the copy holds what ext4 had handed to its device by then, like a
//! disk whose power went out. Mounting the copy replays the journal as after
//! a power loss, and a fresh pycomd starts on it.
//!
//! Needs root, `mkfs.ext4`, `mount` and a free loop device; without them
//! [`Disk::new`] skips (see [`crate::mounts::skip`]).

use crate::mounts::{prerequisites, skip, Ext4Image, Mount};
use crate::{wait_until, Daemon};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Size of the (sparse) ext4 image.
const IMAGE_BYTES: u64 = 256 * 1024 * 1024;
/// pycomd's data dir, inside the filesystem.
const DATA: &str = "data";

/// The ext4 image, mounted, that pycomd keeps its data dir on until the
/// power cut. Declare it before the [`Daemon`] running on it, so that the
/// daemon is killed before the filesystem is unmounted.
pub struct Disk {
    // Fields drop in order: unmounted before its temp dir goes.
    mount: Mount,
    image: PathBuf,
    dir: tempfile::TempDir,
}

impl Disk {
    /// A fresh ext4 image, mounted; `None` (after saying why) when a
    /// prerequisite of `test` is missing.
    pub fn new(test: &str) -> Option<Disk> {
        if let Err(missing) = prerequisites(&[("mkfs.ext4", "-V")], true) {
            skip(test, &missing);
            return None;
        }
        let Ext4Image { mount, image, dir } = Ext4Image::mounted(test, IMAGE_BYTES)?;
        Some(Disk { mount, image, dir })
    }

    /// Where pycomd keeps its data (created by pycomd).
    pub fn data_dir(&self) -> PathBuf {
        self.mount.path().join(DATA)
    }

    /// The power cut, `daemon` having just been sent SIGSTOP (a
    /// [`Freezer`]): once every thread of it has stopped, copy the image,
    /// kill `daemon`, unmount; then mount the copy (ext4 replays its
    /// journal) for a fresh pycomd.
    pub fn cut_power(mut self, daemon: &mut Daemon) -> AfterCut {
        let pid = daemon.pid();
        assert!(
            wait_until(Duration::from_secs(10), || all_threads_stopped(pid)),
            "pycomd (pid {pid}) did not stop on SIGSTOP; log:\n{}",
            daemon.log()
        );
        let copy = self.dir.path().join("disk-after-power-cut.img");
        let copied = Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.image)
            .arg(&copy)
            .status()
            .expect("cp should run, to copy the disk image");
        assert!(copied.success(), "copying the disk image failed: {copied}");
        daemon.kill9();
        self.mount.unmount();
        let mount = Mount::ext4_image(&copy, &self.dir.path().join("mnt-after"))
            .expect("the copied image should mount (ext4 replays its journal)");
        AfterCut {
            mount,
            _dir: self.dir,
        }
    }
}

/// The copy of the disk as the power cut left it, mounted. Declare it
/// before the [`Daemon`] started on it.
pub struct AfterCut {
    // Fields drop in order: unmounted before its temp dir goes.
    mount: Mount,
    _dir: tempfile::TempDir,
}

impl AfterCut {
    /// pycomd's data dir as the power cut left it.
    pub fn data_dir(&self) -> PathBuf {
        self.mount.path().join(DATA)
    }
}

/// Sends SIGSTOP on demand within microseconds, without libc: a shell,
/// started beforehand, waiting on its stdin to run its builtin `kill`.
pub struct Freezer {
    shell: std::process::Child,
}

impl Freezer {
    pub fn new(pid: u32) -> Freezer {
        let mut shell = Command::new("sh")
            .args(["-c", r#"echo ready && read go && kill -STOP "$1""#, "sh"])
            .arg(pid.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sh should start, to freeze pycomd later");
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(shell.stdout.as_mut().expect("the freezer's stdout")),
            &mut ready,
        )
        .expect("the freezer should say it is ready");
        assert_eq!(ready.trim(), "ready", "the freezer shell did not start right");
        Freezer { shell }
    }

    /// SIGSTOP now; returns once the signal is sent.
    pub fn freeze(&mut self) {
        self.shell
            .stdin
            .take()
            .expect("freeze is called once")
            .write_all(b"go\n")
            .expect("the freezer should take its go");
        let status = self.shell.wait().expect("wait for the freezer");
        assert!(status.success(), "kill -STOP pycomd failed: {status}");
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        // Without its go (a panic came first), it reads EOF and exits.
        drop(self.shell.stdin.take());
        let _ = self.shell.wait();
    }
}

/// Every thread of `pid` is stopped (state T), so it can write nothing more.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|stat| {
                // "tid (comm) S ...": comm may hold spaces and parentheses.
                let state = stat.get(stat.rfind(')')? + 1..)?.trim_start().chars().next()?;
                Some(state == 'T' || state == 't')
            })
            .unwrap_or(false)
    })
}

/// A few names for a failure message.
pub fn examples(names: &[String]) -> Vec<&String> {
    names.iter().take(5).collect()
}

/// Client threads writing to pycomd until told to stop, each adding its
/// acknowledged writes to a shared count: the load a power cut falls on.
pub struct Clients<T> {
    threads: Vec<JoinHandle<T>>,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    started: Instant,
}

/// One client thread: `(index, endpoint, stop, progress) -> what it saw acknowledged`.
pub type Client<T> = fn(usize, &str, &AtomicBool, &AtomicUsize) -> T;

impl<T: Send + 'static> Clients<T> {
    /// `n` threads, each running `client` against `endpoint`.
    pub fn spawn(n: usize, endpoint: &str, client: Client<T>) -> Clients<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(n));
        let threads = (0..n)
            .map(|t| {
                let endpoint = endpoint.to_string();
                let (stop, progress, running) = (stop.clone(), progress.clone(), running.clone());
                std::thread::spawn(move || {
                    let acked = client(t, &endpoint, &stop, &progress);
                    running.fetch_sub(1, Ordering::SeqCst);
                    acked
                })
            })
            .collect();
        Clients {
            threads,
            stop,
            progress,
            running,
            started: Instant::now(),
        }
    }

    /// Wait until `count` `writes` are acknowledged in all; fails the test
    /// (with `daemon`'s log) if they are not within `timeout` or the
    /// clients all stopped short. Returns when the load started.
    pub fn wait_for(&self, count: usize, writes: &str, timeout: Duration, daemon: &Daemon) -> Instant {
        let reached = wait_until(timeout, || {
            self.progress.load(Ordering::SeqCst) >= count || self.running.load(Ordering::SeqCst) == 0
        });
        assert!(
            reached && self.progress.load(Ordering::SeqCst) >= count,
            "the clients got only {} of {count} {writes} acknowledged in {:?}; pycomd log:\n{}",
            self.progress.load(Ordering::SeqCst),
            self.started.elapsed(),
            daemon.log(),
        );
        self.started
    }

    /// Tell the clients to stop (their requests in flight time out).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// What each client saw acknowledged, once all have stopped.
    pub fn join(self) -> Vec<T> {
        self.stop();
        self.threads
            .into_iter()
            .map(|t| t.join().expect("a client thread panicked"))
            .collect()
    }
}
