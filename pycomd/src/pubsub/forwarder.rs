//! The forwarder's thread: publications in on XSUB, out on XPUB,
//! subscriptions seen on XPUB (verbose) answered with readiness and replays.
//!
//! Nothing here waits on a peer: XPUB drops a slow subscriber's messages
//! at its high-water mark, XSUB stops reading a publisher at its own, and
//! every publication is checked (frames, size, topic, header) before it is
//! forwarded or cached. Publications of pycomd's own (registry events)
//! come from the server thread on an inproc socket, already made.
//!
//! With access control on, the forwarder also answers ZAP requests (the
//! PLAIN handshake of every connection: [`Zap`]), drops publications that
//! their publisher's `publish` grants do not cover, and applies a
//! subscription (XPUB_MANUAL) only if its subscriber's `subscribe` grants
//! cover every topic it lets through
//! ([`crate::auth::policy::prefix_within`]). Each message carries the
//! user id the ZAP handler gave its connection (`User-Id`; `""`:
//! anonymous).

use super::lvc::Lvc;
use crate::auth::policy::PubsubGrants;
use crate::auth::view::View;
use crate::auth::Policy;
use pycom_client::pubsub::wire::{self, topic_problem, PlainHeader};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Messages taken from one socket before the others get a turn.
const BURST: usize = 1024;
/// Most frames a publication may have (topic, header, body, attachments).
pub const MAX_FRAMES: usize = 67;
/// Users whose grants are kept resolved, at most (then forgotten at once).
const MAX_CACHED_USERS: usize = 4096;
/// The ZAP metadata property naming a connection's user.
const USER_ID: &str = "User-Id";

/// What the forwarder and the server share: counters, the cache, a limit.
pub struct Shared {
    pub counters: Counters,
    pub lvc: Mutex<Lvc>,
    /// The top-level `max_message_bytes` (a SIGHUP may change it).
    pub max_message_bytes: AtomicUsize,
}

impl Shared {
    /// The cache, even if a thread panicked holding it (it is plain data,
    /// consistent after every call).
    pub fn lvc(&self) -> MutexGuard<'_, Lvc> {
        self.lvc.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The forwarder's counters, as `stat` reports them.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Publications taken in from publishers (valid ones).
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Subscriptions in place now (subscribe minus unsubscribe messages).
    pub subscriptions: AtomicI64,
    /// Subscribe messages seen (XPUB_VERBOSE: duplicates too).
    pub subscribe_messages: AtomicU64,
    /// Readiness handshakes answered.
    pub ready_answered: AtomicU64,
    /// Cached publications re-sent to new subscriptions.
    pub replays: AtomicU64,
    /// Registry events published by pycomd itself.
    pub events_published: AtomicU64,
    /// Registry events lost because the forwarder was far behind.
    pub events_dropped: AtomicU64,
    /// Publications on `org.pycom.` topics from outside.
    pub dropped_reserved: AtomicU64,
    /// Publications over `max_message_bytes`.
    pub dropped_oversize: AtomicU64,
    /// Publications with missing frames, a bad topic or header.
    pub dropped_malformed: AtomicU64,
    /// Messages on XPUB that were no subscription.
    pub dropped_upstream: AtomicU64,
    /// Publications their publisher had no `publish` grant for.
    pub dropped_denied: AtomicU64,
    /// Subscriptions not applied: no `subscribe` grant covers them.
    pub subscriptions_denied: AtomicU64,
    /// Connections refused at the handshake (bad or expired token).
    pub connections_refused: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The header fields the forwarder checks; the rest passes unread.
#[derive(Deserialize)]
struct HeaderCheck<'a> {
    #[serde(borrow)]
    #[allow(dead_code)]
    src: std::borrow::Cow<'a, str>,
    #[allow(dead_code)]
    seq: u64,
    #[allow(dead_code)]
    ts: u64,
    #[serde(default)]
    replay: Option<serde::de::IgnoredAny>,
}

