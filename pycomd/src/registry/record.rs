//! One registry record: what is stored on disk and what locate returns.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub service: String,
    /// ZeroMQ endpoint of the service; the owner of the name.
    pub address: String,
    /// Sorted, without duplicates.
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Lease length; `None` means the address is probed instead.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
}

impl Record {
    /// The record as `locate` and `list_services` return it.
    pub fn to_json(&self) -> Value {
        json!({
            "service": self.service,
            "address": self.address,
            "interfaces": self.interfaces,
            "metadata": self.metadata,
        })
    }
}
