//! `org.pycom.pubsub` on pycomd's request endpoint: `stat`, `topics`,
//! `introspect`. Reads only: counters and the cache's topics.

use super::Pubsub;
use pycom_client::proto::{self, Code, Fault};
use pycom_client::pubsub::wire::{api, INTERFACE};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::atomic::Ordering;

/// Topics in a page when `limit` is not given, and at most.
const DEFAULT_PAGE: u64 = 1_000;
const MAX_PAGE: u64 = 10_000;

/// The forwarder's counters and cache, as `stat` (here and in the
/// nameserver's) reports them.
#[derive(Debug, Serialize)]
pub struct PubsubStat {
    pub xsub: String,
    pub xpub: String,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub subscriptions: i64,
    pub subscribe_messages: u64,
    pub ready_answered: u64,
    pub replays: u64,
    pub events_published: u64,
    pub events_dropped: u64,
    pub topics_cached: usize,
    pub cache_bytes: usize,
    pub cache_evicted: u64,
    pub dropped_reserved: u64,
    pub dropped_oversize: u64,
    pub dropped_malformed: u64,
    pub dropped_upstream: u64,
    /// Peers authenticate and grants are enforced (access control is on).
    pub authenticated: bool,
    /// Publications their publisher had no `publish` grant for.
    pub dropped_denied: u64,
    /// Subscriptions not applied: no `subscribe` grant covers them.
    pub subscriptions_denied: u64,
    /// Connections refused at the handshake (bad or expired token).
    pub connections_refused: u64,
}

impl Pubsub {
    pub fn stat(&self) -> PubsubStat {
        let c = &self.shared.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (topics_cached, cache_bytes, cache_evicted) = {
            let lvc = self.shared.lvc();
            (lvc.len(), lvc.bytes(), lvc.evicted)
        };
        PubsubStat {
            xsub: self.xsub.clone(),
            xpub: self.xpub.clone(),
            messages_in: load(&c.messages_in),
            bytes_in: load(&c.bytes_in),
            subscriptions: c.subscriptions.load(Ordering::Relaxed).max(0),
            subscribe_messages: load(&c.subscribe_messages),
            ready_answered: load(&c.ready_answered),
            replays: load(&c.replays),
            events_published: load(&c.events_published),
            events_dropped: load(&c.events_dropped),
            topics_cached,
            cache_bytes,
            cache_evicted,
            dropped_reserved: load(&c.dropped_reserved),
            dropped_oversize: load(&c.dropped_oversize),
            dropped_malformed: load(&c.dropped_malformed),
            dropped_upstream: load(&c.dropped_upstream),
            authenticated: self.authenticated,
            dropped_denied: load(&c.dropped_denied),
            subscriptions_denied: load(&c.subscriptions_denied),
            connections_refused: load(&c.connections_refused),
        }
    }
}

/// Answer `method` of `org.pycom.pubsub`: the encoded response body.
pub fn dispatch(pubsub: &Pubsub, method: &str, args: Option<&RawValue>) -> Vec<u8> {
    match method {
        "stat" => proto::encode_response(Ok(&pubsub.stat()), None),
        "introspect" => {
            let description = pycom_client::service::introspection_of(api::NAME, api::DOC, api::METHODS);
            proto::encode_response(Ok(&description), None)
        }
        "topics" => match topics(pubsub, args) {
            Ok(body) => body,
            Err(fault) => proto::encode_fault(&fault, None),
        },
        other => proto::encode_fault(
            &Fault::new(
                Code::MethodNotFound,
                format!("interface {INTERFACE} has no method '{other}'"),
            ),
            None,
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicsArgs {
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    after: Option<String>,
}

#[derive(Serialize)]
struct Topic {
    topic: String,
    bytes: usize,
}

fn topics(pubsub: &Pubsub, args: Option<&RawValue>) -> Result<Vec<u8>, Fault> {
    let args: TopicsArgs = match args {
        None => TopicsArgs {
            limit: None,
            after: None,
        },
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| Fault::bad_request(format!("topics: args must be {{limit?, after?}}: {e}")))?,
    };
    let limit = args.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Fault::bad_request(format!(
            "topics: 'limit' must be 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    // The cache holds at most lvc_max_topics topics: copying their names
    // out and sorting them costs a bounded, small time, off the
    // forwarder's lock.
    let mut all = pubsub.shared.lvc().topics();
    all.sort_unstable();
    let start = match &args.after {
        Some(after) => all.partition_point(|(t, _)| t.as_str() <= after.as_str()),
        None => 0,
    };
    let page: Vec<Topic> = all[start..]
        .iter()
        .take(limit as usize)
        .map(|(topic, bytes)| Topic {
            topic: topic.clone(),
            bytes: *bytes,
        })
        .collect();
    let next = (start + page.len() < all.len())
        .then(|| page.last().map(|t| t.topic.clone()))
        .flatten();
    let extensions = serde_json::json!({ INTERFACE: { "next": next } });
    Ok(proto::encode_response_with(Ok(&page), None, Some(&extensions)))
}
