//! The server thread: owns the ROUTER socket and the registry.
//!
//! One loop: wait on the ROUTER socket and the events socket (replies the
//! store has made durable, unreachable services from the prober, signals),
//! answer requests, expire leases. Nothing here blocks on a peer or a disk.

use crate::config::{Overrides, Settings};
use crate::logging::LogControl;
use crate::nameserver::{self, Context, Outcome, Stats};
use crate::notify;
use crate::registry::prober::{ProbeCmd, EVENT_UNREACHABLE};
use crate::registry::store::{PendingReply, StoreJob, EVENT_ACK, EVENT_STORE_DONE};
use crate::registry::{Registry, StoreOp};
use crate::signals::EVENT_SIGNAL;
use pycom_client::nameserver::INTERFACE;
use pycom_client::proto::{self, DecodeError, Fault};
use pycom_client::router::{self, Incoming, Outbox};
use std::sync::mpsc::{Sender, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Requests handled before the loop looks at events and leases again.
const BATCH: usize = 256;
/// Longest wait in one poll, so a clock jump cannot delay expiry for long.
const MAX_WAIT: Duration = Duration::from_millis(500);

pub struct Server {
    pub router: zmq::Socket,
    pub events: zmq::Socket,
    pub registry: Registry,
    pub settings: Settings,
    pub overrides: Overrides,
    pub log: LogControl,
    pub store: Option<SyncSender<StoreJob>>,
    pub prober: Sender<ProbeCmd>,
    pub stats: Stats,
    /// Replies of the batch being handled, sent when it ends.
    pub outbox: Outbox,
}

/// What the loop does after reading events.
#[derive(PartialEq)]
enum Flow {
    Serve,
    Stop,
    Stopped,
}

impl Server {
    pub fn run(mut self) {
        let mut flow = Flow::Serve;
        while flow != Flow::Stopped {
            self.expire(Instant::now());
            let wait = self.registry.next_deadline().map_or(MAX_WAIT, |d| {
                d.saturating_duration_since(Instant::now()).min(MAX_WAIT)
            });
            // Round up: waking a millisecond early would spin until the deadline.
            let wait_ms = i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(500);
            let serving = flow == Flow::Serve;
            let (router_ready, events_ready) = {
                let mut items = [
                    self.events.as_poll_item(zmq::POLLIN),
                    self.router.as_poll_item(zmq::POLLIN),
                ];
                let n = if serving { 2 } else { 1 };
                match zmq::poll(&mut items[..n], wait_ms) {
                    Ok(_) => {}
                    // A signal arrived; its event is read on the next turn.
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => {
                        error!("poll failed: {e}");
                        continue;
                    }
                }
                (serving && items[1].is_readable(), items[0].is_readable())
            };
            if events_ready {
                let next = self.drain_events();
                if next != Flow::Serve {
                    flow = next;
                }
            }
            if router_ready && flow == Flow::Serve {
                self.serve_batch();
                self.outbox.flush(&self.router);
            }
        }
        info!("all registry writes flushed; pycomd stopped");
    }

    fn serve_batch(&mut self) {
        // One clock reading per batch: a batch lasts well under a millisecond.
        let now = Instant::now();
        for _ in 0..BATCH {
            match router::recv(&self.router, self.settings.max_message_bytes) {
                Ok(Some(incoming)) => self.handle(incoming, now),
                Ok(None) => return,
                Err(e) => {
                    error!("receive failed: {e}");
                    return;
                }
            }
        }
    }

    fn handle(&mut self, incoming: Incoming, now: Instant) {
        self.stats.requests += 1;
        let Incoming {
            envelope,
            parts,
            oversize,
        } = incoming;
        if let Some(size) = oversize {
            let fault = Fault::bad_request(format!(
                "request of {size} bytes exceeds max_message_bytes = {}",
                self.settings.max_message_bytes
            ));
            self.reply_now(envelope, Err(&fault));
            return;
        }
        let request = match proto::decode_call(parts.first().map(|m| &m[..]), parts.get(1).map(|m| &m[..])) {
            Ok(request) => request,
            Err(DecodeError::Framing(message)) => {
                self.stats.failed += 1;
                debug!("FAIL: {message}");
                self.outbox
                    .push(envelope, proto::STATUS_FAIL, message.into_bytes());
                return;
            }
            Err(DecodeError::Body(message)) => {
                self.reply_now(envelope, Err(&Fault::bad_request(message)));
                return;
            }
        };
        if request.interface != INTERFACE {
            let fault = Fault::not_found(format!(
                "pycomd serves only {INTERFACE}, not '{}': locate the service through it and call it directly",
                request.interface
            ));
            self.reply_now(envelope, Err(&fault));
            return;
        }
        let mut ctx = Context {
            registry: &mut self.registry,
            settings: &self.settings,
            stats: &self.stats,
            now,
        };
        let outcome = nameserver::dispatch(&mut ctx, &request.method, request.args);
        debug!(method = %request.method, ok = outcome.result.is_ok(), "request");
        self.finish(envelope, outcome);
    }

    fn finish(&mut self, envelope: Vec<zmq::Message>, outcome: Outcome) {
        let Outcome { result, write, probe } = outcome;
        if let Some(cmd) = probe {
            // The prober only stops when pycomd does.
            let _ = self.prober.send(cmd);
        }
        let body = match result {
            Ok(body) => body,
            Err(fault) => return self.reply_now(envelope, Err(&fault)),
        };
        let Some(op) = write else {
            self.outbox.push(envelope, proto::STATUS_OK, body);
            return;
        };
        let reply = PendingReply {
            envelope: envelope.iter().map(|m| m.to_vec()).collect(),
            ok_body: body,
        };
        if let Err(fault) = self.persist(op, Some(reply)) {
            self.reply_now(envelope, Err(&fault));
        }
    }

    /// Queue a write; its reply (if any) goes out once the write is flushed.
    fn persist(&mut self, op: StoreOp, reply: Option<PendingReply>) -> Result<(), Fault> {
        let Some(store) = &self.store else {
            return Err(Fault::unavailable(
                "pycomd is shutting down; retry against its successor",
            ));
        };
        match store.try_send(StoreJob { op, reply }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                warn!("the store's queue is full; a write was refused");
                Err(Fault::unavailable(
                    "pycomd has too many writes waiting for the disk; retry shortly",
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                error!("the store thread is gone");
                Err(Fault::unavailable("pycomd cannot write its registry"))
            }
        }
    }

    /// Answer with a fault.
    fn reply_now(&mut self, envelope: Vec<zmq::Message>, fault: Result<(), &Fault>) {
        let Err(fault) = fault else { return };
        self.stats.faults += 1;
        self.outbox
            .push(envelope, proto::STATUS_OK, proto::encode_fault(fault, None));
    }

    fn expire(&mut self, now: Instant) {
        for record in self.registry.expire(now) {
            info!(service = %record.service, address = %record.address, "lease expired");
            if let Err(fault) = self.persist(StoreOp::Delete(record.service), None) {
                warn!("expired record stays on disk until it expires again after a restart: {fault}");
            }
        }
    }

    fn drain_events(&mut self) -> Flow {
        let mut flow = Flow::Serve;
        loop {
            let frames = match self.events.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return flow,
                Err(e) => {
                    error!("events socket failed: {e}");
                    return flow;
                }
            };
            let Some((kind, rest)) = frames.split_first() else {
                continue;
            };
            match kind.as_slice() {
                EVENT_ACK => {
                    if let Err(e) = self.router.send_multipart(rest, zmq::DONTWAIT) {
                        debug!("acknowledgement dropped: {e}");
                    }
                }
                EVENT_UNREACHABLE => {
                    if let [service, address, generation] = rest {
                        let generation = <[u8; 8]>::try_from(generation.as_slice()).map(u64::from_le_bytes);
                        if let Ok(generation) = generation {
                            self.drop_unreachable(
                                &String::from_utf8_lossy(service),
                                &String::from_utf8_lossy(address),
                                generation,
                            );
                        }
                    }
                }
                EVENT_SIGNAL => match rest.first().map(Vec::as_slice) {
                    Some(b"HUP") => self.reload(),
                    Some(name) if flow == Flow::Serve => {
                        info!(signal = %String::from_utf8_lossy(name), "stopping: flushing registry writes");
                        notify::stopping();
                        // Closing the queue lets the store write what it has, then stop.
                        self.store = None;
                        flow = Flow::Stop;
                    }
                    // A second TERM while stopping changes nothing.
                    Some(_) => {}
                    None => {}
                },
                EVENT_STORE_DONE => return Flow::Stopped,
                other => warn!("unknown internal event {}", proto::printable(other)),
            }
        }
    }

    fn drop_unreachable(&mut self, service: &str, address: &str, generation: u64) {
        if let Some(op) = self.registry.drop_unreachable(service, generation) {
            info!(%service, %address, "dropped: probes unanswered");
            if let Err(fault) = self.persist(op, None) {
                warn!("unreachable record stays on disk: {fault}");
            }
        }
    }

    /// SIGHUP: re-read the configuration and apply what can change live.
    fn reload(&mut self) {
        let new = match Settings::load(&self.overrides) {
            Ok(new) => new,
            Err(e) => {
                error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        let old = &mut self.settings;
        let mut applied = Vec::new();
        if new.log_level != old.log_level {
            match self.log.set_level(&new.log_level) {
                Ok(done) => {
                    applied.push(done);
                    old.log_level = new.log_level.clone();
                }
                Err(e) => error!("reload: {e}"),
            }
        }
        if new.max_message_bytes != old.max_message_bytes {
            applied.push(format!("max_message_bytes = {}", new.max_message_bytes));
            old.max_message_bytes = new.max_message_bytes;
        }
        if (new.ttl_min_ms, new.ttl_max_ms) != (old.ttl_min_ms, old.ttl_max_ms) {
            applied.push(format!(
                "ttl_min_ms = {}, ttl_max_ms = {}",
                new.ttl_min_ms, new.ttl_max_ms
            ));
            old.ttl_min_ms = new.ttl_min_ms;
            old.ttl_max_ms = new.ttl_max_ms;
        }
        let needs_restart: Vec<&str> = [
            ("listen", new.listen != old.listen),
            ("data_dir", new.data_dir != old.data_dir),
            ("log_format", new.log_format != old.log_format),
            ("max_records", new.max_records != old.max_records),
            (
                "probe_interval_ms",
                new.probe_interval_ms != old.probe_interval_ms,
            ),
            ("probe_timeout_ms", new.probe_timeout_ms != old.probe_timeout_ms),
            ("probe_failures", new.probe_failures != old.probe_failures),
            ("high_water_mark", new.high_water_mark != old.high_water_mark),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        if applied.is_empty() {
            info!("reloaded configuration: nothing that can change live has changed");
        } else {
            info!("reloaded configuration: {}", applied.join("; "));
        }
        if !needs_restart.is_empty() {
            warn!(
                "changed but only applied on restart: {}",
                needs_restart.join(", ")
            );
        }
    }
}
