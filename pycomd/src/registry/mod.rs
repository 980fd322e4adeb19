//! The registry: which service lives at which address with which interfaces.
//!
//! This module alone knows the registry's rules (ownership, `interface`
//! adds while `interfaces` replaces, leases and their expiry) and its
//! in-memory index. It does no I/O: every change returns the [`StoreOp`]
//! that makes it durable and the server hands that to [`store`]. Lease-less
//! records are watched by [`prober`].

pub mod prober;
pub mod record;
pub mod store;

use ahash::RandomState;
use indexmap::IndexMap;
use pycom_client::proto::Fault;
use serde_json::value::RawValue;
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

pub use record::Record;
pub use store::StoreOp;

/// A live record and, if leased, when its lease runs out.
#[derive(Debug, Clone)]
pub struct Entry {
    pub record: Record,
    /// Which version of the name this is: every (re-)register makes a new
    /// one, so a late verdict about an older version cannot touch it.
    pub generation: u64,
    slot: Rc<Slot>,
    /// pycomd's own record: never stored, never expires, never replaced.
    pub permanent: bool,
}

impl Entry {
    fn new(record: Record, deadline: Option<Instant>, permanent: bool) -> Entry {
        let json = serde_json::value::to_raw_value(&record.view())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default());
        Entry {
            record,
            generation: 0,
            slot: Rc::new(Slot {
                json,
                deadline: Cell::new(deadline),
            }),
            permanent,
        }
    }

    /// When the lease runs out; `None` for probed records.
    pub fn deadline(&self) -> Option<Instant> {
        self.slot.deadline.get()
    }

    /// Alive: not leased, or its lease has not run out (even if `expire`
    /// has not removed it yet).
    pub fn is_live(&self, now: Instant) -> bool {
        self.slot.is_live(now)
    }
}

/// What `locate` needs of a record, shared by the entry and the interface
/// index: a look-up is one hash probe and a copy of JSON made at register.
#[derive(Debug)]
struct Slot {
    json: Box<RawValue>,
    deadline: Cell<Option<Instant>>,
}

impl Slot {
    fn is_live(&self, now: Instant) -> bool {
        self.deadline.get().is_none_or(|d| d > now)
    }
}

/// Hash maps keyed by names from the network: aHash, randomly seeded per
/// process (no hash flooding), and much faster than SipHash on short names.
type Map<K, V> = HashMap<K, V, RandomState>;

/// The providers of one interface, and whose turn it is next.
#[derive(Debug, Default)]
struct Providers {
    services: IndexMap<Rc<str>, Rc<Slot>, RandomState>,
    next: usize,
}

/// What `register` asks for, already checked for types and sizes.
#[derive(Debug, Clone)]
pub struct Registration {
    pub service: String,
    pub address: String,
    pub interfaces: Vec<String>,
    /// `interfaces` (true) replaces the set; `interface` (false) adds to it.
    pub replace: bool,
    pub ttl_ms: Option<u64>,
    pub metadata: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug)]
pub struct Registry {
    records: Map<Rc<str>, Entry>,
    by_interface: Map<String, Providers>,
    /// Lease deadlines, earliest first. Entries go stale when a lease is
    /// renewed; they are skipped when popped (cheaper than a decrease-key).
    deadlines: BinaryHeap<Reverse<(Instant, Rc<str>)>>,
    max_records: usize,
    generations: u64,
}

impl Registry {
    /// An empty registry that lists pycomd itself under `self_record`.
    pub fn new(self_record: Record, max_records: usize) -> Registry {
        let mut registry = Registry {
            records: Map::default(),
            by_interface: Map::default(),
            deadlines: BinaryHeap::new(),
            max_records,
            generations: 0,
        };
        registry.insert(Entry::new(self_record, None, true));
        registry
    }

    /// Records read back from disk. Leases start a fresh full term: their
    /// owners may have renewed while pycomd was down.
    pub fn restore(&mut self, records: Vec<Record>, now: Instant) {
        for record in records {
            if self
                .records
                .get(record.service.as_str())
                .is_some_and(|e| e.permanent)
            {
                continue;
            }
            let deadline = record.ttl_ms.map(|ttl| now + Duration::from_millis(ttl));
            self.insert(Entry::new(record, deadline, false));
        }
    }

