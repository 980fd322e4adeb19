//! Hosting a service: bind, dispatch to handlers on worker threads,
//! register with a lease, renew, re-register, unregister on stop.
//!
//! ```no_run
//! // no_run: needs a pycomd on the default endpoint.
//! use pycom_client::service::{Interface, Service};
//! use serde_json::json;
//!
//! let echo = Interface::new("com.example.echo")
//!     .handle("echo", |req| Ok(req.args.clone().into()));
//! let running = Service::builder("/com/example/echo").interface(echo).start()?;
//! println!("serving on {}", running.endpoint());
//! # Ok::<(), pycom_client::Error>(())
//! ```

mod access;
mod dispatch;
mod interface;
mod panic;
mod registrar;
mod sessions;

pub use access::Auth;
pub use interface::{
    describe_method, introspection, introspection_of, Handler, Interface, Method, Reply, Request,
};

use crate::binary::Limits;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::proto::{self, Fault};
use crate::router;
use dispatch::Shared;
use sessions::Sessions;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Sent by a worker when it exits, so the router knows every reply is out.
const WORKER_DONE: &[u8] = b"DONE";

/// Entry point: `Service::builder("/com/foo/example")`.
pub struct Service;

impl Service {
    /// Start describing the service registered as `service` (a path like `/com/foo/example`).
    pub fn builder(service: &str) -> ServiceBuilder {
        ServiceBuilder {
            service: service.to_string(),
            bind: "tcp://127.0.0.1:*".to_string(),
            advertise: None,
            ctx: None,
            register: true,
            lease: Duration::from_secs(10),
            workers: 4,
            queue: 1024,
            interfaces: Vec::new(),
            session_timeout: Duration::from_secs(600),
            max_sessions: 10_000,
            limits: Limits::default(),
            metadata: BTreeMap::new(),
        }
    }
}

/// How a service is hosted. Defaults: an ephemeral port on 127.0.0.1, the
/// nameserver from `PYCOM_NAMESERVER`, a 10 s lease, 4 workers.
pub struct ServiceBuilder {
    service: String,
    bind: String,
    advertise: Option<String>,
    ctx: Option<Context>,
    register: bool,
    lease: Duration,
    workers: usize,
    queue: usize,
    interfaces: Vec<Interface>,
    session_timeout: Duration,
    max_sessions: usize,
    limits: Limits,
    metadata: BTreeMap<String, String>,
}

impl ServiceBuilder {
    /// Endpoint to bind, e.g. `tcp://127.0.0.1:5555` or `tcp://127.0.0.1:*`.
    pub fn bind(mut self, endpoint: &str) -> Self {
        self.bind = endpoint.to_string();
        self
    }

    /// Address to register, when the bound one is not what clients should
    /// dial (a wildcard bind such as `tcp://*:5555`).
    pub fn advertise(mut self, address: &str) -> Self {
        self.advertise = Some(address.to_string());
        self
    }

    /// The nameserver(s) to register with.
    pub fn context(mut self, ctx: Context) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// Serve without registering (clients must know the address).
    pub fn without_registration(mut self) -> Self {
        self.register = false;
        self
    }

    /// Lease asked of the nameserver; renewed every third of it.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Worker threads running handlers; one slow handler blocks only its worker.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Requests waiting for a worker before new ones get code 7.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }

    /// Serve this interface (one or more per service).
    pub fn interface(mut self, interface: Interface) -> Self {
        self.interfaces.push(interface);
        self
    }

    /// Idle time after which a session expires, and the most kept at once.
    pub fn sessions(mut self, idle_timeout: Duration, max: usize) -> Self {
        self.session_timeout = idle_timeout;
        self.max_sessions = max;
        self
    }

