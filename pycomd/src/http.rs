//! The HTTP endpoint for operators (`http_listen`): `/metrics` in the
//! Prometheus text format, `/health` (the process serves) and `/ready`
//! (the store takes writes and, in a cluster, a leader is known), the
//! shape Kubernetes probes and load balancers use.
//!
//! Plain blocking HTTP/1.1 on std's TCP: an accept thread hands connections
//! to [`WORKERS`] threads, each answering one request per connection. The
//! request is parsed by `httparse`; everything else is bounded so that no
//! client can hold pycomd: [`MAX_REQUEST_BYTES`] of head, [`READ_DEADLINE`]
//! to send it, [`WRITE_TIMEOUT`] to take the reply, and connections beyond
//! [`QUEUE`] waiting are closed at once. (tiny_http, the obvious crate, sets
//! no timeouts and starts a thread per connection without bound: a slow
//! client would hold a thread for ever.)
//!
//! The numbers come from the server thread, which alone owns them: a
//! worker posts [`Event::Scrape`] to its mailbox and waits (at most
//! [`SERVER_TIMEOUT`]) for the copy; the request path pays nothing until a
//! scrape, and then a copy of a few counters.

use crate::config::Settings;
use crate::mailbox::{Event, Poster};
use crate::metrics::{self, Numbers};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Where the endpoint listens when `http_listen` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2015";
/// Threads answering requests: a slow client holds one for at most
/// [`READ_DEADLINE`] + [`WRITE_TIMEOUT`].
pub const WORKERS: usize = 4;
/// Accepted connections waiting for a worker; more are closed at once.
const QUEUE: usize = 64;
/// Largest request head (request line and headers) read.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its whole request head.
pub const READ_DEADLINE: Duration = Duration::from_secs(2);
/// Time a client has to take each part of the reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a worker waits for the server thread's numbers.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the endpoint runs, and if not why (for `stat`).
#[derive(Debug, Clone)]
pub enum Started {
    Running(String),
    Off(String),
}

/// Bind `http_listen` and start the threads. A configured address that
/// cannot be bound is an error; the default one a warning (another pycomd
/// on the host has it), PROTOCOL.md 1. `poster` makes each worker's handle
/// on the server's mailbox.
pub fn start(
    settings: &Settings,
    mut poster: impl FnMut() -> Result<Poster, String>,
) -> Result<Started, String> {
    let (address, configured) = match settings.http_listen.as_deref() {
        None => (DEFAULT_LISTEN, false),
        Some("") => return Ok(Started::Off("disabled by http_listen = \"\"".into())),
        Some(address) => (address, true),
    };
    let listener = match TcpListener::bind(address) {
        Ok(listener) => listener,
        Err(e) if configured => return Err(format!("cannot listen on http_listen = {address}: {e}")),
        Err(e) => {
            let why = format!(
                "the HTTP endpoint (metrics, health) is off: its default address {address} cannot be bound ({e}); another pycomd on this host may have it. Set http_listen to run it here"
            );
            warn!("{why}");
            return Ok(Started::Off(why));
        }
    };
    let bound = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| address.to_string());
    let (tx, rx) = mpsc::sync_channel::<TcpStream>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..WORKERS {
        let poster = poster()?;
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("pycomd-http-{i}"))
            .spawn(move || worker(&rx, &poster))
            .map_err(|e| format!("cannot start the HTTP endpoint's threads: {e}"))?;
    }
    std::thread::Builder::new()
        .name("pycomd-http".into())
        .spawn(move || accept(&listener, &tx))
        .map_err(|e| format!("cannot start the HTTP endpoint's thread: {e}"))?;
    info!(address = %bound, "HTTP endpoint serving /metrics, /health, /ready");
    Ok(Started::Running(bound))
}

