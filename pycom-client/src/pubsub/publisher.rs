//! Publishing: an XPUB socket connected to the forwarder's XSUB endpoint.
//!
//! XPUB rather than PUB because an XPUB socket hears its peer's
//! subscriptions: the forwarder subscribes to everything as soon as the
//! connection is up, so hearing that subscription is the proof that the
//! path is in place ("connect returned => nothing published after is lost
//! to a slow join"). A PUB socket would silently drop what it publishes
//! before then.

use super::wire::{self, HeaderWriter};
use super::{authenticate, forwarder_endpoint, hint_refused, millis, poll_ms, transport};
use crate::binary::{Binary, Limits};
use crate::context::Context;
use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Messages queued for the forwarder before new ones are dropped.
pub const DEFAULT_SNDHWM: i32 = 10_000;
/// How long a dropped publisher still tries to hand over what it queued.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(1000);
/// Topics one publisher instance counts sequences for before it starts a
/// new instance id (`src`): bounds its memory however many topics it uses.
const MAX_TOPICS_PER_SRC: usize = 100_000;
/// The forwarder's subscription messages are read (and thrown away) every
/// this many publications, so that they never pile up.
const DRAIN_EVERY: u32 = 256;

/// Options of a [`Publisher`]; [`connect`](PublisherBuilder::connect) makes it.
#[must_use = "a builder does nothing until connect() is called"]
pub struct PublisherBuilder {
    ctx: Context,
    topic: String,
    sndhwm: i32,
    linger: Duration,
    timeout: Option<Duration>,
    endpoint: Option<String>,
    limits: Limits,
}

impl PublisherBuilder {
    /// Messages queued for the forwarder before new ones are dropped
    /// (subscribers then see gaps); default 10,000.
    pub fn sndhwm(mut self, messages: i32) -> PublisherBuilder {
        self.sndhwm = messages;
        self
    }

    /// How long dropping the publisher waits to hand over what it queued
    /// (default 1 s): a publication sent just before the drop still goes.
    pub fn linger(mut self, linger: Duration) -> PublisherBuilder {
        self.linger = linger;
        self
    }

    /// How long [`connect`](PublisherBuilder::connect) waits for the
    /// forwarder (default: the context's default timeout).
    pub fn timeout(mut self, timeout: Duration) -> PublisherBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// Connect to this XSUB endpoint instead of asking the nameserver
    /// where the forwarder is.
    pub fn endpoint(mut self, xsub: impl Into<String>) -> PublisherBuilder {
        self.endpoint = Some(xsub.into());
        self
    }

    /// Bounds on attachments (the total of one publication).
    pub fn limits(mut self, limits: Limits) -> PublisherBuilder {
        self.limits = limits;
        self
    }

    /// Connect, and return once the forwarder has taken the connection:
    /// from then on publications reach every ready subscriber.
    pub fn connect(self) -> Result<Publisher> {
        check_topic(&self.topic)?;
        let (endpoint, plain) = forwarder_endpoint(&self.ctx, self.endpoint, |f| f.xsub)?;
        let socket = self.ctx.zmq().socket(zmq::XPUB).map_err(transport(&endpoint))?;
        authenticate(&socket, &self.ctx, plain).map_err(transport(&endpoint))?;
        socket.set_sndhwm(self.sndhwm).map_err(transport(&endpoint))?;
        let linger = i32::try_from(self.linger.as_millis()).unwrap_or(i32::MAX);
        socket.set_linger(linger).map_err(transport(&endpoint))?;
        socket.connect(&endpoint).map_err(|source| Error::Endpoint {
            endpoint: endpoint.clone(),
            source,
        })?;
        let timeout = self.timeout.unwrap_or_else(|| self.ctx.default_timeout());
        wait_for_subscription(&socket, &endpoint, timeout).map_err(|e| hint_refused(e, plain))?;
        tracing::debug!(%endpoint, topic = %self.topic, "publisher ready");
        let src = new_src();
        Ok(Publisher {
            socket,
            endpoint,
            topic: self.topic,
            header: HeaderWriter::new(&src),
            src,
            own_seq: 0,
            seqs: HashMap::new(),
            body: Vec::new(),
            limits: self.limits,
            since_drain: 0,
        })
    }
}

/// Wait until the forwarder's XSUB side subscribes (message `\x01` +
/// prefix): the connection is then up both ways.
fn wait_for_subscription(socket: &zmq::Socket, endpoint: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ready = match socket.poll(zmq::POLLIN, poll_ms(left)) {
            Ok(n) => n,
            Err(zmq::Error::EINTR) => continue,
            Err(source) => return Err(transport(endpoint)(source)),
        };
        if ready > 0 {
            match socket.recv_bytes(zmq::DONTWAIT) {
                Ok(message) if message.first() == Some(&1) => return Ok(()),
                // An unsubscription, or nothing after all: keep waiting.
                Ok(_) | Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {}
                Err(source) => return Err(transport(endpoint)(source)),
            }
        } else if Instant::now() >= deadline {
            return Err(Error::NotReady {
                endpoint: endpoint.to_string(),
                timeout_ms: millis(timeout),
                what: "a publisher waiting for the forwarder to take its connection".into(),
            });
        }
    }
}

