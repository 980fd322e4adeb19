//! Pub-sub: pycomd's forwarder with pycom-client's `Publisher` and
//! `Subscriber`, against a raw libzmq XSUB/XPUB proxy (`zmq_proxy`, in a
//! child process of its own) with raw PUB/SUB peers, measured in the same
//! run; the registry's events under a burst of registrations; the memory of
//! the last-value cache at its bounds.
//!
//! Both paths move the same frames (PROTOCOL.md 5): topic, header
//! `{"src","seq","ts"}`, body. The body is a JSON string of exactly
//! `--body-bytes` bytes that starts with the publisher's send time, so every
//! subscriber times every message it gets, and the header's `seq` shows
//! what it missed. Publisher and subscribers are threads of this process
//! sharing one clock; the raw proxy or pycomd forwards between them.
//!
//! Two measurements per row:
//! - throughput: the publisher sends as fast as it can for `--duration`,
//!   keeping at most `--window` messages in flight (sent and not yet
//!   received by the slowest subscriber). The window is well below the
//!   high-water mark, so no queue on the way can reach it: any gap is a
//!   lost message, not a high-water-mark drop. Rate = messages each
//!   subscriber received / time from the first send to its last arrival.
//! - latency: the publisher sends `--rate` messages a second (a modest
//!   rate: queues stay empty, so this is the path's latency, not queueing),
//!   each subscriber takes arrival minus send time.

use crate::servers::Child;
use crate::{Cli, Op};
use pycom_client::pubsub::{self, GapPolicy, Publisher, Subscriber};
use pycom_client::Context;
use serde::Serialize;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The topic the throughput and latency runs publish on.
const TOPIC: &str = "bench.pubsub.numbers";
/// Digits of the send time at the start of each body (ns since the run
/// started: runs are far shorter than the 1,000 s this holds).
const STAMP_DIGITS: usize = 12;
/// The smallest body: the quotes and the send time.
pub const MIN_BODY: usize = STAMP_DIGITS + 2;
/// How long subscribers wait for a lost tail once the publisher is done.
const TAIL_WAIT: Duration = Duration::from_secs(1);
/// How long the publisher warms the path up, at most, before giving up.
const WARM_UP: Duration = Duration::from_secs(15);

/// Which peers talk to pycomd's forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peers {
    /// pycom-client's Publisher and Subscriber (what applications use).
    Client,
    /// Raw PUB and SUB sockets sending the same frames: the forwarder's
    /// cost alone, without the client library's.
    Raw,
}

pub fn run(cli: &Cli) -> Result<(), String> {
    match cli.op {
        Op::Pubsub => throughput_and_latency(cli),
        Op::Events => events(cli),
        Op::Lvc => lvc(cli),
        other => Err(format!("{other:?} is not a pub-sub operation")),
    }
}

// ---------------------------------------------------------------------
// Throughput and latency.

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// As fast as possible with at most this many messages in flight.
    Throughput { window: u64 },
    /// This many messages a second.
    Latency { rate: f64 },
}

/// Where and with what to publish and subscribe.
#[derive(Clone)]
struct Path {
    xsub: String,
    xpub: String,
    peers: Peers,
    /// For client peers.
    ctx: Option<Context>,
    hwm: i32,
    /// The forwarding process (pycomd, the raw proxy), for its CPU time.
    server_pid: Option<u32>,
}

/// A receive counter on its own cache line (one per subscriber, read by
/// the publisher for its window).
#[repr(align(128))]
#[derive(Default)]
struct Counter(AtomicU64);

/// What the publisher and subscribers of one run share.
struct Shared {
    started: Instant,
    /// Subscribers that have seen a warm-up message (their path is in place).
    ready: AtomicUsize,
    /// Measured messages received, per subscriber.
    received: Vec<Counter>,
    /// When the measured phase started, ns since `started` (0: not yet).
    measuring_from: AtomicU64,
    /// The last seq published, once the publisher is done (0 before).
    final_seq: AtomicU64,
    /// Publications of the measured phase.
    published: AtomicU64,
    abort: AtomicBool,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        (self.started.elapsed().as_nanos() as u64).max(1)
    }
}

/// One subscriber's figures.
#[derive(Debug, Default)]
struct SubResult {
    received: u64,
    gaps: u64,
    missed: u64,
    duplicates: u64,
    last_seq: u64,
    last_arrival_ns: u64,
    latencies_us: Vec<u32>,
}

/// One run's figures (all subscribers).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Publications a second, as each subscriber received them (mean).
    pub msgs_per_s: f64,
    /// Publications of the measured phase.
    pub published: u64,
    /// CPU time of the forwarding process (pycomd, or the raw proxy) per
    /// publication, user + system, all its threads, in µs.
    pub server_cpu_us_per_msg: Option<f64>,
    /// The same for this process: the publisher and subscribers (and
    /// their ZeroMQ I/O thread).
    pub peers_cpu_us_per_msg: Option<f64>,
    /// Measured messages received, all subscribers together.
    pub received: u64,
    /// Sequence jumps seen, and messages missed in them (a lost tail
    /// counts as missed too).
    pub gaps: u64,
    pub missed: u64,
    pub duplicates: u64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
}

