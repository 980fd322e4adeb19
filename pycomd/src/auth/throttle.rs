//! Failed logins, slowed per user name: after [`FREE_FAILURES`] failures a
//! name is refused at once ("retry in N s") for N seconds, N doubling with
//! each further failure up to [`MAX_WAIT`]. Replies are never delayed (a
//! delayed reply would tie up the server); refusing without hashing is
//! what makes guessing slow. Unknown names are treated the same, so the
//! answer does not tell which names exist. Bounded: the least recently
//! failed names are forgotten first.
//!
//! Shared by the server (which refuses a held name before queueing its
//! login) and the hashing threads (which record each verdict as soon as
//! the hash is done, and skip the hash of a login queued before its name
//! was held): a thousand guesses sent at once are not all hashed.

use lru::LruCache;
use pycom_client::proto::Fault;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Failures answered normally before a name is held back.
pub const FREE_FAILURES: u32 = 3;
/// The longest hold.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Names remembered at once.
const NAMES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    until: Option<Instant>,
}

pub struct Throttle {
    names: LruCache<String, Failures>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle {
            names: LruCache::new(NonZeroUsize::new(NAMES).unwrap_or(NonZeroUsize::MIN)),
        }
    }
}

impl Throttle {
    /// How long `user` must still wait, if it is held back.
    pub fn held(&mut self, user: &str, now: Instant) -> Option<Duration> {
        let until = self.names.peek(user)?.until?;
        (until > now).then(|| until - now)
    }

    /// A failed login: hold the name back once it has failed enough.
    pub fn failed(&mut self, user: &str, now: Instant) -> Option<Duration> {
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
}

/// The answer to a login of a held name.
pub fn held_fault(wait: Duration) -> Fault {
    Fault::denied(format!(
        "authenticate: too many failed logins for this user name: retry in {} s",
        wait.as_secs_f64().ceil() as u64
    ))
}

/// One [`Throttle`] for the server and the hashing threads.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Throttle>>);

impl Shared {
    /// The throttle, even if a thread panicked holding it (plain data).
    fn lock(&self) -> MutexGuard<'_, Throttle> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn held(&self, user: &str, now: Instant) -> Option<Duration> {
        self.lock().held(user, now)
    }

    pub fn failed(&self, user: &str, now: Instant) -> Option<Duration> {
        self.lock().failed(user, now)
    }

    pub fn succeeded(&self, user: &str) {
        self.lock().succeeded(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_double_after_three_failures_up_to_a_minute() {
        let mut t = Throttle::default();
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
}
