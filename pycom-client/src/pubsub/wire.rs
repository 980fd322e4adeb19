//! The pub-sub wire (PROTOCOL.md 5), shared by pycomd's forwarder and the
//! client: topics, patterns, the header frame, and what a publication's
//! frames must be. Nothing here touches a socket.

use serde::{Deserialize, Serialize};
#[allow(unused_imports)]
use serde_json::Value;

/// The forwarder's interface, served on pycomd's request endpoint.
pub const INTERFACE: &str = "org.pycom.pubsub";
/// The service path under which pycomd lists its forwarder.
pub const SERVICE: &str = "/org/pycom/pubsub";
/// The forwarder's XSUB endpoint (publishers connect here) by default.
pub const DEFAULT_XSUB: &str = "tcp://127.0.0.1:2013";
/// The forwarder's XPUB endpoint (subscribers connect here) by default.
pub const DEFAULT_XPUB: &str = "tcp://127.0.0.1:2014";
/// Topics under this prefix are pycomd's own: the forwarder drops them
/// from anyone else.
pub const RESERVED: &str = "org.pycom.";
/// A subscriber's readiness topic is this plus a nonce.
pub const READY_PREFIX: &str = "org.pycom.pubsub.ready.";
/// The registry's change events: this plus the event name.
pub const EVENTS_PREFIX: &str = "org.pycom.nameserver.events.";
/// Longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Longest header frame the forwarder accepts, in bytes.
pub const MAX_HEADER_BYTES: usize = 1024;

// The forwarder's methods on pycomd's request endpoint: pycomd's dispatch
// and `introspect` answer come from this list.
crate::interface! {
    /// pycomd's pub-sub forwarder: where to publish and subscribe, and what it has seen.
    pub mod api = "org.pycom.pubsub" {
        /// Counters: messages and bytes in, subscriptions, topics cached, publications dropped (by reason).
        fn stat() -> Value;
        /// The topics in the last-value cache, in order, with their sizes: [{topic, bytes}].
        /// Paged like list_services: extensions["org.pycom.pubsub"].next is the next page's after.
        fn topics(; limit: u64, after: String) -> Value;
    }
}

/// Why a topic is not one: `None` if it is.
pub fn topic_problem(topic: &str) -> Option<String> {
    if topic.len() > MAX_TOPIC_BYTES {
        return Some(format!(
            "topic of {} bytes exceeds {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    if topic.is_empty() {
        return Some("the topic is empty".into());
    }
    for token in topic.split('.') {
        if token.is_empty() {
            return Some(format!(
                "topic '{topic}' has an empty token (tokens are separated by single dots)"
            ));
        }
        if token.contains(['*', '>']) {
            return Some(format!(
                "topic '{topic}' contains a wildcard ('*' and '>' are for subscriptions)"
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some(format!(
                "topic '{topic}' contains white space or a control character"
            ));
        }
    }
    None
}

/// A publication's header frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Random per publisher instance: a new `src` is a new sequence.
    pub src: String,
    /// Counts from 1 per (src, topic).
    pub seq: u64,
    /// Milliseconds since the Unix epoch when it was published.
    pub ts: u64,
    /// Set by the forwarder on a last-value-cache replay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

impl Header {
    /// Decode a header frame, checking what the forwarder relies on.
    pub fn decode(frame: &[u8]) -> Result<Header, String> {
        if frame.len() > MAX_HEADER_BYTES {
            return Err(format!(
                "header of {} bytes exceeds {MAX_HEADER_BYTES}",
                frame.len()
            ));
        }
        serde_json::from_slice(frame).map_err(|e| format!("header is not {{src, seq, ts}}: {e}"))
    }

    /// The header frame.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of a string and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Milliseconds since the Unix epoch, for `ts`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A NATS-style subscription pattern: `a.b.c` exact, `*` one token, `>`
/// one or more trailing tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// The literal text before the first wildcard: the ZeroMQ
    /// subscription sent upstream.
    prefix_len: usize,
}

impl Pattern {
    /// Check a pattern's syntax; the error names the problem.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() || text.len() > MAX_TOPIC_BYTES {
            return Err(format!("pattern '{text}' must be 1 to {MAX_TOPIC_BYTES} bytes"));
        }
        let tokens: Vec<&str> = text.split('.').collect();
        for (i, token) in tokens.iter().enumerate() {
            let wild = *token == "*" || *token == ">";
            if token.is_empty() {
                return Err(format!("pattern '{text}' has an empty token"));
            }
            if !wild && token.contains(['*', '>']) {
                return Err(format!(
                    "pattern '{text}': '*' and '>' must be whole tokens ('a.*.c', 'a.>')"
                ));
            }
            if *token == ">" && i + 1 != tokens.len() {
                return Err(format!("pattern '{text}': '>' must be the last token"));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "pattern '{text}' contains white space or a control character"
                ));
            }
        }
        let prefix_len = tokens
            .iter()
            .position(|t| *t == "*" || *t == ">")
            .map_or(text.len(), |first| {
                tokens[..first].iter().map(|t| t.len() + 1).sum()
            });
        Ok(Pattern {
            text: text.to_string(),
            prefix_len,
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// What to subscribe to upstream: the literal text before the first
    /// wildcard (ZeroMQ matches prefixes; [`matches`](Pattern::matches)
    /// does the rest).
    pub fn prefix(&self) -> &str {
        &self.text[..self.prefix_len]
    }

    /// Whether `topic` matches, token by token.
    pub fn matches(&self, topic: &str) -> bool {
        let mut topic_tokens = topic.split('.');
        for pattern_token in self.text.split('.') {
            match (pattern_token, topic_tokens.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (literal, Some(token)) if literal == token => {}
                _ => return false,
            }
        }
        topic_tokens.next().is_none()
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::parse(p).unwrap().matches(t)
    }

    #[test]
    fn patterns_match_tokens_exactly() {
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.bc"));
        assert!(!m("a.b", "a.b.c"));
        assert!(m("a.*.c", "a.x.c"));
        assert!(!m("a.*.c", "a.x.y.c"));
        assert!(!m("a.*", "a"));
        assert!(m("a.>", "a.b"));
        assert!(m("a.>", "a.b.c"));
        assert!(!m("a.>", "a"));
        assert!(!m("a.>", "ab.c"));
        assert!(m(">", "x"));
        assert!(m("*", "x"));
        assert!(!m("*", "x.y"));
    }

    #[test]
    fn prefixes_stop_at_the_first_wildcard() {
        assert_eq!(Pattern::parse("a.b.c").unwrap().prefix(), "a.b.c");
        assert_eq!(Pattern::parse("a.*.c").unwrap().prefix(), "a.");
        assert_eq!(Pattern::parse("a.>").unwrap().prefix(), "a.");
        assert_eq!(Pattern::parse(">").unwrap().prefix(), "");
    }

    #[test]
    fn bad_patterns_and_topics_are_named() {
        for bad in ["", "a..b", "a.b*", "a.>.c", ".a", "a b"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
            assert!(topic_problem(bad).is_some(), "{bad}");
        }
        assert!(topic_problem(&"a".repeat(257)).is_some());
        assert!(topic_problem("demo.interface.name").is_none());
    }

    #[test]
    fn headers_round_trip_and_replay_is_omitted_unless_set() {
        let h = Header {
            src: "s".into(),
            seq: 3,
            ts: 5,
            replay: false,
        };
        assert_eq!(h.encode(), br#"{"src":"s","seq":3,"ts":5}"#);
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        assert!(Header::decode(b"{\"src\":1}").is_err());
        assert!(Header::decode(b"[]").is_err());
    }
}
