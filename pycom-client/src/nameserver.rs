//! Typed calls to `org.pycom.nameserver`.

use crate::connection::Connection;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
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
    pub service: String,
    pub address: String,
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What `register` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    pub service: String,
    pub address: String,
    /// The whole set of interfaces (replaces what was registered).
    pub interfaces: Vec<String>,
    /// Lease length; `None` asks pycomd to probe the address instead.
    pub ttl_ms: Option<u64>,
    pub metadata: BTreeMap<String, String>,
}

/// A connection to a nameserver, with one method per nameserver method.
pub struct NameserverClient {
    conn: Connection,
}

impl NameserverClient {
    pub fn new(conn: Connection) -> NameserverClient {
        NameserverClient { conn }
    }

    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    pub fn stat(&mut self) -> Result<Value> {
        self.conn.invoke(INTERFACE, "stat", Value::Null)
    }

    /// Register; returns the granted lease in ms (`None` for probed records).
    pub fn register(&mut self, reg: &Registration) -> Result<Option<u64>> {
        let mut args = Map::new();
        args.insert("service".into(), json!(reg.service));
        args.insert("address".into(), json!(reg.address));
        args.insert("interfaces".into(), json!(reg.interfaces));
        if let Some(ttl) = reg.ttl_ms {
            args.insert("ttl_ms".into(), json!(ttl));
        }
        if !reg.metadata.is_empty() {
            args.insert("metadata".into(), json!(reg.metadata));
        }
        let result = self.conn.invoke(INTERFACE, "register", Value::Object(args))?;
        Ok(result.get("lease_ms").and_then(Value::as_u64))
    }

    pub fn renew(&mut self, service: &str, address: &str) -> Result<Value> {
        self.conn.invoke(
            INTERFACE,
            "renew",
            json!({"service": service, "address": address}),
        )
    }

    pub fn unregister(&mut self, service: &str, address: &str) -> Result<Value> {
        self.conn.invoke(
            INTERFACE,
            "unregister",
            json!({"service": service, "address": address}),
        )
    }

    /// One live provider of `interface` (optionally under `service`).
    pub fn locate(&mut self, interface: &str, service: Option<&str>) -> Result<ServiceInfo> {
        let v = self.conn.invoke(
            INTERFACE,
            "locate",
            json!({"interface": interface, "service": service}),
        )?;
        self.parse(v)
    }

    /// Every live provider of `interface` (optionally under `service`).
    pub fn locate_all(&mut self, interface: &str, service: Option<&str>) -> Result<Vec<ServiceInfo>> {
        let v = self.conn.invoke(
            INTERFACE,
            "locate",
            json!({"interface": interface, "service": service, "as_list": true}),
        )?;
        self.parse(v)
    }

    /// Records whose service and one of whose interfaces match the
    /// (start-anchored) regular expressions.
    pub fn list_services(
        &mut self,
        interface: Option<&str>,
        service: Option<&str>,
    ) -> Result<Vec<ServiceInfo>> {
        let v = self.conn.invoke(
            INTERFACE,
            "list_services",
            json!({"interface": interface, "service": service}),
        )?;
        self.parse(v)
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, v: Value) -> Result<T> {
        serde_json::from_value(v).map_err(|e| crate::Error::Malformed {
            endpoint: self.conn.endpoint().to_string(),
            message: format!("unexpected result shape: {e}"),
        })
    }
}