pub struct Forwarder {
    pub xsub: zmq::Socket,
    pub xpub: zmq::Socket,
    /// pycomd's own publications, and the stop message (one frame).
    pub own: zmq::Socket,
    pub shared: Arc<Shared>,
    /// This forwarder's `src`, for readiness messages: new every start.
    pub src: String,
    /// Frames of the message being received, reused.
    pub frames: Vec<zmq::Message>,
    /// When a dropped publication was last logged.
    pub drops_logged: Option<Instant>,
    /// Access control, when it is on.
    pub zap: Option<Zap>,
    /// Grants resolved per user.
    pub grants: GrantCache,
    /// The user id of the message being handled, reused.
    pub user: String,
    /// The last publication's topic that passed the topic checks (UTF-8,
    /// the syntax, not reserved): a publisher streams on one topic, and the
    /// same bytes again need no checking.
    pub checked_topic: String,
}

/// The ZAP handler (ZeroMQ RFC 27): a REP socket bound to
/// `inproc://zeromq.zap.01` in the forwarder's context, asked by libzmq
/// during every connection's PLAIN handshake.
pub struct Zap {
    pub socket: zmq::Socket,
    pub view: Arc<View>,
}

/// Each user's pub-sub grants, resolved once per policy.
#[derive(Default)]
pub struct GrantCache {
    policy: Option<Arc<Policy>>,
    by_user: HashMap<String, PubsubGrants>,
    none: PubsubGrants,
}

impl GrantCache {
    /// Follow a reload of the policy.
    fn refresh(&mut self, view: &View) {
        let policy = view.policy();
        if !self.policy.as_ref().is_some_and(|p| Arc::ptr_eq(p, &policy)) {
            self.by_user.clear();
            self.policy = Some(policy);
        }
    }

    fn of(&mut self, user: &str) -> &PubsubGrants {
        let Some(policy) = &self.policy else {
            return &self.none;
        };
        if !self.by_user.contains_key(user) {
            if self.by_user.len() >= MAX_CACHED_USERS {
                self.by_user.clear();
            }
            self.by_user.insert(user.to_string(), policy.pubsub_grants(user));
        }
        self.by_user.get(user).unwrap_or(&self.none)
    }
}

