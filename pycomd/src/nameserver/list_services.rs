//! `list_services {interface?, service?, limit?, after?, long?}`: records whose
//! service and one of whose interfaces match start-anchored regular
//! expressions (Python `re.match`), evaluated in linear time by the `regex`
//! crate, so no pattern can make pycomd backtrack for ever.
//!
//! Bounded, whatever the registry's size: a whole list (old clients pass
//! neither `limit` nor `after`) is built up to `max_reply_bytes` and
//! refused with code 4 past it, naming the way out; a page holds at most
//! `limit` records (default 1,000, at most 10,000), looks at no more than
//! [`SCAN_BUDGET`] records nor for longer than [`PAGE_TIME`] (so a page
//! never holds up other clients for long), and says in
//! `extensions["org.pycom.nameserver"].next` where the next page starts
//! (`null` at the end). Records come in service order, from an ordered
//! index, so a page costs what it returns, not the registry's size.

use super::args::Args;
use super::{Context, Plan};
use crate::registry::record::{Record, RecordView};
use pycom_client::proto::{self, Fault};
use regex::{Regex, RegexBuilder};
use serde::Serialize;
use serde_json::value::RawValue;

/// Compiled-program budget for one pattern; larger ones are refused.
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Records in a page when `after` is given without `limit`.
pub const DEFAULT_PAGE: u64 = 1_000;
/// Most records in one page.
pub const MAX_PAGE: u64 = 10_000;
/// Most records one page request looks at: a narrow filter over a big
/// registry gets a short (even empty) page and a `next` to go on from.
pub const SCAN_BUDGET: usize = 100_000;
/// Longest a page may keep the server thread: a page cut short by it ends
/// with `next`, and every other client's requests wait no longer than this.
pub const PAGE_TIME: std::time::Duration = std::time::Duration::from_millis(2);
/// Room kept in `max_reply_bytes` for the reply's envelope.
const ENVELOPE_BYTES: usize = 512;

/// `key` is the request's raw args: the same args at the same revision get
/// the same (shared) reply.
pub fn list_services(ctx: &mut Context, args: &Args, key: &str) -> Plan {
    let (bytes, fault) = match run(ctx, args) {
        Ok(bytes) => (bytes, false),
        Err(fault) => (proto::encode_fault(&fault, None), true),
    };
    let (pending, max) = (ctx.replies.pending_bytes(), ctx.settings.max_pending_reply_bytes);
    if bytes.len() >= super::SHARED_REPLY_BYTES && pending + bytes.len() > max {
        tracing::warn!(
            pending,
            max,
            "a big read was refused: max_pending_reply_bytes reached"
        );
        return Plan::fault(Fault::unavailable(format!(
            "list_services: pycomd holds {pending} bytes of replies its clients have not read yet, and this one ({} bytes) would pass max_pending_reply_bytes = {max}; retry once they have, or ask for smaller pages",
            bytes.len()
        )));
    }
    let revision = ctx.registry.state().revision();
    // A long list says what is left of leases and how probes went: not the
    // same at the same revision a moment later.
    let long = matches!(args.opt_bool("long"), Ok(Some(true)));
    ctx.replies.keep(revision, key, bytes, fault, !long)
}

/// A record with `long: true`: how it is kept alive, and its version.
#[derive(Serialize)]
struct Long<'a> {
    #[serde(flatten)]
    view: RecordView<'a>,
    state: KeptBy,
}

#[derive(Serialize)]
struct KeptBy {
    revision: u64,
    /// "lease" or "probes".
    kept_by: &'static str,
    ttl_ms: Option<u64>,
    lease_left_ms: Option<u64>,
    /// Probed records: the probes of its address unanswered in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_failures: Option<u32>,
}

#[derive(Serialize)]
struct Position<'a> {
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Option<&'a str>>,
}

/// How much one page may look at.
#[derive(Debug, Clone, Copy)]
struct Budget {
    records: usize,
    time: std::time::Duration,
}

const BUDGET: Budget = Budget {
    records: SCAN_BUDGET,
    time: PAGE_TIME,
};

fn run(ctx: &Context, args: &Args) -> Result<Vec<u8>, Fault> {
    run_within(ctx, args, BUDGET)
}

