//! Subscribing: a SUB socket connected to the forwarder's XPUB endpoint,
//! and what the client owes the application on top of ZeroMQ: token
//! matching of NATS-style patterns, readiness, duplicates dropped, gaps
//! seen, last values taken or skipped.

use super::wire::{self, Header, Pattern};
use super::{authenticate, forwarder_endpoint, hint_refused, millis, poll_ms, transport};
use crate::binary::{Attachment, Limits};
use crate::context::Context;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;
use std::time::{Duration, Instant};

/// Messages queued from the forwarder before new ones are dropped.
pub const DEFAULT_RCVHWM: i32 = 10_000;
/// (src, topic) pairs whose last `seq` is remembered; see [`SeqTracker`].
const MAX_TRACKED: usize = 100_000;
/// Topics with their own entry in [`Stats::topics`]; the totals count all.
const MAX_TOPIC_STATS: usize = 10_000;

/// Where a new subscriber starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// With what is published after it is ready (the default).
    #[default]
    New,
    /// With the last value of each matching topic the forwarder has (its
    /// last-value cache), then what is published after.
    Last,
}

/// What a subscriber does when it sees that it missed messages (a `seq`
/// jump from one publisher on one topic: it was too slow and the
/// high-water mark dropped them, or the forwarder restarted).
///
/// A gap shows when the next message of that publisher on that topic
/// arrives: messages lost at the very end of a burst are noticed only
/// with the next publication (or never, if there is none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GapPolicy {
    /// Count it in [`Stats`] only.
    Ignore,
    /// Count it and log a warning (the default).
    #[default]
    Log,
    /// Count it and return [`Error::Gap`] from the receiving call; the
    /// message after the gap comes with the next call.
    Error,
}

/// One publication.
#[derive(Debug)]
pub struct Message {
    /// The topic it was published on.
    pub topic: String,
    /// The publisher instance.
    pub src: String,
    /// Its place in the publisher's sequence on this topic, from 1.
    pub seq: u64,
    /// When it was published, in ms since the Unix epoch.
    pub ts: u64,
    /// True for a last value re-sent by the forwarder ([`Start::Last`]).
    pub replay: bool,
    /// The body: valid JSON, as published.
    pub body: Box<RawValue>,
    /// Binary frames after the body.
    pub attachments: Vec<Attachment>,
}

impl Message {
    /// The body decoded as `T`.
    pub fn value<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(self.body.get()).map_err(|e| {
            Error::Data(format!(
                "message {} on '{}' from {} is not of the expected type: {e}",
                self.seq, self.topic, self.src
            ))
        })
    }

    /// The body as a JSON value.
    pub fn json(&self) -> Value {
        // The body was checked to be JSON when it arrived.
        serde_json::from_str(self.body.get()).unwrap_or(Value::Null)
    }
}

/// Counters of one topic (or of all, in [`Stats::total`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Messages accepted for the application.
    pub received: u64,
    /// Gaps seen (`seq` jumps).
    pub gaps: u64,
    /// Messages missed in those gaps.
    pub missed: u64,
    /// Messages dropped as already seen (`seq` not above the last).
    pub duplicates: u64,
}

/// What a subscriber received and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// All topics together.
    pub total: TopicStats,
    /// Per topic, for the first 10,000 topics seen (bounding memory); the
    /// totals count every topic.
    pub topics: BTreeMap<String, TopicStats>,
    /// Messages dropped as malformed (frames, topic, header, body, or
    /// attachments over the limits).
    pub malformed: u64,
    /// Messages whose topic matched no pattern (a ZeroMQ prefix
    /// subscription lets more through than a pattern wants).
    pub unmatched: u64,
    /// Last-value replays skipped: all of them with [`Start::New`], and,
    /// once ready, those caused by other subscribers joining.
    pub replays_skipped: u64,
}

impl Stats {
    fn count(&mut self, topic: &str, f: impl Fn(&mut TopicStats)) {
        f(&mut self.total);
        // One look-up for a topic already counted (nearly every message).
        if let Some(stats) = self.topics.get_mut(topic) {
            f(stats);
        } else if self.topics.len() < MAX_TOPIC_STATS {
            let mut stats = TopicStats::default();
            f(&mut stats);
            self.topics.insert(topic.to_string(), stats);
        }
    }
}

