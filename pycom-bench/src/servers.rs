//! The servers the tool starts itself: the raw ZeroMQ echo baseline, a
//! pycom-client echo service, and the raw XSUB/XPUB proxy (pub-sub baseline). Each runs in a child process of its own (this
//! same binary with `--serve`), so it meets the load exactly as pycomd does:
//! its own process, its own ZeroMQ I/O thread.

use pycom_client::service::{Auth, Interface, RunningService, Service};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A ROUTER that sends every message straight back, frames untouched: the
/// most a ZeroMQ server can do on this machine.
pub struct RawEcho {
    pub endpoint: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RawEcho {
    pub fn start(ctx: &zmq::Context) -> Result<RawEcho, String> {
        let socket = ctx.socket(zmq::ROUTER).map_err(|e| e.to_string())?;
        socket.set_linger(0).map_err(|e| e.to_string())?;
        socket.set_sndhwm(0).map_err(|e| e.to_string())?;
        socket.set_rcvhwm(0).map_err(|e| e.to_string())?;
        socket.bind("tcp://127.0.0.1:*").map_err(|e| e.to_string())?;
        let endpoint = socket
            .get_last_endpoint()
            .map_err(|e| e.to_string())?
            .map_err(|_| "endpoint is not UTF-8".to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if socket.poll(zmq::POLLIN, 100).unwrap_or(0) == 0 {
                    continue;
                }
                while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
                    let _ = socket.send_multipart(frames, zmq::DONTWAIT);
                }
            }
        });
        Ok(RawEcho {
            endpoint,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `bench.echo.echo(args) -> args`, hosted with pycom-client, unregistered.
/// `guard`: the pycomd that validates callers' tokens, for an echo that
/// requires authentication (`Auth::required`, answers cached).
pub fn echo_service(workers: usize, guard: Option<&str>) -> Result<RunningService, String> {
    let mut echo = Interface::new("bench.echo").handle("echo", |req| Ok(req.args.clone().into()));
    let mut builder = Service::builder("/bench/echo")
        .without_registration()
        .workers(workers);
    if let Some(nameserver) = guard {
        echo = echo.auth(Auth::required());
        builder = builder.context(pycom_client::Context::new(nameserver).map_err(|e| e.to_string())?);
    }
    builder
        .interface(echo)
        .start()
        .map_err(|e| format!("cannot start the echo service: {e}"))
}

/// A server in a child process: `pycom-bench --serve KIND` prints its
/// endpoint on stdout and serves until its stdin closes.
pub struct Child {
    pub endpoint: String,
    child: std::process::Child,
}

impl Child {
    pub fn spawn(kind: &str, workers: usize) -> Result<Child, String> {
        Child::spawn_with(kind, &["--workers", &workers.to_string()])
    }

    /// `pycom-bench --serve KIND ARGS...`
    pub fn spawn_with(kind: &str, args: &[&str]) -> Result<Child, String> {
        use std::io::BufRead;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = std::process::Command::new(exe)
            .args(["--serve", kind])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the {kind} server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout from the server")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("the {kind} server did not say where it listens: {e}"))?;
        let endpoint = line.trim().to_string();
        if !endpoint.contains("://") {
            let _ = child.kill();
            return Err(format!("the {kind} server failed to start"));
        }
        Ok(Child { endpoint, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Closing stdin ends the server; kill in case it is stuck.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pub-sub baseline: a raw libzmq XSUB/XPUB proxy (`zmq_proxy`) on a
/// thread of its own, both sides at high-water mark `hwm` (as pycomd's
/// forwarder). Returns "XSUB-endpoint XPUB-endpoint".
fn raw_proxy(ctx: &zmq::Context, hwm: i32) -> Result<String, String> {
    let mut endpoints = Vec::new();
    let mut sockets = Vec::new();
    for kind in [zmq::XSUB, zmq::XPUB] {
        let socket = ctx.socket(kind).map_err(|e| e.to_string())?;
        socket
            .set_sndhwm(hwm)
            .and_then(|()| socket.set_rcvhwm(hwm))
            .and_then(|()| socket.set_linger(0))
            .and_then(|()| socket.bind("tcp://127.0.0.1:*"))
            .map_err(|e| e.to_string())?;
        endpoints.push(
            socket
                .get_last_endpoint()
                .map_err(|e| e.to_string())?
                .map_err(|_| "endpoint is not UTF-8".to_string())?,
        );
        sockets.push(socket);
    }
    let (xpub, xsub) = (sockets.pop(), sockets.pop());
    let (Some(xsub), Some(xpub)) = (xsub, xpub) else {
        return Err("no proxy sockets".into());
    };
    std::thread::spawn(move || zmq::proxy(&xsub, &xpub));
    Ok(endpoints.join(" "))
}

/// The `--serve` mode: serve until stdin closes.
pub fn serve(kind: &str, workers: usize, hwm: i32, guard: Option<&str>) -> Result<(), String> {
    let ctx = zmq::Context::new();
    if kind == "proxy" {
        println!("{}", raw_proxy(&ctx, hwm)?);
        use std::io::Read;
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        // The proxy's thread never returns its sockets: leave without
        // waiting for the context to close them.
        std::process::exit(0);
    }
    let (endpoint, _echo, _service) = match kind {
        "echo" => {
            let echo = RawEcho::start(&ctx)?;
            (echo.endpoint.clone(), Some(echo), None)
        }
        "service" => {
            let service = echo_service(workers, guard)?;
            (service.endpoint().to_string(), None, Some(service))
        }
        other => return Err(format!("unknown server kind '{other}'")),
    };
    println!("{endpoint}");
    use std::io::Read;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}