fn new_src() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Why `topic` cannot be published on, as an error.
fn check_topic(topic: &str) -> Result<()> {
    if let Some(problem) = wire::topic_problem(topic) {
        return Err(Error::Data(problem));
    }
    if topic.starts_with(wire::RESERVED) {
        return Err(Error::Data(format!(
            "topic '{topic}' is reserved for pycomd (topics starting with '{}'): the forwarder \
             drops such publications from anyone else",
            wire::RESERVED
        )));
    }
    Ok(())
}

/// Publishes to pycomd's forwarder: on its own topic with
/// [`publish`](Publisher::publish), on others with
/// [`publish_to`](Publisher::publish_to).
///
/// Each publisher is one instance (`src`, random) with its own sequence per
/// topic, from 1, which subscribers use to drop duplicates and to see gaps.
/// Publishing never blocks: past the send high-water mark (the forwarder
/// not keeping up) publications are dropped, and subscribers see a gap.
///
/// Not shared between threads (it needs `&mut`); make one per thread.
pub struct Publisher {
    socket: zmq::Socket,
    endpoint: String,
    topic: String,
    src: String,
    /// Writes `src`'s header frames.
    header: HeaderWriter,
    /// The last `seq` published on `topic`: kept apart from `seqs` so that
    /// a publisher streaming on its own topic looks nothing up.
    own_seq: u64,
    /// The last `seq` published per other topic.
    seqs: HashMap<String, u64>,
    /// The body being sent, its buffer reused.
    body: Vec<u8>,
    limits: Limits,
    since_drain: u32,
}

impl Publisher {
    /// Options for a publisher on `topic`; `connect` makes it.
    pub fn builder(ctx: &Context, topic: impl Into<String>) -> PublisherBuilder {
        PublisherBuilder {
            ctx: ctx.clone(),
            topic: topic.into(),
            sndhwm: DEFAULT_SNDHWM,
            linger: DEFAULT_LINGER,
            timeout: None,
            endpoint: None,
            limits: Limits::default(),
        }
    }

    /// The topic [`publish`](Publisher::publish) publishes on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// This publisher instance's id: the `src` of its publications.
    pub fn src(&self) -> &str {
        &self.src
    }

    /// The forwarder's XSUB endpoint it is connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Publish `value` (as JSON) on the publisher's topic; returns its `seq`.
    pub fn publish<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<u64> {
        self.send(None, value, &[])
    }

    /// Publish `value` with attachments (binary frames after the body).
    pub fn publish_with<T: Serialize + ?Sized>(&mut self, value: &T, attachments: &[Binary]) -> Result<u64> {
        self.send(None, value, attachments)
    }

    /// Publish `value` on another topic (its own sequence).
    pub fn publish_to<T: Serialize + ?Sized>(&mut self, topic: &str, value: &T) -> Result<u64> {
        self.publish_to_with(topic, value, &[])
    }

    /// Publish `value` with attachments on another topic.
    pub fn publish_to_with<T: Serialize + ?Sized>(
        &mut self,
        topic: &str,
        value: &T,
        attachments: &[Binary],
    ) -> Result<u64> {
        check_topic(topic)?;
        // The publisher's own topic keeps one sequence however it is named.
        let other = (topic != self.topic).then_some(topic);
        self.send(other, value, attachments)
    }

    /// Publish on `other`, or on the publisher's own topic (`None`).
    fn send<T: Serialize + ?Sized>(
        &mut self,
        other: Option<&str>,
        value: &T,
        attachments: &[Binary],
    ) -> Result<u64> {
        let topic = other.unwrap_or(&self.topic);
        self.limits
            .check_outgoing(attachments)
            .map_err(Error::Attachment)?;
        self.body.clear();
        serde_json::to_writer(&mut self.body, value)
            .map_err(|e| Error::Data(format!("cannot encode the publication on '{topic}': {e}")))?;
        let last = match other {
            None => self.own_seq,
            Some(topic) => match self.seqs.get(topic) {
                Some(&last) => last,
                None if self.seqs.len() >= MAX_TOPICS_PER_SRC => {
                    // A new instance id starts every sequence afresh
                    // without subscribers taking the restart for
                    // duplicates (a new src is never a gap either).
                    self.src = new_src();
                    self.header = HeaderWriter::new(&self.src);
                    self.seqs.clear();
                    self.own_seq = 0;
                    0
                }
                None => 0,
            },
        };
        let seq = last + 1;
        let header = self.header.write(seq, wire::now_ms());
        drain_now_and_then(&self.socket, &mut self.since_drain);
        // An XPUB socket drops at its high-water mark instead of blocking;
        // DONTWAIT makes sure it never blocks in any case. Frame by frame
        // from the buffers (what send_multipart does, without collecting
        // the frames first).
        let more = zmq::SNDMORE | zmq::DONTWAIT;
        let body_flags = if attachments.is_empty() {
            zmq::DONTWAIT
        } else {
            more
        };
        let mut sent = self
            .socket
            .send(topic.as_bytes(), more)
            .and_then(|()| self.socket.send(header, more))
            .and_then(|()| self.socket.send(&self.body[..], body_flags));
        for (i, attachment) in attachments.iter().enumerate() {
            let flags = if i + 1 < attachments.len() {
                more
            } else {
                zmq::DONTWAIT
            };
            sent = sent.and_then(|()| self.socket.send(attachment.as_bytes(), flags));
        }
        sent.map_err(transport(&self.endpoint))?;
        // Counted only once sent: a failed publish is an error to the
        // caller, not a gap to every subscriber.
        match other {
            None => self.own_seq = seq,
            Some(topic) => match self.seqs.get_mut(topic) {
                Some(last) => *last = seq,
                None => {
                    self.seqs.insert(topic.to_string(), seq);
                }
            },
        }
        Ok(seq)
    }
}

