//! Per-client state of a service, bounded in count and in idle time.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry {
    data: Map<String, Value>,
    last_used: Instant,
}

pub struct Sessions {
    entries: Mutex<HashMap<String, Entry>>,
    idle_timeout: Duration,
    max: usize,
}

/// A session id from the request was not found (never existed, or expired).
pub struct Expired;

impl Sessions {
    pub fn new(idle_timeout: Duration, max: usize) -> Sessions {
        Sessions {
            entries: Mutex::new(HashMap::new()),
            idle_timeout,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state for `id`: empty for a new client, `Expired` for an id
    /// that is unknown or idle too long.
    pub fn load(&self, id: Option<&str>, now: Instant) -> Result<Map<String, Value>, Expired> {
        let Some(id) = id else { return Ok(Map::new()) };
        let mut entries = self.lock();
        match entries.get(id) {
            Some(e) if now.duration_since(e.last_used) < self.idle_timeout => Ok(e.data.clone()),
            Some(_) => {
                entries.remove(id);
                Err(Expired)
            }
            None => Err(Expired),
        }
    }

    /// Keep `data` after a call. Returns the id to send back: the existing
    /// one, a new one if the handler stored something, or none.
    pub fn store(&self, id: Option<&str>, data: Map<String, Value>, now: Instant) -> Option<String> {
        let mut entries = self.lock();
        let id = match id {
            Some(id) => id.to_string(),
            None if data.is_empty() => return None,
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        if !entries.contains_key(&id) && entries.len() >= self.max {
            // Make room: drop expired sessions, else the least recently used.
            entries.retain(|_, e| now.duration_since(e.last_used) < self.idle_timeout);
            if entries.len() >= self.max {
                if let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_used)
                    .map(|(k, _)| k.clone())
                {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(id.clone(), Entry { data, last_used: now });
        Some(id)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Drop every session idle past the timeout.
    pub fn sweep(&self, now: Instant) {
        self.lock()
            .retain(|_, e| now.duration_since(e.last_used) < self.idle_timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn created_only_when_something_is_stored() {
        let s = Sessions::new(Duration::from_secs(10), 10);
        let now = Instant::now();
        assert_eq!(s.store(None, Map::new(), now), None);
        let mut data = Map::new();
        data.insert("n".into(), json!(1));
        let id = s.store(None, data, now).unwrap();
        assert_eq!(s.load(Some(&id), now).ok().unwrap()["n"], json!(1));
        assert!(s.load(Some(&id), now + Duration::from_secs(11)).is_err());
        assert!(s.load(Some("made-up"), now).is_err());
    }

    #[test]
    fn bounded_by_count() {
        let s = Sessions::new(Duration::from_secs(10), 3);
        let now = Instant::now();
        let mut data = Map::new();
        data.insert("x".into(), json!(true));
        let first = s.store(None, data.clone(), now).unwrap();
        for i in 1..10 {
            s.store(None, data.clone(), now + Duration::from_millis(i))
                .unwrap();
        }
        assert_eq!(s.len(), 3);
        assert!(
            s.load(Some(&first), now).is_err(),
            "the least recently used went first"
        );
    }
}
