//! Pub-sub (PROTOCOL.md 5): the forwarder's thread ([`forwarder`]), its
//! last-value cache ([`lvc`]), the registry's change events the server
//! publishes through it ([`Events`]), and `org.pycom.pubsub`'s methods
//! ([`methods`]), answered on pycomd's request endpoint.
//!
//! The forwarder is listed as service `/org/pycom/pubsub` with its two
//! endpoints in the record's metadata, so a client that knows only the
//! nameserver finds it with `locate org.pycom.pubsub`.
//!
//! With access control on, both endpoints are ZeroMQ PLAIN servers: a
//! peer's user name is `token` and its password a token from pycomd's
//! authenticator, or its user name is `anonymous`. The forwarder's ZAP
//! handler ([`forwarder::Forwarder`], on its own ZeroMQ context) checks
//! them, and the forwarder then checks every publication against its
//! publisher's `publish` grants and every subscription against its
//! subscriber's `subscribe` grants (XPUB_MANUAL: a subscription is applied
//! to the subscriber's connection only if allowed). The record's metadata
//! says `"auth": "plain"` so that clients know to authenticate.

pub mod forwarder;
pub mod lvc;
pub mod methods;

use crate::auth::view::View;
use crate::config::Settings;
use crate::registry::{Change, ChangeKind, Record};
use forwarder::{Counters, Forwarder, Shared};
use pycom_client::pubsub::wire::{self, Header};
use pycom_client::pubsub::AUTH_PLAIN;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tracing::{info, warn};

const OWN_ENDPOINT: &str = "inproc://pycomd-forwarder";
/// Registry events queued for the forwarder: a burst of registrations
/// (10,000 services starting at once) must not lose any.
const OWN_QUEUE: i32 = 200_000;
/// How long publications still queued at exit may take to leave.
const LINGER_MS: i32 = 1000;

/// ZAP (ZeroMQ RFC 27) requests come here, on the forwarder's context.
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// The ZAP domain of the forwarder's endpoints.
const ZAP_DOMAIN: &str = "pycom";

/// The running forwarder, as pycomd's other parts see it.
pub struct Pubsub {
    pub shared: Arc<Shared>,
    pub xsub: String,
    pub xpub: String,
    /// Peers authenticate (access control is on).
    pub authenticated: bool,
    /// The forwarder's own context: its ZAP handler answers only its
    /// sockets, not the request endpoint's or the prober's.
    ctx: zmq::Context,
    stop: zmq::Socket,
    thread: JoinHandle<()>,
}

/// Whether pub-sub runs, and if not why (for `stat`).
pub enum Started {
    Running(Pubsub),
    Off(String),
}

impl Started {
    pub fn running(&self) -> Option<&Pubsub> {
        match self {
            Started::Running(p) => Some(p),
            Started::Off(_) => None,
        }
    }
}

