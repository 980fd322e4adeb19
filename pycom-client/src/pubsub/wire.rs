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
        // Every pycom publisher writes the plain shape: read it without
        // serde's map machinery (a subscriber decodes one per message).
        if let Some(plain) = PlainHeader::parse(frame) {
            return Ok(Header {
                src: plain.src.to_string(),
                seq: plain.seq,
                ts: plain.ts,
                replay: false,
            });
        }
        serde_json::from_slice(frame).map_err(|e| format!("header is not {{src, seq, ts}}: {e}"))
    }

    /// The header frame.
    pub fn encode(&self) -> Vec<u8> {
        // A struct of a string and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A header frame of exactly the shape [`Header::encode`] writes for a
/// publication, `{"src":"…","seq":N,"ts":N}`: a `src` without escapes or
/// control characters, whole numbers without leading zeros that fit a
/// u64. Read without a JSON parser; any other shape (other key order,
/// white space, escapes, `replay`, extra keys) is `None` and left to serde,
/// which gives the same fields for every header this accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainHeader<'a> {
    /// As [`Header::src`], borrowed from the frame.
    pub src: &'a str,
    /// As [`Header::seq`].
    pub seq: u64,
    /// As [`Header::ts`].
    pub ts: u64,
}

impl<'a> PlainHeader<'a> {
    /// The fields of `frame`, if it has the plain shape.
    pub fn parse(frame: &'a [u8]) -> Option<PlainHeader<'a>> {
        let rest = frame.strip_prefix(br#"{"src":""#)?;
        // One pass: the closing quote, unless an escape or a control
        // character comes first.
        let end = rest.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[end] != b'"' {
            return None;
        }
        let src = std::str::from_utf8(&rest[..end]).ok()?;
        let (seq, rest) = whole_number(rest[end..].strip_prefix(br#"","seq":"#)?)?;
        let (ts, rest) = whole_number(rest.strip_prefix(br#","ts":"#)?)?;
        (rest == b"}").then_some(PlainHeader { src, seq, ts })
    }
}

/// A JSON whole number at the start of `bytes` and what follows it: 1 to
/// 19 digits (so it always fits a u64), no leading zero.
fn whole_number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=19).contains(&digits) || (digits > 1 && bytes[0] == b'0') {
        return None;
    }
    let n = bytes[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((n, &bytes[digits..]))
}

/// One publisher's header frames, written into one buffer reused for every
/// publication: the bytes [`Header::encode`] gives for the same fields,
/// without a `Header` (and its copy of `src`) or an allocation each.
#[derive(Debug, Clone)]
pub(crate) struct HeaderWriter {
    buf: Vec<u8>,
    /// `{"src":"…","seq":` for this writer's `src`.
    prefix: usize,
}

impl HeaderWriter {
    pub(crate) fn new(src: &str) -> HeaderWriter {
        let mut buf = br#"{"src":"#.to_vec();
        // serde_json writes `src` as Header::encode does (escaped if need
        // be); a Vec takes every write.
        let _ = serde_json::to_writer(&mut buf, src);
        buf.extend_from_slice(br#","seq":"#);
        let prefix = buf.len();
        HeaderWriter { buf, prefix }
    }

    /// The header frame of (`seq`, `ts`).
    pub(crate) fn write(&mut self, seq: u64, ts: u64) -> &[u8] {
        self.buf.truncate(self.prefix);
        // Numbers as serde_json writes them (the same formatter as
        // Header::encode's).
        let _ = serde_json::to_writer(&mut self.buf, &seq);
        self.buf.extend_from_slice(br#","ts":"#);
        let _ = serde_json::to_writer(&mut self.buf, &ts);
        self.buf.push(b'}');
        &self.buf
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

    #[test]
    fn plain_headers_are_read_without_a_parser_and_others_are_left_to_serde() {
        let plain = br#"{"src":"ab12","seq":1,"ts":1732560000000}"#;
        assert_eq!(
            PlainHeader::parse(plain),
            Some(PlainHeader {
                src: "ab12",
                seq: 1,
                ts: 1_732_560_000_000
            })
        );
        let max = br#"{"src":"a","seq":9999999999999999999,"ts":0}"#;
        assert_eq!(
            PlainHeader::parse(max).map(|h| h.seq),
            Some(9_999_999_999_999_999_999)
        );
        for other in [
            &br#"{"src":"a\"b","seq":1,"ts":1}"#[..],
            br#"{"src":"a","seq":01,"ts":1}"#,
            br#"{"src":"a","seq":1,"ts":1,"replay":true}"#,
            br#"{"src":"a","seq":99999999999999999999,"ts":1}"#,
            br#"{"seq":1,"src":"a","ts":1}"#,
            br#"{"src":"a","seq":-1,"ts":1}"#,
            br#"{"src":"a","seq":1.5,"ts":1}"#,
            br#"{"src":"a","seq":1,"ts":1} "#,
            br#"{"src":"a","seq":,"ts":1}"#,
            b"{\"src\":\"a\tb\",\"seq\":1,\"ts\":1}",
            b"{\"src\":\"\xff\",\"seq\":1,\"ts\":1}",
        ] {
            assert_eq!(
                PlainHeader::parse(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        // What serde makes of the headers left to it is what decode gives.
        let spaced = br#"{ "ts": 5, "seq": 3, "src": "s" }"#;
        assert_eq!(
            Header::decode(spaced).unwrap(),
            Header {
                src: "s".into(),
                seq: 3,
                ts: 5,
                replay: false
            }
        );
        assert!(Header::decode(br#"{"src":"a","seq":99999999999999999999,"ts":1}"#).is_err());
        assert!(Header::decode(br#"{"src":"a","seq":-1,"ts":1}"#).is_err());
    }

    #[test]
    fn the_header_writer_writes_what_encode_does() {
        let mut writer = HeaderWriter::new("0123456789abcdef0123456789abcdef");
        for (seq, ts) in [(1, 0), (2, 1_732_560_000_000), (u64::MAX, u64::MAX), (10, 9)] {
            let h = Header {
                src: "0123456789abcdef0123456789abcdef".into(),
                seq,
                ts,
                replay: false,
            };
            assert_eq!(writer.write(seq, ts), &h.encode()[..]);
            assert_eq!(Header::decode(writer.write(seq, ts)).unwrap(), h);
        }
        // A src that needs escaping is escaped as serde does it.
        let odd = "a\"b\\c\u{1}";
        let h = Header {
            src: odd.into(),
            seq: 7,
            ts: 8,
            replay: false,
        };
        assert_eq!(HeaderWriter::new(odd).write(7, 8), &h.encode()[..]);
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }
}
