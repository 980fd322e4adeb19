//! The last-value cache: the newest publication of each topic, for
//! subscribers that join late (PROTOCOL.md 5), bounded in topics and bytes.
//! When either bound is passed the topic published least recently goes.

use ahash::RandomState;
use lru::LruCache;

/// What an entry costs beyond its bytes: the map's slot, the frame
/// vectors, the key (an estimate, so that a million tiny topics cannot
/// pass `lvc_max_bytes` unseen).
const ENTRY_OVERHEAD: usize = 128;

pub struct Lvc {
    /// Topic to its publication's frames after the topic (header, body,
    /// attachments).
    entries: LruCache<Box<str>, Entry, RandomState>,
    bytes: usize,
    max_topics: usize,
    max_bytes: usize,
    /// Topics pushed out by the bounds.
    pub evicted: u64,
}

struct Entry {
    frames: Vec<Vec<u8>>,
    bytes: usize,
}

/// A cached publication, as a replay sends it.
pub struct Replay {
    pub topic: String,
    pub frames: Vec<Vec<u8>>,
}

impl Lvc {
    pub fn new(max_topics: usize, max_bytes: usize) -> Lvc {
        Lvc {
            entries: LruCache::unbounded_with_hasher(RandomState::new()),
            bytes: 0,
            max_topics,
            max_bytes,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held, as the bound counts them.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keep `frames` (after the topic) as `topic`'s latest publication.
    /// The entry's buffers are reused: a busy topic costs a copy, not an
    /// allocation, per publication.
    pub fn put<'a>(&mut self, topic: &str, frames: impl ExactSizeIterator<Item = &'a [u8]> + Clone) {
        let bytes = ENTRY_OVERHEAD + topic.len() + frames.clone().map(<[u8]>::len).sum::<usize>();
        if self.max_topics == 0 || bytes > self.max_bytes {
            // Too big to cache: an older value would now be misleading.
            if let Some(old) = self.entries.pop(topic) {
                self.bytes -= old.bytes;
            }
            return;
        }
        match self.entries.get_mut(topic) {
            Some(entry) => {
                self.bytes = self.bytes - entry.bytes + bytes;
                entry.bytes = bytes;
                entry.frames.truncate(frames.len());
                let have = entry.frames.len();
                for (i, frame) in frames.enumerate() {
                    if i < have {
                        entry.frames[i].clear();
                        entry.frames[i].extend_from_slice(frame);
                    } else {
                        entry.frames.push(frame.to_vec());
                    }
                }
            }
            None => {
                self.bytes += bytes;
                let frames = frames.map(<[u8]>::to_vec).collect();
                self.entries.put(topic.into(), Entry { frames, bytes });
            }
        }
        while self.entries.len() > self.max_topics || self.bytes > self.max_bytes {
            match self.entries.pop_lru() {
                Some((_, old)) => {
                    self.bytes -= old.bytes;
                    self.evicted += 1;
                }
                None => break,
            }
        }
    }

    /// The cached publications whose topic starts with `prefix` (a ZeroMQ
    /// subscription), each with `"replay": true` added to its header.
    pub fn replays(&self, prefix: &str) -> Vec<Replay> {
        self.entries
            .iter()
            .filter(|(topic, _)| topic.starts_with(prefix))
            .map(|(topic, entry)| {
                let mut frames = entry.frames.clone();
                if let Some(header) = frames.first_mut() {
                    mark_replay(header);
                }
                Replay {
                    topic: topic.to_string(),
                    frames,
                }
            })
            .collect()
    }

    /// Every cached topic with its publication's size in bytes.
    pub fn topics(&self) -> Vec<(String, usize)> {
        self.entries
            .iter()
            .map(|(topic, entry)| (topic.to_string(), entry.bytes - ENTRY_OVERHEAD - topic.len()))
            .collect()
    }
}

/// Add `"replay":true` to a header object, keeping the rest as published.
/// The forwarder took only headers that are JSON objects without `replay`.
fn mark_replay(header: &mut Vec<u8>) {
    while header.last().is_some_and(u8::is_ascii_whitespace) {
        header.pop();
    }
    if header.pop() != Some(b'}') {
        return;
    }
    let empty = header.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    header.extend_from_slice(if empty {
        b"\"replay\":true}"
    } else {
        b",\"replay\":true}"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(lvc: &mut Lvc, topic: &str, body: &str) {
        let frames = [br#"{"src":"s","seq":1,"ts":2}"#.as_slice(), body.as_bytes()];
        lvc.put(topic, frames.into_iter());
    }

    #[test]
    fn keeps_the_latest_per_topic_and_marks_replays() {
        let mut lvc = Lvc::new(10, 1 << 20);
        put(&mut lvc, "a.b", "1");
        put(&mut lvc, "a.b", "22");
        put(&mut lvc, "a.c", "3");
        put(&mut lvc, "b", "4");
        let mut replays = lvc.replays("a.");
        replays.sort_by(|x, y| x.topic.cmp(&y.topic));
        assert_eq!(replays.len(), 2);
        assert_eq!(replays[0].frames[1], b"22");
        assert_eq!(
            replays[0].frames[0],
            br#"{"src":"s","seq":1,"ts":2,"replay":true}"#
        );
        assert_eq!(lvc.len(), 3);
    }

    #[test]
    fn bounded_in_topics_and_bytes_oldest_first() {
        let mut lvc = Lvc::new(2, 1 << 20);
        put(&mut lvc, "a", "1");
        put(&mut lvc, "b", "1");
        put(&mut lvc, "a", "2");
        put(&mut lvc, "c", "1");
        let topics: Vec<String> = lvc.topics().into_iter().map(|t| t.0).collect();
        assert_eq!(lvc.len(), 2);
        assert!(topics.contains(&"a".to_string()) && topics.contains(&"c".to_string()));
        assert_eq!(lvc.evicted, 1);

        let mut lvc = Lvc::new(100, 1000);
        for i in 0..50 {
            put(&mut lvc, &format!("t{i}"), &"x".repeat(100));
        }
        assert!(lvc.bytes() <= 1000, "{}", lvc.bytes());
        // One publication over the whole budget is not cached at all.
        put(&mut lvc, "big", &"x".repeat(2000));
        assert!(lvc.replays("big").is_empty());
    }

    #[test]
    fn replay_mark_keeps_the_header() {
        let mut h = b"{ } ".to_vec();
        mark_replay(&mut h);
        assert_eq!(h, b"{ \"replay\":true}");
        let mut h = br#"{"src":"x","seq":3,"ts":1,"extra":[1]}"#.to_vec();
        mark_replay(&mut h);
        let v: serde_json::Value = serde_json::from_slice(&h).unwrap();
        assert_eq!(v["replay"], true);
        assert_eq!(v["extra"][0], 1);
    }
}
