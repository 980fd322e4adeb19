//! Helpers for end-to-end tests: start the real `pycomd` on a free port with
//! a temporary data dir, wait for conditions (never a fixed sleep), talk to
//! it, and clean up the process when the test ends.
//!
//! The binaries are taken from the target directory this test was built
//! into (`cargo build --workspace` first; `tests/run.sh` does).

pub mod auth;
pub mod cluster;
pub mod fixtures;
pub mod linearizability;
pub mod mounts;
pub mod powercut;
pub mod proxy;

use pycom_client::{Connection, NameserverClient, Registration};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary, next to this test's `deps` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace, or bash tests/run.sh)",
        path.display()
    );
    path
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Poll `cond` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Records pycomd lists of its own: the nameserver and the pub-sub forwarder.
pub const OWN_RECORDS: usize = 2;

/// A running pycomd, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub port: u16,
    pub endpoint: String,
    /// The forwarder's endpoints (publishers, subscribers).
    pub xsub: String,
    pub xpub: String,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// pycomd on a free port with a fresh data dir and default settings.
    pub fn start() -> Daemon {
        Daemon::with(&[], &[])
    }

    /// Extra `PYCOMD_*` environment and extra flags.
    pub fn with(env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        Daemon::new(dir, data_dir, env, args)
    }

    /// Like [`Daemon::with`], but with its registry in `data_dir` (created
    /// by pycomd if missing), e.g. on a filesystem the test mounted; the log
    /// stays in a temp dir of its own, off that filesystem.
    pub fn with_data_dir(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        Daemon::new(dir, data_dir.to_path_buf(), env, args)
    }

    /// The forwarder binds ports the system picks (unless `env` says
    /// otherwise), so that parallel tests never share pycomd's defaults nor
    /// race each other for a port found free a moment before.
    fn new(dir: tempfile::TempDir, data_dir: PathBuf, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let mut daemon = Daemon::unstarted(free_port(), dir, data_dir, env, args);
        daemon.spawn();
        daemon
    }

    /// As [`Daemon::new`], on `port`, without starting it ([`Daemon::spawn`],
    /// or [`Daemon::launch`] then [`Daemon::wait_serving`]); its log goes in
    /// `dir`, which it keeps.
    pub(crate) fn unstarted(
        port: u16,
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Daemon {
        let (xsub, xpub) = ("tcp://127.0.0.1:*".to_string(), "tcp://127.0.0.1:*".to_string());
        let mut all: Vec<(String, String)> = vec![
            ("PYCOMD_PUBSUB__XSUB".into(), xsub.clone()),
            ("PYCOMD_PUBSUB__XPUB".into(), xpub.clone()),
            // A port the system picks: parallel tests never share the
            // default (stat says where it is: Daemon::http_address).
            ("PYCOMD_HTTP_LISTEN".into(), "127.0.0.1:0".into()),
        ];
        for (k, v) in env {
            all.retain(|(name, _)| name != k);
            all.push((k.to_string(), v.to_string()));
        }
        Daemon {
            child: None,
            port,
            endpoint: format!("tcp://127.0.0.1:{port}"),
            xsub,
            xpub,
            data_dir,
            log_path: dir.path().join("pycomd.log"),
            env: all,
            args: args.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        }
    }

    /// Start (again) on the same port and data dir; waits until it serves.
    pub fn spawn(&mut self) {
        self.launch();
        self.wait_serving();
    }

    /// Whether it was started and not since stopped through this handle
    /// ([`Daemon::kill9`], [`Daemon::terminate`], [`Daemon::wait_for_exit`]).
    pub fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// Start the process, without waiting for it to serve.
    pub(crate) fn launch(&mut self) {
        assert!(self.child.is_none(), "pycomd is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut cmd = Command::new(bin("pycomd"));
        cmd.arg("--listen")
            .arg(&self.endpoint)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn pycomd"));
    }

    /// Wait until a started pycomd answers `stat`; panics with its log
    /// when it exits first or takes more than 15 s.
    pub(crate) fn wait_serving(&mut self) {
        let ok = wait_until(Duration::from_secs(15), || {
            self.assert_running();
            // Refused is serving too (access control without anonymous reads).
            matches!(
                self.ns_with_timeout(200).stat(),
                Ok(_) | Err(pycom_client::Error::AccessDenied(_))
            )
        });
        assert!(ok, "pycomd did not start serving; log:\n{}", self.log());
        // Where its forwarder is; a restart binds the same ports again, as
        // a configured pycomd would (clients reconnect to them).
        if let Ok(forwarder) = self.ns_with_timeout(2000).locate("org.pycom.pubsub", None) {
            for (key, var) in [("xsub", "PYCOMD_PUBSUB__XSUB"), ("xpub", "PYCOMD_PUBSUB__XPUB")] {
                let Some(endpoint) = forwarder.metadata.get(key) else {
                    continue;
                };
                if key == "xsub" {
                    self.xsub = endpoint.clone();
                } else {
                    self.xpub = endpoint.clone();
                }
                for (name, value) in &mut self.env {
                    if name == var && value.ends_with(":*") {
                        *value = endpoint.clone();
                    }
                }
            }
        }
    }

    fn assert_running(&mut self) {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("pycomd exited early with {status}; log:\n{}", self.log());
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A nameserver client with a 5 s timeout.
    pub fn ns(&self) -> NameserverClient {
        self.ns_with_timeout(5000)
    }

    pub fn ns_with_timeout(&self, ms: u64) -> NameserverClient {
        NameserverClient::new(self.connection(ms))
    }

    pub fn connection(&self, timeout_ms: u64) -> Connection {
        let ctx = zmq::Context::new();
        let mut conn = Connection::open(&ctx, &self.endpoint).expect("connect");
        conn.set_timeout(Duration::from_millis(timeout_ms));
        conn
    }

    /// Send a signal by name (TERM, HUP, KILL...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10));
    }

    /// Wait (up to `timeout`) for pycomd to exit after a signal sent with
    /// [`Daemon::signal`], and return its exit status.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_exit(timeout)
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("pycomd did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything pycomd logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Where its HTTP endpoint (metrics, health) listens, as stat says.
    pub fn http_address(&self) -> String {
        let stat = self.ns().stat().expect("stat");
        stat.get("http")
            .and_then(|h| h.as_str())
            .unwrap_or_else(|| panic!("stat says the HTTP endpoint is off: {stat}"))
            .to_string()
    }

    /// Resident memory of the daemon, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a process that was run to its end ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// Everything it wrote to stderr (pycomd: its log, and why it stopped).
    pub stderr: String,
}

/// `pycomd` as [`Daemon`] runs it (no `RUST_LOG`, no stdin), for flags of
/// the caller's choosing; always give it `--listen` on a [`free_port`].
pub fn pycomd_command() -> Command {
    let mut cmd = Command::new(bin("pycomd"));
    cmd.env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

/// `pycomd --restore FILE --data-dir DATA_DIR` (with `--force` if asked),
/// run until it exits.
pub fn restore(file: &Path, data_dir: &Path, force: bool) -> Exited {
    let mut cmd = pycomd_command();
    cmd.arg("--restore").arg(file).arg("--data-dir").arg(data_dir);
    if force {
        cmd.arg("--force");
    }
    run_to_exit(&mut cmd, Duration::from_secs(60))
}

/// Run `cmd` until it exits on its own (e.g. pycomd refusing to start),
/// capturing its stderr. If it still runs after `timeout`, it is killed and
/// this panics with what it wrote.
pub fn run_to_exit(cmd: &mut Command, timeout: Duration) -> Exited {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&path).expect("stderr file");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn the command");
    let read = || std::fs::read_to_string(&path).unwrap_or_default();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Exited {
                status,
                stderr: read(),
            };
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} was still running after {timeout:?}; stderr:\n{}", read());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `pycomctl ARGS` against `d` (through `PYCOM_NAMESERVER`).
pub fn pycomctl(d: &Daemon, args: &[&str]) -> std::process::Output {
    Command::new(bin("pycomctl"))
        .env("PYCOM_NAMESERVER", &d.endpoint)
        .args(args)
        .output()
        .expect("run pycomctl")
}

/// A command's standard output, as text.
pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's standard error, as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A registration with a lease.
pub fn leased(service: &str, address: &str, interfaces: &[&str], ttl_ms: u64) -> Registration {
    Registration {
        service: service.into(),
        address: address.into(),
        interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
        ttl_ms: Some(ttl_ms),
        metadata: Default::default(),
    }
}

/// A registration without a lease (probed by pycomd).
pub fn probed(service: &str, address: &str, interfaces: &[&str]) -> Registration {
    Registration {
        ttl_ms: None,
        ..leased(service, address, interfaces, 0)
    }
}

/// A tiny service answering every request, like a PyCOM 0.3 service (REP),
/// on a thread; stops when dropped.
pub struct EchoService {
    pub endpoint: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoService {
    pub fn start() -> EchoService {
        let ctx = zmq::Context::new();
        let socket = ctx.socket(zmq::REP).expect("socket");
        socket.set_linger(0).expect("linger");
        socket.bind("tcp://127.0.0.1:*").expect("bind");
        let endpoint = socket.get_last_endpoint().expect("endpoint").expect("utf-8");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if socket.poll(zmq::POLLIN, 20).unwrap_or(0) > 0 && socket.recv_multipart(0).is_ok() {
                    let _ = socket.send_multipart([&b"OK"[..], br#"{"code": 4, "error": "unsupported"}"#], 0);
                }
            }
        });
        EchoService {
            endpoint,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoService {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process whose stdout and stderr are read line by line as they
/// come (so a test can wait for "READY" or "subscribed" before acting),
/// killed when dropped.
pub struct Streamed {
    child: Child,
    what: String,
    out_rx: std::sync::mpsc::Receiver<String>,
    err_rx: std::sync::mpsc::Receiver<String>,
    /// Every stdout line so far.
    pub out: Vec<String>,
    /// Every stderr line so far.
    pub err: Vec<String>,
}

impl Streamed {
    /// Start `cmd` with its stdout and stderr piped (stdin closed).
    pub fn spawn(cmd: &mut Command) -> Streamed {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        fn pump(stream: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        }
        let out_rx = pump(child.stdout.take().expect("stdout"));
        let err_rx = pump(child.stderr.take().expect("stderr"));
        Streamed {
            child,
            what,
            out_rx,
            err_rx,
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    /// Take the lines that arrived so far.
    fn take(&mut self) {
        self.out.extend(self.out_rx.try_iter());
        self.err.extend(self.err_rx.try_iter());
    }

    /// Wait until a stdout line contains `needle`; panics (with all the
    /// output) after `timeout` or when the process exits first.
    pub fn wait_stdout(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_line(false, needle, timeout)
    }

    /// Wait until a stderr line contains `needle` (as `wait_stdout`).
    pub fn wait_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_line(true, needle, timeout)
    }

    fn wait_line(&mut self, stderr: bool, needle: &str, timeout: Duration) -> String {
        let find = |s: &Streamed| {
            let lines = if stderr { &s.err } else { &s.out };
            lines.iter().find(|l| l.contains(needle)).cloned()
        };
        let mut exited = None;
        wait_until(timeout, || {
            self.take();
            if find(self).is_some() {
                return true;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // What it printed last may still be in the pipes.
                self.drain(Instant::now() + Duration::from_secs(2));
                exited = Some(status);
                return true;
            }
            false
        });
        self.take();
        if let Some(line) = find(self) {
            return line;
        }
        let how = match exited {
            Some(status) => format!("exited ({status}) without printing"),
            None => format!("did not print within {timeout:?}"),
        };
        let output = self.output();
        panic!("{} {how} '{needle}'; {output}", self.what);
    }

    /// Read both pipes to their end (the process has exited), until `deadline`.
    fn drain(&mut self, deadline: Instant) {
        for (rx, lines) in [(&self.out_rx, &mut self.out), (&self.err_rx, &mut self.err)] {
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                lines.push(line);
            }
        }
    }

    /// Wait for the process to exit and for the rest of its output; panics
    /// (killing it) after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let output = self.output();
                panic!("{} was still running after {timeout:?}; {output}", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The pipes close with the process: read them to their end.
        self.drain(Instant::now() + Duration::from_secs(2));
        status
    }

    /// Everything it printed so far, for assertion messages.
    pub fn output(&mut self) -> String {
        self.take();
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.out.join("\n"),
            self.err.join("\n")
        )
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange with pycomd's endpoint at `address` (`host:port`):
/// the raw request `request` (e.g. "GET /metrics HTTP/1.1\r\n\r\n"), then
/// (status, body) once it closes the connection.
pub fn http_raw(address: &str, request: &[u8]) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

/// `GET path` on pycomd's HTTP endpoint: (status, body).
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    http_raw(address, request.as_bytes()).unwrap_or_else(|e| panic!("GET {path} from {address}: {e}"))
}
