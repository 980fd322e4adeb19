//! What `locate` reads: for each interface its providers, each with the
//! JSON `locate` answers, made the first time it is asked for (not at
//! start, where a million records would each pay for it). Derived from the
//! state (rebuilt at start, kept in step by `Registry::apply`); the
//! round-robin cursor lives here, not in the state, because which provider
//! a client is handed is not something the registry remembers.

use super::record::Record;
use ahash::RandomState;
use compact_str::CompactString;
use indexmap::IndexMap;
use serde_json::value::RawValue;
use std::cell::{Cell, OnceCell};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Index {
    /// A small table of positions over entries kept side by side (an
    /// `IndexMap`), each holding its name when that is 24 bytes or shorter
    /// (most are): a `locate` on a registry too big for the CPU's caches
    /// reads one entry, not a table slot, then the name elsewhere on the
    /// heap; and names registered together sit together.
    by_interface: IndexMap<CompactString, Providers, RandomState>,
}

/// The providers of one interface. Most interfaces have one provider: that
/// case costs no table of its own (32 bytes in all, beside the name).
#[derive(Debug)]
enum Providers {
    One(Arc<str>, Slot),
    Many(Box<Many>),
}

#[derive(Debug)]
struct Many {
    services: IndexMap<Arc<str>, Slot, RandomState>,
    next: Cell<usize>,
}

/// A record's place under one interface: the JSON `locate` answers, made
/// when first asked for.
#[derive(Debug, Default)]
pub struct Slot {
    json: OnceCell<Box<RawValue>>,
}

impl Slot {
    /// The JSON `locate` answers for the record this slot is for, which
    /// `record` is asked for only the first time.
    pub fn json<'a>(&self, record: impl FnOnce() -> Option<&'a Record>) -> Option<&RawValue> {
        if let Some(json) = self.json.get() {
            return Some(json);
        }
        let json = serde_json::value::to_raw_value(&record()?.view()).unwrap_or_default();
        Some(self.json.get_or_init(|| json))
    }
}

impl Providers {
    fn insert(&mut self, service: Arc<str>) {
        match self {
            Providers::One(only, slot) if *only == service => *slot = Slot::default(),
            Providers::One(only, _) => {
                let mut services = IndexMap::with_capacity_and_hasher(2, RandomState::new());
                services.insert(only.clone(), Slot::default());
                services.insert(service, Slot::default());
                *self = Providers::Many(Box::new(Many {
                    services,
                    next: Cell::new(0),
                }));
            }
            Providers::Many(many) => {
                many.services.insert(service, Slot::default());
            }
        }
    }

    /// Remove `service`; true when none is left.
    fn remove(&mut self, service: &str) -> bool {
        match self {
            Providers::One(only, _) => &**only == service,
            Providers::Many(many) => {
                many.services.swap_remove(service);
                many.services.is_empty()
            }
        }
    }

    fn get(&self, service: &str) -> Option<&Slot> {
        match self {
            Providers::One(only, slot) => (&**only == service).then_some(slot),
            Providers::Many(many) => many.services.get(service),
        }
    }

    fn services(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Providers::One(only, _) => Box::new(std::iter::once(&**only)),
            Providers::Many(many) => Box::new(many.services.keys().map(|k| &**k)),
        }
    }

    fn pick(&self, live: impl Fn(&str) -> bool) -> Option<(&str, &Slot)> {
        match self {
            Providers::One(only, slot) => live(only).then_some((&**only, slot)),
            Providers::Many(many) => {
                let Many { services, next } = &**many;
                let n = services.len();
                for _ in 0..n {
                    let i = next.get() % n;
                    next.set(i.wrapping_add(1));
                    if let Some((service, slot)) = services.get_index(i) {
                        if live(service) {
                            return Some((service, slot));
                        }
                    }
                }
                None
            }
        }
    }
}

impl Index {
    pub fn with_capacity(records: usize) -> Index {
        Index {
            by_interface: IndexMap::with_capacity_and_hasher(records, RandomState::new()),
        }
    }

    /// List `record`, replacing `previous` (its older version, if any).
    pub fn insert(&mut self, record: &Record, previous: Option<&Record>) {
        // A re-register may have dropped interfaces: clear the old ones first.
        if let Some(previous) = previous {
            self.remove(previous);
        }
        for interface in &record.interfaces {
            match self.by_interface.get_mut(interface.as_str()) {
                Some(p) => p.insert(record.service.clone()),
                None => {
                    let one = Providers::One(record.service.clone(), Slot::default());
                    self.by_interface
                        .insert(CompactString::from(interface.as_str()), one);
                }
            }
        }
    }

    pub fn remove(&mut self, record: &Record) {
        for interface in &record.interfaces {
            let emptied = self
                .by_interface
                .get_mut(interface.as_str())
                .is_some_and(|p| p.remove(&record.service));
            if emptied {
                self.by_interface.swap_remove(interface.as_str());
            }
        }
    }

    pub fn interface_count(&self) -> usize {
        self.by_interface.len()
    }

    pub fn slot(&self, interface: &str, service: &str) -> Option<&Slot> {
        self.by_interface.get(interface)?.get(service)
    }

    pub fn services(&self, interface: &str) -> impl Iterator<Item = &str> {
        self.by_interface
            .get(interface)
            .into_iter()
            .flat_map(|p| p.services())
    }

    /// Read what looking up each of `interfaces` reads (its entry and the
    /// JSON a locate answers), one after another, so that their cache
    /// misses overlap; the look-ups that follow then find them in cache.
    pub fn warm<'i>(&self, interfaces: impl Iterator<Item = &'i str>) {
        let mut first_bytes = 0u8;
        for interface in interfaces {
            if let Some(Providers::One(_, slot)) = self.by_interface.get(interface) {
                if let Some(json) = slot.json.get() {
                    // Every cache line of it (the reply copies it whole):
                    // a byte in each 64 and the last, however it is aligned.
                    let bytes = json.get().as_bytes();
                    for line in bytes.chunks(64) {
                        first_bytes ^= line[0];
                    }
                    first_bytes ^= bytes.last().copied().unwrap_or(0);
                }
            }
        }
        std::hint::black_box(first_bytes);
    }

    /// The next provider for which `live` holds, in turn.
    pub fn pick(&self, interface: &str, live: impl Fn(&str) -> bool) -> Option<(&str, &Slot)> {
        self.by_interface.get(interface)?.pick(live)
    }
}
