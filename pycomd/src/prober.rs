//! Liveness probes for lease-less records (every PyCOM 0.3 service).
//!
//! A record registered without `ttl_ms` cannot renew, so pycomd asks: every
//! `probe_interval` it sends the address a CALL. Any reply counts as alive,
//! even an error (old services answer an unknown interface with code 4).
//! After `probe_failures` probes in a row without a reply within
//! `probe_timeout`, the prober reports the record unreachable and the server
//! drops it. The prober owns its sockets on its own thread, so a slow or
//! dead service never delays a request.
//!
//! Scale: probes go through a bounded pool of DEALER sockets, in a ZeroMQ
//! context of the prober's own (its own I/O thread: probe connections
//! never queue behind requests, and its sockets never count against the
//! daemon's). A pooled socket is connected to one address at a time and
//! moved to another by disconnect and connect, so at most
//! [`MAX_CONNECTIONS`] sockets and connections exist however many records
//! are probed, three file descriptors each (the connection, and the
//! socketpair libzmq signals the socket through). One ROUTER for every
//! address would need a single socket, but libzmq refuses a ROUTER peer on
//! a REP socket, which is what PyCOM services use.
//!
//! Addresses due for a probe wait in a queue, in the order they became
//! due, and an idle connection is closed to make room (the one needed again
//! last). With no more addresses than the pool, connections simply stay
//! open between probes. A probe that waits for room is late, never failed:
//! only a probe that was sent and got no reply in time counts, and not even
//! that while pycomd is at its open-files limit (the connection may have
//! failed for want of a descriptor; no new one is opened then). So
//! pycomd's own limits never drop a live record. When probes run late or
//! descriptors run out, pycomd says so (a warning, at most every 10 s).
//!
//! Records at the same address share its probes (one connection, one
//! probe); each keeps its own count of failures.

use crate::mailbox::{Event, Poster};
use pycom_client::proto::{self, Request};
use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The interface probes call: one no service implements, so no user code runs.
pub const PROBE_INTERFACE: &str = "org.pycom.probe";
/// Most probe sockets, each connected to at most one address: what bounds
/// the prober's sockets and file descriptors, however many records it
/// probes. Each socket takes up to [`FDS_PER_SOCKET`]; the pool is smaller
/// when the open-files limit is low, so that probes never take more than
/// about a third of it.
pub const MAX_CONNECTIONS: usize = 512;
// The pool lives in a context of its own, under libzmq's default cap of
// 1023 sockets per context (ZMQ_MAX_SOCKETS).
const _: () = assert!(MAX_CONNECTIONS < 1023);
/// File descriptors of one probe socket: its connection, and the
/// socketpair libzmq signals the socket through (libzmq as the zmq crate
/// builds it has no eventfd).
pub const FDS_PER_SOCKET: usize = 3;
/// The fewest connections the prober keeps, however low the fd limit.
const MIN_CONNECTIONS: usize = 16;
/// The longest the prober sleeps before looking at its commands again.
const MAX_IDLE: Duration = Duration::from_millis(100);
/// A probe starting this long after it was due is late enough to warn of.
const LATE: Duration = Duration::from_secs(1);
/// At most one warning of each kind per this.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// When a probe connection cannot be opened for want of pycomd's own
/// resources, the address is tried again after this; it counts as no failure.
const RETRY: Duration = Duration::from_millis(500);
/// Largest frame read from a probed peer; a larger one closes its connection.
const MAX_REPLY_BYTES: i64 = 64 * 1024;
/// Messages read from one socket before the prober moves on.
const READ_BATCH: usize = 16;
/// Within this many descriptors of its open-files limit, pycomd counts no
/// probe as failed: a connection may have failed for want of one.
const FD_MARGIN: u64 = 64;
/// How often the prober counts pycomd's open descriptors, at most.
const FD_CHECK_EVERY: Duration = Duration::from_secs(1);

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
    /// Stop probing everything: this node is no longer the cluster's
    /// leader (probes run on the leader only).
    UnwatchAll,
}

#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
}

