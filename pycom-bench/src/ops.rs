//! Request bodies for each operation, preloading, and the pycom-client
//! invoke loop.

use crate::load::Measured;
use crate::Op;
use pycom_client::Context;
use serde_json::json;
use std::time::{Duration, Instant};

/// Interface and service names of preloaded record `i`.
fn preloaded(i: usize) -> (String, String) {
    (format!("bench.pre.{i}"), format!("/bench/pre/{i}"))
}

const ADDRESS: &str = "tcp://127.0.0.1:1";

pub struct Bodies {
    op: Op,
    fixed: Vec<Vec<u8>>,
    /// Distinguishes this run's registrations from earlier runs'.
    nonce: u128,
}

impl Bodies {
    pub fn prepare(op: Op, preload: usize) -> Bodies {
        let call = |method: &str, args: serde_json::Value| {
            json!({"version": "1.0", "interface": "org.pycom.nameserver", "method": method, "args": args})
                .to_string()
                .into_bytes()
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
            Op::Register => Vec::new(),
            Op::Invoke | Op::InvokeRaw => vec![
                json!({"version": "1.0", "interface": "bench.echo", "method": "echo",
                "args": {"n": 1, "text": "hello"}})
                .to_string()
                .into_bytes(),
            ],
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

/// Register `n` leased services, pipelined, PyCOM 0.3 style (`interface`).
pub fn preload(ctx: &zmq::Context, endpoint: &str, n: usize) -> Result<(), String> {
    let socket = ctx.socket(zmq::DEALER).map_err(|e| e.to_string())?;
    socket.set_linger(0).map_err(|e| e.to_string())?;
    socket.connect(endpoint).map_err(|e| e.to_string())?;
    let (mut sent, mut got) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while got < n {
        while sent < n && sent - got < 256 {
            let (interface, service) = preloaded(sent);
            let body = json!({"version": "1.0", "interface": "org.pycom.nameserver", "method": "register",
                "args": {"service": service, "address": ADDRESS, "interface": interface, "ttl_ms": 3_600_000}});
            socket
                .send_multipart([&b""[..], b"CALL", body.to_string().as_bytes()], 0)
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
        if Instant::now() > deadline {
            return Err(format!("preload stalled after {got} of {n} registrations"));
        }
        if socket.poll(zmq::POLLIN, 1000).map_err(|e| e.to_string())? == 0 {
            continue;
        }
        let frames = socket.recv_multipart(0).map_err(|e| e.to_string())?;
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
    }
    Ok(())
}

/// `clients` threads, each a pycom-client Component calling echo in a loop.
pub fn invoke_with_components(
    endpoint: &str,
    clients: usize,
    duration: Duration,
) -> Result<Measured, String> {
    let ctx = Context::new("tcp://127.0.0.1:1").map_err(|e| e.to_string())?;
    let deadline = Instant::now() + duration;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                let ctx = ctx.clone();
                scope.spawn(move || {
                    let mut c = ctx.connect(endpoint, "bench.echo").map_err(|e| e.to_string())?;
                    let mut m = Measured::default();
                    let args = json!({"n": 1, "text": "hello"});
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        match c.invoke("echo", &args) {
                            Ok(_) => {
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