/// Options of a [`Subscriber`]; [`connect`](SubscriberBuilder::connect) makes it.
#[must_use = "a builder does nothing until connect() is called"]
pub struct SubscriberBuilder {
    ctx: Context,
    patterns: Vec<String>,
    start: Start,
    gaps: GapPolicy,
    rcvhwm: i32,
    timeout: Option<Duration>,
    endpoint: Option<String>,
    limits: Limits,
}

impl SubscriberBuilder {
    /// Receive topics matching `pattern`: `a.b.c` exact, `*` one token
    /// (`a.*.c`), `>` one or more trailing tokens (`a.>`). Repeatable.
    pub fn pattern(mut self, pattern: impl Into<String>) -> SubscriberBuilder {
        self.patterns.push(pattern.into());
        self
    }

    /// Several patterns at once.
    pub fn patterns<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> SubscriberBuilder {
        self.patterns.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Start with new messages (default) or each topic's last value.
    pub fn start(mut self, start: Start) -> SubscriberBuilder {
        self.start = start;
        self
    }

    /// What to do about missed messages (default: log a warning).
    pub fn gaps(mut self, policy: GapPolicy) -> SubscriberBuilder {
        self.gaps = policy;
        self
    }

    /// Messages queued from the forwarder before new ones are dropped
    /// (and gaps seen); default 10,000.
    pub fn rcvhwm(mut self, messages: i32) -> SubscriberBuilder {
        self.rcvhwm = messages;
        self
    }

    /// How long [`connect`](SubscriberBuilder::connect) waits for the
    /// forwarder (default: the context's default timeout).
    pub fn timeout(mut self, timeout: Duration) -> SubscriberBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// Connect to this XPUB endpoint instead of asking the nameserver
    /// where the forwarder is.
    pub fn endpoint(mut self, xpub: impl Into<String>) -> SubscriberBuilder {
        self.endpoint = Some(xpub.into());
        self
    }

    /// Bounds on received attachments (the total of one publication, and
    /// the size above which one is kept in a temporary file).
    pub fn limits(mut self, limits: Limits) -> SubscriberBuilder {
        self.limits = limits;
        self
    }

    /// Subscribe, and return once the forwarder has answered: from then on
    /// every publication that matches reaches this subscriber.
    pub fn connect(self) -> Result<Subscriber> {
        if self.patterns.is_empty() {
            return Err(Error::Data("a subscriber needs at least one pattern".into()));
        }
        let patterns = self
            .patterns
            .iter()
            .map(|p| Pattern::parse(p).map_err(Error::Data))
            .collect::<Result<Vec<_>>>()?;
        let (endpoint, plain) = forwarder_endpoint(&self.ctx, self.endpoint, |f| f.xpub)?;
        let socket = self.ctx.zmq().socket(zmq::SUB).map_err(transport(&endpoint))?;
        authenticate(&socket, &self.ctx, plain).map_err(transport(&endpoint))?;
        socket.set_rcvhwm(self.rcvhwm).map_err(transport(&endpoint))?;
        // Nothing is ever sent but subscriptions: nothing worth lingering for.
        socket.set_linger(0).map_err(transport(&endpoint))?;
        socket.connect(&endpoint).map_err(|source| Error::Endpoint {
            endpoint: endpoint.clone(),
            source,
        })?;
        let mut prefixes: Vec<&str> = patterns.iter().map(Pattern::prefix).collect();
        prefixes.sort_unstable();
        prefixes.dedup();
        for prefix in prefixes {
            socket
                .set_subscribe(prefix.as_bytes())
                .map_err(transport(&endpoint))?;
        }
        // Last, so that the forwarder's answer comes after the replays the
        // subscriptions above caused (one pipe, in order).
        let ready_topic = format!("{}{}", wire::READY_PREFIX, uuid::Uuid::new_v4().simple());
        socket
            .set_subscribe(ready_topic.as_bytes())
            .map_err(transport(&endpoint))?;
        let mut subscriber = Subscriber {
            socket,
            endpoint,
            intake: Intake::new(patterns, ready_topic, self.start, self.gaps),
            queue: VecDeque::new(),
            limits: self.limits,
            frames: Frames::default(),
        };
        let timeout = self.timeout.unwrap_or_else(|| self.ctx.default_timeout());
        subscriber
            .wait_ready(timeout)
            .map_err(|e| hint_refused(e, plain))?;
        tracing::debug!(endpoint = %subscriber.endpoint, "subscriber ready");
        Ok(subscriber)
    }
}

/// Receives publications matching its patterns from pycomd's forwarder.
///
/// Ready when made: every publication that matches and is published from
/// then on arrives (unless this subscriber falls behind by more than its
/// receive high-water mark: then it sees a gap). Per publisher and topic,
/// messages arrive in order, without duplicates.
///
/// Not shared between threads (it needs `&mut`); it can move to another.
pub struct Subscriber {
    socket: zmq::Socket,
    endpoint: String,
    intake: Intake,
    /// Ready for the application: what arrived while waiting for the
    /// forwarder's answer, and a message after the gap error before it.
    queue: VecDeque<Result<Message>>,
    limits: Limits,
    /// The message being received.
    frames: Frames,
}

/// A message's frames as received: topic, header and body in messages
/// reused from one publication to the next (libzmq's buffers, not copies
/// into new vectors each time), attachments apart.
struct Frames {
    head: [zmq::Message; 3],
    /// Frames after the body, taken by the message they belong to.
    rest: Vec<zmq::Message>,
}

impl Default for Frames {
    fn default() -> Frames {
        Frames {
            head: std::array::from_fn(|_| zmq::Message::new()),
            rest: Vec::new(),
        }
    }
}

impl Frames {
    /// Receive the next message, if one is waiting: how many frames it has.
    fn receive(&mut self, socket: &zmq::Socket) -> zmq::Result<usize> {
        self.rest.clear();
        let mut count = 0;
        loop {
            let frame = match self.head.get_mut(count) {
                Some(frame) => frame,
                None => {
                    self.rest.push(zmq::Message::new());
                    let last = self.rest.len() - 1;
                    &mut self.rest[last]
                }
            };
            socket.recv(frame, zmq::DONTWAIT)?;
            count += 1;
            if !frame.get_more() {
                return Ok(count);
            }
        }
    }
}

impl Subscriber {
    /// Options for a subscriber; add patterns, then `connect`.
    pub fn builder(ctx: &Context) -> SubscriberBuilder {
        SubscriberBuilder {
            ctx: ctx.clone(),
            patterns: Vec::new(),
            start: Start::New,
            gaps: GapPolicy::Log,
            rcvhwm: DEFAULT_RCVHWM,
            timeout: None,
            endpoint: None,
            limits: Limits::default(),
        }
    }