impl Forwarder {
    pub fn run(mut self) {
        loop {
            let (publications, subscriptions, own, zap) = {
                let mut items = [
                    self.xsub.as_poll_item(zmq::POLLIN),
                    self.xpub.as_poll_item(zmq::POLLIN),
                    self.own.as_poll_item(zmq::POLLIN),
                    match &self.zap {
                        Some(zap) => zap.socket.as_poll_item(zmq::POLLIN),
                        None => self.own.as_poll_item(zmq::PollEvents::empty()),
                    },
                ];
                let polled = if self.zap.is_some() { 4 } else { 3 };
                match zmq::poll(&mut items[..polled], -1) {
                    Ok(_) => {}
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => {
                        warn!("pub-sub forwarder: poll failed: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
                (
                    items[0].is_readable(),
                    items[1].is_readable(),
                    items[2].is_readable(),
                    polled > 3 && items[3].is_readable(),
                )
            };
            if zap {
                self.answer_zap();
            }
            if own && !self.forward_own() {
                return;
            }
            if publications {
                self.forward_publications();
            }
            if subscriptions {
                self.handle_subscriptions();
            }
        }
    }

    /// Receive one multipart message into `self.frames` (at most
    /// [`MAX_FRAMES`] kept; the rest read and counted). `None`: nothing
    /// waiting. `Some(total)`: the frames seen.
    fn receive(&mut self, socket: Which) -> Option<(usize, usize)> {
        self.frames.clear();
        let socket = match socket {
            Which::Xsub => &self.xsub,
            Which::Xpub => &self.xpub,
            Which::Own => &self.own,
        };
        let (mut count, mut bytes) = (0usize, 0usize);
        let mut flags = zmq::DONTWAIT;
        loop {
            let mut msg = zmq::Message::new();
            if socket.recv(&mut msg, flags).is_err() {
                // Nothing waiting (or, mid-message, gone: drop what came).
                return (count > 0).then_some((count, bytes));
            }
            // The rest of a multipart message is already here.
            flags = 0;
            count += 1;
            bytes += msg.len();
            let more = msg.get_more();
            if self.frames.len() < MAX_FRAMES {
                self.frames.push(msg);
            }
            if !more {
                return Some((count, bytes));
            }
        }
    }

    fn forward_publications(&mut self) {
        if let Some(zap) = &self.zap {
            self.grants.refresh(&zap.view);
        }
        // The cache's lock is taken once for the burst, not per publication
        // (the server thread waits at most one burst for `stat` or
        // `topics`); the counters are added once too.
        let shared = Arc::clone(&self.shared);
        let mut lvc = None;
        let (mut messages, mut bytes_in) = (0u64, 0u64);
        for _ in 0..BURST {
            let Some((count, bytes)) = self.receive(Which::Xsub) else {
                break;
            };
            let problem = self.check(count, bytes);
            if let Some((counter, why)) = problem {
                add(counter_of(&self.shared.counters, counter), 1);
                self.log_drop(&why);
                continue;
            }
            if self.zap.is_some() && !self.may_publish() {
                add(&self.shared.counters.dropped_denied, 1);
                let topic = String::from_utf8_lossy(&self.frames[0]).into_owned();
                let why = match self.user.as_str() {
                    "" => format!("a publication on '{topic}' from an anonymous publisher was dropped: no [[auth.grant]] of role 'anonymous' may publish it"),
                    user => format!("a publication on '{topic}' from {user} was dropped: no publish grant of its roles covers it"),
                };
                self.log_drop(&why);
                continue;
            }
            messages += 1;
            bytes_in += bytes as u64;
            // check() left this publication's topic in `checked_topic`.
            lvc.get_or_insert_with(|| shared.lvc())
                .put(&self.checked_topic, self.frames[1..].iter().map(|m| &m[..]));
            self.send_frames();
        }
        drop(lvc);
        add(&shared.counters.messages_in, messages);
        add(&shared.counters.bytes_in, bytes_in);
    }

    /// Whether the publisher of the (checked) publication in `self.frames`
    /// may publish on its topic; `self.user` becomes its user id.
    fn may_publish(&mut self) -> bool {
        let user = self.frames[0].gets(USER_ID).unwrap_or_default();
        self.user.clear();
        self.user.push_str(user);
        let topic = std::str::from_utf8(&self.frames[0]).unwrap_or_default();
        self.grants.of(&self.user).may_publish(topic)
    }

    /// Answer the ZAP requests waiting: a token's user, `anonymous`, or
    /// refused.
    fn answer_zap(&mut self) {
        for _ in 0..BURST {
            let Some(zap) = &self.zap else {
                return;
            };
            let Ok(request) = zap.socket.recv_multipart(zmq::DONTWAIT) else {
                return;
            };
            let verdict = zap_verdict(&zap.view, &request, crate::auth::unix_ms());
            let id = request.get(1).map_or(&[][..], Vec::as_slice);
            let (status, text, user): (&[u8], String, &[u8]) = match &verdict {
                Ok(user) => (b"200", "OK".into(), user.as_bytes()),
                Err((status, why)) => (status.as_bytes(), why.clone(), b""),
            };
            let reply: [&[u8]; 6] = [b"1.0", id, status, text.as_bytes(), user, b""];
            if let Err(e) = zap.socket.send_multipart(reply, 0) {
                warn!("pub-sub: cannot answer a ZAP request: {e}");
            }
            if let Err((_, why)) = verdict {
                add(&self.shared.counters.connections_refused, 1);
                let address = request
                    .get(3)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .unwrap_or_default();
                self.log_drop(&format!("a connection from {address} was refused: {why}"));
            }
        }
    }

    /// Why the publication in `self.frames` is not forwarded, if it is not.
    fn check(&mut self, count: usize, bytes: usize) -> Option<(Drop, String)> {
        let max = self.shared.max_message_bytes.load(Ordering::Relaxed);
        if bytes > max {
            return Some((
                Drop::Oversize,
                format!("a publication of {bytes} bytes exceeds max_message_bytes = {max}"),
            ));
        }
        if !(3..=MAX_FRAMES).contains(&count) {
            return Some((
                Drop::Malformed,
                format!("a publication has {count} frames; it needs topic, header, body and at most {} attachments", MAX_FRAMES - 3),
            ));
        }
        if self.frames[0][..] != *self.checked_topic.as_bytes() {
            let Ok(topic) = std::str::from_utf8(&self.frames[0]) else {
                return Some((Drop::Malformed, "a publication's topic is not UTF-8".into()));
            };
            if let Some(problem) = topic_problem(topic) {
                return Some((Drop::Malformed, format!("a publication was dropped: {problem}")));
            }
            if topic.starts_with(wire::RESERVED) {
                return Some((
                    Drop::Reserved,
                    format!(
                        "a publication on '{topic}' was dropped: topics under {} are pycomd's own",
                        wire::RESERVED
                    ),
                ));
            }
            self.checked_topic.clear();
            self.checked_topic.push_str(topic);
        }
        // For the reasons below (this publication's, checked above or
        // the same bytes as the last one's).
        let topic = &self.checked_topic;
        // A slice, not the message: each look into a zmq::Message asks
        // libzmq for its data and size again.
        let header: &[u8] = &self.frames[1];
        if header.len() > wire::MAX_HEADER_BYTES {
            return Some((
                Drop::Malformed,
                format!(
                    "a publication on '{topic}' has a header over {} bytes",
                    wire::MAX_HEADER_BYTES
                ),
            ));
        }
        // The shape every pycom publisher writes needs no parser.
        let parsed = if PlainHeader::parse(header).is_some() {
            Ok(None)
        } else {
            serde_json::from_slice::<HeaderCheck>(header).map(Some)
        };
        match parsed {
            Ok(Some(check)) if check.replay.is_some() => {
                return Some((
                    Drop::Malformed,
                    format!("a publication on '{topic}' sets 'replay', which only the forwarder sets"),
                ));
            }
            Ok(_) => {}
            Err(e) => {
                return Some((
                    Drop::Malformed,
                    format!("a publication on '{topic}' has a bad header (needs {{src, seq, ts}}): {e}"),
                ));
            }
        }
        if std::str::from_utf8(&self.frames[2]).is_err() {
            return Some((
                Drop::Malformed,
                format!("a publication on '{topic}' has a body that is not UTF-8"),
            ));
        }
        None
    }

    /// Send `self.frames` on XPUB. A subscriber at its high-water mark
    /// loses it there; XPUB never blocks.
    fn send_frames(&mut self) {
        let last = self.frames.len().saturating_sub(1);
        for (i, frame) in self.frames.drain(..).enumerate() {
            let flags = if i < last { zmq::SNDMORE } else { 0 };
            if let Err(e) = self.xpub.send(frame, flags | zmq::DONTWAIT) {
                debug!("pub-sub forwarder: send failed: {e}");
                return;
            }
        }
    }

    fn send_owned(&self, topic: &[u8], frames: &[Vec<u8>]) {
        let _ = self.xpub.send(topic, zmq::SNDMORE | zmq::DONTWAIT);
        let last = frames.len().saturating_sub(1);
        for (i, frame) in frames.iter().enumerate() {
            let flags = if i < last { zmq::SNDMORE } else { 0 };
            let _ = self.xpub.send(&frame[..], flags | zmq::DONTWAIT);
        }
    }

    /// pycomd's own publications go out as they are. `false` on the stop
    /// message.
    fn forward_own(&mut self) -> bool {
        for _ in 0..BURST {
            match self.receive(Which::Own) {
                None => return true,
                Some((1, _)) => return false,
                Some(_) => {
                    add(&self.shared.counters.events_published, 1);
                    self.send_frames();
                }
            }
        }
        true
    }

    fn handle_subscriptions(&mut self) {
        let manual = self.zap.is_some();
        if let Some(zap) = &self.zap {
            self.grants.refresh(&zap.view);
        }
        for _ in 0..BURST {
            let Some((count, _)) = self.receive(Which::Xpub) else {
                return;
            };
            if manual {
                let user = self.frames[0].gets(USER_ID).unwrap_or_default();
                self.user.clear();
                self.user.push_str(user);
            }
            let counters = &self.shared.counters;
            let frame = &self.frames[0];
            let subscribe = match frame.first() {
                Some(1) if count == 1 => true,
                Some(0) if count == 1 => false,
                _ => {
                    add(&counters.dropped_upstream, 1);
                    continue;
                }
            };
            if !subscribe {
                counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
                if manual {
                    // Off the subscriber's connection (a no-op if it was
                    // never applied, or the connection is gone).
                    let _ = self.xpub.set_unsubscribe(&frame[1..]);
                }
                continue;
            }
            counters.subscriptions.fetch_add(1, Ordering::Relaxed);
            add(&counters.subscribe_messages, 1);
            let ready = frame[1..].starts_with(wire::READY_PREFIX.as_bytes())
                && frame.len() > 1 + wire::READY_PREFIX.len();
            if manual {
                // A readiness topic is answered by pycomd alone, with nothing.
                if !ready && !self.grants.of(&self.user).may_subscribe(&frame[1..]) {
                    add(&counters.subscriptions_denied, 1);
                    let prefix = String::from_utf8_lossy(&frame[1..]).into_owned();
                    let why = match self.user.as_str() {
                        "" => format!("an anonymous subscription to '{prefix}' was not applied: auth.anonymous has no 'subscribe' and no subscribe grant of role 'anonymous' covers every topic it lets through"),
                        user => format!("{user}'s subscription to '{prefix}' was not applied: no subscribe grant of its roles covers every topic it lets through"),
                    };
                    self.log_drop(&why);
                    continue;
                }
                // To the connection the subscription came from (the last
                // one received from).
                if let Err(e) = self.xpub.set_subscribe(&frame[1..]) {
                    debug!("pub-sub forwarder: cannot apply a subscription: {e}");
                    continue;
                }
            }
            let Ok(prefix) = std::str::from_utf8(&frame[1..]).map(str::to_string) else {
                continue;
            };
            if ready {
                let header = wire::Header {
                    src: self.src.clone(),
                    seq: 1,
                    ts: wire::now_ms(),
                    replay: false,
                };
                self.send_owned(prefix.as_bytes(), &[header.encode(), b"null".to_vec()]);
                add(&counters.ready_answered, 1);
                continue;
            }
            let replays = self.shared.lvc().replays(&prefix);
            add(&self.shared.counters.replays, replays.len() as u64);
            for replay in replays {
                self.send_owned(replay.topic.as_bytes(), &replay.frames);
            }
        }
    }

    fn log_drop(&mut self, why: &str) {
        debug!("pub-sub: {why}");
        // One line a second at most, however hard a peer floods.
        if self
            .drops_logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.drops_logged = Some(Instant::now());
            warn!("pub-sub: {why} (counted in stat; further drops this second are not logged)");
        }
    }
}

#[derive(Clone, Copy)]
enum Which {
    Xsub,
    Xpub,
    Own,
}

#[derive(Clone, Copy)]
enum Drop {
    Oversize,
    Malformed,
    Reserved,
}

/// A ZAP request's answer: the user id, or (status code, why not).
/// Frames: version, request id, domain, address, identity, mechanism,
/// then PLAIN's user name and password.
fn zap_verdict(view: &View, request: &[Vec<u8>], now_ms: u64) -> Result<String, (&'static str, String)> {
    if request.len() < 6 || request[0] != b"1.0" {
        return Err(("500", "malformed ZAP request".into()));
    }
    if request[5] != b"PLAIN" || request.len() != 8 {
        return Err((
            "400",
            format!(
                "mechanism {} (pycomd's forwarder takes PLAIN: user name 'token' and a token as password, or 'anonymous')",
                String::from_utf8_lossy(&request[5])
            ),
        ));
    }
    view.authenticate(&request[6], &request[7], now_ms)
        .map_err(|why| ("400", why))
}

fn counter_of(counters: &Counters, drop: Drop) -> &AtomicU64 {
    match drop {
        Drop::Oversize => &counters.dropped_oversize,
        Drop::Malformed => &counters.dropped_malformed,
        Drop::Reserved => &counters.dropped_reserved,
    }
}