/// Read and discard the forwarder's (re)subscriptions, which arrive again
/// each time it reconnects: every [`DRAIN_EVERY`] publications.
fn drain_now_and_then(socket: &zmq::Socket, since_drain: &mut u32) {
    *since_drain += 1;
    if *since_drain < DRAIN_EVERY {
        return;
    }
    *since_drain = 0;
    while socket.recv_bytes(zmq::DONTWAIT).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::wire::Header;

    #[test]
    fn reserved_and_malformed_topics_are_refused_with_the_reason() {
        let err = check_topic("org.pycom.nameserver.events.registered").unwrap_err();
        assert!(err.to_string().contains("reserved for pycomd"), "{err}");
        let err = check_topic("a.*").unwrap_err();
        assert!(err.to_string().contains("wildcard"), "{err}");
        assert!(check_topic("demo.interface.name").is_ok());
        assert!(check_topic("org.pycomx.a").is_ok());
    }

    #[test]
    fn sources_are_fresh_uuids() {
        let (a, b) = (new_src(), new_src());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn a_forwarder_that_never_subscribes_is_a_timeout_naming_it() {
        let ctx = zmq::Context::new();
        // A plain ROUTER never subscribes: the publisher must give up.
        let server = ctx.socket(zmq::ROUTER).unwrap();
        server.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = server.get_last_endpoint().unwrap().unwrap();
        let socket = ctx.socket(zmq::XPUB).unwrap();
        socket.set_linger(0).unwrap();
        socket.connect(&endpoint).unwrap();
        let err = wait_for_subscription(&socket, &endpoint, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, Error::NotReady { .. }), "{err}");
        assert!(err.to_string().contains(&endpoint), "{err}");
    }

    #[test]
    fn an_xsub_peer_makes_the_publisher_ready_and_gets_the_frames() {
        let zctx = zmq::Context::new();
        let xsub = zctx.socket(zmq::XSUB).unwrap();
        xsub.bind("tcp://127.0.0.1:*").unwrap();
        // As pycomd's forwarder: everything, subscribed before anyone connects.
        xsub.send(&[1u8][..], 0).unwrap();
        let endpoint = xsub.get_last_endpoint().unwrap().unwrap();
        // The XSUB side takes a connection (and sends it the subscription)
        // only while it is used: the publisher connects on a thread of its
        // own while this one reads, as the forwarder's loop does.
        let publishing = std::thread::spawn(move || {
            let ctx = Context::new("tcp://127.0.0.1:1").unwrap();
            let mut publisher = Publisher::builder(&ctx, "demo.numbers")
                .endpoint(endpoint)
                .timeout(Duration::from_secs(5))
                .connect()
                .unwrap();
            assert_eq!(publisher.publish(&1.5).unwrap(), 1);
            let attachment = [Binary::from_bytes(b"raw".to_vec())];
            assert_eq!(publisher.publish_with(&"x", &attachment).unwrap(), 2);
            assert_eq!(publisher.publish_to("demo.other", &true).unwrap(), 1);
            assert!(publisher.publish_to("org.pycom.x", &true).is_err());
            publisher.src().to_string()
        });
        let first = xsub.recv_multipart(0).unwrap();
        let second = xsub.recv_multipart(0).unwrap();
        let third = xsub.recv_multipart(0).unwrap();
        let src = publishing.join().unwrap();
        assert_eq!(first[0], b"demo.numbers");
        let header = Header::decode(&first[1]).unwrap();
        assert_eq!((header.seq, header.src.as_str()), (1, src.as_str()));
        assert_eq!(first[2], b"1.5");
        assert_eq!(second.len(), 4);
        assert_eq!(second[3], b"raw");
        assert_eq!(third[0], b"demo.other");
        assert_eq!(Header::decode(&third[1]).unwrap().seq, 1);
    }
}