    /// The forwarder's XPUB endpoint it is connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Its patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.intake.patterns
    }

    /// What it received and dropped so far.
    pub fn stats(&self) -> &Stats {
        &self.intake.stats
    }

    /// The next message, waiting as long as it takes.
    pub fn recv(&mut self) -> Result<Message> {
        loop {
            if let Some(message) = self.next_before(None)? {
                return Ok(message);
            }
        }
    }

    /// The next message, or `None` after `timeout` without one.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Message>> {
        let deadline = Instant::now().checked_add(timeout);
        self.next_before(deadline)
    }

    /// Messages as they come, for ever: an iterator of `Result<Message>`
    /// (an error does not end it; [`GapPolicy::Error`] makes some).
    pub fn messages(&mut self) -> Messages<'_> {
        Messages { subscriber: self }
    }

    /// The messages' bodies decoded as `T`, for ever: an error (a body that
    /// is not a `T`, a gap with [`GapPolicy::Error`]) does not end it.
    pub fn values<T: DeserializeOwned>(&mut self) -> Values<'_, T> {
        Values {
            subscriber: self,
            of: PhantomData,
        }
    }

    /// The next message, waiting until `deadline` (`None`: for ever).
    fn next_before(&mut self, deadline: Option<Instant>) -> Result<Option<Message>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return item.map(Some);
            }
            // Messages waiting are taken without a poll (a system call
            // each): poll only when none is.
            if self.receive_one()? {
                continue;
            }
            let wait = match deadline {
                None => -1,
                Some(deadline) => poll_ms(deadline.saturating_duration_since(Instant::now())),
            };
            match self.socket.poll(zmq::POLLIN, wait) {
                Ok(0) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Ok(None);
                    }
                }
                Ok(_) => {
                    self.receive_one()?;
                }
                // A signal: the caller's deadline decides, not the signal.
                Err(zmq::Error::EINTR) => {}
                Err(source) => return Err(transport(&self.endpoint)(source)),
            }
        }
    }

    /// Wait for the forwarder's answer to the readiness subscription,
    /// queueing what arrives meanwhile.
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.intake.ready {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.socket.poll(zmq::POLLIN, poll_ms(left)) {
                Ok(0) if Instant::now() >= deadline => {
                    return Err(Error::NotReady {
                        endpoint: self.endpoint.clone(),
                        timeout_ms: millis(timeout),
                        what: "a subscriber waiting for the answer to its readiness subscription".into(),
                    })
                }
                Ok(0) | Err(zmq::Error::EINTR) => {}
                Ok(_) => {
                    self.receive_one()?;
                }
                Err(source) => return Err(transport(&self.endpoint)(source)),
            }
        }
        Ok(())
    }

    /// Take one message off the socket (if there is one) and queue what
    /// the application gets of it; whether there was one.
    fn receive_one(&mut self) -> Result<bool> {
        let count = match self.frames.receive(&self.socket) {
            Ok(count) => count,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(false),
            Err(source) => return Err(transport(&self.endpoint)(source)),
        };
        match self.accept(count) {
            Ok(Some((message, gap))) => {
                if let Some(missed) = gap {
                    self.gap(&message, missed);
                }
                self.queue.push_back(Ok(message));
            }
            Ok(None) => {}
            Err(why) => {
                self.intake.stats.malformed += 1;
                tracing::debug!(endpoint = %self.endpoint, "malformed publication dropped: {why}");
            }
        }
        if self.intake.ready && !self.intake.unsubscribed {
            // The readiness topic has done its job; the forwarder forgets it.
            self.intake.unsubscribed = true;
            self.socket
                .set_unsubscribe(self.intake.ready_topic.as_bytes())
                .map_err(transport(&self.endpoint))?;
        }
        Ok(true)
    }

    /// The message in `self.frames` (`count` frames) and the gap before
    /// it, if the application gets it; `Err` says why it is malformed.
    fn accept(&mut self, count: usize) -> std::result::Result<Option<(Message, Option<u64>)>, String> {
        if count < 3 {
            return Err(format!("{count} frame(s), expected at least 3"));
        }
        let [topic, header, body] = &self.frames.head;
        // A subscriber mostly sees the topic it saw last: that one was
        // checked and matched already.
        if !self.intake.is_judged(topic) {
            if topic.len() > wire::MAX_TOPIC_BYTES {
                return Err(format!("a topic of {} bytes", topic.len()));
            }
            let topic = std::str::from_utf8(topic).map_err(|_| "a topic that is not UTF-8".to_string())?;
            if let Some(problem) = wire::topic_problem(topic) {
                return Err(problem);
            }
            if self.intake.route(topic) != Route::Judge {
                return Ok(None);
            }
        }
        let topic = self.intake.judged.as_str();
        let header = Header::decode(header)?;
        // Checked from libzmq's buffer; one copy, into the message.
        let body: &RawValue = std::str::from_utf8(body)
            .map_err(|e| format!("the body is not JSON: not UTF-8 ({e})"))
            .and_then(|text| serde_json::from_str(text).map_err(|e| format!("the body is not JSON: {e}")))?;
        // Checked before judging, so that a message too large to deliver
        // shows up as the gap it is rather than as received.
        let total: usize = self.frames.rest.iter().map(|frame| frame.len()).sum();
        if total > self.limits.max_total_bytes {
            return Err(format!(
                "attachments of {total} bytes exceed the limit of {} bytes",
                self.limits.max_total_bytes
            ));
        }
        // Copied before judging, which needs the intake (and its `judged`)
        // mutably.
        let topic = topic.to_string();
        let gap = match self.intake.judge(&topic, &header) {
            Verdict::Drop => return Ok(None),
            Verdict::Deliver { gap } => gap,
        };
        let body = body.to_owned();
        let attachments = if self.frames.rest.is_empty() {
            Vec::new()
        } else {
            self.limits.receive(std::mem::take(&mut self.frames.rest))?
        };
        Ok(Some((
            Message {
                topic,
                src: header.src,
                seq: header.seq,
                ts: header.ts,
                replay: header.replay,
                body,
                attachments,
            },
            gap,
        )))
    }

    fn gap(&mut self, message: &Message, missed: u64) {
        match self.intake.gaps {
            GapPolicy::Ignore => {}
            GapPolicy::Log => tracing::warn!(
                topic = %message.topic,
                src = %message.src,
                missed,
                "pub-sub gap: {missed} message(s) missed"
            ),
            GapPolicy::Error => self.queue.push_back(Err(Error::Gap {
                topic: message.topic.clone(),
                src: message.src.clone(),
                missed,
            })),
        }
    }
}