/// `ctx` is the daemon's context; the prober makes its own, so that its
/// connections have an I/O thread (and a socket cap) of their own.
pub fn spawn(
    _ctx: zmq::Context,
    settings: ProbeSettings,
    events: Poster,
) -> (Sender<ProbeCmd>, JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let nofile = crate::limits::nofile();
    let handle = std::thread::Builder::new()
        .name("pycomd-prober".into())
        .spawn(move || Prober::new(settings, events, nofile).run(rx))
        .unwrap_or_else(|e| panic!("cannot start the prober thread: {e}"));
    (tx, handle)
}

/// How many probe sockets there may be, given the open-files limit.
fn connection_cap(nofile: Option<u64>) -> usize {
    let share = nofile.map_or(MAX_CONNECTIONS, |n| {
        usize::try_from(n / (3 * FDS_PER_SOCKET as u64)).unwrap_or(usize::MAX)
    });
    share.clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

type PeerId = u64;

/// One address, and the records registered at it.
struct Peer {
    address: String,
    records: HashMap<String, Watched>,
    /// When it is next probed (while a probe is in flight: the one after).
    due: Instant,
    link: Link,
}

struct Watched {
    revision: u64,
    /// Probes in a row without a reply.
    failures: u32,
}

/// Where a peer is; each state is in exactly one of the prober's queues.
/// `slot` is the pooled socket connected to it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Link {
    /// No connection: in `waiting`, by due time.
    Closed,
    /// Connected (or connecting), no probe in flight: in `idle`, by due time.
    Open { slot: usize },
    /// A probe in flight: in `deadlines`, by deadline.
    Probing { slot: usize, deadline: Instant },
}

/// What makes probes late or impossible, for the rate-limited warnings.
#[derive(Default)]
struct Pressure {
    late_warned: Option<Instant>,
    /// Probes started late since the last warning, and the latest of them.
    late: u64,
    most_late: Duration,
    refused_warned: Option<Instant>,
    /// Connections pycomd could not open itself since the last warning.
    refused: u64,
    short_warned: Option<Instant>,
    /// Unanswered probes not counted since the last warning.
    uncounted: u64,
}

