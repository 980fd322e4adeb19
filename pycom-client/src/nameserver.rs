//! Typed calls to `org.pycom.nameserver`, declared once with
//! [`interface!`](crate::interface) (module [`api`]) and wrapped in
//! [`NameserverClient`] for the shapes callers want.

use crate::connection::Connection;
use crate::error::Result;
use crate::proxy::Invoker;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The nameserver's interface name.
pub const INTERFACE: &str = "org.pycom.nameserver";
/// The service path under which pycomd lists itself.
pub const SERVICE: &str = "/org/pycom/nameserver";
/// The historical PyCOM nameserver endpoint, pycomd's default.
pub const DEFAULT_ENDPOINT: &str = "tcp://127.0.0.1:2012";

/// One registry record, as `locate` and `list_services` return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Service path, e.g. `/com/foo/example`.
    pub service: String,
    /// ZeroMQ endpoint of the service.
    pub address: String,
    #[serde(default)]
    /// Interfaces the service provides, sorted.
    pub interfaces: Vec<String>,
    #[serde(default)]
    /// Tags given at registration (version, zone...).
    pub metadata: BTreeMap<String, String>,
    /// How pycomd keeps the record alive, when asked for (`long`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<RecordState>,
}

/// How pycomd keeps a record alive (`list_services` with `long`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordState {
    /// The registry revision of the record's last change.
    pub revision: u64,
    /// `lease` (the owner renews) or `probes` (pycomd calls it).
    pub kept_by: String,
    /// The lease's length, for leased records.
    pub ttl_ms: Option<u64>,
    /// What is left of the lease, for leased records.
    pub lease_left_ms: Option<u64>,
    /// For probed records: probes of its address unanswered in a row now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_failures: Option<u32>,
}

// The one list of the nameserver's methods: the typed client below,
// pycomd's dispatch and its `introspect` answer all come from it.
crate::interface! {
    /// The pycom nameserver: services register here, clients locate them.
    pub mod api = "org.pycom.nameserver" {
        /// Ping; returns version, uptime_s, services, interfaces, the revision, and request and store counters.
        fn stat() -> Value;
        /// Register a service at an address: 'interface' adds one, 'interfaces' replaces the set.
        /// With ttl_ms the record is leased, else probed. Acknowledged once durable on disk.
        fn register(service: String, address: String;
                    interface: String, interfaces: Vec<String>, ttl_ms: u64,
                    metadata: BTreeMap<String, String>) -> Value;
        /// Extend a lease. Code 3 when the record is unknown or expired.
        fn renew(service: String, address: String) -> Value;
        /// Remove a record; only its owning address may.
        fn unregister(service: String, address: String) -> Value;
        /// One live provider of an interface (load spread round-robin), or all with as_list.
        fn locate(interface: String; service: String, as_list: bool) -> Value => [address, service, interfaces];
        /// Records whose service and one interface match start-anchored regular expressions,
        /// in service order. With limit or after, one page: extensions["org.pycom.nameserver"].next
        /// is the after of the next page (null at the end). A whole list is bounded by max_reply_bytes.
        fn list_services(; interface: String, service: String, limit: u64, after: String, long: bool) -> Vec<ServiceInfo>;
        /// Registry changes after revision since, oldest first, at most limit of them:
        /// {"revision": n, "events": [event bodies as published on org.pycom.nameserver.events.*]},
        /// or {"revision": n, "compacted": true} when since is older than the history kept (list again).
        fn changes(since: u64; limit: u64) -> Value;
    }
}

/// What `register` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// Service path, e.g. `/com/foo/example`.
    pub service: String,
    /// ZeroMQ endpoint clients should call.
    pub address: String,
    /// The whole set of interfaces (replaces what was registered).
    pub interfaces: Vec<String>,
    /// Lease length; `None` asks pycomd to probe the address instead.
    pub ttl_ms: Option<u64>,
    /// String tags returned by locate and list_services.
    pub metadata: BTreeMap<String, String>,
}

/// The nameserver methods with the result shapes callers want, over any
/// [`Invoker`]: a [`Connection`], or the failover handle from
/// [`Context::nameserver`](crate::Context::nameserver).
pub struct NameserverClient<I: Invoker = Connection> {
    api: api::Client<I>,
}

impl<I: Invoker> NameserverClient<I> {
    /// A client calling through `invoker`.
    pub fn new(invoker: I) -> NameserverClient<I> {
        NameserverClient {
            api: api::Client(invoker),
        }
    }

    /// The underlying invoker (a [`Connection`], say, to change its timeout).
    pub fn invoker(&mut self) -> &mut I {
        &mut self.api.0
    }

