//! `list_services {interface?, service?}`: records matching start-anchored
//! regular expressions (Python `re.match`), evaluated in linear time by the
//! `regex` crate, so no pattern can make pycomd backtrack for ever.

use super::args::Args;
use super::{Context, Outcome};
use pycom_client::proto::Fault;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

/// Compiled-program budget for one pattern; larger ones are refused.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub fn list_services(ctx: &mut Context, args: &Args) -> Outcome {
    Outcome::reply(run(ctx, args))
}

fn run(ctx: &mut Context, args: &Args) -> Result<Value, Fault> {
    let interface = pattern(args, "interface")?;
    let service = pattern(args, "service")?;
    let mut records: Vec<_> = ctx
        .registry
        .entries()
        .filter(|e| e.deadline.is_none_or(|d| d > ctx.now))
        .map(|e| &e.record)
        .filter(|r| service.as_ref().is_none_or(|re| re.is_match(&r.service)))
        .filter(|r| {
            interface
                .as_ref()
                .is_none_or(|re| r.interfaces.iter().any(|i| re.is_match(i)))
        })
        .collect();
    records.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(Value::Array(records.into_iter().map(|r| r.to_json()).collect()))
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
