//! `list_services {interface?, service?}`: records matching start-anchored
//! regular expressions (Python `re.match`), evaluated in linear time by the
//! `regex` crate, so no pattern can make pycomd backtrack for ever.

use super::args::Args;
use super::{Context, Plan};
use crate::registry::record::{Record, RecordView};
use pycom_client::proto::Fault;
use regex::{Regex, RegexBuilder};

/// Compiled-program budget for one pattern; larger ones are refused.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub fn list_services(ctx: &mut Context, args: &Args) -> Plan {
    Plan::reply(run(ctx, args))
}

fn run<'r>(ctx: &'r Context, args: &Args) -> Result<Vec<RecordView<'r>>, Fault> {
    let interface = pattern(args, "interface")?;
    let service = pattern(args, "service")?;
    let mut records: Vec<_> = ctx
        .registry
        .records()
        .filter(|r| ctx.live(&r.service))
        .filter(|r| service.as_ref().is_none_or(|re| re.is_match(&r.service)))
        .filter(|r| {
            interface
                .as_ref()
                .is_none_or(|re| r.interfaces.iter().any(|i| re.is_match(i)))
        })
        .collect();
    records.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(records.into_iter().map(Record::view).collect())
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