/// [`Subscriber::messages`]: messages for ever.
pub struct Messages<'a> {
    subscriber: &'a mut Subscriber,
}

impl Iterator for Messages<'_> {
    type Item = Result<Message>;

    fn next(&mut self) -> Option<Result<Message>> {
        Some(self.subscriber.recv())
    }
}

/// [`Subscriber::values`]: bodies decoded as `T`, for ever.
pub struct Values<'a, T> {
    subscriber: &'a mut Subscriber,
    of: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Values<'_, T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        Some(self.subscriber.recv().and_then(|m| m.value()))
    }
}

/// What the topic alone decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Our readiness answer: nothing to deliver.
    Ready,
    /// Not for the application.
    Drop,
    /// Read the header and judge.
    Judge,
}

/// What the header decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Drop,
    /// Deliver, after reporting the gap of this many missed messages.
    Deliver {
        gap: Option<u64>,
    },
}

/// The subscriber's rules, apart from the socket (so they are tested
/// without one).
struct Intake {
    patterns: Vec<Pattern>,
    ready_topic: String,
    start: Start,
    gaps: GapPolicy,
    /// The forwarder has answered the readiness subscription.
    ready: bool,
    /// ... and the readiness subscription was withdrawn.
    unsubscribed: bool,
    /// The last topic [`route`](Intake::route) sent to judging: a valid
    /// topic that matches (the patterns never change, and a readiness topic
    /// is never judged), so the same bytes again need no checking.
    judged: String,
    seqs: SeqTracker,
    stats: Stats,
}

