//! A map whose entries expire, bounded in count: what a guarded service
//! remembers of `validate`'s answers.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

struct Entry<V> {
    value: V,
    expires: Instant,
    /// Which insertion this is, to tell a live entry from a stale place in `order`.
    generation: u64,
}

/// At most `max` entries, each until its own expiry; when full, the one
/// inserted first goes (an expired one, usually: entries live no longer
/// than their TTL).
pub struct TtlCache<K, V> {
    map: HashMap<K, Entry<V>>,
    /// Insertion order, with stale places left behind by replacements and
    /// removals (skipped, and compacted away when they pile up).
    order: VecDeque<(K, u64)>,
    next_generation: u64,
    max: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(max: usize) -> TtlCache<K, V> {
        TtlCache {
            map: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            max: max.max(1),
        }
    }

    /// The value for `key`, if it has not expired by `now`.
    pub fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.map.get(key) {
            Some(entry) if now < entry.expires => Some(entry.value.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Keep `value` for `key` until `now + ttl`, making room if full.
    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if !self.map.contains_key(&key) {
            while self.map.len() >= self.max {
                let Some((oldest, generation)) = self.order.pop_front() else {
                    break;
                };
                if self.map.get(&oldest).is_some_and(|e| e.generation == generation) {
                    self.map.remove(&oldest);
                }
            }
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let entry = Entry {
            value,
            expires: now + ttl,
            generation,
        };
        self.map.insert(key.clone(), entry);
        self.order.push_back((key, generation));
        if self.order.len() > 2 * self.max + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|e| e.generation == *g));
        }
    }

    /// Forget `key`.
    #[cfg(test)]
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|e| e.value)
    }

    /// Entries held (expired ones included until looked at or pushed out).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Drop every entry expired by `now`.
    pub fn sweep(&mut self, now: Instant) {
        self.map.retain(|_, e| now < e.expires);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_each_at_its_own_time() {
        let mut cache = TtlCache::new(10);
        let now = Instant::now();
        cache.insert("long", 1, Duration::from_secs(30), now);
        cache.insert("short", 2, Duration::from_secs(1), now);
        assert_eq!(cache.get(&"long", now), Some(1));
        assert_eq!(cache.get(&"short", now + Duration::from_millis(999)), Some(2));
        assert_eq!(cache.get(&"short", now + Duration::from_secs(1)), None);
        assert_eq!(cache.get(&"long", now + Duration::from_secs(29)), Some(1));
        assert_eq!(cache.get(&"long", now + Duration::from_secs(30)), None);
        assert_eq!(cache.len(), 0, "looked-at expired entries are gone");
    }

    #[test]
    fn bounded_the_first_in_goes_first() {
        let mut cache = TtlCache::new(3);
        let now = Instant::now();
        let ttl = Duration::from_secs(30);
        for k in 0..3 {
            cache.insert(k, k, ttl, now);
        }
        // Replacing an entry does not make room, and makes it the newest.
        cache.insert(0, 10, ttl, now);
        assert_eq!(cache.len(), 3);
        cache.insert(3, 3, ttl, now);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&1, now), None, "the oldest went");
        assert_eq!(cache.get(&0, now), Some(10));
        assert_eq!(cache.get(&3, now), Some(3));
    }

    #[test]
    fn a_flood_of_new_keys_stays_within_the_bound() {
        let mut cache = TtlCache::new(100);
        let now = Instant::now();
        for k in 0..100_000u32 {
            cache.insert(k, (), Duration::from_secs(1), now);
            // Some keys again, leaving stale places in the order.
            cache.insert(k / 2, (), Duration::from_secs(1), now);
            assert!(cache.len() <= 100);
            assert!(cache.order.len() <= 2 * 100 + 17);
        }
        assert!(cache.get(&99_999, now).is_some());
        cache.sweep(now + Duration::from_secs(1));
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.remove(&99_999), None);
    }
}