/// Bind the forwarder's endpoints and start its thread. A configured
/// endpoint that cannot be bound is an error; the default one a warning
/// (pycomd runs without pub-sub: another pycomd on the host has it).
///
/// `auth`: access control is on; peers then authenticate and the grants
/// are enforced.
pub fn start(settings: &Settings, auth: Option<Arc<View>>) -> Result<Started, String> {
    let ps = &settings.pubsub;
    if !ps.enabled {
        return Ok(Started::Off("disabled by pubsub.enabled = false".into()));
    }
    let context = zmq::Context::new();
    let ctx = &context;
    // Bound before the endpoints, so that no connection finds it missing.
    let zap = match &auth {
        Some(view) => Some(forwarder::Zap {
            socket: zap_socket(ctx)?,
            view: view.clone(),
        }),
        None => None,
    };
    let xsub = socket(ctx, zmq::XSUB, settings)?;
    let mut xpub = socket(ctx, zmq::XPUB, settings)?;
    xpub.set_xpub_verbose(true)
        .map_err(|e| format!("pub-sub: cannot configure XPUB: {e}"))?;
    set_xpub_option(&mut xpub, zmq_sys::ZMQ_XPUB_VERBOSER, "ZMQ_XPUB_VERBOSER")?;
    if zap.is_some() {
        for socket in [&xsub, &xpub] {
            socket
                .set_plain_server(true)
                .and_then(|()| socket.set_zap_domain(ZAP_DOMAIN))
                .map_err(|e| format!("pub-sub: cannot make the endpoints PLAIN servers: {e}"))?;
        }
        // Each subscription is applied by the forwarder, if allowed.
        set_xpub_option(&mut xpub, zmq_sys::ZMQ_XPUB_MANUAL, "ZMQ_XPUB_MANUAL")?;
    }
    let mut bound = Vec::new();
    for (socket, name, configured, default) in [
        (&xsub, "pubsub.xsub", &ps.xsub, wire::DEFAULT_XSUB),
        (&xpub, "pubsub.xpub", &ps.xpub, wire::DEFAULT_XPUB),
    ] {
        let endpoint = configured.as_deref().unwrap_or(default);
        if let Err(e) = socket.bind(endpoint) {
            if configured.is_some() {
                return Err(format!("cannot bind {name} = {endpoint}: {e}"));
            }
            let why = format!(
                "pub-sub is off: its default endpoint {endpoint} cannot be bound ({e}); another pycomd on this host may have it. Set {name} to run it here"
            );
            warn!("{why}");
            return Ok(Started::Off(why));
        }
        bound.push(
            socket
                .get_last_endpoint()
                .ok()
                .and_then(Result::ok)
                .unwrap_or_else(|| endpoint.to_string()),
        );
    }
    // Everything from every publisher: publishers are ready once they see
    // this subscription, and readiness needs no per-topic round trip.
    xsub.send(&[1u8][..], 0)
        .map_err(|e| format!("pub-sub: cannot subscribe upstream: {e}"))?;
    let own = ctx
        .socket(zmq::PULL)
        .map_err(|e| format!("pub-sub: cannot create the event socket: {e}"))?;
    own.set_rcvhwm(OWN_QUEUE)
        .and_then(|()| own.bind(OWN_ENDPOINT))
        .map_err(|e| format!("pub-sub: cannot bind the event socket: {e}"))?;
    let stop = push(ctx)?;
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        lvc: Mutex::new(lvc::Lvc::new(ps.lvc_max_topics, ps.lvc_max_bytes)),
        max_message_bytes: AtomicUsize::new(settings.max_message_bytes),
    });
    let forwarder = Forwarder {
        xsub,
        xpub,
        own,
        shared: shared.clone(),
        src: new_src(),
        frames: Vec::new(),
        drops_logged: None,
        zap,
        grants: forwarder::GrantCache::default(),
        user: String::new(),
        checked_topic: String::new(),
    };
    let thread = std::thread::Builder::new()
        .name("pubsub".into())
        .spawn(move || forwarder.run())
        .map_err(|e| format!("pub-sub: cannot start the forwarder's thread: {e}"))?;
    let (xsub, xpub) = (bound[0].clone(), bound[1].clone());
    let authenticated = auth.is_some();
    info!(%xsub, %xpub, authenticated, "pub-sub forwarder running");
    Ok(Started::Running(Pubsub {
        shared,
        xsub,
        xpub,
        authenticated,
        ctx: context,
        stop,
        thread,
    }))
}

impl Pubsub {
    /// The record listing the forwarder: found with `locate org.pycom.pubsub`.
    pub fn record(&self, request_address: &str) -> Record {
        Record {
            service: wire::SERVICE.into(),
            address: request_address.to_string(),
            interfaces: vec![wire::INTERFACE.to_string()],
            metadata: [
                ("xsub".to_string(), self.xsub.clone()),
                ("xpub".to_string(), self.xpub.clone()),
            ]
            .into_iter()
            .chain(
                self.authenticated
                    .then(|| ("auth".to_string(), AUTH_PLAIN.to_string())),
            )
            .collect(),
            ttl_ms: None,
            revision: 0,
            owner: None,
        }
    }

    /// A sender of registry events, for the server thread.
    pub fn events(&self) -> Result<Events, String> {
        Ok(Events {
            socket: push(&self.ctx)?,
            src: new_src(),
            seqs: [0; 5],
            shared: self.shared.clone(),
            dropped_logged: false,
        })
    }

    /// Stop the forwarder's thread (its queued messages get the linger).
    pub fn stop(self) {
        let _ = self.stop.send(&b"stop"[..], 0);
        let _ = self.thread.join();
    }
}