impl Intake {
    fn new(patterns: Vec<Pattern>, ready_topic: String, start: Start, gaps: GapPolicy) -> Intake {
        Intake {
            patterns,
            ready_topic,
            start,
            gaps,
            ready: false,
            unsubscribed: false,
            judged: String::new(),
            seqs: SeqTracker::new(MAX_TRACKED),
            stats: Stats::default(),
        }
    }

    fn route(&mut self, topic: &str) -> Route {
        if topic.starts_with(wire::READY_PREFIX) {
            // Only the first answer to our own nonce counts; other
            // subscribers' answers reach us when a pattern covers them.
            if !self.ready && topic == self.ready_topic {
                self.ready = true;
                return Route::Ready;
            }
            return Route::Drop;
        }
        if !self.patterns.iter().any(|p| p.matches(topic)) {
            self.stats.unmatched += 1;
            return Route::Drop;
        }
        self.judged.clear();
        self.judged.push_str(topic);
        Route::Judge
    }

    /// Whether `topic` is the last topic judged (so it would be again).
    fn is_judged(&self, topic: &[u8]) -> bool {
        !self.judged.is_empty() && topic == self.judged.as_bytes()
    }

    fn judge(&mut self, topic: &str, header: &Header) -> Verdict {
        // Replays before ready answer our own subscriptions (taken with
        // Start::Last); after ready they answer someone else's.
        if header.replay && (self.ready || self.start == Start::New) {
            self.stats.replays_skipped += 1;
            return Verdict::Drop;
        }
        match self.seqs.observe(&header.src, topic, header.seq) {
            Seen::Duplicate => {
                self.stats.count(topic, |s| s.duplicates += 1);
                Verdict::Drop
            }
            Seen::Gap(missed) => {
                self.stats.count(topic, |s| {
                    s.received += 1;
                    s.gaps += 1;
                    s.missed += missed;
                });
                Verdict::Deliver { gap: Some(missed) }
            }
            Seen::First | Seen::Next => {
                self.stats.count(topic, |s| s.received += 1);
                Verdict::Deliver { gap: None }
            }
        }
    }
}

/// How a `seq` compares with the last seen from its (src, topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing seen from this (src, topic) yet (or forgotten): not a gap.
    First,
    /// The last plus one.
    Next,
    /// A jump: this many were missed.
    Gap(u64),
    /// Not above the last: already seen.
    Duplicate,
}

/// The last `seq` per (src, topic), bounded.
///
/// Two generations: pairs go into `current`; when it holds half the bound,
/// it becomes `previous` and the older `previous` is forgotten. A pair seen
/// again moves back to `current`, so what is forgotten is what was not seen
/// for longest (at least `bound / 2` other pairs since), in bulk and in
/// O(1). A forgotten pair is [`Seen::First`] on its next message: no gap or
/// duplicate is detected across that one message, which matters only for
/// publishers silent for that long.
struct SeqTracker {
    current: HashMap<String, HashMap<String, u64>>,
    previous: HashMap<String, HashMap<String, u64>>,
    /// Pairs in `current`.
    len: usize,
    bound: usize,
}

