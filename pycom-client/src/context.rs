//! The entry point for callers: which nameservers to ask, and components
//! located through them.

use crate::auth::{self, Caller, Login, TokenSlot, Validation};
use crate::component::Component;
use crate::connection::{Connection, SERVER_KEY_ENV};
use crate::error::{Error, Result};
use crate::locate::Locator;
use crate::nameserver::{NameserverClient, ServiceInfo, DEFAULT_ENDPOINT};
use crate::proxy::Invoker;
use crate::pubsub::{Publisher, Subscriber, SubscriberBuilder, Watcher};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Nameserver endpoints and defaults, shared by everything made from it.
///
/// Cheap to clone and safe to share across threads: each thread's calls
/// use their own sockets (a small pool of nameserver connections, and one
/// socket per [`Component`]).
///
/// It also holds the caller's token, if any ([`login`](Context::login),
/// [`set_token`](Context::set_token), `PYCOM_TOKEN` in
/// [`from_env`](Context::from_env)): every call made through the context
/// and what it made (nameserver calls, components, publishers' and
/// watchers' look-ups, its services' registrations) carries the token
/// current at the time of the call. Clones share it.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    zmq: zmq::Context,
    nameservers: Vec<String>,
    timeout_ms: AtomicU64,
    /// The nameserver that answered last: asked first next time.
    preferred: AtomicUsize,
    /// The cluster's leader among the nameservers, where writes go first:
    /// its index + 1; [`LEADER_UNKNOWN`] or [`NO_CLUSTER`].
    leader: AtomicUsize,
    /// Idle nameserver connections, by endpoint index.
    pool: Mutex<Vec<(usize, Connection)>>,
    /// The caller's token, sent with every call.
    token: TokenSlot,
    /// The nameservers' CURVE public key (Z85), checked: their connections
    /// are encrypted.
    server_key: Mutex<Option<String>>,
}

