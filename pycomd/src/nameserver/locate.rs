//! `locate {interface, service?, as_list?}`: a live provider, or all of them.

use super::args::Args;
use super::{Context, Outcome};
use pycom_client::proto::Fault;
use serde_json::Value;

pub fn locate(ctx: &mut Context, args: &Args) -> Outcome {
    Outcome::reply(run(ctx, args))
}

fn run(ctx: &mut Context, args: &Args) -> Result<Value, Fault> {
    let interface = args.str("interface")?;
    let service = args.opt_str("service")?;
    let not_found = || match service {
        Some(s) => Fault::not_found(format!(
            "locate: no live service '{s}' provides interface '{interface}'"
        )),
        None => Fault::not_found(format!(
            "locate: no live service provides interface '{interface}'"
        )),
    };
    if args.opt_bool("as_list")?.unwrap_or(false) {
        let all = ctx.registry.providers(interface, service, ctx.now);
        if all.is_empty() {
            return Err(not_found());
        }
        return Ok(Value::Array(all.into_iter().map(|r| r.to_json()).collect()));
    }
    ctx.registry
        .pick(interface, service, ctx.now)
        .map(|r| r.to_json())
        .ok_or_else(not_found)
}