impl SeqTracker {
    fn new(bound: usize) -> SeqTracker {
        SeqTracker {
            current: HashMap::new(),
            previous: HashMap::new(),
            len: 0,
            bound: bound.max(2),
        }
    }

    fn observe(&mut self, src: &str, topic: &str, seq: u64) -> Seen {
        if let Some(last) = self.current.get_mut(src).and_then(|t| t.get_mut(topic)) {
            return Self::compare(last, seq);
        }
        let last = self
            .previous
            .get_mut(src)
            .and_then(|t| t.remove(topic))
            .unwrap_or(0);
        let mut slot = last;
        let seen = if last == 0 {
            slot = seq;
            Seen::First
        } else {
            Self::compare(&mut slot, seq)
        };
        if self.len >= self.bound / 2 {
            self.previous = std::mem::take(&mut self.current);
            self.len = 0;
        }
        self.current
            .entry(src.to_string())
            .or_default()
            .insert(topic.to_string(), slot);
        self.len += 1;
        seen
    }

    fn compare(last: &mut u64, seq: u64) -> Seen {
        if seq <= *last {
            return Seen::Duplicate;
        }
        let missed = seq - *last - 1;
        *last = seq;
        if missed == 0 {
            Seen::Next
        } else {
            Seen::Gap(missed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(src: &str, seq: u64, replay: bool) -> Header {
        Header {
            src: src.into(),
            seq,
            ts: 0,
            replay,
        }
    }

    fn intake(patterns: &[&str], start: Start) -> Intake {
        let patterns = patterns.iter().map(|p| Pattern::parse(p).unwrap()).collect();
        Intake::new(
            patterns,
            format!("{}me", wire::READY_PREFIX),
            start,
            GapPolicy::Log,
        )
    }

    #[test]
    fn sequences_in_order_gaps_duplicates_and_new_sources() {
        let mut t = SeqTracker::new(100);
        assert_eq!(t.observe("a", "x", 5), Seen::First, "the first seen is not a gap");
        assert_eq!(t.observe("a", "x", 6), Seen::Next);
        assert_eq!(t.observe("a", "x", 6), Seen::Duplicate);
        assert_eq!(t.observe("a", "x", 3), Seen::Duplicate);
        assert_eq!(t.observe("a", "x", 9), Seen::Gap(2));
        assert_eq!(t.observe("a", "y", 1), Seen::First, "per topic");
        assert_eq!(t.observe("b", "x", 1), Seen::First, "a new src is not a gap");
        assert_eq!(t.observe("a", "x", 10), Seen::Next);
    }

    #[test]
    fn the_tracker_forgets_the_longest_unseen_pairs_only() {
        let mut t = SeqTracker::new(4);
        t.observe("s", "kept", 1);
        t.observe("s", "old", 1);
        // current holds 2 = bound/2: the next new pair starts a generation.
        t.observe("s", "a", 1);
        assert_eq!(t.observe("s", "kept", 2), Seen::Next, "moved back from previous");
        t.observe("s", "b", 1);
        // "old" was in the generation now dropped.
        assert_eq!(t.observe("s", "old", 7), Seen::First);
        assert_eq!(t.observe("s", "kept", 3), Seen::Next);
        assert!(t.len <= 2 && t.current.values().map(HashMap::len).sum::<usize>() <= 2);
    }

    #[test]
    fn replays_are_taken_only_before_ready_and_only_with_start_last() {
        let mut last = intake(&["a.>"], Start::Last);
        assert_eq!(last.route("a.b"), Route::Judge);
        assert_eq!(
            last.judge("a.b", &header("p", 4, true)),
            Verdict::Deliver { gap: None }
        );
        assert_eq!(last.route("org.pycom.pubsub.ready.me"), Route::Ready);
        assert!(last.ready);
        // Someone else subscribes: the same replay again, and another topic's.
        assert_eq!(last.judge("a.b", &header("p", 4, true)), Verdict::Drop);
        assert_eq!(last.judge("a.c", &header("p", 9, true)), Verdict::Drop);
        assert_eq!(
            last.judge("a.b", &header("p", 5, false)),
            Verdict::Deliver { gap: None },
            "the replay set the sequence: no gap"
        );
        assert_eq!(last.stats.replays_skipped, 2);

        let mut new = intake(&["a.>"], Start::New);
        assert_eq!(new.judge("a.b", &header("p", 4, true)), Verdict::Drop);
        new.route("org.pycom.pubsub.ready.me");
        assert_eq!(
            new.judge("a.b", &header("p", 7, false)),
            Verdict::Deliver { gap: None },
            "skipping a replay is not a gap"
        );
    }

    #[test]
    fn live_messages_before_ready_are_kept_and_deduplicated() {
        let mut i = intake(&["a.b"], Start::New);
        assert_eq!(
            i.judge("a.b", &header("p", 1, false)),
            Verdict::Deliver { gap: None }
        );
        assert_eq!(i.judge("a.b", &header("p", 1, false)), Verdict::Drop);
        i.route("org.pycom.pubsub.ready.me");
        assert_eq!(
            i.judge("a.b", &header("p", 4, false)),
            Verdict::Deliver { gap: Some(2) }
        );
        let stats = i.stats.topics["a.b"];
        assert_eq!(
            stats,
            TopicStats {
                received: 2,
                gaps: 1,
                missed: 2,
                duplicates: 1
            }
        );
        assert_eq!(i.stats.total, stats);
    }

    #[test]
    fn foreign_readiness_and_unmatched_topics_are_dropped() {
        let mut i = intake(&[">"], Start::New);
        assert_eq!(i.route("org.pycom.pubsub.ready.other"), Route::Drop);
        assert!(!i.ready);
        assert_eq!(i.route("org.pycom.pubsub.ready.me"), Route::Ready);
        assert_eq!(i.route("org.pycom.pubsub.ready.me"), Route::Drop, "only once");
        let mut j = intake(&["a.*.c"], Start::New);
        assert_eq!(j.route("a.x.c"), Route::Judge);
        assert_eq!(j.route("a.x"), Route::Drop);
        assert_eq!(j.route("a.x.c.d"), Route::Drop);
        assert_eq!(j.stats.unmatched, 2);
    }

    #[test]
    fn per_topic_stats_are_bounded_totals_are_not() {
        let mut stats = Stats::default();
        for n in 0..MAX_TOPIC_STATS + 5 {
            stats.count(&format!("t.{n}"), |s| s.received += 1);
        }
        assert_eq!(stats.topics.len(), MAX_TOPIC_STATS);
        assert_eq!(stats.total.received, (MAX_TOPIC_STATS + 5) as u64);
    }

    /// A stand-in forwarder (an XPUB socket with XPUB_VERBOSE) driven by
    /// hand, for the socket side of the rules.
    struct FakeForwarder {
        xpub: zmq::Socket,
        endpoint: String,
    }

    impl FakeForwarder {
        fn new(zctx: &zmq::Context) -> FakeForwarder {
            let xpub = zctx.socket(zmq::XPUB).unwrap();
            xpub.set_xpub_verbose(true).unwrap();
            // A test that goes wrong fails instead of hanging.
            xpub.set_rcvtimeo(10_000).unwrap();
            xpub.bind("tcp://127.0.0.1:*").unwrap();
            let endpoint = xpub.get_last_endpoint().unwrap().unwrap();
            FakeForwarder { xpub, endpoint }
        }

        fn publish(&self, topic: &str, header: &str, body: &str) {
            self.xpub
                .send_multipart([topic.as_bytes(), header.as_bytes(), body.as_bytes()], 0)
                .unwrap();
        }

        /// Answer subscriptions as pycomd's forwarder does, replaying
        /// `cached` (topic, seq) for the first pattern subscription, until
        /// the readiness subscription, which it answers.
        fn answer(&self, cached: &[(&str, u64)]) -> String {
            let mut replayed = false;
            loop {
                let sub = self.xpub.recv_bytes(0).unwrap();
                if sub.first() != Some(&1) {
                    continue;
                }
                let prefix = String::from_utf8(sub[1..].to_vec()).unwrap();
                if prefix.starts_with(wire::READY_PREFIX) {
                    self.publish(&prefix, r#"{"src":"fwd","seq":1,"ts":0}"#, "null");
                    return prefix;
                }
                if !replayed {
                    replayed = true;
                    for (topic, seq) in cached {
                        let h = format!(r#"{{"src":"p","seq":{seq},"ts":0,"replay":true}}"#);
                        self.publish(topic, &h, &seq.to_string());
                    }
                    // Live traffic before our answer is kept too.
                    self.publish("demo.a", r#"{"src":"p","seq":3,"ts":0}"#, "3");
                }
            }
        }
    }

    fn connect(
        fwd: &FakeForwarder,
        start: Start,
        gaps: GapPolicy,
    ) -> std::thread::JoinHandle<Result<Subscriber>> {
        let endpoint = fwd.endpoint.clone();
        std::thread::spawn(move || {
            let ctx = Context::new("tcp://127.0.0.1:1").unwrap();
            Subscriber::builder(&ctx)
                .patterns(["demo.>", "demo.a"])
                .start(start)
                .gaps(gaps)
                .endpoint(endpoint)
                .timeout(Duration::from_secs(5))
                .connect()
        })
    }

    #[test]
    fn a_subscriber_is_ready_when_answered_and_keeps_what_came_before() {
        let zctx = zmq::Context::new();
        let fwd = FakeForwarder::new(&zctx);
        let pending = connect(&fwd, Start::Last, GapPolicy::Error);
        fwd.answer(&[("demo.a", 2), ("demo.b", 8)]);
        let mut sub = pending.join().unwrap().unwrap();
        let m = sub.recv().unwrap();
        assert_eq!((m.topic.as_str(), m.seq, m.replay), ("demo.a", 2, true));
        assert_eq!(sub.recv().unwrap().seq, 8);
        assert_eq!(sub.recv().unwrap().value::<u64>().unwrap(), 3);
        // After ready: malformed, not subscribed to, a replay,
        // a duplicate, then a gap (an error, then the message).
        fwd.publish("demo.a", "not json", "1");
        fwd.publish("other.x", r#"{"src":"p","seq":1,"ts":0}"#, "1");
        fwd.publish("demo.a", r#"{"src":"p","seq":4,"ts":0}"#, "{bad");
        fwd.publish("demo.b", r#"{"src":"p","seq":8,"ts":0,"replay":true}"#, "8");
        fwd.publish("demo.a", r#"{"src":"p","seq":3,"ts":0}"#, "3");
        fwd.publish("demo.a", r#"{"src":"p","seq":6,"ts":0}"#, "6");
        let err = sub.recv().unwrap_err();
        assert!(matches!(&err, Error::Gap { missed: 2, .. }), "{err}");
        assert!(err.to_string().contains("demo.a"), "{err}");
        assert_eq!(sub.recv().unwrap().seq, 6);
        assert!(sub.recv_timeout(Duration::from_millis(50)).unwrap().is_none());
        let stats = sub.stats();
        assert_eq!(stats.malformed, 2);
        assert_eq!(stats.replays_skipped, 1);
        assert_eq!(stats.topics["demo.a"].duplicates, 1);
        assert_eq!(stats.total.received, 4);
    }

    #[test]
    fn start_new_skips_the_last_values() {
        let zctx = zmq::Context::new();
        let fwd = FakeForwarder::new(&zctx);
        let pending = connect(&fwd, Start::New, GapPolicy::Log);
        fwd.answer(&[("demo.a", 2)]);
        let mut sub = pending.join().unwrap().unwrap();
        let values: Vec<u64> = {
            fwd.publish("demo.a", r#"{"src":"p","seq":4,"ts":0}"#, "4");
            sub.values().take(2).collect::<Result<_>>().unwrap()
        };
        assert_eq!(values, [3, 4]);
    }

    #[test]
    fn no_answer_is_an_error_naming_the_forwarder() {
        let zctx = zmq::Context::new();
        let silent = zctx.socket(zmq::XPUB).unwrap();
        silent.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = silent.get_last_endpoint().unwrap().unwrap();
        let ctx = Context::new("tcp://127.0.0.1:1").unwrap();
        let err = Subscriber::builder(&ctx)
            .pattern("a")
            .endpoint(endpoint.clone())
            .timeout(Duration::from_millis(100))
            .connect()
            .err()
            .unwrap();
        assert!(matches!(err, Error::NotReady { .. }), "{err}");
        assert!(err.to_string().contains(&endpoint), "{err}");
        let bad = Subscriber::builder(&ctx)
            .pattern("a.>.b")
            .connect()
            .err()
            .unwrap();
        assert!(bad.to_string().contains("'>' must be the last token"), "{bad}");
    }
}
