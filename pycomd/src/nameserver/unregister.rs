//! `unregister {service, address}`: the owner removes its record.

use super::args::Args;
use super::{Context, Outcome};
use crate::registry::prober::ProbeCmd;
use serde_json::json;

pub fn unregister(ctx: &mut Context, args: &Args) -> Outcome {
    let (service, address) = match (args.str("service"), args.str("address")) {
        (Ok(s), Ok(a)) => (s, a),
        (Err(f), _) | (_, Err(f)) => return Outcome::fault(f),
    };
    match ctx.registry.unregister(service, address) {
        Ok(op) => {
            tracing::info!(%service, %address, "unregistered");
            Outcome::durable(op, json!({})).with_probe(ProbeCmd::Unwatch {
                service: service.to_string(),
            })
        }
        Err(fault) => Outcome::fault(fault),
    }
}