    /// Attachment limits (total size, spill threshold).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A tag registered with the service.
    pub fn metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }

    /// Bind, register (failing here if the nameserver refuses), and serve.
    pub fn start(self) -> Result<RunningService> {
        if self.interfaces.is_empty() {
            return Err(Error::Data(format!(
                "service '{}' has no interface to serve",
                self.service
            )));
        }
        let ctx = match self.ctx {
            Some(ctx) => ctx,
            None => Context::from_env()?,
        };
        let zmq = ctx.zmq().clone();
        let transport = |source| Error::Transport {
            endpoint: self.bind.clone(),
            source,
        };
        let socket = zmq.socket(zmq::ROUTER).map_err(transport)?;
        socket.set_linger(1000).map_err(transport)?;
        socket.set_sndhwm(1000).map_err(transport)?;
        socket.set_rcvhwm(1000).map_err(transport)?;
        // No single frame larger than the attachment limit (plus the body's
        // room) is even allocated: libzmq drops such a peer.
        let max_frame = self.limits.max_total_bytes.saturating_add(1024 * 1024);
        socket
            .set_maxmsgsize(i64::try_from(max_frame).unwrap_or(i64::MAX))
            .map_err(transport)?;
        socket.bind(&self.bind).map_err(|source| Error::Endpoint {
            endpoint: self.bind.clone(),
            source,
        })?;
        let bound = socket
            .get_last_endpoint()
            .map_err(transport)?
            .unwrap_or_else(|_| self.bind.clone());
        let endpoint = self.advertise.clone().unwrap_or(bound);

        // Guarded interfaces: where tokens are checked, and a password
        // file's authenticator to serve (not registered: `locate
        // org.pycom.authenticator` stays pycomd's).
        let (access, authenticator) = match access::authority(&self.service, &self.interfaces, &ctx)? {
            Some((authority, served)) => (Some(authority), served),
            None => (None, None),
        };
        let registration = crate::Registration {
            service: self.service.clone(),
            address: endpoint.clone(),
            interfaces: self.interfaces.iter().map(|i| i.name().to_string()).collect(),
            ttl_ms: Some(self.lease.as_millis() as u64),
            metadata: self.metadata.clone(),
        };
        let registrar = if self.register {
            Some(registrar::start(ctx.clone(), registration, self.lease)?)
        } else {
            None
        };

        let shared = Arc::new(Shared {
            service: self.service.clone(),
            interfaces: self
                .interfaces
                .into_iter()
                .chain(authenticator)
                .map(|i| (i.name().to_string(), i))
                .collect::<HashMap<_, _>>(),
            sessions: Sessions::new(self.session_timeout, self.max_sessions),
            limits: self.limits,
            access,
        });
        let replies_endpoint = format!("inproc://pycom-service-{}", uuid::Uuid::new_v4().simple());
        let replies = zmq.socket(zmq::PULL).map_err(transport)?;
        replies.bind(&replies_endpoint).map_err(transport)?;

        let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Vec<zmq::Message>>(self.queue);
        let jobs = Arc::new(Mutex::new(job_rx));
        let mut workers = Vec::with_capacity(self.workers);
        for i in 0..self.workers {
            let push = zmq.socket(zmq::PUSH).map_err(transport)?;
            push.connect(&replies_endpoint).map_err(transport)?;
            let (jobs, shared) = (jobs.clone(), shared.clone());
            let thread = std::thread::Builder::new()
                .name(format!("pycom-worker-{i}"))
                .spawn(move || worker(&jobs, &shared, &push))
                .map_err(|e| Error::Data(format!("cannot start a worker thread: {e}")))?;
            workers.push(thread);
        }

        let stop = Arc::new(AtomicBool::new(false));
        let loop_state = RouterLoop {
            socket,
            replies,
            jobs: Some(job_tx),
            workers: self.workers,
            max_message_bytes: self.limits.max_total_bytes.saturating_add(1024 * 1024),
            stop: stop.clone(),
            shared,
        };
        let router_thread = std::thread::Builder::new()
            .name("pycom-router".into())
            .spawn(move || loop_state.run())
            .map_err(|e| Error::Data(format!("cannot start the service thread: {e}")))?;
        tracing::info!(service = %self.service, %endpoint, "serving");
        Ok(RunningService {
            service: self.service,
            endpoint,
            stop,
            router_thread: Some(router_thread),
            workers,
            registrar,
        })
    }
}

/// A service being served. Stops (and unregisters) when dropped.
pub struct RunningService {
    service: String,
    endpoint: String,
    stop: Arc<AtomicBool>,
    router_thread: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    registrar: Option<registrar::Registrar>,
}

