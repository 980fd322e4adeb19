//! Request bodies for each operation, preloading, and the pycom-client
//! invoke loop.

use crate::load::Measured;
use crate::Op;
use pycom_client::Context;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Interface and service names of preloaded record `i`.
fn preloaded(i: usize) -> (String, String) {
    tagged(i, "pre")
}

/// Interface and service names of record `i` of a set named `tag`.
fn tagged(i: usize, tag: &str) -> (String, String) {
    (format!("bench.{tag}.{i}"), format!("/bench/{tag}/{i}"))
}

const ADDRESS: &str = "tcp://127.0.0.1:1";

pub struct Bodies {
    op: Op,
    fixed: Vec<Vec<u8>>,
    /// Distinguishes this run's registrations from earlier runs'.
    nonce: u128,
}

impl Bodies {
    /// `token`: carried by every request (`extensions["org.pycom.auth"]`),
    /// as a logged-in client's are.
    pub fn prepare(op: Op, preload: usize, token: Option<&str>) -> Bodies {
        let call = |method: &str, args: serde_json::Value| {
            let mut body = json!({"version": "1.0", "interface": "org.pycom.nameserver", "method": method, "args": args});
            if let Some(token) = token {
                body["extensions"] = json!({"org.pycom.auth": token});
            }
            body.to_string().into_bytes()
        };
        let n = preload.max(1);
        let fixed = match op {
            Op::Stat => vec![call("stat", json!(null))],
            Op::Locate => (0..n)
                .map(|i| call("locate", json!({"interface": preloaded(i).0})))
                .collect(),
            Op::Renew => (0..n)
                .map(|i| call("renew", json!({"service": preloaded(i).1, "address": ADDRESS})))
                .collect(),
            Op::Register | Op::Fdatasync | Op::Pubsub | Op::Events | Op::Lvc | Op::Login | Op::Workflow => {
                Vec::new()
            }
            Op::Invoke | Op::InvokeRaw => {
                let mut body = json!({"version": "1.0", "interface": "bench.echo", "method": "echo",
                "args": {"n": 1, "text": "hello"}});
                if let Some(token) = token {
                    body["extensions"] = json!({"org.pycom.auth": token});
                }
                vec![body.to_string().into_bytes()]
            }
        };
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Bodies { op, fixed, nonce }
    }

    pub fn needs_preload(&self) -> bool {
        matches!(self.op, Op::Locate | Op::Renew)
    }

    /// The body of request `seq` of client `client`.
    pub fn body(&self, client: usize, seq: u64) -> Vec<u8> {
        if self.op == Op::Register {
            return format!(
                r#"{{"version":"1.0","interface":"org.pycom.nameserver","method":"register","args":{{"service":"/bench/reg/{}/{client}/{seq}","address":"{ADDRESS}","interface":"bench.reg","ttl_ms":600000}}}}"#,
                self.nonce
            )
            .into_bytes();
        }
        // Spread clients over the preloaded names.
        let i = (client.wrapping_mul(7919) as u64).wrapping_add(seq) as usize % self.fixed.len();
        self.fixed[i].clone()
    }
}

/// How to preload: `clients` DEALER sockets (one thread each), each keeping
/// up to `in_flight` registers outstanding.
#[derive(Debug, Clone, Copy)]
pub struct Preload {
    pub clients: usize,
    pub in_flight: usize,
}

/// How long a preload may go without a single reply before giving up.
const PRELOAD_STALL: Duration = Duration::from_secs(60);

impl Preload {
    /// Register leased services `0..n` (`bench.pre.{i}`, one hour lease),
    /// PyCOM 0.3 style (`interface`). Client `c` registers every
    /// `clients`-th record from `c`, so the union is exactly `0..n`.
    pub fn run(&self, ctx: &zmq::Context, endpoint: &str, n: usize) -> Result<(), String> {
        self.run_tagged(ctx, endpoint, n, "pre")
    }