trait Pub {
    /// Publish one body (a JSON string, quotes included); its seq.
    fn publish(&mut self, body: &[u8]) -> Result<u64, String>;
}

trait Sub {
    /// The next message's (seq, send stamp), or `None` after `timeout`
    /// without one. Replays of the last-value cache are skipped.
    fn next(&mut self, timeout: Duration) -> Result<Option<(u64, u64)>, String>;
}

struct RawPub {
    socket: zmq::Socket,
    src: String,
    seq: u64,
    header: Vec<u8>,
}

impl Pub for RawPub {
    fn publish(&mut self, body: &[u8]) -> Result<u64, String> {
        self.seq += 1;
        self.header.clear();
        // The header the client library writes: {"src","seq","ts"}.
        let _ = write!(
            self.header,
            r#"{{"src":"{}","seq":{},"ts":{}}}"#,
            self.src,
            self.seq,
            pubsub::wire::now_ms()
        );
        let flags = zmq::SNDMORE | zmq::DONTWAIT;
        self.socket
            .send(TOPIC.as_bytes(), flags)
            .and_then(|()| self.socket.send(&self.header[..], flags))
            .and_then(|()| self.socket.send(body, zmq::DONTWAIT))
            .map_err(|e| format!("raw publish failed: {e}"))?;
        Ok(self.seq)
    }
}

struct ClientPub(Publisher);

impl Pub for ClientPub {
    fn publish(&mut self, body: &[u8]) -> Result<u64, String> {
        // The body without its quotes: the library encodes the string as
        // JSON, giving back exactly `body` (digits and 'x', no escapes).
        let text = std::str::from_utf8(&body[1..body.len() - 1]).map_err(|e| e.to_string())?;
        self.0.publish(text).map_err(|e| format!("publish failed: {e}"))
    }
}

struct RawSub {
    socket: zmq::Socket,
    frames: [zmq::Message; 3],
}

impl Sub for RawSub {
    fn next(&mut self, timeout: Duration) -> Result<Option<(u64, u64)>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.socket.recv(&mut self.frames[0], zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    let ms = left.as_millis().max(1) as i64;
                    self.socket.poll(zmq::POLLIN, ms).map_err(|e| e.to_string())?;
                    continue;
                }
                Err(e) => return Err(format!("raw receive failed: {e}")),
            }
            // The rest of a multipart message is already here.
            let mut count = 1;
            let mut more = self.frames[0].get_more();
            while more {
                let slot = count.min(2);
                self.socket
                    .recv(&mut self.frames[slot], 0)
                    .map_err(|e| format!("raw receive failed: {e}"))?;
                more = self.frames[slot].get_more();
                count += 1;
            }
            if count < 3 {
                return Err(format!("a publication of {count} frame(s)"));
            }
            let header = &self.frames[1][..];
            // pycomd's forwarder re-sends its cached last value when a
            // subscription arrives: not part of this run.
            if header.ends_with(br#""replay":true}"#) {
                continue;
            }
            let seq = seq_of(header).ok_or("a header without seq")?;
            return Ok(Some((seq, stamp_of(&self.frames[2]))));
        }
    }
}

struct ClientSub(Subscriber);

impl Sub for ClientSub {
    fn next(&mut self, timeout: Duration) -> Result<Option<(u64, u64)>, String> {
        match self.0.recv_timeout(timeout) {
            Ok(Some(m)) => Ok(Some((m.seq, stamp_of(m.body.get().as_bytes())))),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("receive failed: {e}")),
        }
    }
}

/// `seq` out of a header the raw publisher or the client wrote.
fn seq_of(header: &[u8]) -> Option<u64> {
    const KEY: &[u8] = br#""seq":"#;
    let at = header.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = header[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n = 0u64;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(n)
}

/// The send stamp at the start of a body (`"012345678901xxx"`); 0 for a
/// warm-up message (or anything else).
fn stamp_of(body: &[u8]) -> u64 {
    body.get(1..1 + STAMP_DIGITS)
        .map(|digits| {
            digits
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d.wrapping_sub(b'0') % 10))
        })
        .unwrap_or(0)
}

