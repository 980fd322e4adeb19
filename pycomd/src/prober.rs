//! Liveness probes for lease-less records (every PyCOM 0.3 service).
//!
//! A record registered without `ttl_ms` cannot renew, so pycomd asks: every
//! `probe_interval` it sends the address a CALL. Any reply counts as alive,
//! even an error (old services answer an unknown interface with code 4).
//! After `probe_failures` probes in a row without a reply within
//! `probe_timeout`, the prober reports the record unreachable and the server
//! drops it. The prober owns its sockets on its own thread, so a slow or
//! dead service never delays a request.

use crate::mailbox::{Event, Poster};
use pycom_client::proto::{self, Request};
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The interface probes call: one no service implements, so no user code runs.
pub const PROBE_INTERFACE: &str = "org.pycom.probe";
/// The longest the prober sleeps before looking at its commands again.
const MAX_IDLE: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub enum ProbeCmd {
    Watch {
        service: String,
        address: String,
        /// The record's version: a verdict names it, so it cannot drop a newer one.
        revision: u64,
    },
    Unwatch {
        service: String,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
}

struct Target {
    address: String,
    revision: u64,
    socket: Option<zmq::Socket>,
    failures: u32,
    /// When the probe in flight was sent.
    in_flight: Option<Instant>,
    next_probe: Instant,
}

pub fn spawn(
    ctx: zmq::Context,
    settings: ProbeSettings,
    events: Poster,
) -> (Sender<ProbeCmd>, JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("pycomd-prober".into())
        .spawn(move || Prober::new(ctx, settings, events).run(rx))
        .unwrap_or_else(|e| panic!("cannot start the prober thread: {e}"));
    (tx, handle)
}

struct Prober {
    ctx: zmq::Context,
    settings: ProbeSettings,
    events: Poster,
    targets: HashMap<String, Target>,
    probe_body: Vec<u8>,
}

impl Prober {
    fn new(ctx: zmq::Context, settings: ProbeSettings, events: Poster) -> Prober {
        let probe_body =
            proto::encode_request_body(&Request::new(PROBE_INTERFACE, "ping", serde_json::Value::Null));
        Prober {
            ctx,
            settings,
            events,
            targets: HashMap::new(),
            probe_body,
        }
    }

    fn run(mut self, rx: Receiver<ProbeCmd>) {
        loop {
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.apply(cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            self.wait_for_replies();
            self.tick(Instant::now());
        }
    }

    fn apply(&mut self, cmd: ProbeCmd) {
        match cmd {
            ProbeCmd::Watch {
                service,
                address,
                revision,
            } => {
                if let Some(t) = self.targets.get_mut(&service) {
                    if t.address == address {
                        // Re-registered at the same address: keep probing as before.
                        t.revision = revision;
                        return;
                    }
                }
                debug!(%service, %address, "probing");
                let target = Target {
                    address,
                    revision,
                    socket: None,
                    failures: 0,
                    in_flight: None,
                    next_probe: Instant::now() + self.settings.interval,
                };
                self.targets.insert(service, target);
            }
            ProbeCmd::Unwatch { service } => {
                self.targets.remove(&service);
            }
        }
    }

    /// Poll every socket with a probe in flight, until a reply or the next
    /// thing to do.
    fn wait_for_replies(&mut self) {
        let now = Instant::now();
        let next_event = self
            .targets
            .values()
            .map(|t| {
                t.in_flight
                    .map_or(t.next_probe, |sent| sent + self.settings.timeout)
            })
            .min()
            .map_or(MAX_IDLE, |at| at.saturating_duration_since(now).min(MAX_IDLE));
        let mut names = Vec::new();
        let mut items = Vec::new();
        for (name, target) in &self.targets {
            if let (Some(socket), Some(_)) = (&target.socket, target.in_flight) {
                names.push(name.clone());
                items.push(socket.as_poll_item(zmq::POLLIN));
            }
        }
        if items.is_empty() {
            std::thread::sleep(next_event);
            return;
        }
        let ms = i64::try_from(next_event.as_millis()).unwrap_or(100);
        if zmq::poll(&mut items, ms).is_err() {
            return;
        }
        let readable: Vec<String> = names
            .into_iter()
            .zip(items.iter())
            .filter(|(_, item)| item.is_readable())
            .map(|(name, _)| name)
            .collect();
        drop(items);
        for name in readable {
            if let Some(target) = self.targets.get_mut(&name) {
                if let Some(socket) = &target.socket {
                    // Any reply, even an error or garbage, means something answers.
                    while socket.recv_multipart(zmq::DONTWAIT).is_ok() {}
                }
                target.failures = 0;
                target.in_flight = None;
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        let mut unreachable = Vec::new();
        for (service, target) in self.targets.iter_mut() {
            if let Some(sent) = target.in_flight {
                if now < sent + self.settings.timeout {
                    continue;
                }
                target.failures += 1;
                target.in_flight = None;
                // A fresh socket next time: nothing stale queued for a peer that may come back.
                target.socket = None;
                debug!(%service, address = %target.address, failures = target.failures, "probe unanswered");
                if target.failures >= self.settings.failures {
                    unreachable.push(service.clone());
                    continue;
                }
            }
            if now >= target.next_probe {
                target.next_probe = now + self.settings.interval;
                match send_probe(&self.ctx, target, &self.probe_body) {
                    Ok(()) => target.in_flight = Some(now),
                    Err(e) => {
                        warn!(%service, address = %target.address, "cannot probe: {e}");
                        target.failures += 1;
                        if target.failures >= self.settings.failures {
                            unreachable.push(service.clone());
                        }
                    }
                }
            }
        }
        for service in unreachable {
            if let Some(target) = self.targets.remove(&service) {
                self.events.post(Event::Unreachable {
                    service,
                    address: target.address,
                    revision: target.revision,
                });
            }
        }
    }
}

fn send_probe(ctx: &zmq::Context, target: &mut Target, body: &[u8]) -> Result<(), zmq::Error> {
    if target.socket.is_none() {
        let socket = ctx.socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        socket.set_sndhwm(1)?;
        socket.set_rcvhwm(16)?;
        socket.connect(&target.address)?;
        target.socket = Some(socket);
    }
    let Some(socket) = &target.socket else {
        return Ok(());
    };
    let frames: [&[u8]; 3] = [b"", proto::CMD_CALL, body];
    socket.send_multipart(frames, zmq::DONTWAIT)
}
