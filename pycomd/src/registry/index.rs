//! What `locate` reads: for each interface its providers, each with the
//! JSON `locate` answers made once when the record changed. Derived from
//! the state (rebuilt at start, kept in step by `Registry::apply`); the
//! round-robin cursor lives here, not in the state, because which provider
//! a client is handed is not something the registry remembers.

use super::record::Record;
use super::Map;
use ahash::RandomState;
use indexmap::IndexMap;
use serde_json::value::RawValue;
use std::cell::Cell;
use std::rc::Rc;

#[derive(Debug, Default)]
pub struct Index {
    by_interface: Map<String, Providers>,
}

#[derive(Debug, Default)]
struct Providers {
    services: IndexMap<Rc<str>, Rc<RawValue>, RandomState>,
    next: Cell<usize>,
}

impl Index {
    /// List `record`, replacing `previous` (its older version, if any).
    pub fn insert(&mut self, record: &Record, previous: Option<&Record>) {
        let json: Rc<RawValue> = match serde_json::value::to_raw_value(&record.view()) {
            Ok(raw) => Rc::from(raw),
            // A record of strings always serializes; skip it rather than panic.
            Err(_) => return,
        };
        let service: Rc<str> = Rc::from(record.service.as_str());
        // A re-register may have dropped interfaces: clear the old ones first.
        if let Some(previous) = previous {
            self.remove(previous);
        }
        for interface in &record.interfaces {
            self.by_interface
                .entry(interface.clone())
                .or_default()
                .services
                .insert(service.clone(), json.clone());
        }
    }

    pub fn remove(&mut self, record: &Record) {
        for interface in &record.interfaces {
            self.remove_from(interface, &record.service);
        }
    }

    fn remove_from(&mut self, interface: &str, service: &str) {
        if let Some(p) = self.by_interface.get_mut(interface) {
            p.services.swap_remove(service);
            if p.services.is_empty() {
                self.by_interface.remove(interface);
            }
        }
    }

    pub fn interface_count(&self) -> usize {
        self.by_interface.len()
    }

    pub fn json(&self, interface: &str, service: &str) -> Option<&RawValue> {
        self.by_interface
            .get(interface)?
            .services
            .get(service)
            .map(|j| &**j)
    }

    pub fn services(&self, interface: &str) -> impl Iterator<Item = &str> {
        self.by_interface
            .get(interface)
            .into_iter()
            .flat_map(|p| p.services.keys().map(|k| &**k))
    }

    /// The next provider for which `live` holds, in turn.
    pub fn pick(&self, interface: &str, live: impl Fn(&str) -> bool) -> Option<&RawValue> {
        let providers = self.by_interface.get(interface)?;
        let n = providers.services.len();
        for _ in 0..n {
            let i = providers.next.get() % n;
            providers.next.set(i.wrapping_add(1));
            if let Some((service, json)) = providers.services.get_index(i) {
                if live(service) {
                    return Some(json);
                }
            }
        }
        None
    }
}
