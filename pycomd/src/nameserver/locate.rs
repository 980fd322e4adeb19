//! `locate {interface, service?, as_list?}`: a live provider, or all of them.

use super::args::Args;
use super::{Context, Outcome};
use crate::registry::Record;
use pycom_client::proto::{self, Fault};

pub fn locate(ctx: &mut Context, args: &Args) -> Outcome {
    Outcome::encoded(run(ctx, args))
}

/// The encoded response: records are serialized straight from the
/// registry, with no intermediate JSON value (this is the hottest read).
fn run(ctx: &mut Context, args: &Args) -> Result<Vec<u8>, Fault> {
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
        let views: Vec<_> = all.into_iter().map(Record::view).collect();
        return Ok(proto::encode_response(Ok(&views), None));
    }
    ctx.registry
        .pick(interface, service, ctx.now)
        .map(|r| proto::encode_response(Ok(&r.view()), None))
        .ok_or_else(not_found)
}