impl Context {
    /// Nameservers as `tcp://host:port`, several separated by commas (tried
    /// in order when one does not answer).
    pub fn new(nameservers: &str) -> Result<Context> {
        Context::with_nameservers(nameservers.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// `PYCOM_NAMESERVER` (comma-separated), else `tcp://127.0.0.1:2012`;
    /// with the token in `PYCOM_TOKEN`, if set, carried by every call, and
    /// the nameserver's CURVE public key in `PYCOM_SERVER_KEY`, if set
    /// ([`with_server_key`](Context::with_server_key)).
    pub fn from_env() -> Result<Context> {
        let mut ctx = match std::env::var("PYCOM_NAMESERVER") {
            Ok(spec) if !spec.trim().is_empty() => Context::new(&spec)?,
            _ => Context::new(DEFAULT_ENDPOINT)?,
        };
        if let Ok(token) = std::env::var(TOKEN_ENV) {
            ctx.set_token(token.trim());
        }
        match std::env::var(SERVER_KEY_ENV) {
            Ok(key) if !key.trim().is_empty() => ctx = ctx.with_server_key(&key)?,
            Ok(_) => {}
            Err(std::env::VarError::NotPresent) => {}
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(Error::Data(format!("{SERVER_KEY_ENV} is not valid UTF-8")));
            }
        }
        Ok(ctx)
    }

    /// A context for these nameserver endpoints, in order of preference.
    pub fn with_nameservers<S: Into<String>>(nameservers: impl IntoIterator<Item = S>) -> Result<Context> {
        let nameservers: Vec<String> = nameservers.into_iter().map(Into::into).collect();
        if nameservers.is_empty() {
            return Err(Error::Data("no nameserver endpoint given".into()));
        }
        if let Some(bad) = nameservers.iter().find(|e| !e.contains("://")) {
            return Err(Error::Endpoint {
                endpoint: bad.clone(),
                source: zmq::Error::EINVAL,
            });
        }
        Ok(Context {
            inner: Arc::new(Inner {
                zmq: zmq::Context::new(),
                nameservers,
                timeout_ms: AtomicU64::new(crate::DEFAULT_TIMEOUT.as_millis() as u64),
                preferred: AtomicUsize::new(0),
                leader: AtomicUsize::new(LEADER_UNKNOWN),
                pool: Mutex::new(Vec::new()),
                token: TokenSlot::default(),
                server_key: Mutex::new(None),
            }),
        })
    }

    /// This context, talking to its nameservers (pycomd with `[security]
    /// curve = true`) encrypted with CURVE: `key` is their public key, 40 Z85
    /// characters (pycomd logs it at start and keeps it in
    /// `<data_dir>/curve/server.public`). Only the nameserver endpoints'
    /// connections are encrypted, each with a client key pair of its own;
    /// services and the pub-sub forwarder are called in plaintext. Clones
    /// share it.
    ///
    /// [`Error::Data`] when the key is malformed, or when this build of
    /// libzmq has no CURVE (the default, vendored one: see the README). A
    /// wrong key is no error: nameserver calls time out.
    pub fn with_server_key(self, key: &str) -> Result<Context> {
        let key = crate::connection::check_server_key(key)?;
        *self.inner.server_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        // Idle connections made without it (or with another) go.
        self.inner.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(self)
    }

    /// The nameservers' CURVE public key, when their connections are encrypted.
    pub fn server_key(&self) -> Option<String> {
        self.inner
            .server_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The ZeroMQ context every socket made from this context shares.
    pub fn zmq(&self) -> &zmq::Context {
        &self.inner.zmq
    }

    /// The nameserver endpoints, in the order they are tried.
    pub fn nameservers(&self) -> &[String] {
        &self.inner.nameservers
    }

    /// The timeout of calls made from now on (components copy it when made).
    pub fn set_default_timeout(&self, timeout: Duration) {
        self.inner
            .timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// The timeout given to new components and nameserver calls.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.timeout_ms.load(Ordering::Relaxed))
    }

    /// The nameserver, with failover between the configured endpoints.
    pub fn nameserver(&self) -> NameserverClient<NameserverHandle> {
        NameserverClient::new(NameserverHandle { ctx: self.clone() })
    }

    /// A component for any live provider of `interface`.
    pub fn locate(&self, interface: &str) -> Result<Component> {
        let info = self.nameserver().locate(interface, None)?;
        self.component(interface, None, &info.address, true)
    }

    /// A component for `interface` provided by the service `service`.
    pub fn locate_service(&self, interface: &str, service: &str) -> Result<Component> {
        let info = self.nameserver().locate(interface, Some(service))?;
        self.component(interface, Some(service), &info.address, true)
    }

    /// The workflow pycomd hosts under `service` (its service path, e.g.
    /// `/demo/workflow/1`): each task is a method, and a call answers when
    /// the run ends. Give it a timeout that fits the task
    /// ([`Component::set_timeout`]).
    pub fn workflow(&self, service: &str) -> Result<Component> {
        self.locate_service(crate::workflow::INTERFACE, service)
    }

    /// `org.pycom.workflow.admin` of the nameserver(s): runs.
    pub fn workflow_admin(&self) -> crate::workflow::admin::Client<NameserverHandle> {
        crate::workflow::admin::Client(NameserverHandle { ctx: self.clone() })
    }

    /// A component for `interface` at a known address (never re-located).
    pub fn connect(&self, address: &str, interface: &str) -> Result<Component> {
        self.component(interface, None, address, false)
    }

    /// A publisher on `topic` through pycomd's forwarder, ready when
    /// returned (see [`Publisher::builder`] for its options).
    pub fn publisher(&self, topic: &str) -> Result<Publisher> {
        Publisher::builder(self, topic).connect()
    }

    /// A subscriber to `pattern` (`a.b.c`, `a.*.c`, `a.>`) through pycomd's
    /// forwarder, ready when returned, starting with new messages.
    pub fn subscribe(&self, pattern: &str) -> Result<Subscriber> {
        Subscriber::builder(self).pattern(pattern).connect()
    }

    /// Options for a subscriber: patterns, where it starts, gaps, queue.
    pub fn subscriber(&self) -> SubscriberBuilder {
        Subscriber::builder(self)
    }

    /// A live view of the whole registry ([`Watcher`]).
    pub fn watch(&self) -> Result<Watcher> {
        Watcher::new(self, |_| true)
    }

    /// A live view of the registry records `filter` takes.
    pub fn watch_where(&self, filter: impl Fn(&ServiceInfo) -> bool + Send + 'static) -> Result<Watcher> {
        Watcher::new(self, filter)
    }

    /// A plain connection to `endpoint` that carries this context's token
    /// (and has its default timeout), for calls outside a [`Component`];
    /// encrypted when `endpoint` is one of the nameservers and the context
    /// has their [`server_key`](Context::server_key).
    pub fn connection(&self, endpoint: &str) -> Result<Connection> {
        let key = self
            .inner
            .nameservers
            .iter()
            .any(|ns| ns == endpoint)
            .then(|| self.server_key())
            .flatten();
        let mut conn = Connection::open_with(&self.inner.zmq, endpoint, key)?;
        conn.set_timeout(self.default_timeout());
        conn.share_token(self.inner.token.clone());
        Ok(conn)
    }

    /// This context, carrying `token` from now on (as [`set_token`](Context::set_token)).
    pub fn with_token(self, token: impl Into<String>) -> Context {
        self.set_token(token);
        self
    }

    /// Carry `token` with every call from now on (an empty one: none).
    /// Components and services made from this context, and its clones,
    /// carry it too.
    pub fn set_token(&self, token: impl Into<String>) {
        self.inner.token.set(Some(&token.into()));
    }

    /// Carry no token from now on (without telling the authenticator: see
    /// [`logout`](Context::logout)).
    pub fn clear_token(&self) {
        self.inner.token.set(None);
    }

    /// The token calls carry, if any.
    pub fn token(&self) -> Option<String> {
        self.inner.token.get().map(|t| t.to_string())
    }

    /// Typed calls to pycomd's authenticator (`org.pycom.authenticator`,
    /// served on the nameserver endpoints, with failover).
    pub fn authenticator(&self) -> auth::api::Client<NameserverHandle> {
        auth::api::Client(NameserverHandle { ctx: self.clone() })
    }

    /// Log in to pycomd as `user`: exchange the password for a token,
    /// which every call through this context carries from then on. The
    /// [`Login`] says when it expires and who pycomd says the caller is
    /// (its roles). A wrong user or password is [`Error::AccessDenied`];
    /// pycomd with access control off answers [`Error::ServiceNotFound`].
    pub fn login(&self, user: &str, password: &str) -> Result<Login> {
        auth::check_len("the user name", user, auth::MAX_USER_BYTES).map_err(Error::Data)?;
        auth::check_len("the password", password, auth::MAX_PASSWORD_BYTES).map_err(Error::Data)?;
        let mut authenticator = self.authenticator();
        let issued = authenticator.authenticate(user.into(), password.into())?;
        let validation = authenticator.validate(issued.token.clone(), None, None)?;
        self.set_token(issued.token.clone());
        Ok(Login {
            token: issued.token,
            expires_ms: issued.expires_ms,
            caller: validation.caller,
        })
    }

    /// End the token's life at pycomd and carry none from now on. Without a
    /// token, nothing to do. The token is dropped here even when pycomd
    /// cannot be told (the error says so).
    pub fn logout(&self) -> Result<()> {
        let Some(token) = self.inner.token.take() else {
            return Ok(());
        };
        self.authenticator().logout(token.to_string())?;
        Ok(())
    }

    /// Who pycomd says the caller is (its name and roles), from the token
    /// this context carries; [`Error::AccessDenied`] without one, or with
    /// one that is unknown or expired.
    pub fn whoami(&self) -> Result<Caller> {
        let token = self.inner.token.get().ok_or_else(|| {
            Error::AccessDenied(format!(
                "not logged in: this context carries no token (log in, or set {TOKEN_ENV})"
            ))
        })?;
        Ok(self.validate(&token, None)?.caller)
    }

    /// Ask pycomd whose `token` is, and, given `call` (interface, method),
    /// whether its `call` grants allow that call. What guarded services do
    /// (cached) for each caller.
    pub fn validate(&self, token: &str, call: Option<(&str, &str)>) -> Result<Validation> {
        let (interface, method) = call.unzip();
        self.authenticator()
            .validate(token.into(), interface.map(Into::into), method.map(Into::into))
    }

    /// pycomd's access policy as it applies to `user` (or to the caller):
    /// its users file, roles, grants, what the user may do. Only for an
    /// admin, or the user itself.
    pub fn check(&self, user: Option<&str>) -> Result<Value> {
        self.authenticator().check(user.map(Into::into))
    }

    /// A component at `address`; a relocatable one asks this context's
    /// nameservers where its service went when a call fails in transport.
    fn component(
        &self,
        interface: &str,
        service: Option<&str>,
        address: &str,
        relocatable: bool,
    ) -> Result<Component> {
        let locator = relocatable.then(|| Arc::new(self.clone()) as Arc<dyn Locator>);
        Component::new(
            self.zmq(),
            self.default_timeout(),
            locator,
            self.inner.token.clone(),
            interface,
            service,
            address,
        )
    }

    fn take_connection(&self, index: usize) -> Result<Connection> {
        let pooled = {
            let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.iter()
                .position(|(i, _)| *i == index)
                .map(|at| pool.swap_remove(at).1)
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            // The one place nameserver connections are made.
            None => {
                Connection::open_with(&self.inner.zmq, &self.inner.nameservers[index], self.server_key())?
            }
        };
        conn.set_timeout(self.default_timeout());
        conn.share_token(self.inner.token.clone());
        Ok(conn)
    }

    fn return_connection(&self, index: usize, conn: Connection) {
        // One opened before the server key was given is closed.
        if conn.server_key().map(str::to_string) != self.server_key() {
            return;
        }
        let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
        // Enough idle sockets for a few threads; the rest are closed.
        if pool.len() < 16 {
            pool.push((index, conn));
        }
    }
}

impl Locator for Context {
    /// Asks the nameservers, with failover (as [`Context::nameserver`]).
    fn provider(&self, interface: &str, service: Option<&str>) -> Result<ServiceInfo> {
        self.nameserver().locate(interface, service)
    }
}

/// The environment variable [`Context::from_env`] takes a token from.
pub const TOKEN_ENV: &str = "PYCOM_TOKEN";

/// A code 7 whose cluster extension says the write was not applied.
fn not_applied(response: &crate::proto::Response) -> bool {
    matches!(&response.result, Err(fault) if fault.code == crate::Code::Unavailable)
        && response
            .extensions
            .get("org.pycom.cluster")
            .and_then(|c| c.get("outcome"))
            .and_then(Value::as_str)
            == Some("not_applied")
}

/// No leader known yet (asked with the first write).
const LEADER_UNKNOWN: usize = 0;
/// The nameservers are no cluster: nothing to ask.
const NO_CLUSTER: usize = usize::MAX;

/// Writes: what a cluster's leader takes (a follower relays them).
fn is_write(interface: &str, method: &str) -> bool {
    match interface {
        crate::nameserver::INTERFACE => matches!(method, "register" | "unregister" | "renew"),
        crate::auth::INTERFACE => matches!(method, "authenticate" | "logout"),
        _ => false,
    }
}

/// The leader's request endpoint a cluster reply names, if any: in a
/// write's code 7 (`extensions["org.pycom.cluster"].leader`) or in
/// `org.pycom.cluster status` (`leader.client`).
fn named_leader(response: &crate::proto::Response) -> Option<&str> {
    match &response.result {
        Ok(status) => status.get("leader")?.get("client")?.as_str(),
        Err(_) => response
            .extensions
            .get("org.pycom.cluster")?
            .get("leader")?
            .as_str(),
    }
}

impl Context {
    /// Remember `endpoint` as the leader if it is one of the nameservers.
    fn note_leader(&self, endpoint: &str) {
        if let Some(i) = self.inner.nameservers.iter().position(|e| e == endpoint) {
            self.inner.leader.store(i + 1, Ordering::Relaxed);
        }
    }

    /// Where a write goes first: the leader when known. With several
    /// nameservers and none known yet, the cluster is asked once (one
    /// `status`); single nodes answer that they are none, and are not
    /// asked again.
    fn writer(&self, fallback: usize) -> usize {
        let inner = &self.inner;
        let n = inner.nameservers.len();
        match inner.leader.load(Ordering::Relaxed) {
            NO_CLUSTER => return fallback,
            LEADER_UNKNOWN if n > 1 => {}
            LEADER_UNKNOWN => return fallback,
            known => return (known - 1) % n,
        }
        let Ok(mut conn) = self.take_connection(fallback) else {
            return fallback;
        };
        let status = crate::proto::Request::new("org.pycom.cluster", "status", Value::Null);
        match conn.call(&status, &[]) {
            Ok(reply) => {
                match &reply.response.result {
                    Ok(_) => {
                        if let Some(leader) = named_leader(&reply.response) {
                            self.note_leader(leader);
                        }
                    }
                    Err(fault) if fault.code == crate::Code::ServiceNotFound => {
                        inner.leader.store(NO_CLUSTER, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
                self.return_connection(fallback, conn);
            }
            Err(_) => return fallback,
        }
        match inner.leader.load(Ordering::Relaxed) {
            NO_CLUSTER | LEADER_UNKNOWN => fallback,
            known => (known - 1) % n,
        }
    }
}

/// Calls to whichever configured nameserver answers; writes to a
/// cluster's leader first, when it is known.
pub struct NameserverHandle {
    ctx: Context,
}

impl Invoker for NameserverHandle {
    fn invoke_value(&mut self, interface: &str, method: &str, args: Value) -> Result<Value> {
        self.invoke_response(interface, method, args)?
            .result
            .map_err(Error::from)
    }

    fn invoke_response(
        &mut self,
        interface: &str,
        method: &str,
        args: Value,
    ) -> Result<crate::proto::Response> {
        let inner = &self.ctx.inner;
        let n = inner.nameservers.len();
        let preferred = inner.preferred.load(Ordering::Relaxed) % n;
        let first = match is_write(interface, method) {
            true => self.ctx.writer(preferred),
            false => preferred,
        };
        let mut last_error = None;
        for k in 0..n {
            let index = (first + k) % n;
            let mut conn = self.ctx.take_connection(index)?;
            let request = crate::proto::Request::new(interface, method, args.clone());
            match conn.call(&request, &[]).map(|reply| reply.response) {
                Err(e) if e.is_unreachable() => {
                    tracing::debug!(nameserver = %inner.nameservers[index], "nameserver unreachable: {e}");
                    last_error = Some(e);
                }
                // A cluster member that could not take the write (no
                // leader it can reach): it certainly did not happen, so
                // another member may be asked. An `unknown` outcome is the
                // caller's to resolve: it may still commit.
                Ok(response) if k + 1 < n && not_applied(&response) => {
                    tracing::debug!(nameserver = %inner.nameservers[index], "write not applied; trying the next nameserver");
                    match named_leader(&response) {
                        Some(leader) => self.ctx.note_leader(leader),
                        None => inner.leader.store(LEADER_UNKNOWN, Ordering::Relaxed),
                    }
                    self.ctx.return_connection(index, conn);
                }
                outcome => {
                    inner.preferred.store(index, Ordering::Relaxed);
                    self.ctx.return_connection(index, conn);
                    return outcome;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Data("no nameserver endpoint given".into())))
    }
}

// A Context is shared across threads; a Component moves between them.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    const fn movable<T: Send>() {}
    shared::<Context>();
    movable::<Component>();
    movable::<Publisher>();
    movable::<Subscriber>();
    movable::<Watcher>();
};