    /// Number of records, pycomd's own included.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn interface_count(&self) -> usize {
        self.by_interface.len()
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.records.values()
    }

    /// The live version of `service`, if registered.
    pub fn generation(&self, service: &str) -> Option<u64> {
        self.records.get(service).map(|e| e.generation)
    }

    /// Register or re-register. Returns the new record and what to persist.
    pub fn register(&mut self, reg: Registration, now: Instant) -> Result<(Record, StoreOp), Fault> {
        // A lease that ran out frees the name even before `expire` removes it.
        let existing = self.records.get(reg.service.as_str()).filter(|e| e.is_live(now));
        if let Some(entry) = existing {
            check_owner(entry, &reg.address, "register")?;
        } else if self.records.len() >= self.max_records {
            return Err(Fault::unavailable(format!(
                "register: the registry is full ({} records, max_records)",
                self.max_records
            )));
        }
        let mut record = Record {
            service: reg.service,
            address: reg.address,
            interfaces: reg.interfaces,
            metadata: reg.metadata.clone().unwrap_or_default(),
            ttl_ms: reg.ttl_ms,
        };
        if let Some(old) = existing {
            if !reg.replace {
                record.interfaces.extend(old.record.interfaces.iter().cloned());
            }
            if reg.metadata.is_none() {
                record.metadata = old.record.metadata.clone();
            }
        }
        record.interfaces.sort();
        record.interfaces.dedup();
        self.remove_entry(&record.service);
        let deadline = record.ttl_ms.map(|ttl| now + Duration::from_millis(ttl));
        self.insert(Entry::new(record.clone(), deadline, false));
        let op = StoreOp::Put(record.clone());
        Ok((record, op))
    }

    /// Extend a lease. Returns the lease length granted.
    pub fn renew(&mut self, service: &str, address: &str, now: Instant) -> Result<Option<u64>, Fault> {
        let (key, entry) = self
            .records
            .get_key_value(service)
            .filter(|(_, e)| e.is_live(now))
            .ok_or_else(|| unknown(service, "renew"))?;
        check_owner(entry, address, "renew")?;
        if let Some(ttl) = entry.record.ttl_ms {
            let deadline = now + Duration::from_millis(ttl);
            entry.slot.deadline.set(Some(deadline));
            self.deadlines.push(Reverse((deadline, key.clone())));
        }
        Ok(entry.record.ttl_ms)
    }

    /// Remove a record on its owner's request.
    pub fn unregister(&mut self, service: &str, address: &str) -> Result<StoreOp, Fault> {
        let entry = self
            .records
            .get(service)
            .ok_or_else(|| unknown(service, "unregister"))?;
        check_owner(entry, address, "unregister")?;
        self.remove_entry(service);
        Ok(StoreOp::Delete(service.to_string()))
    }

    /// Drop a probed record whose address stopped answering, if it is still
    /// the version the probes were about (not re-registered meanwhile).
    pub fn drop_unreachable(&mut self, service: &str, generation: u64) -> Option<StoreOp> {
        let entry = self.records.get(service)?;
        if entry.permanent || entry.generation != generation || entry.record.ttl_ms.is_some() {
            return None;
        }
        self.remove_entry(service);
        Some(StoreOp::Delete(service.to_string()))
    }

    /// When the next lease runs out, if any record has one.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, service))) = self.deadlines.peek() {
            if self.records.get(service).and_then(Entry::deadline) == Some(*deadline) {
                return Some(*deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Remove every record whose lease ran out by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<Record> {
        let mut expired = Vec::new();
        while let Some(Reverse((deadline, _))) = self.deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Some(Reverse((deadline, service))) = self.deadlines.pop() else {
                break;
            };
            if self.records.get(&service).and_then(Entry::deadline) == Some(deadline) {
                if let Some(entry) = self.remove_entry(&service) {
                    expired.push(entry.record);
                }
            }
        }
        expired
    }

    /// One live provider of `interface`, taking turns among them, as the
    /// JSON `locate` returns.
    pub fn pick(&mut self, interface: &str, service: Option<&str>, now: Instant) -> Option<&RawValue> {
        if let Some(service) = service {
            return self
                .records
                .get(service)
                .filter(|e| e.is_live(now) && e.record.interfaces.iter().any(|i| i == interface))
                .map(|e| &*e.slot.json);
        }
        let providers = self.by_interface.get_mut(interface)?;
        let n = providers.services.len();
        for _ in 0..n {
            let i = providers.next % n;
            providers.next = i.wrapping_add(1);
            if let Some((_, slot)) = providers.services.get_index(i) {
                if slot.is_live(now) {
                    return Some(&slot.json);
                }
            }
        }
        None
    }

    /// Every live provider of `interface`, in service order.
    pub fn providers(&self, interface: &str, service: Option<&str>, now: Instant) -> Vec<&Record> {
        if let Some(service) = service {
            return self
                .live(service, now)
                .filter(|r| r.interfaces.iter().any(|i| i == interface))
                .into_iter()
                .collect();
        }
        let mut found: Vec<&Record> = match self.by_interface.get(interface) {
            Some(p) => p
                .services
                .keys()
                .filter_map(|s| self.records.get(s))
                .filter(|e| e.is_live(now))
                .map(|e| &e.record)
                .collect(),
            None => Vec::new(),
        };
        found.sort_by(|a, b| a.service.cmp(&b.service));
        found
    }

    fn live(&self, service: &str, now: Instant) -> Option<&Record> {
        self.records
            .get(service)
            .filter(|e| e.is_live(now))
            .map(|e| &e.record)
    }

    fn insert(&mut self, mut entry: Entry) {
        self.generations += 1;
        entry.generation = self.generations;
        // One shared copy of the name for the index, the heap and the map.
        let service: Rc<str> = Rc::from(entry.record.service.as_str());
        for interface in &entry.record.interfaces {
            self.by_interface
                .entry(interface.clone())
                .or_default()
                .services
                .insert(service.clone(), entry.slot.clone());
        }
        if let Some(deadline) = entry.deadline() {
            self.deadlines.push(Reverse((deadline, service.clone())));
        }
        self.records.insert(service, entry);
    }

    fn remove_entry(&mut self, service: &str) -> Option<Entry> {
        let entry = self.records.remove(service)?;
        for interface in &entry.record.interfaces {
            if let Some(p) = self.by_interface.get_mut(interface) {
                p.services.swap_remove(service);
                if p.services.is_empty() {
                    self.by_interface.remove(interface);
                }
            }
        }
        Some(entry)
    }
}