fn write_stamp(body: &mut [u8], stamp: u64) {
    let mut n = stamp;
    for i in (1..=STAMP_DIGITS).rev() {
        body[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn raw_socket(ctx: &zmq::Context, kind: zmq::SocketType, hwm: i32) -> Result<zmq::Socket, String> {
    let socket = ctx.socket(kind).map_err(|e| e.to_string())?;
    socket
        .set_sndhwm(hwm)
        .and_then(|()| socket.set_rcvhwm(hwm))
        .and_then(|()| socket.set_linger(0))
        .map_err(|e| e.to_string())?;
    Ok(socket)
}

impl Path {
    fn publisher(&self, zctx: &zmq::Context) -> Result<Box<dyn Pub>, String> {
        match (self.peers, &self.ctx) {
            (Peers::Client, Some(ctx)) => Publisher::builder(ctx, TOPIC)
                .endpoint(self.xsub.clone())
                .sndhwm(self.hwm)
                .timeout(Duration::from_secs(10))
                .connect()
                .map(|p| Box::new(ClientPub(p)) as Box<dyn Pub>)
                .map_err(|e| format!("cannot make a publisher: {e}")),
            _ => {
                let socket = raw_socket(zctx, zmq::PUB, self.hwm)?;
                socket
                    .connect(&self.xsub)
                    .map_err(|e| format!("cannot connect to {}: {e}", self.xsub))?;
                Ok(Box::new(RawPub {
                    socket,
                    src: format!("{:032x}", nonce()),
                    seq: 0,
                    header: Vec::with_capacity(96),
                }))
            }
        }
    }

    fn subscriber(&self, zctx: &zmq::Context) -> Result<Box<dyn Sub>, String> {
        match (self.peers, &self.ctx) {
            (Peers::Client, Some(ctx)) => ctx
                .subscriber()
                .pattern(TOPIC)
                .rcvhwm(self.hwm)
                .gaps(GapPolicy::Ignore)
                .endpoint(self.xpub.clone())
                .timeout(Duration::from_secs(10))
                .connect()
                .map(|s| Box::new(ClientSub(s)) as Box<dyn Sub>)
                .map_err(|e| format!("cannot make a subscriber: {e}")),
            _ => {
                let socket = raw_socket(zctx, zmq::SUB, self.hwm)?;
                socket
                    .connect(&self.xpub)
                    .and_then(|()| socket.set_subscribe(TOPIC.as_bytes()))
                    .map_err(|e| format!("cannot subscribe at {}: {e}", self.xpub))?;
                Ok(Box::new(RawSub {
                    socket,
                    frames: [zmq::Message::new(), zmq::Message::new(), zmq::Message::new()],
                }))
            }
        }
    }
}

fn nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ u128::from(std::process::id()) << 64
}

/// One measurement: a publisher and `subs` subscribers through `path`.
fn measure(
    zctx: &zmq::Context,
    path: &Path,
    subs: usize,
    body_bytes: usize,
    mode: Mode,
    duration: Duration,
) -> Result<Figures, String> {
    let shared = Shared {
        started: Instant::now(),
        ready: AtomicUsize::new(0),
        received: (0..subs).map(|_| Counter::default()).collect(),
        measuring_from: AtomicU64::new(0),
        final_seq: AtomicU64::new(0),
        published: AtomicU64::new(0),
        abort: AtomicBool::new(false),
    };
    let latency = matches!(mode, Mode::Latency { .. });
    let cpu_before = (path.server_pid.and_then(cpu_ticks), cpu_ticks(std::process::id()));
    let results = std::thread::scope(|scope| -> Result<Vec<SubResult>, String> {
        let handles: Vec<_> = (0..subs)
            .map(|i| {
                let shared = &shared;
                scope.spawn(move || {
                    let r = path
                        .subscriber(zctx)
                        .and_then(|mut sub| subscribe_loop(i, shared, sub.as_mut(), latency));
                    if r.is_err() {
                        shared.abort.store(true, Ordering::Relaxed);
                    }
                    r
                })
            })
            .collect();
        // Kept until the subscribers are done: a raw PUB socket (linger 0)
        // would throw away what it still has queued when dropped.
        let mut publisher = path.publisher(zctx);
        let published = match &mut publisher {
            Ok(p) => publish_loop(&shared, p.as_mut(), subs, body_bytes, mode, duration),
            Err(e) => Err(e.clone()),
        };
        if published.is_err() {
            shared.abort.store(true, Ordering::Relaxed);
        }
        let mut results = Vec::with_capacity(subs);
        let mut first_error = published.err();
        for h in handles {
            match h
                .join()
                .unwrap_or_else(|_| Err("a subscriber thread panicked".into()))
            {
                Ok(r) => results.push(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        drop(publisher);
        first_error.map_or(Ok(results), Err)
    })?;
    let cpu_after = (path.server_pid.and_then(cpu_ticks), cpu_ticks(std::process::id()));
    let from = shared.measuring_from.load(Ordering::Relaxed);
    let final_seq = shared.final_seq.load(Ordering::Relaxed);
    let mut f = Figures {
        published: shared.published.load(Ordering::Relaxed),
        ..Figures::default()
    };
    let per_msg = |before: Option<u64>, after: Option<u64>| match (before, after) {
        // Ticks of 10 ms (USER_HZ is 100 on Linux).
        (Some(b), Some(a)) if f.published > 0 => Some((a - b) as f64 * 1e4 / f.published as f64),
        _ => None,
    };
    f.server_cpu_us_per_msg = per_msg(cpu_before.0, cpu_after.0);
    f.peers_cpu_us_per_msg = per_msg(cpu_before.1, cpu_after.1);
    let mut rates = 0.0;
    let mut latencies = Vec::new();
    for mut r in results {
        if r.last_seq < final_seq {
            // Lost at the end: no later message shows the jump.
            r.missed += final_seq - r.last_seq;
            r.gaps += 1;
        }
        let span = r.last_arrival_ns.saturating_sub(from) as f64 / 1e9;
        if span > 0.0 {
            rates += r.received as f64 / span;
        }
        f.received += r.received;
        f.gaps += r.gaps;
        f.missed += r.missed;
        f.duplicates += r.duplicates;
        latencies.append(&mut r.latencies_us);
    }
    f.msgs_per_s = rates / subs.max(1) as f64;
    latencies.sort_unstable();
    let pct = |p: f64| -> u32 {
        if latencies.is_empty() {
            return 0;
        }
        latencies[((latencies.len() as f64 - 1.0) * p).round() as usize]
    };
    (f.p50_us, f.p99_us, f.p999_us) = (pct(0.5), pct(0.99), pct(0.999));
    Ok(f)
}

fn publish_loop(
    shared: &Shared,
    publisher: &mut dyn Pub,
    subs: usize,
    body_bytes: usize,
    mode: Mode,
    duration: Duration,
) -> Result<(), String> {
    let mut body = vec![b'x'; body_bytes];
    body[0] = b'"';
    body[body_bytes - 1] = b'"';
    // Warm-up (stamp 0) until every subscriber has one: every path is in
    // place (the raw peers have no readiness handshake of their own).
    write_stamp(&mut body, 0);
    let warm_until = Instant::now() + WARM_UP;
    let mut last_seq = 0;
    while shared.ready.load(Ordering::Relaxed) < subs {
        if shared.abort.load(Ordering::Relaxed) {
            return Ok(()); // A subscriber failed and says why.
        }
        if Instant::now() > warm_until {
            return Err(format!(
                "only {} of {subs} subscribers got a warm-up message in {} s",
                shared.ready.load(Ordering::Relaxed),
                WARM_UP.as_secs()
            ));
        }
        last_seq = publisher.publish(&body)?;
        std::thread::sleep(Duration::from_millis(2));
    }
    let t0 = Instant::now();
    shared.measuring_from.store(shared.now_ns(), Ordering::Relaxed);
    let end = t0 + duration;
    match mode {
        Mode::Throughput { window } => {
            let mut sent = 0u64;
            let mut allowed = if window == 0 { u64::MAX } else { window };
            loop {
                if sent >= allowed {
                    let slowest = shared
                        .received
                        .iter()
                        .map(|c| c.0.load(Ordering::Relaxed))
                        .min()
                        .unwrap_or(0);
                    allowed = slowest + window;
                    if sent >= allowed {
                        if Instant::now() >= end || shared.abort.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(20));
                        continue;
                    }
                }
                if sent.is_multiple_of(64) && (Instant::now() >= end || shared.abort.load(Ordering::Relaxed))
                {
                    break;
                }
                write_stamp(&mut body, shared.now_ns());
                last_seq = publisher.publish(&body)?;
                sent += 1;
            }
            shared.published.store(sent, Ordering::Relaxed);
        }
        Mode::Latency { rate } => {
            let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut next = t0;
            let mut sent = 0;
            while next < end && !shared.abort.load(Ordering::Relaxed) {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                }
                write_stamp(&mut body, shared.now_ns());
                last_seq = publisher.publish(&body)?;
                next += period;
                sent += 1;
            }
            shared.published.store(sent, Ordering::Relaxed);
        }
    }
    shared.final_seq.store(last_seq.max(1), Ordering::Relaxed);
    Ok(())
}

fn subscribe_loop(i: usize, shared: &Shared, sub: &mut dyn Sub, latency: bool) -> Result<SubResult, String> {
    let mut r = SubResult::default();
    let mut warm = false;
    let mut idle_since: Option<Instant> = None;
    loop {
        if shared.abort.load(Ordering::Relaxed) {
            return Ok(r);
        }
        let final_seq = shared.final_seq.load(Ordering::Relaxed);
        if final_seq > 0 && r.last_seq >= final_seq {
            return Ok(r);
        }
        let Some((seq, stamp)) = sub.next(Duration::from_millis(50))? else {
            if final_seq > 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() > TAIL_WAIT {
                    return Ok(r);
                }
            }
            continue;
        };
        idle_since = None;
        let now = shared.now_ns();
        if r.last_seq != 0 {
            if seq <= r.last_seq {
                r.duplicates += 1;
                continue;
            }
            if seq > r.last_seq + 1 {
                r.gaps += 1;
                r.missed += seq - r.last_seq - 1;
            }
        }
        r.last_seq = seq;
        if stamp == 0 {
            if !warm {
                warm = true;
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        r.received += 1;
        shared.received[i].0.store(r.received, Ordering::Relaxed);
        r.last_arrival_ns = now;
        if latency {
            r.latencies_us
                .push((now.saturating_sub(stamp) / 1000).min(u64::from(u32::MAX)) as u32);
        }
    }
}

/// CPU time a process has used (user + system, all threads), in ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The raw baseline's proxy in a child process: its two endpoints.
fn spawn_proxy(hwm: i32) -> Result<(Child, String, String), String> {
    let child = Child::spawn_with("proxy", &["--hwm", &hwm.to_string()])?;
    let mut parts = child.endpoint.split_whitespace();
    let (Some(xsub), Some(xpub)) = (parts.next(), parts.next()) else {
        return Err(format!(
            "the proxy said '{}', not its two endpoints",
            child.endpoint
        ));
    };
    let (xsub, xpub) = (xsub.to_string(), xpub.to_string());
    Ok((child, xsub, xpub))
}

/// A row: the median throughput pair (by ratio) and the median latency
/// pair (by p50 ratio) of `--repeat` runs, and the gaps of every run.
#[derive(Serialize)]
struct Row {
    op: &'static str,
    peers: String,
    body_bytes: usize,
    subscribers: usize,
    window: u64,
    rate: f64,
    hwm: i32,
    duration_s: f64,
    repeat: usize,
    throughput: Figures,
    raw_proxy_throughput: Option<Figures>,
    throughput_ratio: Option<f64>,
    latency: Figures,
    raw_proxy_latency: Option<Figures>,
    p50_ratio: Option<f64>,
    /// Over every run of the row, both modes.
    gaps_all_runs: u64,
    missed_all_runs: u64,
    raw_proxy_gaps_all_runs: u64,
}

fn median_pair<K: Fn(&Figures, &Figures) -> f64>(
    runs: &mut [(Figures, Option<Figures>)],
    key: K,
) -> (Figures, Option<Figures>) {
    let k = |(m, b): &(Figures, Option<Figures>)| match b {
        Some(b) => key(m, b),
        None => key(m, m),
    };
    runs.sort_by(|x, y| k(x).total_cmp(&k(y)));
    runs[runs.len() / 2].clone()
}

fn throughput_and_latency(cli: &Cli) -> Result<(), String> {
    if cli.body_bytes.iter().any(|&b| b < MIN_BODY) {
        return Err(format!(
            "--body-bytes must be at least {MIN_BODY} (quotes and the send time)"
        ));
    }
    let window = cli.window.unwrap_or((cli.hwm / 4).max(1) as u64);
    if window as i64 > i64::from(cli.hwm) {
        return Err(format!(
            "--window {window} is above --hwm {}: the run would measure high-water-mark drops",
            cli.hwm
        ));
    }
    let duration = Duration::from_secs_f64(cli.duration);
    let zctx = zmq::Context::new();
    let ctx = Context::new(&cli.nameserver).map_err(|e| e.to_string())?;
    let forwarder = pubsub::locate_forwarder(&ctx)
        .map_err(|e| format!("cannot find pycomd's forwarder through {}: {e}", cli.nameserver))?;
    let measured = Path {
        xsub: forwarder.xsub.clone(),
        xpub: forwarder.xpub.clone(),
        peers: cli.pubsub_peers,
        ctx: Some(ctx),
        hwm: cli.hwm,
        server_pid: cli.pycomd_pid,
    };
    let proxy = if cli.no_baseline {
        None
    } else {
        Some(spawn_proxy(cli.hwm)?)
    };
    let baseline = proxy.as_ref().map(|(child, xsub, xpub)| Path {
        xsub: xsub.clone(),
        xpub: xpub.clone(),
        peers: Peers::Raw,
        ctx: None,
        hwm: cli.hwm,
        server_pid: Some(child.pid()),
    });
    if !cli.json {
        println!(
            "{:<7} {:>4} {:>10} {:>7} {:>7} {:>5} | {:>10} {:>7} {:>7} {:>5} | {:>7} {:>7} | {:>11} {:>11}",
            "body B",
            "subs",
            "msg/s",
            "p50 us",
            "p99 us",
            "gaps",
            "proxy m/s",
            "p50 us",
            "p99 us",
            "gaps",
            "x msg/s",
            "x p50",
            "fwd/proxy",
            "peers"
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    for &body_bytes in &cli.body_bytes {
        for &subs in &cli.subscribers {
            let mut tput = Vec::new();
            let mut lat = Vec::new();
            let (mut gaps, mut missed, mut base_gaps) = (0, 0, 0);
            for _ in 0..cli.repeat.max(1) {
                for (mode, runs) in [
                    (Mode::Throughput { window }, &mut tput),
                    (Mode::Latency { rate: cli.rate }, &mut lat),
                ] {
                    if !cli.quiet {
                        eprint!("\r  pubsub {body_bytes} B 1->{subs} {mode:?}        ");
                    }
                    let m = measure(&zctx, &measured, subs, body_bytes, mode, duration)?;
                    let b = match &baseline {
                        Some(path) => Some(measure(&zctx, path, subs, body_bytes, mode, duration)?),
                        None => None,
                    };
                    gaps += m.gaps;
                    missed += m.missed;
                    base_gaps += b.as_ref().map_or(0, |b| b.gaps);
                    runs.push((m, b));
                }
            }
            if !cli.quiet {
                eprint!("\r{:80}\r", "");
            }
            let (t, tb) = median_pair(&mut tput, |m, b| ratio(m.msgs_per_s, b.msgs_per_s));
            let (l, lb) = median_pair(&mut lat, |m, b| ratio(f64::from(m.p50_us), f64::from(b.p50_us)));
            let row = Row {
                op: "pubsub",
                peers: format!("{:?}", cli.pubsub_peers).to_lowercase(),
                body_bytes,
                subscribers: subs,
                window,
                rate: cli.rate,
                hwm: cli.hwm,
                duration_s: cli.duration,
                repeat: cli.repeat,
                throughput_ratio: tb.as_ref().map(|b| ratio(t.msgs_per_s, b.msgs_per_s)),
                p50_ratio: lb
                    .as_ref()
                    .map(|b| ratio(f64::from(l.p50_us), f64::from(b.p50_us))),
                throughput: t,
                raw_proxy_throughput: tb,
                latency: l,
                raw_proxy_latency: lb,
                gaps_all_runs: gaps,
                missed_all_runs: missed,
                raw_proxy_gaps_all_runs: base_gaps,
            };
            print_row(cli, &row);
        }
    }
    if !cli.json {
        println!(
            "(1 publisher -> subs subscribers on one topic; msg/s: publications a second each subscriber received, \
             at most {window} in flight (hwm {}); p50/p99: at {} msg/s; gaps: every run of the row; \
             peers on pycomd: {}; proxy: raw zmq_proxy XSUB/XPUB with raw PUB/SUB, same frames; \
             fwd/proxy, peers: CPU us per publication in the throughput runs, of pycomd (with --pycomd-pid) / the proxy, \
             and of this process's publisher and subscribers on pycomd / on the proxy)",
            cli.hwm,
            cli.rate,
            format!("{:?}", cli.pubsub_peers).to_lowercase()
        );
    }
    Ok(())
}

fn print_row(cli: &Cli, row: &Row) {
    if cli.json {
        println!("{}", serde_json::to_string(row).unwrap_or_default());
        return;
    }
    let none = || String::from("-");
    let (bt, bp50, bp99) = row
        .raw_proxy_throughput
        .as_ref()
        .map_or((none(), none(), none()), |b| {
            let l = row.raw_proxy_latency.as_ref();
            (
                format!("{:.0}", b.msgs_per_s),
                l.map_or(none(), |l| l.p50_us.to_string()),
                l.map_or(none(), |l| l.p99_us.to_string()),
            )
        });
    let r = |x: Option<f64>| x.map_or(none(), |x| format!("{x:.2}"));
    // CPU µs per publication in the throughput runs: measured/baseline.
    let cpu = |m: Option<f64>, b: Option<f64>| {
        let one = |x: Option<f64>| x.map_or(none(), |x| format!("{x:.1}"));
        format!("{}/{}", one(m), one(b))
    };
    let base = row.raw_proxy_throughput.as_ref();
    println!(
        "{:<7} {:>4} {:>10.0} {:>7} {:>7} {:>5} | {:>10} {:>7} {:>7} {:>5} | {:>7} {:>7} | {:>11} {:>11}",
        row.body_bytes,
        row.subscribers,
        row.throughput.msgs_per_s,
        row.latency.p50_us,
        row.latency.p99_us,
        row.gaps_all_runs,
        bt,
        bp50,
        bp99,
        row.raw_proxy_gaps_all_runs,
        r(row.throughput_ratio),
        r(row.p50_ratio),
        cpu(
            row.throughput.server_cpu_us_per_msg,
            base.and_then(|b| b.server_cpu_us_per_msg)
        ),
        cpu(
            row.throughput.peers_cpu_us_per_msg,
            base.and_then(|b| b.peers_cpu_us_per_msg)
        ),
    );
}

// ---------------------------------------------------------------------
// Registry events under a burst of registrations.

#[derive(serde::Deserialize)]
struct Event {
    service: String,
}

#[derive(Debug, Clone, Serialize)]
struct EventsRun {
    services: usize,
    registers_per_s: f64,
    events: u64,
    events_per_s: f64,
    all_arrived: bool,
    /// From the last register's reply to the last event's arrival
    /// (negative: the last event came first).
    last_event_after_last_reply_ms: f64,
    /// What the subscriber's own sequence check saw.
    gaps: u64,
    missed: u64,
    /// pycomd's own counters over the run.
    events_published: u64,
    events_dropped: u64,
}

fn pubsub_stat(component: &mut pycom_client::Component) -> Result<Value, String> {
    component
        .invoke("stat", json!(null))
        .map_err(|e| format!("org.pycom.pubsub stat failed: {e}"))
}

fn counter(stat: &Value, name: &str) -> u64 {
    stat[name].as_u64().unwrap_or(0)
}

fn events(cli: &Cli) -> Result<(), String> {
    let n = cli.preload;
    let zctx = zmq::Context::new();
    let ctx = Context::new(&cli.nameserver).map_err(|e| e.to_string())?;
    let forwarder = pubsub::locate_forwarder(&ctx).map_err(|e| e.to_string())?;
    let mut stat = ctx
        .connect(&forwarder.address, pubsub::wire::INTERFACE)
        .map_err(|e| e.to_string())?;
    let registrants = crate::ops::Preload {
        clients: cli.clients,
        in_flight: cli.in_flight,
    };
    let topic = format!("{}registered", pubsub::wire::EVENTS_PREFIX);
    let mut runs = Vec::new();
    for r in 0..cli.repeat.max(1) {
        let tag = format!("ev{:x}x{r}", nonce() as u64);
        let prefix = format!("/bench/{tag}/");
        let mut sub = ctx
            .subscriber()
            .pattern(topic.as_str())
            .rcvhwm(cli.hwm)
            .gaps(GapPolicy::Ignore)
            .timeout(Duration::from_secs(10))
            .connect()
            .map_err(|e| format!("cannot subscribe to {topic}: {e}"))?;
        let before = pubsub_stat(&mut stat)?;
        let done = AtomicBool::new(false);
        let started = Instant::now();
        let (registered, counted) = std::thread::scope(|scope| {
            let done = &done;
            let prefix = &prefix;
            let counting = scope.spawn(move || -> Result<(u64, Duration, u64, u64), String> {
                let (mut count, mut last) = (0u64, Duration::ZERO);
                let mut idle_since: Option<Instant> = None;
                while count < n as u64 {
                    match sub.recv_timeout(Duration::from_millis(50)) {
                        Ok(Some(m)) => {
                            idle_since = None;
                            if m.value::<Event>()
                                .is_ok_and(|e| e.service.starts_with(prefix.as_str()))
                            {
                                count += 1;
                                last = started.elapsed();
                            }
                        }
                        Ok(None) if done.load(Ordering::Relaxed) => {
                            if idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(3)
                            {
                                break;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => return Err(format!("event subscriber: {e}")),
                    }
                }
                let gaps = sub.stats().total;
                Ok((count, last, gaps.gaps, gaps.missed))
            });
            let registered = registrants
                .run_tagged(&zctx, &cli.nameserver, n, &tag)
                .map(|()| started.elapsed());
            done.store(true, Ordering::Relaxed);
            let counted = counting
                .join()
                .unwrap_or_else(|_| Err("the event subscriber panicked".into()));
            (registered, counted)
        });
        let registered = registered?;
        let (events, last, gaps, missed) = counted?;
        let after = pubsub_stat(&mut stat)?;
        let run = EventsRun {
            services: n,
            registers_per_s: n as f64 / registered.as_secs_f64(),
            events,
            events_per_s: if last.is_zero() {
                0.0
            } else {
                events as f64 / last.as_secs_f64()
            },
            all_arrived: events == n as u64,
            last_event_after_last_reply_ms: (last.as_secs_f64() - registered.as_secs_f64()) * 1000.0,
            gaps,
            missed,
            events_published: counter(&after, "events_published") - counter(&before, "events_published"),
            events_dropped: counter(&after, "events_dropped") - counter(&before, "events_dropped"),
        };
        runs.push(run);
    }
    runs.sort_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
    let all_arrived = runs.iter().all(|r| r.all_arrived);
    let median = runs[runs.len() / 2].clone();
    if cli.json {
        let line = json!({
            "op": "events", "clients": cli.clients, "in_flight": cli.in_flight, "repeat": cli.repeat,
            "result": median, "all_arrived_every_run": all_arrived,
        });
        println!("{line}");
    } else {
        println!(
            "{:<8} {:>7} {:>9} {:>10} {:>8} {:>10} {:>8} {:>10} {:>6} {:>8}",
            "services",
            "clients",
            "in-flight",
            "reg/s",
            "events",
            "events/s",
            "all in",
            "tail ms",
            "gaps",
            "dropped"
        );
        println!(
            "{:<8} {:>7} {:>9} {:>10.0} {:>8} {:>10.0} {:>8} {:>10.1} {:>6} {:>8}",
            median.services,
            cli.clients,
            cli.in_flight,
            median.registers_per_s,
            median.events,
            median.events_per_s,
            if all_arrived { "yes" } else { "NO" },
            median.last_event_after_last_reply_ms,
            median.gaps,
            median.events_dropped
        );
        println!(
            "(median of {} bursts by events/s; each: {} new services registered by {} clients x {} in flight \
             while a pycom-client Subscriber counts {topic}; events/s = events / time from the first \
             register to the last event; all in: every event of every burst arrived; tail: last event after \
             the last register's reply; gaps: the subscriber's; dropped: pycomd's events_dropped)",
            runs.len(),
            n,
            cli.clients,
            cli.in_flight
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------
// The last-value cache's memory.

fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read pycomd's memory (pid {pid}): {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("no VmRSS for pid {pid}"))
}

fn lvc(cli: &Cli) -> Result<(), String> {
    let pid = cli
        .pycomd_pid
        .ok_or("--op lvc needs --pycomd-pid PID (pycomd's process, for its memory)")?;
    let body_bytes = cli.body_bytes.first().copied().unwrap_or(1024).max(2);
    let ctx = Context::new(&cli.nameserver).map_err(|e| e.to_string())?;
    let forwarder = pubsub::locate_forwarder(&ctx).map_err(|e| e.to_string())?;
    let mut stat = ctx
        .connect(&forwarder.address, pubsub::wire::INTERFACE)
        .map_err(|e| e.to_string())?;
    let mut publisher = Publisher::builder(&ctx, "bench.lvc")
        .endpoint(forwarder.xsub.clone())
        .sndhwm(cli.hwm)
        .connect()
        .map_err(|e| format!("cannot make a publisher: {e}"))?;
    let before = pubsub_stat(&mut stat)?;
    let rss_before = rss_bytes(pid)?;
    let body = "x".repeat(body_bytes - 2);
    let nonce = nonce() as u64;
    let first_in = counter(&before, "messages_in");
    let started = Instant::now();
    // Wait for the forwarder to take what was sent, so that nothing is
    // dropped at a high-water mark on the way.
    let caught_up = |stat: &mut pycom_client::Component, sent: u64| -> Result<Value, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = pubsub_stat(stat)?;
            if counter(&s, "messages_in") >= first_in + sent {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the forwarder took {} of {sent} publications in 30 s",
                    counter(&s, "messages_in") - first_in
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let batch = (cli.hwm / 4).max(1) as usize;
    for i in 0..cli.topics {
        publisher
            .publish_to(&format!("bench.lvc.{nonce:x}.{i}"), body.as_str())
            .map_err(|e| format!("publish failed: {e}"))?;
        if (i + 1).is_multiple_of(batch) {
            caught_up(&mut stat, (i + 1) as u64)?;
        }
    }
    let after = caught_up(&mut stat, cli.topics as u64)?;
    let elapsed = started.elapsed();
    // Let pycomd's I/O settle (received buffers freed) before reading.
    std::thread::sleep(Duration::from_millis(200));
    let rss_after = rss_bytes(pid)?;
    let cached = counter(&after, "topics_cached");
    let cache_bytes = counter(&after, "cache_bytes");
    let delta = rss_after as i64 - rss_before as i64;
    let line = json!({
        "op": "lvc", "topics_published": cli.topics, "body_bytes": body_bytes,
        "publish_s": elapsed.as_secs_f64(),
        "topics_cached": cached, "cache_bytes": cache_bytes,
        "cache_evicted": counter(&after, "cache_evicted") - counter(&before, "cache_evicted"),
        "rss_before": rss_before, "rss_after": rss_after, "rss_delta": delta,
        "rss_delta_over_cache_bytes": if cache_bytes > 0 { delta as f64 / cache_bytes as f64 } else { 0.0 },
        "rss_delta_per_topic": if cached > 0 { delta as f64 / cached as f64 } else { 0.0 },
    });
    if cli.json {
        println!("{line}");
    } else {
        let mb = |b: f64| b / 1e6;
        println!(
            "published {} topics x {body_bytes} B bodies in {:.2} s: {cached} cached ({} evicted), \
             cache_bytes {:.1} MB; pycomd RSS {:.1} -> {:.1} MB (+{:.1} MB, {:.2}x cache_bytes, {:.0} B a cached topic)",
            cli.topics,
            elapsed.as_secs_f64(),
            line["cache_evicted"],
            mb(cache_bytes as f64),
            mb(rss_before as f64),
            mb(rss_after as f64),
            mb(delta as f64),
            line["rss_delta_over_cache_bytes"].as_f64().unwrap_or(0.0),
            line["rss_delta_per_topic"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_seqs_read_back() {
        let mut body = vec![b'x'; 16];
        body[0] = b'"';
        body[15] = b'"';
        write_stamp(&mut body, 123_456_789);
        assert_eq!(&body, br#""000123456789xx""#);
        assert_eq!(stamp_of(&body), 123_456_789);
        assert!(serde_json::from_slice::<String>(&body).is_ok());
        assert_eq!(seq_of(br#"{"src":"a","seq":42,"ts":1}"#), Some(42));
        assert_eq!(seq_of(br#"{"src":"a","ts":1}"#), None);
    }
}