fn run_within(ctx: &Context, args: &Args, budget: Budget) -> Result<Vec<u8>, Fault> {
    let interface = pattern(args, "interface")?;
    let service = pattern(args, "service")?;
    let after = args.opt_str("after")?;
    let long = args.opt_bool("long")?.unwrap_or(false);
    let limit = args.opt_u64("limit")?;
    let paged = limit.is_some() || after.is_some();
    if limit == Some(0) {
        return Err(args.fault("field 'limit' must be at least 1"));
    }
    let limit = match (paged, limit) {
        (false, _) => usize::MAX,
        (true, l) => l.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE) as usize,
    };
    let max_bytes = ctx.settings.max_reply_bytes.saturating_sub(ENVELOPE_BYTES);
    let matches = |r: &Record| {
        ctx.live(&r.service)
            && service.as_ref().is_none_or(|re| re.is_match(&r.service))
            && interface
                .as_ref()
                .is_none_or(|re| r.interfaces.iter().any(|i| re.is_match(i)))
    };

    let mut out = Vec::with_capacity(4096);
    out.push(b'[');
    let (mut count, mut scanned) = (0usize, 0usize);
    let mut last_included: Option<&str> = None;
    let mut last_scanned: Option<&str> = None;
    let mut next: Option<&str> = None;
    let mut records = ctx.registry.records_after(after).peekable();
    let started = std::time::Instant::now();
    while let Some(record) = records.next() {
        let out_of_time = scanned % 256 == 255 && started.elapsed() > budget.time;
        if paged && (scanned >= budget.records || out_of_time) && last_scanned.is_some() {
            // Go on after the last record looked at, matching or not (not
            // after this one: it has not been looked at).
            next = last_scanned;
            break;
        }
        scanned += 1;
        last_scanned = Some(&record.service);
        if !matches(record) {
            continue;
        }
        let mark = out.len();
        if count > 0 {
            out.push(b',');
        }
        // Writing plain strings into a Vec cannot fail.
        let _ = if long {
            let state = KeptBy {
                revision: record.revision,
                kept_by: if record.ttl_ms.is_some() {
                    "lease"
                } else {
                    "probes"
                },
                ttl_ms: record.ttl_ms,
                lease_left_ms: ctx
                    .leases
                    .left(&record.service, ctx.now)
                    .map(|d| d.as_millis() as u64),
                probe_failures: record
                    .ttl_ms
                    .is_none()
                    .then(|| ctx.probe_failures.get(&record.address).copied().unwrap_or(0)),
            };
            serde_json::to_writer(
                &mut out,
                &Long {
                    view: record.view(),
                    state,
                },
            )
        } else {
            serde_json::to_writer(&mut out, &record.view())
        };
        if out.len() > max_bytes && count > 0 {
            if !paged {
                return Err(args.fault(format_args!(
                    "the whole list is more than max_reply_bytes = {} bytes ({count} records fit); narrow it with 'interface' or 'service', or ask for pages with 'limit' and 'after' (each page's extensions[\"org.pycom.nameserver\"].next is the next page's 'after')",
                    ctx.settings.max_reply_bytes
                )));
            }
            out.truncate(mark);
            next = last_included;
            break;
        }
        count += 1;
        last_included = Some(&record.service);
        if count == limit {
            if records.peek().is_some() {
                next = last_included;
            }
            break;
        }
    }
    out.push(b']');
    // The bytes are JSON made above: an array of serialized records.
    let list = String::from_utf8(out)
        .ok()
        .and_then(|s| RawValue::from_string(s).ok())
        .ok_or_else(|| Fault::new(pycom_client::Code::Unknown, "list_services built invalid JSON"))?;
    let position = Position {
        revision: ctx.registry.state().revision(),
        next: paged.then_some(next),
    };
    let extensions = serde_json::json!({ pycom_client::nameserver::INTERFACE: position });
    Ok(proto::encode_response_with(Ok(&*list), None, Some(&extensions)))
}

fn pattern(args: &Args, field: &str) -> Result<Option<Regex>, Fault> {
    let Some(source) = args.opt_str(field)? else {
        return Ok(None);
    };
    RegexBuilder::new(&format!("^(?:{source})"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|e| {
            args.fault(format_args!(
                "field '{field}' is not a usable regular expression: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::leases::Leases;
    use crate::log::LogStats;
    use crate::nameserver::{Replies, Stats};
    use crate::registry::{Command, Registry, State};
    use serde_json::{json, Value};

    fn registry(n: usize) -> Registry {
        let mut r = Registry::new(State::default(), Vec::new());
        for i in 0..n {
            let _ = r.apply(&Command::Register {
                service: format!("/p/{i:04}"),
                address: "tcp://a:1".into(),
                interfaces: vec![if i % 3 == 0 { "three" } else { "other" }.into()],
                replace: true,
                ttl_ms: None,
                metadata: None,
                lapsed: None,
                owner: None,
            });
        }
        r
    }

    /// Every page, following `next`, with a scan budget of `records`.
    fn all_pages(registry: &Registry, filter: Value, limit: u64, records: usize) -> (Vec<String>, usize) {
        let (settings, stats) = (Settings::default(), Stats::default());
        let (mut leases, mut replies) = (Leases::default(), Replies::default());
        let off = crate::pubsub::Started::Off("not in this test".into());
        let http = crate::http::Started::Off("not in this test".into());
        let (mut seen, mut after, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let mut args = filter.clone();
            args["limit"] = json!(limit);
            if let Some(a) = &after {
                args["after"] = json!(a);
            }
            let ctx = Context {
                registry,
                leases: &mut leases,
                settings: &settings,
                stats: &stats,
                log_stats: &LogStats::default,
                now: std::time::Instant::now(),
                replies: &mut replies,
                pubsub: &off,
                http: &http,
                probe_failures: &Default::default(),
                cluster: None,
                workflows: None,
                caller: &crate::auth::Caller::Open,
                policy: None,
                auth_stats: None,
                bodies: &mut Default::default(),
            };
            let args = Args::new("list_services", &args).unwrap();
            let budget = Budget {
                records,
                time: std::time::Duration::from_secs(60),
            };
            let body: Value = serde_json::from_slice(&run_within(&ctx, &args, budget).unwrap()).unwrap();
            pages += 1;
            let page = body["result"].as_array().unwrap();
            assert!(page.len() as u64 <= limit);
            seen.extend(page.iter().map(|r| r["service"].as_str().unwrap().to_string()));
            match body["extensions"]["org.pycom.nameserver"]["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return (seen, pages),
            }
        }
    }

    #[test]
    fn pages_cut_short_by_the_scan_budget_lose_nothing() {
        let r = registry(1_000);
        let expected: Vec<String> = (0..1_000).map(|i| format!("/p/{i:04}")).collect();
        // Pages end at 5 records, or after looking at 7: every record once, in order.
        let (seen, pages) = all_pages(&r, json!({}), 5, 7);
        assert_eq!(seen, expected);
        assert_eq!(pages, 200);
        // A filter that matches one record in three: short pages, none lost.
        let (seen, _) = all_pages(&r, json!({"interface": "three"}), 100, 7);
        let every_third: Vec<String> = expected.iter().step_by(3).cloned().collect();
        assert_eq!(seen, every_third);
    }
}
