//! The entry point for callers: which nameservers to ask, and components
//! located through them.

use crate::component::Component;
use crate::connection::Connection;
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
    /// Idle nameserver connections, by endpoint index.
    pool: Mutex<Vec<(usize, Connection)>>,
}

impl Context {
    /// Nameservers as `tcp://host:port`, several separated by commas (tried
    /// in order when one does not answer).
    pub fn new(nameservers: &str) -> Result<Context> {
        Context::with_nameservers(nameservers.split(',').map(str::trim).filter(|s| !s.is_empty()))
    }

    /// `PYCOM_NAMESERVER` (comma-separated), else `tcp://127.0.0.1:2012`.
    pub fn from_env() -> Result<Context> {
        match std::env::var("PYCOM_NAMESERVER") {
            Ok(spec) if !spec.trim().is_empty() => Context::new(&spec),
            _ => Context::new(DEFAULT_ENDPOINT),
        }
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
                pool: Mutex::new(Vec::new()),
            }),
        })
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
            None => Connection::open(&self.inner.zmq, &self.inner.nameservers[index])?,
        };
        conn.set_timeout(self.default_timeout());
        Ok(conn)
    }

    fn return_connection(&self, index: usize, conn: Connection) {
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

/// Calls to whichever configured nameserver answers.
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
        let first = inner.preferred.load(Ordering::Relaxed) % n;
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