    /// Ping; pycomd's version, uptime and counters.
    pub fn stat(&mut self) -> Result<Value> {
        self.api.stat()
    }

    /// Register; returns the granted lease in ms (`None` for probed records).
    pub fn register(&mut self, reg: &Registration) -> Result<Option<u64>> {
        let metadata = (!reg.metadata.is_empty()).then(|| reg.metadata.clone());
        let result = self.api.register(
            reg.service.clone(),
            reg.address.clone(),
            None,
            Some(reg.interfaces.clone()),
            reg.ttl_ms,
            metadata,
        )?;
        Ok(result.get("lease_ms").and_then(Value::as_u64))
    }

    /// Extend the lease of `service` (owned by `address`).
    pub fn renew(&mut self, service: &str, address: &str) -> Result<Value> {
        self.api.renew(service.into(), address.into())
    }

    /// Remove `service`'s record (owned by `address`).
    pub fn unregister(&mut self, service: &str, address: &str) -> Result<Value> {
        self.api.unregister(service.into(), address.into())
    }

    /// One live provider of `interface` (optionally under `service`).
    pub fn locate(&mut self, interface: &str, service: Option<&str>) -> Result<ServiceInfo> {
        let v = self.api.locate(interface.into(), service.map(Into::into), None)?;
        crate::proxy::from_value("locate", v)
    }

    /// Every live provider of `interface` (optionally under `service`).
    pub fn locate_all(&mut self, interface: &str, service: Option<&str>) -> Result<Vec<ServiceInfo>> {
        let v = self
            .api
            .locate(interface.into(), service.map(Into::into), Some(true))?;
        crate::proxy::from_value("locate", v)
    }

    /// The registry's changes after revision `since` (at most `limit`):
    /// `{"revision", "events"}`, or `{"revision", "compacted": true}` when
    /// pycomd no longer keeps that far back. [`Watcher`](crate::pubsub::Watcher)
    /// reads it.
    pub fn changes(&mut self, since: u64, limit: Option<u64>) -> Result<Value> {
        self.api.changes(since, limit)
    }

    /// Records whose service and one of whose interfaces match the
    /// (start-anchored) regular expressions, in one reply (bounded by
    /// pycomd's `max_reply_bytes`; see [`list_all`](NameserverClient::list_all)).
    pub fn list_services(
        &mut self,
        interface: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<ServiceInfo>> {
        self.api.list_services(
            interface.map(Into::into),
            service.map(Into::into),
            None,
            None,
            None,
        )
    }
}

/// One page of `list_services`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The records of this page, in service order.
    pub services: Vec<ServiceInfo>,
    /// Where the next page starts (its `after`); `None` at the end.
    pub next: Option<String>,
    /// The registry revision the page was read at.
    pub revision: Option<u64>,
}

impl<I: Invoker> NameserverClient<I> {
    /// Every matching record, page by page (pages of 10,000), however many;
    /// with `long`, each with its [`RecordState`].
    pub fn list_all(
        &mut self,
        interface: Option<&str>,
        service: Option<&str>,
        long: bool,
    ) -> Result<Vec<ServiceInfo>> {
        let (mut all, mut after) = (Vec::new(), None::<String>);
        loop {
            let page = self.page(interface, service, 10_000, after.as_deref(), long)?;
            all.extend(page.services);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// One page of [`list_services`](NameserverClient::list_services): at
    /// most `limit` records after the service `after`.
    pub fn list_page(
        &mut self,
        interface: Option<&str>,
        service: Option<&str>,
        limit: u64,
        after: Option<&str>,
    ) -> Result<Page> {
        self.page(interface, service, limit, after, false)
    }

    fn page(
        &mut self,
        interface: Option<&str>,
        service: Option<&str>,
        limit: u64,
        after: Option<&str>,
        long: bool,
    ) -> Result<Page> {
        let mut args = serde_json::Map::new();
        args.insert("limit".into(), limit.into());
        if long {
            args.insert("long".into(), true.into());
        }
        for (name, value) in [("interface", interface), ("service", service), ("after", after)] {
            if let Some(value) = value {
                args.insert(name.into(), value.into());
            }
        }
        let response = self
            .api
            .0
            .invoke_response(INTERFACE, "list_services", Value::Object(args))?;
        let position = response.extensions.get(INTERFACE).cloned().unwrap_or_default();
        let services = crate::proxy::from_value("list_services", response.result?)?;
        Ok(Page {
            services,
            next: position.get("next").and_then(Value::as_str).map(String::from),
            revision: position.get("revision").and_then(Value::as_u64),
        })
    }
}
