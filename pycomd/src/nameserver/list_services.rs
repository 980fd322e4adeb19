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
    ctx.replies.keep(revision, key, bytes, fault)
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
}

#[derive(Serialize)]
struct Position<'a> {
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Option<&'a str>>,
}

fn run(ctx: &Context, args: &Args) -> Result<Vec<u8>, Fault> {
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
    let budget = ctx.settings.max_reply_bytes.saturating_sub(ENVELOPE_BYTES);
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
    let mut next: Option<&str> = None;
    let mut records = ctx.registry.records_after(after).peekable();
    let started = std::time::Instant::now();
    while let Some(record) = records.next() {
        let out_of_time = scanned % 256 == 255 && started.elapsed() > PAGE_TIME;
        if paged && (scanned == SCAN_BUDGET || out_of_time) {
            // Go on from the last record looked at, matching or not.
            next = Some(&record.service);
            break;
        }
        scanned += 1;
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
        if out.len() > budget && count > 0 {
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