fn check_owner(entry: &Entry, address: &str, what: &str) -> Result<(), Fault> {
    if entry.permanent {
        return Err(Fault::denied(format!(
            "{what}: service '{}' is pycomd's own and cannot be changed",
            entry.record.service
        )));
    }
    if entry.record.address != address {
        return Err(Fault::denied(format!(
            "{what}: service '{}' is owned by another address ({}); it is free once that record is unregistered or expires",
            entry.record.service, entry.record.address
        )));
    }
    Ok(())
}

fn unknown(service: &str, what: &str) -> Fault {
    Fault::not_found(format!(
        "{what}: service '{service}' is not registered (or its lease expired)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pycom_client::Code;

    fn reg(service: &str, address: &str, ifaces: &[&str], replace: bool, ttl: Option<u64>) -> Registration {
        Registration {
            service: service.into(),
            address: address.into(),
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            replace,
            ttl_ms: ttl,
            metadata: None,
        }
    }

    fn picked_service(r: &mut Registry, interface: &str, now: Instant) -> String {
        let json = r.pick(interface, None, now).expect("a provider");
        let v: serde_json::Value = serde_json::from_str(json.get()).unwrap();
        v["service"].as_str().unwrap().to_string()
    }

    fn registry() -> Registry {
        let me = Record {
            service: "/org/pycom/nameserver".into(),
            address: "tcp://127.0.0.1:2012".into(),
            interfaces: vec!["org.pycom.nameserver".into()],
            metadata: Default::default(),
            ttl_ms: None,
        };
        Registry::new(me, 10)
    }

    #[test]
    fn interface_adds_and_interfaces_replaces() {
        let mut r = registry();
        let now = Instant::now();
        r.register(reg("/s", "tcp://a:1", &["a"], false, None), now)
            .unwrap();
        let (rec, _) = r
            .register(reg("/s", "tcp://a:1", &["b"], false, None), now)
            .unwrap();
        assert_eq!(rec.interfaces, vec!["a", "b"]);
        let (rec, _) = r
            .register(reg("/s", "tcp://a:1", &["c"], true, None), now)
            .unwrap();
        assert_eq!(rec.interfaces, vec!["c"]);
        assert!(r.pick("a", None, now).is_none());
        assert_eq!(picked_service(&mut r, "c", now), "/s");
    }

    #[test]
    fn another_address_is_refused_until_expiry() {
        let mut r = registry();
        let now = Instant::now();
        r.register(reg("/s", "tcp://a:1", &["a"], true, Some(1000)), now)
            .unwrap();
        let err = r
            .register(reg("/s", "tcp://b:1", &["a"], true, None), now)
            .unwrap_err();
        assert_eq!(err.code, Code::AccessDenied);
        assert_eq!(
            r.unregister("/s", "tcp://b:1").unwrap_err().code,
            Code::AccessDenied
        );
        let later = now + Duration::from_millis(1001);
        assert_eq!(r.expire(later).len(), 1);
        r.register(reg("/s", "tcp://b:1", &["a"], true, None), later)
            .unwrap();
    }

    #[test]
    fn renew_moves_the_deadline() {
        let mut r = registry();
        let t0 = Instant::now();
        r.register(reg("/s", "tcp://a:1", &["a"], true, Some(1000)), t0)
            .unwrap();
        let t1 = t0 + Duration::from_millis(800);
        r.renew("/s", "tcp://a:1", t1).unwrap();
        assert!(r.expire(t0 + Duration::from_millis(1500)).is_empty());
        assert_eq!(r.next_deadline(), Some(t1 + Duration::from_millis(1000)));
        assert_eq!(r.expire(t1 + Duration::from_millis(1000)).len(), 1);
        assert_eq!(
            r.renew("/s", "tcp://a:1", t1).unwrap_err().code,
            Code::ServiceNotFound
        );
    }

    #[test]
    fn a_late_unreachable_verdict_spares_a_re_registered_record() {
        let mut r = registry();
        let now = Instant::now();
        r.register(reg("/p", "tcp://a:1", &["p"], true, None), now)
            .unwrap();
        let probed = r.generation("/p").unwrap();
        // The service comes back and registers again before the verdict lands.
        r.register(reg("/p", "tcp://a:1", &["p"], true, None), now)
            .unwrap();
        assert!(r.drop_unreachable("/p", probed).is_none());
        let current = r.generation("/p").unwrap();
        assert_eq!(
            r.drop_unreachable("/p", current),
            Some(StoreOp::Delete("/p".into()))
        );
        assert!(r.generation("/p").is_none());
    }

    #[test]
    fn pick_takes_turns() {
        let mut r = registry();
        let now = Instant::now();
        for s in ["/a", "/b", "/c"] {
            r.register(reg(s, &format!("tcp://{s}:1"), &["x"], true, None), now)
                .unwrap();
        }
        let mut seen: Vec<String> = (0..6).map(|_| picked_service(&mut r, "x", now)).collect();
        seen.sort();
        assert_eq!(seen, vec!["/a", "/a", "/b", "/b", "/c", "/c"]);
    }

    #[test]
    fn own_record_is_protected_and_full_registry_refuses() {
        let mut r = registry();
        let now = Instant::now();
        let err = r
            .register(
                reg(
                    "/org/pycom/nameserver",
                    "tcp://127.0.0.1:2012",
                    &["x"],
                    true,
                    None,
                ),
                now,
            )
            .unwrap_err();
        assert_eq!(err.code, Code::AccessDenied);
        for i in 0..9 {
            r.register(reg(&format!("/s{i}"), "tcp://a:1", &["a"], true, None), now)
                .unwrap();
        }
        assert_eq!(
            r.register(reg("/full", "tcp://a:1", &["a"], true, None), now)
                .unwrap_err()
                .code,
            Code::Unavailable
        );
    }
}
