//! The lease table: when each leased record runs out. Not registry state:
//! the state keeps each lease's `ttl_ms`, this table the deadlines, which
//! start afresh (a full term) whenever pycomd starts, as etcd's lessor does;
//! a record's owner may have renewed while pycomd was down.
//!
//! A lease that runs out makes its record invisible at once (reads ask
//! [`Leases::is_live`]) and is handed to the server as due, which proposes
//! `Expire` through the log; the record leaves the state when that applies.

use crate::registry::Map;
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long after a refused `Expire` proposal it is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// One lease: 40 bytes, a million of them in a table of their own. The
/// name is the table's key (shared with the state); the deadline and the
/// expiring mark are cells, so a renewal needs one look-up that also hands
/// out the key for the wake-up heap.
#[derive(Debug)]
struct Lease {
    /// The version of the record the lease belongs to.
    revision: u64,
    deadline: Cell<Instant>,
    ttl_ms: u64,
    /// `Expire` is proposed and not yet applied.
    expiring: Cell<bool>,
}

impl Lease {
    /// A full term from `now`.
    fn new(revision: u64, ttl_ms: u64, now: Instant) -> Lease {
        Lease {
            revision,
            deadline: Cell::new(now + Duration::from_millis(ttl_ms)),
            ttl_ms,
            expiring: Cell::new(false),
        }
    }
}

#[derive(Debug, Default)]
pub struct Leases {
    leases: Map<Arc<str>, Lease>,
    /// Leases that ran out and whose records are not removed yet: hidden
    /// from reads. Nearly always empty, so `is_live` costs no look-up.
    lapsed: HashSet<Arc<str>, ahash::RandomState>,
    /// Wake-up times, earliest first. Entries go stale when a lease is
    /// renewed or revoked; they are skipped when popped.
    heap: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
}

impl Leases {
    /// A full term for this version of the record, from `now`.
    pub fn grant(&mut self, service: &Arc<str>, revision: u64, ttl_ms: u64, now: Instant) {
        let lease = Lease::new(revision, ttl_ms, now);
        self.heap.push(Reverse((lease.deadline.get(), service.clone())));
        self.leases.insert(service.clone(), lease);
        self.lapsed.remove(service);
    }

    /// The table at start: a full term from `now` for each `(service,
    /// revision, ttl_ms)`, built in one go (a million leases in a blink).
    pub fn start<'a>(leased: impl Iterator<Item = (&'a Arc<str>, u64, u64)>, now: Instant) -> Leases {
        let most = leased.size_hint().1.unwrap_or(0);
        let mut leases = Map::with_capacity_and_hasher(most, Default::default());
        let mut wakeups = Vec::with_capacity(most);
        for (service, revision, ttl_ms) in leased {
            let lease = Lease::new(revision, ttl_ms, now);
            wakeups.push(Reverse((lease.deadline.get(), service.clone())));
            leases.insert(service.clone(), lease);
        }
        Leases {
            leases,
            lapsed: HashSet::default(),
            heap: BinaryHeap::from(wakeups),
        }
    }

    pub fn revoke(&mut self, service: &str) {
        self.leases.remove(service);
        self.lapsed.remove(service);
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Extend a live lease by its full term; `None` if `service` has no
    /// lease or it ran out.
    pub fn renew(&mut self, service: &str, now: Instant) -> Option<u64> {
        let (key, lease) = self.leases.get_key_value(service)?;
        if lease.deadline.get() <= now {
            return None;
        }
        let deadline = now + Duration::from_millis(lease.ttl_ms);
        lease.deadline.set(deadline);
        self.heap.push(Reverse((deadline, key.clone())));
        Some(lease.ttl_ms)
    }

    /// False once `service`'s lease was found run out by [`Leases::due`]
    /// (records without one are live). The server asks `due` before every
    /// batch of requests and wakes at the earliest deadline, so a record is
    /// hidden within a batch's time (2 ms at most) of its deadline.
    pub fn is_live(&self, service: &str) -> bool {
        self.lapsed.is_empty() || !self.lapsed.contains(service)
    }

    /// How long `service`'s lease has left (zero once run out); `None`
    /// without a lease.
    pub fn left(&self, service: &str, now: Instant) -> Option<Duration> {
        self.leases
            .get(service)
            .map(|l| l.deadline.get().saturating_duration_since(now))
    }

    /// The revision whose lease ran out, if `service`'s did.
    pub fn lapsed(&self, service: &str, now: Instant) -> Option<u64> {
        self.leases
            .get(service)
            .filter(|l| l.deadline.get() <= now)
            .map(|l| l.revision)
    }

    /// When the server should next look at [`Leases::due`].
    pub fn next_wakeup(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, service))) = self.heap.peek() {
            match self.leases.get(service) {
                Some(l) if !l.expiring.get() && l.deadline.get() <= *at => return Some(*at),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    /// Leases that ran out by `now` and have no `Expire` in flight:
    /// `(service, revision)`, now marked as expiring.
    pub fn due(&mut self, now: Instant) -> Vec<(Arc<str>, u64)> {
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, service))) = self.heap.pop() else {
                break;
            };
            if let Some(lease) = self.leases.get(&service) {
                if !lease.expiring.get() && lease.deadline.get() <= now {
                    lease.expiring.set(true);
                    self.lapsed.insert(service.clone());
                    due.push((service, lease.revision));
                }
            }
        }
        due
    }

    /// The `Expire` proposed for `service` was refused: try again shortly.
    pub fn retry(&mut self, service: &str, now: Instant) {
        if let Some((key, lease)) = self.leases.get_key_value(service) {
            lease.expiring.set(false);
            self.heap.push(Reverse((now + RETRY, key.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_at_its_deadline_unless_renewed() {
        let mut l = Leases::default();
        let t0 = Instant::now();
        l.grant(&Arc::from("/s"), 7, 1000, t0);
        assert!(l.is_live("/s"));
        let t1 = t0 + Duration::from_millis(800);
        assert_eq!(l.renew("/s", t1), Some(1000));
        assert!(l.due(t0 + Duration::from_millis(1500)).is_empty());
        assert!(l.is_live("/s"));
        let end = t1 + Duration::from_millis(1000);
        assert_eq!(l.lapsed("/s", end), Some(7));
        assert_eq!(l.renew("/s", end), None);
        assert_eq!(l.due(end), vec![(Arc::from("/s"), 7)]);
        assert!(!l.is_live("/s"), "hidden once found run out");
        // Proposed once: not due again unless the proposal is refused.
        assert!(l.due(end + Duration::from_secs(1)).is_empty());
        l.retry("/s", end);
        assert_eq!(l.due(end + RETRY), vec![(Arc::from("/s"), 7)]);
    }

    #[test]
    fn unleased_records_are_live() {
        let l = Leases::default();
        assert!(l.is_live("/probed"));
    }
}
