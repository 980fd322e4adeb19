//! One registry record: what the state holds and what locate returns.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Shared with the state's key, the index and the lease table: a
    /// million records hold one copy of each name.
    pub service: Arc<str>,
    /// ZeroMQ endpoint of the service; the owner of the name.
    pub address: String,
    /// Sorted, without duplicates.
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Lease length; `None` means the address is probed instead.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// The registry revision of this record's last change: which version of
    /// the name this is, so that a late expiry or probe verdict about an
    /// older version cannot remove a newer one.
    #[serde(default)]
    pub revision: u64,
    /// The principal that registered it (access control on, with a token):
    /// it owns the name from any address. `None`: the address owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Arc<str>>,
}

/// The record as `locate` and `list_services` return it, borrowed.
#[derive(Debug, Serialize)]
pub struct RecordView<'a> {
    pub address: &'a str,
    pub service: &'a str,
    pub interfaces: &'a [String],
    pub metadata: &'a BTreeMap<String, String>,
}

impl Record {
    pub fn view(&self) -> RecordView<'_> {
        RecordView {
            address: &self.address,
            service: &self.service,
            interfaces: &self.interfaces,
            metadata: &self.metadata,
        }
    }

    /// The record's size as limits count it: its strings' bytes.
    pub fn size(&self) -> usize {
        record_size(&self.service, &self.address, &self.interfaces, &self.metadata)
            + self.owner.as_ref().map_or(0, |o| o.len())
    }

    /// Whether a caller at `address`, logged in as `owner` (if at all),
    /// owns this record: a principal's record is that principal's from any
    /// address; an anonymous record belongs to its address.
    pub fn owned_by(&self, address: &str, owner: Option<&str>) -> bool {
        match (&self.owner, owner) {
            (Some(mine), Some(theirs)) => &**mine == theirs,
            (Some(_), None) => false,
            (None, _) => self.address == address,
        }
    }

    /// The same registration: a register that would change nothing.
    pub fn same_as(&self, other: &Record) -> bool {
        self.address == other.address
            && self.interfaces == other.interfaces
            && self.metadata == other.metadata
            && self.ttl_ms == other.ttl_ms
            && self.owner == other.owner
    }
}

/// The size of a record made of these parts, as `max_record_bytes` and
/// `max_registry_bytes` count it: the bytes of its strings.
pub fn record_size(
    service: &str,
    address: &str,
    interfaces: &[String],
    metadata: &BTreeMap<String, String>,
) -> usize {
    service.len()
        + address.len()
        + interfaces.iter().map(String::len).sum::<usize>()
        + metadata.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}