    /// The same with names of another set (`bench.{tag}.{i}`,
    /// `/bench/{tag}/{i}`): new services, not renewals of earlier ones.
    pub fn run_tagged(&self, ctx: &zmq::Context, endpoint: &str, n: usize, tag: &str) -> Result<(), String> {
        let clients = self.clients.clamp(1, n.max(1));
        let in_flight = self.in_flight.max(1);
        let abort = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..clients)
                .map(|c| {
                    let abort = &abort;
                    scope.spawn(move || {
                        let r = preload_part(ctx, endpoint, n, tag, (c, clients), in_flight, abort);
                        if r.is_err() {
                            abort.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        r
                    })
                })
                .collect();
            let mut first_error = None;
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err("a preload thread panicked".into()));
                if let (Err(e), None) = (r, &first_error) {
                    first_error = Some(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        })
    }
}

fn register_body(i: usize, tag: &str) -> String {
    let (interface, service) = tagged(i, tag);
    // Names are plain ASCII: no JSON escaping needed.
    format!(
        r#"{{"version":"1.0","interface":"org.pycom.nameserver","method":"register","args":{{"service":"{service}","address":"{ADDRESS}","interface":"{interface}","ttl_ms":3600000}}}}"#
    )
}

/// One preload client: records `first, first + step, ...` below `n`.
fn preload_part(
    ctx: &zmq::Context,
    endpoint: &str,
    n: usize,
    tag: &str,
    (first, step): (usize, usize),
    in_flight: usize,
    abort: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let socket = ctx.socket(zmq::DEALER).map_err(|e| e.to_string())?;
    socket.set_linger(0).map_err(|e| e.to_string())?;
    socket.set_sndhwm(0).map_err(|e| e.to_string())?;
    socket.set_rcvhwm(0).map_err(|e| e.to_string())?;
    socket.connect(endpoint).map_err(|e| e.to_string())?;
    let total = if first < n { (n - first).div_ceil(step) } else { 0 };
    let (mut sent, mut got) = (0usize, 0usize);
    let mut last_reply = Instant::now();
    while got < total {
        if abort.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(()); // Another client failed and says why.
        }
        while sent < total && sent - got < in_flight {
            let body = register_body(first + sent * step, tag);
            socket
                .send_multipart([&b""[..], b"CALL", body.as_bytes()], 0)
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
        if last_reply.elapsed() > PRELOAD_STALL {
            return Err(format!(
                "preload stalled: no reply for {} s (client {first}: {got} of {total} registered)",
                PRELOAD_STALL.as_secs()
            ));
        }
        if socket.poll(zmq::POLLIN, 100).map_err(|e| e.to_string())? == 0 {
            continue;
        }
        while let Ok(frames) = socket.recv_multipart(zmq::DONTWAIT) {
            let ok = frames
                .get(2)
                .is_some_and(|b| b.starts_with(br#"{"code":0"#) || b.starts_with(br#"{"code": 0"#));
            if !ok {
                return Err(format!(
                    "preload: register refused: {}",
                    frames
                        .get(2)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()
                ));
            }
            got += 1;
            last_reply = Instant::now();
        }
    }
    Ok(())
}

/// `clients` threads, each a pycom-client Component calling echo in a loop.
pub fn invoke_with_components(
    endpoint: &str,
    clients: usize,
    duration: Duration,
    token: Option<&str>,
) -> Result<Measured, String> {
    let mut ctx = Context::new("tcp://127.0.0.1:1").map_err(|e| e.to_string())?;
    if let Some(token) = token {
        ctx = ctx.with_token(token);
    }
    crate::load::measure(&ctx, clients, duration, |ctx| {
        let mut c = ctx.connect(endpoint, "bench.echo").map_err(|e| e.to_string())?;
        Ok(Box::new(move |args: &Value| c.invoke("echo", args).map(|_| ())))
    })
}