impl RunningService {
    /// The address clients reach it at (the real port of an ephemeral bind).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The service path it is registered under.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Unregister, finish the requests in hand, stop.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // First leave the registry, so no new client is sent here.
        if let Some(registrar) = self.registrar.take() {
            registrar.stop();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.router_thread.take() {
            let _ = t.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(jobs: &Mutex<Receiver<Vec<zmq::Message>>>, shared: &Shared, push: &zmq::Socket) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        let Ok(mut frames) = job else { break };
        // The first frame carries the envelope length (see RouterLoop::accept).
        let envelope_len = frames
            .first()
            .map_or(0, |f| f.first().copied().unwrap_or(0) as usize);
        let parts = frames.split_off((envelope_len + 1).min(frames.len()));
        let reply = dispatch::handle(shared, parts);
        let out = frames
            .iter()
            .skip(1)
            .map(|m| &m[..])
            .chain(reply.iter().map(Vec::as_slice));
        if let Err(e) = push.send_multipart(out, 0) {
            tracing::error!("cannot hand a reply to the service thread: {e}");
        }
    }
    let _ = push.send(WORKER_DONE, 0);
}

struct RouterLoop {
    socket: zmq::Socket,
    replies: zmq::Socket,
    jobs: Option<SyncSender<Vec<zmq::Message>>>,
    workers: usize,
    max_message_bytes: usize,
    stop: Arc<AtomicBool>,
    /// For the periodic sweep of idle sessions.
    shared: Arc<Shared>,
}

impl RouterLoop {
    fn run(mut self) {
        let mut done = 0;
        let mut last_sweep = std::time::Instant::now();
        while done < self.workers {
            if self.jobs.is_some() && self.stop.load(Ordering::SeqCst) {
                // Workers finish what they hold, then say DONE.
                self.jobs = None;
            }
            let serving = self.jobs.is_some();
            let (requests, replies) = {
                let mut items = [
                    self.replies.as_poll_item(zmq::POLLIN),
                    self.socket.as_poll_item(zmq::POLLIN),
                ];
                let n = if serving { 2 } else { 1 };
                if zmq::poll(&mut items[..n], 100).is_err() {
                    continue;
                }
                (serving && items[1].is_readable(), items[0].is_readable())
            };
            if replies {
                done += self.forward_replies();
            }
            if requests {
                self.accept();
            }
            if last_sweep.elapsed() > Duration::from_secs(1) {
                self.shared.sessions.sweep(std::time::Instant::now());
                if let Some(access) = &self.shared.access {
                    access.sweep(std::time::Instant::now());
                }
                last_sweep = std::time::Instant::now();
            }
        }
        // Anything still queued for the ROUTER leaves within its linger.
    }

    fn accept(&mut self) {
        for _ in 0..256 {
            let incoming = match router::recv(&self.socket, self.max_message_bytes) {
                Ok(Some(incoming)) => incoming,
                Ok(None) => return,
                Err(e) => {
                    tracing::error!("receive failed: {e}");
                    return;
                }
            };
            if let Some(size) = incoming.oversize {
                let f = Fault::bad_request(format!(
                    "request of {size} bytes exceeds this service's limit of {} bytes",
                    self.max_message_bytes
                ));
                router::send(
                    &self.socket,
                    &incoming.envelope,
                    proto::STATUS_OK,
                    &proto::encode_fault(&f, None),
                );
                continue;
            }
            let Some(jobs) = &self.jobs else { return };
            // [envelope length, envelope..., parts...]: one Vec, no re-allocation per frame.
            let mut frames = Vec::with_capacity(1 + incoming.envelope.len() + incoming.parts.len());
            frames.push(zmq::Message::from(&[incoming.envelope.len().min(255) as u8][..]));
            let envelope_len = incoming.envelope.len();
            frames.extend(incoming.envelope);
            frames.extend(incoming.parts);
            match jobs.try_send(frames) {
                Ok(()) => {}
                Err(TrySendError::Full(frames)) => {
                    let f = Fault::unavailable(
                        "the service is busy: every worker is occupied and the queue is full",
                    );
                    let envelope = &frames[1..1 + envelope_len];
                    router::send(
                        &self.socket,
                        envelope,
                        proto::STATUS_OK,
                        &proto::encode_fault(&f, None),
                    );
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// Forward replies to the ROUTER; returns how many workers said DONE.
    fn forward_replies(&mut self) -> usize {
        let mut done = 0;
        loop {
            match self.replies.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) if frames.len() == 1 && frames[0] == WORKER_DONE => done += 1,
                Ok(frames) => {
                    if let Err(e) = self.socket.send_multipart(frames, zmq::DONTWAIT) {
                        tracing::debug!("reply dropped: {e}");
                    }
                }
                Err(_) => return done,
            }
        }
    }
}