/// Publishes the registry's changes on `org.pycom.nameserver.events.<event>`
/// through the forwarder, from the server thread, never waiting: if the
/// forwarder is far behind an event is dropped and counted, and watchers
/// see the revision jump and catch up with `changes`.
pub struct Events {
    socket: zmq::Socket,
    /// New every start, so subscribers see a new sequence, not a gap.
    src: String,
    /// Per event topic.
    seqs: [u64; 5],
    shared: Arc<Shared>,
    dropped_logged: bool,
}

impl Events {
    pub fn publish(&mut self, change: &Change) {
        let event = crate::registry::history::event_name(change.kind);
        let slot = match change.kind {
            ChangeKind::Registered => 0,
            ChangeKind::Updated => 1,
            ChangeKind::Unregistered => 2,
            ChangeKind::Expired => 3,
            ChangeKind::Dropped => 4,
        };
        self.seqs[slot] += 1;
        let header = Header {
            src: self.src.clone(),
            seq: self.seqs[slot],
            ts: wire::now_ms(),
            replay: false,
        };
        let body = crate::registry::history::event_body(change.kind, &change.record, change.revision);
        let topic = format!("{}{event}", wire::EVENTS_PREFIX);
        // The first frame decides: the rest of a multipart message always
        // follows it.
        let sent = self
            .socket
            .send(topic.as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| self.socket.send(header.encode(), zmq::SNDMORE))
            .and_then(|()| self.socket.send(body, 0));
        if sent.is_err() {
            self.seqs[slot] -= 1;
            self.shared
                .counters
                .events_dropped
                .fetch_add(1, Ordering::Relaxed);
            if !self.dropped_logged {
                self.dropped_logged = true;
                warn!("registry events dropped: the pub-sub forwarder is behind (watchers catch up with `changes`)");
            }
        }
    }
}

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, settings: &Settings) -> Result<zmq::Socket, String> {
    let fail = |e: zmq::Error| format!("pub-sub: cannot create a socket: {e}");
    let socket = ctx.socket(kind).map_err(fail)?;
    let hwm = settings.pubsub.high_water_mark;
    // Between max_message_bytes and the hard cap a publication is dropped
    // and counted.
    let hard_cap = settings.frame_hard_cap();
    socket
        .set_sndhwm(hwm)
        .and_then(|()| socket.set_rcvhwm(hwm))
        .and_then(|()| socket.set_linger(LINGER_MS))
        .and_then(|()| socket.set_maxmsgsize(hard_cap))
        .map_err(fail)?;
    Ok(socket)
}

fn push(ctx: &zmq::Context) -> Result<zmq::Socket, String> {
    let socket = ctx
        .socket(zmq::PUSH)
        .map_err(|e| format!("pub-sub: cannot create the event socket: {e}"))?;
    socket
        .set_sndhwm(OWN_QUEUE)
        .and_then(|()| socket.set_linger(LINGER_MS))
        .and_then(|()| socket.connect(OWN_ENDPOINT))
        .map_err(|e| format!("pub-sub: cannot connect the event socket: {e}"))?;
    Ok(socket)
}

fn new_src() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn zap_socket(ctx: &zmq::Context) -> Result<zmq::Socket, String> {
    let socket = ctx
        .socket(zmq::REP)
        .map_err(|e| format!("pub-sub: cannot create the ZAP handler's socket: {e}"))?;
    socket
        .bind(ZAP_ENDPOINT)
        .map_err(|e| format!("pub-sub: cannot bind the ZAP handler: {e}"))?;
    Ok(socket)
}

/// Turn on an XPUB option the zmq crate has no setter for:
/// ZMQ_XPUB_VERBOSER (unsubscriptions passed up too, so `stat` can count
/// the subscriptions in place), ZMQ_XPUB_MANUAL (the forwarder applies
/// each subscription itself, when access control is on).
fn set_xpub_option(socket: &mut zmq::Socket, option: u32, name: &str) -> Result<(), String> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, an int option, its size.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option as libc::c_int,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "pub-sub: cannot set {name}: {}",
            zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() })
        ));
    }
    Ok(())
}
