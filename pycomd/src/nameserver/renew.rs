//! `renew {service, address}`: extend a lease. Never touches the disk:
//! leases restart in full when pycomd restarts.

use super::args::Args;
use super::{Context, Outcome};
use serde_json::json;

pub fn renew(ctx: &mut Context, args: &Args) -> Outcome {
    let result = (|| {
        let service = args.str("service")?;
        let address = args.str("address")?;
        let ttl = ctx.registry.renew(service, address, ctx.now)?;
        Ok(match ttl {
            Some(ttl) => json!({"lease_ms": ttl}),
            None => json!({}),
        })
    })();
    Outcome::reply(result)
}
