//! `changes {since, limit?}`: the registry's changes after revision
//! `since`, oldest first, for a watcher that missed events: `{revision,
//! events}`, or `{revision, compacted: true}` when they are no longer all
//! retained (or `since` is from another registry's history), meaning "list
//! again". Bounded by `limit` (default 1,000, at most 10,000) and by
//! `max_reply_bytes`; a short answer is continued from its last event.

use super::args::Args;
use super::{Context, Plan};
use crate::registry::history::EventBody;
use pycom_client::proto::Fault;
use serde::Serialize;

pub const DEFAULT_LIMIT: u64 = 1_000;
pub const MAX_LIMIT: u64 = 10_000;
/// An event's JSON beyond its record's strings, for the reply's bound.
const EVENT_OVERHEAD: usize = 128;

#[derive(Serialize)]
struct Changes<'a> {
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<EventBody<'a>>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    compacted: bool,
}

pub fn changes(ctx: &mut Context, args: &Args) -> Plan {
    let since = match args.opt_u64("since") {
        Ok(Some(since)) => since,
        Ok(None) => return Plan::fault(args.fault("field 'since' (a revision) is required")),
        Err(fault) => return Plan::fault(fault),
    };
    let limit = match args.opt_u64("limit") {
        Ok(limit) => limit.unwrap_or(DEFAULT_LIMIT),
        Err(fault) => return Plan::fault(fault),
    };
    if limit == 0 || limit > MAX_LIMIT {
        return Plan::fault(Fault::bad_request(format!(
            "changes: 'limit' must be 1 to {MAX_LIMIT}, not {limit}"
        )));
    }
    let revision = ctx.registry.state().revision();
    let history = ctx.registry.history();
    let retained = (since <= revision).then(|| history.since(since)).flatten();
    let Some(retained) = retained else {
        return Plan::reply(Ok(Changes {
            revision,
            events: None,
            compacted: true,
        }));
    };
    let budget = ctx.settings.max_reply_bytes / 2;
    let mut bytes = 0;
    let mut events = Vec::new();
    for event in retained.take(limit as usize) {
        let size = EVENT_OVERHEAD
            + crate::registry::record::record_size(
                event.service,
                event.address,
                event.interfaces,
                event.metadata,
            );
        if bytes + size > budget && !events.is_empty() {
            break;
        }
        bytes += size;
        events.push(event);
    }
    Plan::reply(Ok(Changes {
        revision,
        events: Some(events),
        compacted: false,
    }))
}
