//! The load generator: N client threads, each a DEALER keeping K requests
//! in flight for a fixed time, timing every reply.
//!
//! Each request carries its send time in an extra routing frame before the
//! empty delimiter; servers echo the envelope back unchanged, so a reply
//! tells its own latency whatever order replies come in.

use std::time::{Duration, Instant};

/// Makes the body of the `seq`-th request of client `client`.
pub type BodyFn<'b> = dyn Fn(usize, u64) -> Vec<u8> + Send + Sync + 'b;

/// How long in-flight requests may take to come back after the run ends.
const DRAIN: Duration = Duration::from_secs(2);

pub struct Load<'a> {
    pub endpoint: &'a str,
    pub clients: usize,
    pub in_flight: usize,
    pub duration: Duration,
    pub body: &'a BodyFn<'a>,
    /// Show a progress line on stderr.
    pub progress: bool,
    pub label: &'a str,
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub ok: u64,
    pub errors: u64,
    /// Latencies of the requests answered within the run, in microseconds.
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
}

impl Load<'_> {
    pub fn run(&self, ctx: &zmq::Context) -> Result<Measured, String> {
        let started = Instant::now();
        let deadline = started + self.duration;
        let done = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.clients)
                .map(|c| {
                    let done = &done;
                    scope.spawn(move || self.client(ctx, c, started, deadline, done))
                })
                .collect();
            if self.progress {
                let mut last = 0;
                while Instant::now() < deadline {
                    std::thread::sleep(
                        Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
                    );
                    let now = done.load(std::sync::atomic::Ordering::Relaxed);
                    eprint!(
                        "\r  {:<10} {:>8.1} s  {:>10} replies  {:>9.0} req/s   ",
                        self.label,
                        started.elapsed().as_secs_f64(),
                        now,
                        (now - last) as f64 * 2.0
                    );
                    last = now;
                }
                eprint!("\r{:80}\r", "");
            }
            Measured::join(handles, self.duration)
        })
    }

    fn client(
        &self,
        ctx: &zmq::Context,
        client: usize,
        started: Instant,
        deadline: Instant,
        done: &std::sync::atomic::AtomicU64,
    ) -> Result<Measured, String> {
        let socket = ctx.socket(zmq::DEALER).map_err(|e| e.to_string())?;
        socket.set_linger(0).map_err(|e| e.to_string())?;
        socket.set_sndhwm(0).map_err(|e| e.to_string())?;
        socket.set_rcvhwm(0).map_err(|e| e.to_string())?;
        socket
            .connect(self.endpoint)
            .map_err(|e| format!("cannot connect to {}: {e}", self.endpoint))?;
        let mut m = Measured::default();
        let mut in_flight = 0usize;
        let mut seq = 0u64;
        loop {
            let now = Instant::now();
            let sending = now < deadline;
            if !sending && (in_flight == 0 || now > deadline + DRAIN) {
                break;
            }
            while sending && in_flight < self.in_flight {
                let body = (self.body)(client, seq);
                let stamp = (Instant::now() - started).as_nanos() as u64;
                let frames: [&[u8]; 4] = [&stamp.to_le_bytes(), b"", b"CALL", &body];
                socket
                    .send_multipart(frames, 0)
                    .map_err(|e| format!("send failed: {e}"))?;
                in_flight += 1;
                seq += 1;
            }
            if socket.poll(zmq::POLLIN, 10).map_err(|e| e.to_string())? == 0 {
                continue;
            }
            while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
                in_flight = in_flight.saturating_sub(1);
                let arrived = Instant::now();
                let Some(stamp) = frames.first().and_then(|f| <[u8; 8]>::try_from(&f[..]).ok()) else {
                    m.errors += 1;
                    continue;
                };
                let sent = started + Duration::from_nanos(u64::from_le_bytes(stamp));
                if arrived > deadline {
                    continue;
                }
                if reply_ok(&frames) {
                    m.ok += 1;
                    m.latencies_us
                        .push((arrived - sent).as_micros().min(u32::MAX as u128) as u32);
                } else {
                    m.errors += 1;
                }
                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(m)
    }
}

/// `[stamp, "", OK, {"code": 0 ...}]`, or an echo of the request (baseline).
fn reply_ok(frames: &[Vec<u8>]) -> bool {
    match frames.get(2).map(Vec::as_slice) {
        Some(b"CALL") => true,
        Some(b"OK") => frames.get(3).is_some_and(|body| {
            let head = &body[..body.len().min(16)];
            head.starts_with(br#"{"code":0"#) || head.starts_with(br#"{"code": 0"#)
        }),
        _ => false,
    }
}

/// Summary figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub ok: u64,
    pub errors: u64,
    pub throughput: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
}

impl Measured {
    /// One run's figures: wait for its client threads and add theirs up.
    pub fn join<'s>(
        clients: Vec<std::thread::ScopedJoinHandle<'s, Result<Measured, String>>>,
        elapsed: Duration,
    ) -> Result<Measured, String> {
        let mut total = Measured {
            elapsed,
            ..Measured::default()
        };
        for client in clients {
            let m = client
                .join()
                .unwrap_or_else(|_| Err("a client thread panicked".into()))?;
            total.ok += m.ok;
            total.errors += m.errors;
            total.latencies_us.extend(m.latencies_us);
        }
        Ok(total)
    }

    pub fn summary(mut self) -> Summary {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> u32 {
            if self.latencies_us.is_empty() {
                return 0;
            }
            let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
            self.latencies_us[i]
        };
        Summary {
            ok: self.ok,
            errors: self.errors,
            throughput: self.ok as f64 / self.elapsed.as_secs_f64(),
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
        }
    }
}

/// One call a client makes back to back.
pub type Call = Box<dyn FnMut(&serde_json::Value) -> pycom_client::Result<()> + Send>;

/// `clients` threads each making `make`'s call back to back for `duration`,
/// its latency measured (errors counted, not timed).
pub fn measure(
    ctx: &pycom_client::Context,
    clients: usize,
    duration: Duration,
    make: impl Fn(&pycom_client::Context) -> Result<Call, String> + Sync,
) -> Result<Measured, String> {
    let deadline = Instant::now() + duration;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|i| {
                let make = &make;
                scope.spawn(move || {
                    let mut call = make(ctx)?;
                    let mut m = Measured::default();
                    let args = serde_json::json!({"client": i, "text": "hello"});
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        match call(&args) {
                            Ok(()) => {
                                m.ok += 1;
                                m.latencies_us
                                    .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            }
                            Err(_) => m.errors += 1,
                        }
                    }
                    Ok(m)
                })
            })
            .collect();
        Measured::join(handles, duration)
    })
}
