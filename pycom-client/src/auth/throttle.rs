//! Failed logins, slowed per user name: after [`FREE_FAILURES`] failures a
//! name is refused at once ("retry in N s") for N seconds, N doubling with
//! each further failure up to [`MAX_WAIT`]. Refusing without checking the
//! password is what makes guessing slow (replies are never delayed: a
//! delayed reply would tie up whoever answers). Unknown names are treated
//! the same, so the answer does not tell which names exist. Bounded: the
//! least recently failed names are forgotten first.
//!
//! pycomd's authenticator and a service checking a password file of its
//! own ([`Auth::password_file`](crate::service::Auth::password_file)) hold
//! one each.

use crate::proto::Fault;
use lru::LruCache;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failures answered normally before a name is held back.
pub const FREE_FAILURES: u32 = 3;
/// The longest hold.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: Option<Instant>,
}

/// Failures by user name, and until when each name is held back.
pub struct Throttle {
    /// Unbounded to the cache, bounded by `max_names` here: memory is taken
    /// as names fail, not all at the start.
    names: LruCache<String, Failures>,
    max_names: usize,
}

impl Throttle {
    /// A throttle remembering at most `max_names` names at once.
    pub fn new(max_names: usize) -> Throttle {
        Throttle {
            names: LruCache::unbounded(),
            max_names: max_names.max(1),
        }
    }

    /// How long `user` must still wait, if it is held back.
    pub fn held(&mut self, user: &str, now: Instant) -> Option<Duration> {
        let until = self.names.peek(user)?.until?;
        (until > now).then(|| until - now)
    }

    /// A failed login: hold the name back once it has failed enough.
    pub fn failed(&mut self, user: &str, now: Instant) -> Option<Duration> {
        if !self.names.contains(user) && self.names.len() >= self.max_names {
            self.names.pop_lru();
        }
        let entry = self.names.get_or_insert_mut(user.to_string(), || Failures {
            count: 0,
            until: None,
        });
        entry.count += 1;
        let over = entry.count.checked_sub(FREE_FAILURES)?;
        let wait = Duration::from_secs(1u64 << over.min(6)).min(MAX_WAIT);
        entry.until = Some(now + wait);
        Some(wait)
    }

    /// A successful login clears the name's failures.
    pub fn succeeded(&mut self, user: &str) {
        self.names.pop(user);
    }

    /// Names remembered.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// No name is remembered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The answer to a login of a held name.
pub fn held_fault(wait: Duration) -> Fault {
    Fault::denied(format!(
        "authenticate: too many failed logins for this user name: retry in {} s",
        wait.as_secs_f64().ceil() as u64
    ))
}

/// One [`Throttle`] for several threads (pycomd's server and its hashing
/// threads, a service's workers).
#[derive(Clone)]
pub struct Shared(Arc<Mutex<Throttle>>);

impl Shared {
    /// A throttle remembering at most `max_names` names at once.
    pub fn new(max_names: usize) -> Shared {
        Shared(Arc::new(Mutex::new(Throttle::new(max_names))))
    }

    /// The throttle, even if a thread panicked holding it (plain data).
    fn lock(&self) -> MutexGuard<'_, Throttle> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Throttle::held`].
    pub fn held(&self, user: &str, now: Instant) -> Option<Duration> {
        self.lock().held(user, now)
    }

    /// [`Throttle::failed`].
    pub fn failed(&self, user: &str, now: Instant) -> Option<Duration> {
        self.lock().failed(user, now)
    }

    /// [`Throttle::succeeded`].
    pub fn succeeded(&self, user: &str) {
        self.lock().succeeded(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_double_after_three_failures_up_to_a_minute() {
        let mut t = Throttle::new(10);
        let now = Instant::now();
        assert_eq!(t.failed("eve", now), None);
        assert_eq!(t.failed("eve", now), None);
        assert_eq!(t.held("eve", now), None);
        assert_eq!(t.failed("eve", now), Some(Duration::from_secs(1)));
        assert_eq!(t.held("eve", now), Some(Duration::from_secs(1)));
        assert_eq!(t.held("eve", now + Duration::from_secs(1)), None);
        let waits: Vec<u64> = (0..8)
            .map(|_| t.failed("eve", now).map_or(0, |d| d.as_secs()))
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(t.held("bob", now), None);
        t.succeeded("eve");
        assert_eq!(t.held("eve", now), None);
    }

    #[test]
    fn the_least_recently_failed_name_is_forgotten_first() {
        let mut t = Throttle::new(2);
        let now = Instant::now();
        for name in ["a", "b", "a", "c"] {
            t.failed(name, now);
        }
        assert_eq!(t.len(), 2);
        // "b" went; "a" kept its two failures: one more holds it.
        assert_eq!(t.failed("a", now), Some(Duration::from_secs(1)));
        for _ in 0..2 {
            assert_eq!(t.failed("b", now), None);
        }
    }
}