fn accept(listener: &TcpListener, queue: &mpsc::SyncSender<TcpStream>) {
    let mut errors_logged: Option<Instant> = None;
    for stream in listener.incoming() {
        match stream {
            // A full queue: the connection is closed unanswered (dropped).
            Ok(stream) => {
                if let Err(mpsc::TrySendError::Full(_)) = queue.try_send(stream) {
                    debug!("HTTP connection closed: {QUEUE} already wait for a worker");
                }
            }
            // Out of descriptors, a connection reset before it was taken:
            // go on, logging once a minute at most.
            Err(e) => {
                if errors_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    errors_logged = Some(Instant::now());
                    warn!("the HTTP endpoint cannot accept a connection: {e}");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn worker(queue: &Mutex<mpsc::Receiver<TcpStream>>, poster: &Poster) {
    loop {
        let next = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(stream) = next else { return };
        if let Err(e) = serve(stream, poster) {
            debug!("HTTP request not answered: {e}");
        }
    }
}

/// A reply: status, content type, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Read one request head, bounded in size and time.
fn read_head(stream: &mut TcpStream, buf: &mut [u8]) -> Result<usize, Reply> {
    let deadline = Instant::now() + READ_DEADLINE;
    let mut len = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Reply::text(408, "the request was not sent in time\n"));
        }
        // Never zero: a zero timeout is refused by set_read_timeout.
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        if len == buf.len() {
            return Err(Reply::text(
                431,
                format!("the request head exceeds {MAX_REQUEST_BYTES} bytes\n"),
            ));
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => {
                return Err(Reply::text(
                    400,
                    "the connection closed before the request ended\n",
                ))
            }
            Ok(n) => len += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Reply::text(408, "the request was not sent in time\n"))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Reply::text(400, format!("cannot read the request: {e}\n"))),
        }
        // A cheap check before parsing: the head ends with an empty line.
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") || buf[..len].windows(2).any(|w| w == b"\n\n") {
            return Ok(len);
        }
    }
}

fn serve(mut stream: TcpStream, poster: &Poster) -> std::io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let (reply, head) = match read_head(&mut stream, &mut buf) {
        Ok(len) => route(&buf[..len], poster),
        Err(reply) => (reply, false),
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    );
    if reply.allow {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head {
        out.push_str(&reply.body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// The reply to a request head, and whether it was a HEAD request (no body).
fn route(bytes: &[u8], poster: &Poster) -> (Reply, bool) {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return (Reply::text(400, "the request head is incomplete\n"), false)
        }
        Err(e) => return (Reply::text(400, format!("not an HTTP request: {e}\n")), false),
    }
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return (Reply::text(400, "not an HTTP request\n"), false);
    };
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let known = matches!(path, "/metrics" | "/health" | "/healthz" | "/ready" | "/readyz");
    if !known {
        return (
            Reply::text(404, "not found: pycomd serves /metrics, /health and /ready\n"),
            false,
        );
    }
    let head = method == "HEAD";
    if method != "GET" && !head {
        let mut reply = Reply::text(405, format!("{path} takes GET or HEAD, not {method}\n"));
        reply.allow = true;
        return (reply, false);
    }
    let numbers = match ask(poster) {
        Ok(numbers) => numbers,
        Err(why) => return (Reply::text(503, format!("{why}\n")), head),
    };
    let reply = match path {
        "/metrics" => match metrics::encode(*numbers, metrics::Process::read()) {
            Ok(body) => Reply {
                status: 200,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body,
                allow: false,
            },
            Err(_) => Reply::text(500, "the metrics could not be encoded\n"),
        },
        "/health" | "/healthz" => Reply::text(200, "ok\n"),
        _ => match &numbers.ready {
            Ok(()) => Reply::text(200, "ready\n"),
            Err(why) => Reply::text(503, format!("not ready: {why}\n")),
        },
    };
    (reply, head)
}

/// The server thread's numbers: proof that it serves, too.
fn ask(poster: &Poster) -> Result<Box<Numbers>, String> {
    let (tx, rx) = mpsc::sync_channel(1);
    poster.post(Event::Scrape(tx));
    rx.recv_timeout(SERVER_TIMEOUT).map_err(|_| {
        format!(
            "pycomd's server thread did not answer within {} s",
            SERVER_TIMEOUT.as_secs()
        )
    })
}