/// Whether at most every `WARN_EVERY` since `last`; if so, now is the last.
fn due_to_warn(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

/// A pooled DEALER socket and the peer it is connected to, if any.
struct Slot {
    socket: zmq::Socket,
    peer: Option<PeerId>,
}

struct Prober {
    settings: ProbeSettings,
    events: Poster,
    ctx: zmq::Context,
    /// The pool of DEALER sockets, created as needed up to `cap`.
    slots: Vec<Slot>,
    /// Slots connected to nothing.
    free: Vec<usize>,
    probe_body: Vec<u8>,
    cap: usize,
    /// The open-files limit, and when pycomd's descriptors were last
    /// counted, and whether they were then close to it.
    nofile: Option<u64>,
    fds_checked: Option<(Instant, u64)>,
    peers: HashMap<PeerId, Peer>,
    by_address: HashMap<String, PeerId>,
    by_service: HashMap<String, PeerId>,
    waiting: BTreeSet<(Instant, PeerId)>,
    idle: BTreeSet<(Instant, PeerId)>,
    deadlines: BTreeSet<(Instant, PeerId)>,
    next_peer: PeerId,
    pressure: Pressure,
    /// No connection is opened before this: pycomd ran out of its own resources.
    paused_until: Option<Instant>,
}

impl Prober {
    fn new(settings: ProbeSettings, events: Poster, nofile: Option<u64>) -> Prober {
        let cap = connection_cap(nofile);
        let ctx = zmq::Context::new();
        let probe_body =
            proto::encode_request_body(&Request::new(PROBE_INTERFACE, "ping", serde_json::Value::Null));
        debug!(max_connections = cap, "prober ready");
        Prober {
            settings,
            events,
            ctx,
            slots: Vec::new(),
            free: Vec::new(),
            probe_body,
            cap,
            nofile,
            fds_checked: None,
            peers: HashMap::new(),
            by_address: HashMap::new(),
            by_service: HashMap::new(),
            waiting: BTreeSet::new(),
            idle: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            next_peer: 0,
            pressure: Pressure::default(),
            paused_until: None,
        }
    }

    fn run(mut self, rx: Receiver<ProbeCmd>) {
        loop {
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.apply(cmd, Instant::now()),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            self.expire(now);
            self.start_probes(now);
            self.warn_if_pressed(now);
            self.wait_for_replies();
        }
    }

    /// Connections open: idle ones and those with a probe in flight.
    fn open(&self) -> usize {
        self.idle.len() + self.deadlines.len()
    }

    fn apply(&mut self, cmd: ProbeCmd, now: Instant) {
        match cmd {
            ProbeCmd::Watch {
                service,
                address,
                revision,
            } => {
                if let Some(peer) = self
                    .by_service
                    .get(&service)
                    .and_then(|id| self.peers.get_mut(id))
                {
                    if peer.address == address {
                        // Re-registered at the same address: keep probing as before.
                        if let Some(w) = peer.records.get_mut(&service) {
                            w.revision = revision;
                        }
                        return;
                    }
                }
                self.forget(&service);
                debug!(%service, %address, "probing");
                let id = match self.by_address.get(&address) {
                    Some(&id) => id,
                    None => self.add_peer(address, now + self.settings.interval),
                };
                if let Some(peer) = self.peers.get_mut(&id) {
                    peer.records.insert(
                        service.clone(),
                        Watched {
                            revision,
                            failures: 0,
                        },
                    );
                    self.by_service.insert(service, id);
                }
            }
            ProbeCmd::Unwatch { service } => self.forget(&service),
            ProbeCmd::UnwatchAll => {
                let ids: Vec<PeerId> = self.peers.keys().copied().collect();
                for id in ids {
                    self.remove_peer(id);
                }
            }
        }
    }

    fn add_peer(&mut self, address: String, due: Instant) -> PeerId {
        let id = self.next_peer;
        self.next_peer += 1;
        self.by_address.insert(address.clone(), id);
        self.waiting.insert((due, id));
        self.peers.insert(
            id,
            Peer {
                address,
                records: HashMap::new(),
                due,
                link: Link::Closed,
            },
        );
        id
    }

    /// Stop probing `service`; an address left without records is closed.
    fn forget(&mut self, service: &str) {
        let Some(id) = self.by_service.remove(service) else {
            return;
        };
        let empty = self.peers.get_mut(&id).is_some_and(|peer| {
            peer.records.remove(service);
            peer.records.is_empty()
        });
        if empty {
            self.remove_peer(id);
        }
    }

    fn remove_peer(&mut self, id: PeerId) {
        let Some(peer) = self.peers.remove(&id) else {
            return;
        };
        self.by_address.remove(&peer.address);
        for service in peer.records.keys() {
            self.by_service.remove(service);
        }
        if peer.records.values().any(|w| w.failures > 0) {
            self.events.post(Event::ProbeFailures {
                address: peer.address.clone(),
                failures: 0,
            });
        }
        match peer.link {
            Link::Closed => {
                self.waiting.remove(&(peer.due, id));
            }
            Link::Open { slot } => {
                self.idle.remove(&(peer.due, id));
                self.disconnect(slot, &peer.address);
            }
            Link::Probing { slot, deadline } => {
                self.deadlines.remove(&(deadline, id));
                self.disconnect(slot, &peer.address);
            }
        }
    }

    /// Free a slot: whatever its old peer sent unread goes with the
    /// connection (libzmq reads nothing more from a pipe being closed).
    fn disconnect(&mut self, slot: usize, address: &str) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if let Err(e) = s.socket.disconnect(address) {
            debug!(%address, "probe disconnect: {e}");
        }
        s.peer = None;
        self.free.push(slot);
    }

    /// Close a peer's connection (if any) and queue it in `waiting`.
    fn close(&mut self, id: PeerId, due: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let (link, old_due, address) = (peer.link, peer.due, peer.address.clone());
        peer.link = Link::Closed;
        peer.due = due;
        match link {
            Link::Closed => {
                self.waiting.remove(&(old_due, id));
            }
            Link::Open { slot } => {
                self.idle.remove(&(old_due, id));
                self.disconnect(slot, &address);
            }
            Link::Probing { slot, deadline } => {
                self.deadlines.remove(&(deadline, id));
                self.disconnect(slot, &address);
            }
        }
        self.waiting.insert((due, id));
    }

    /// Probes whose deadline passed: one more failure for each record at
    /// the address; records at the limit are reported unreachable.
    /// If pycomd is about out of descriptors, a probe's connection may have
    /// failed for want of one: then nothing is counted, and the address is
    /// probed again shortly.
    fn expire(&mut self, now: Instant) {
        let mut short = None;
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let Some(peer) = self.peers.get(&id) else {
                self.deadlines.pop_first();
                continue;
            };
            // A fresh connection next time: nothing stale queued for a peer that may come back.
            let due = peer.due.max(now);
            if *short.get_or_insert_with(|| self.at_fd_limit(now)) {
                self.close(id, now + RETRY);
                self.pressure.uncounted += 1;
                continue;
            }
            self.close(id, due);
            self.count_failure(id);
        }
    }

    /// Whether pycomd is within [`FD_MARGIN`] descriptors of its limit
    /// (counted at most every [`FD_CHECK_EVERY`]; never on systems without
    /// /proc/self/fd). If so, no probe connection is opened for a while,
    /// and pycomd says so (at most every [`WARN_EVERY`]).
    fn at_fd_limit(&mut self, now: Instant) -> bool {
        let Some(limit) = self.nofile else {
            return false;
        };
        let open = match self.fds_checked {
            Some((at, open)) if now.duration_since(at) < FD_CHECK_EVERY => open,
            _ => {
                let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
                self.fds_checked = Some((now, open));
                open
            }
        };
        if open + FD_MARGIN < limit {
            return false;
        }
        self.paused_until = Some(now + RETRY);
        if due_to_warn(&mut self.pressure.short_warned, now) {
            warn!(
                open_files = open,
                limit,
                probes_not_counted = self.pressure.uncounted,
                "pycomd is at its open-files limit: no probe connection is opened, and no \
                 unanswered probe is counted as failed (its connection may have failed for want \
                 of a descriptor), until descriptors are free again; raise the limit \
                 (ulimit -Hn, systemd LimitNOFILE=)"
            );
            self.pressure.uncounted = 0;
        }
        true
    }

    /// One unanswered (or impossible) probe for every record of a peer.
    fn count_failure(&mut self, id: PeerId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        crate::health::PROBES.missed();
        let limit = self.settings.failures;
        let mut unreachable = Vec::new();
        let mut worst = 0;
        for (service, watched) in peer.records.iter_mut() {
            watched.failures += 1;
            worst = worst.max(watched.failures);
            debug!(%service, address = %peer.address, failures = watched.failures, "probe unanswered");
            if watched.failures >= limit {
                unreachable.push(service.clone());
            }
        }
        // A record dropped takes its count with it (the server forgets it).
        if unreachable.len() < peer.records.len() {
            self.events.post(Event::ProbeFailures {
                address: peer.address.clone(),
                failures: worst,
            });
        }
        for service in unreachable {
            if let Some(watched) = peer.records.remove(&service) {
                self.by_service.remove(&service);
                self.events.post(Event::Unreachable {
                    service,
                    address: peer.address.clone(),
                    revision: watched.revision,
                });
            }
        }
        if peer.records.is_empty() {
            self.remove_peer(id);
        }
    }

    /// Send every probe that is due and has room.
    fn start_probes(&mut self, now: Instant) {
        // Open connections first: they need no room.
        while let Some(&(due, id)) = self.idle.first() {
            if due > now {
                break;
            }
            let Some(Link::Open { slot }) = self.peers.get(&id).map(|p| p.link) else {
                self.idle.pop_first();
                continue;
            };
            // Anything the peer sent unasked is not an answer to this probe.
            self.drain(slot);
            if let Err(e) = self.send_probe(slot) {
                // The connection cannot take it: start over with a fresh one.
                debug!("probe on an open connection: {e}");
                self.close(id, due);
                continue;
            }
            self.idle.pop_first();
            self.probing(id, slot, now);
        }
        if self.paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.paused_until = None;
        if self.waiting.first().is_some_and(|&(due, _)| due <= now) && self.at_fd_limit(now) {
            return;
        }
        while let Some(&(due, id)) = self.waiting.first() {
            if due > now {
                break;
            }
            if self.open() >= self.cap {
                // Room from the idle connection needed again last (every
                // idle one is due later than now: those due went above).
                let Some(&(_, victim)) = self.idle.last() else {
                    break;
                };
                let victim_due = self.peers.get(&victim).map_or(now, |p| p.due);
                self.close(victim, victim_due);
                continue;
            }
            let late = now.saturating_duration_since(due);
            if late >= LATE {
                self.pressure.late += 1;
                self.pressure.most_late = self.pressure.most_late.max(late);
            }
            if !self.connect_and_probe(id, due, now) {
                break;
            }
        }
    }

    /// Connect to a waiting peer and send its probe. False when pycomd's
    /// own resources ran out: no connection is opened for a while.
    fn connect_and_probe(&mut self, id: PeerId, due: Instant, now: Instant) -> bool {
        let Some(address) = self.peers.get(&id).map(|p| p.address.clone()) else {
            self.waiting.remove(&(due, id));
            return true;
        };
        let slot = match self.take_slot() {
            Ok(slot) => slot,
            Err(e) => {
                self.refused(&address, e, now);
                self.close(id, now + RETRY);
                self.paused_until = Some(now + RETRY);
                return false;
            }
        };
        let socket = &self.slots[slot].socket;
        let sent = socket.connect(&address).and_then(|()| {
            self.send_probe(slot).inspect_err(|_| {
                let _ = socket.disconnect(&address);
            })
        });
        match sent {
            Ok(()) => {
                self.slots[slot].peer = Some(id);
                self.waiting.remove(&(due, id));
                self.probing(id, slot, now);
                true
            }
            Err(e) if address_error(e) => {
                self.free.push(slot);
                // The address itself is wrong: it will never answer.
                warn!(%address, "cannot probe: {e}");
                self.close(id, now + self.settings.interval);
                self.count_failure(id);
                true
            }
            Err(e) => {
                self.free.push(slot);
                // A new connection always has room for a probe: whatever
                // failed is pycomd's, not the service's.
                self.refused(&address, e, now);
                self.close(id, now + RETRY);
                self.paused_until = Some(now + RETRY);
                false
            }
        }
    }

    /// A free pooled socket, made if the pool is not full yet.
    fn take_slot(&mut self) -> Result<usize, zmq::Error> {
        if let Some(slot) = self.free.pop() {
            return Ok(slot);
        }
        let socket = self.ctx.socket(zmq::DEALER)?;
        socket.set_linger(0)?;
        socket.set_maxmsgsize(MAX_REPLY_BYTES)?;
        // One probe at a time: little to queue either way.
        socket.set_sndhwm(4)?;
        socket.set_rcvhwm(4)?;
        self.slots.push(Slot { socket, peer: None });
        Ok(self.slots.len() - 1)
    }

    fn refused(&mut self, address: &str, e: zmq::Error, now: Instant) {
        self.pressure.refused += 1;
        if due_to_warn(&mut self.pressure.refused_warned, now) {
            warn!(
                %address,
                since_last_warning = self.pressure.refused,
                open = self.open(),
                "cannot open a probe connection: {e}: pycomd's own limit, not the service's fault: \
                 it is not counted as a failed probe and is tried again in {} ms",
                RETRY.as_millis()
            );
            self.pressure.refused = 0;
        }
    }

    /// A probe was sent to peer `id` at `now`.
    fn probing(&mut self, id: PeerId, slot: usize, now: Instant) {
        let deadline = now + self.settings.timeout;
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.link = Link::Probing { slot, deadline };
            peer.due = now + self.settings.interval;
            self.deadlines.insert((deadline, id));
        }
    }

    fn send_probe(&self, slot: usize) -> Result<(), zmq::Error> {
        let frames: [&[u8]; 3] = [b"", proto::CMD_CALL, &self.probe_body];
        self.slots[slot].socket.send_multipart(frames, zmq::DONTWAIT)
    }

    /// Throw away whatever a slot's socket holds.
    fn drain(&self, slot: usize) {
        let socket = &self.slots[slot].socket;
        for _ in 0..READ_BATCH {
            if socket.recv_multipart(zmq::DONTWAIT).is_err() {
                return;
            }
        }
    }

    /// Poll the pool until a reply or the next thing to do, and take the
    /// replies (and throw away what idle connections sent unasked).
    fn wait_for_replies(&mut self) {
        let now = Instant::now();
        let room = (self.open() < self.cap || !self.idle.is_empty())
            && self.paused_until.is_none_or(|until| until <= now);
        let next = [
            self.deadlines.first().map(|&(at, _)| at),
            self.idle.first().map(|&(at, _)| at),
            self.waiting.first().filter(|_| room).map(|&(at, _)| at),
            self.paused_until,
        ]
        .into_iter()
        .flatten()
        .min();
        let wait = next.map_or(MAX_IDLE, |at| at.saturating_duration_since(now).min(MAX_IDLE));
        // Round up: waking a millisecond early would spin until the deadline.
        let ms = i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(100);
        if self.slots.is_empty() {
            std::thread::sleep(wait);
            return;
        }
        // Every socket of the pool, not only those with a probe in flight:
        // libzmq closes a connection given up only once its socket has
        // taken note, which polling it does.
        let readable: Vec<usize> = {
            let mut items: Vec<zmq::PollItem> = self
                .slots
                .iter()
                .map(|s| s.socket.as_poll_item(zmq::POLLIN))
                .collect();
            match zmq::poll(&mut items, ms) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
            (0..items.len()).filter(|&i| items[i].is_readable()).collect()
        };
        let now = Instant::now();
        for slot in readable {
            // Any reply, even an error or garbage, means something answers.
            let replied = self.slots[slot].socket.recv_multipart(zmq::DONTWAIT).is_ok();
            self.drain(slot);
            if let (true, Some(id)) = (replied, self.slots[slot].peer) {
                self.answered(id, slot, now);
            }
        }
    }

    fn answered(&mut self, id: PeerId, slot: usize, now: Instant) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        crate::health::PROBES.answered();
        let Link::Probing {
            slot: probing,
            deadline,
        } = peer.link
        else {
            return;
        };
        if probing != slot {
            return;
        }
        let failed_before = peer.records.values().any(|w| w.failures > 0);
        for watched in peer.records.values_mut() {
            watched.failures = 0;
        }
        if failed_before {
            self.events.post(Event::ProbeFailures {
                address: peer.address.clone(),
                failures: 0,
            });
        }
        peer.link = Link::Open { slot };
        peer.due = peer.due.max(now);
        self.deadlines.remove(&(deadline, id));
        self.idle.insert((peer.due, id));
    }

    /// Say, at most every [`WARN_EVERY`], that probes run late because
    /// every connection is taken.
    fn warn_if_pressed(&mut self, now: Instant) {
        let blocked = self
            .waiting
            .first()
            .map(|&(due, _)| now.saturating_duration_since(due))
            .filter(|late| *late >= LATE && self.open() >= self.cap);
        if self.pressure.late == 0 && blocked.is_none() {
            return;
        }
        if !due_to_warn(&mut self.pressure.late_warned, now) {
            return;
        }
        let most_late = self.pressure.most_late.max(blocked.unwrap_or_default());
        let overdue = self.waiting.range(..(now, PeerId::MAX)).count();
        warn!(
            late_probes = self.pressure.late,
            most_late_ms = most_late.as_millis() as u64,
            overdue_addresses = overdue,
            addresses = self.peers.len(),
            max_connections = self.cap,
            "probes are running late: at most {} probe connections are open at a time and addresses \
             wait for their turn (dead ones hold theirs for probe_timeout_ms). A late probe is not a \
             failed one: no record is dropped for it, dead ones are found later",
            self.cap
        );
        self.pressure.late = 0;
        self.pressure.most_late = Duration::ZERO;
    }
}

/// Errors of `connect` that say the address is unusable, rather than that
/// pycomd is short of something.
fn address_error(e: zmq::Error) -> bool {
    matches!(
        e,
        zmq::Error::EINVAL | zmq::Error::EPROTONOSUPPORT | zmq::Error::ENOCOMPATPROTO | zmq::Error::ENODEV
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Mailbox;

    /// A prober with fast probes that drops after one failure, and its
    /// server's mailbox.
    fn prober(ctx: &zmq::Context) -> (Prober, Mailbox) {
        let mailbox = Mailbox::new(ctx).unwrap();
        let settings = ProbeSettings {
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(50),
            failures: 1,
        };
        (Prober::new(settings, mailbox.poster().unwrap(), None), mailbox)
    }

    fn turn(prober: &mut Prober) {
        let now = Instant::now();
        prober.expire(now);
        prober.start_probes(now);
        prober.wait_for_replies();
    }

    fn dead_address() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp://{}", listener.local_addr().unwrap())
    }

    #[test]
    fn an_unanswered_probe_is_not_counted_while_pycomd_is_out_of_descriptors() {
        let ctx = zmq::Context::new();
        let (mut prober, mailbox) = prober(&ctx);
        let watch = ProbeCmd::Watch {
            service: "/dead".into(),
            address: dead_address(),
            revision: 1,
        };
        prober.apply(watch, Instant::now());
        let until = Instant::now() + Duration::from_secs(2);
        while prober.deadlines.is_empty() && Instant::now() < until {
            turn(&mut prober);
        }
        assert_eq!(prober.deadlines.len(), 1, "a probe is in flight");
        // Now pycomd is at its limit: the probe's timeout is not a failure.
        prober.nofile = Some(1);
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            turn(&mut prober);
        }
        assert_eq!(mailbox.drain().count(), 0, "nothing reported");
        assert!(prober.by_service.contains_key("/dead"), "still probed");
        assert!(prober.deadlines.is_empty(), "and no new connection opened");
        // Descriptors again: the dead address is found out.
        prober.nofile = None;
        let until = Instant::now() + Duration::from_secs(2);
        while prober.by_service.contains_key("/dead") && Instant::now() < until {
            turn(&mut prober);
        }
        let events: Vec<Event> = mailbox.drain().collect();
        assert!(
            matches!(&events[..], [Event::Unreachable { service, revision: 1, .. }] if service == "/dead"),
            "{events:?}"
        );
    }

    #[test]
    fn a_live_address_keeps_its_connection_between_probes() {
        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).unwrap();
        rep.bind("tcp://127.0.0.1:*").unwrap();
        let address = rep.get_last_endpoint().unwrap().unwrap();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let service = {
            let answered = answered.clone();
            std::thread::spawn(move || {
                while answered.load(std::sync::atomic::Ordering::SeqCst) < 5 {
                    if rep.poll(zmq::POLLIN, 10).unwrap() > 0 {
                        rep.recv_multipart(0).unwrap();
                        rep.send_multipart([&b"OK"[..], b"{}"], 0).unwrap();
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        };
        let (mut prober, mailbox) = prober(&ctx);
        for service in ["/a", "/b"] {
            let watch = ProbeCmd::Watch {
                service: service.into(),
                address: address.clone(),
                revision: 1,
            };
            prober.apply(watch, Instant::now());
        }
        let until = Instant::now() + Duration::from_secs(5);
        while answered.load(std::sync::atomic::Ordering::SeqCst) < 5 && Instant::now() < until {
            turn(&mut prober);
        }
        service.join().unwrap();
        assert_eq!(prober.peers.len(), 1, "two records at one address: one peer");
        assert_eq!(prober.slots.len(), 1, "one socket, kept connected");
        assert_eq!(mailbox.drain().count(), 0, "nothing reported");
    }

    #[test]
    fn the_connection_cap_follows_a_small_fd_limit() {
        assert_eq!(connection_cap(None), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(1 << 20)), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(4096)), 455);
        assert_eq!(connection_cap(Some(1024)), 113);
        assert_eq!(connection_cap(Some(20)), MIN_CONNECTIONS);
    }
}
