//! `renew {service, address}`: extend a lease. Not written to the log:
//! leases start a full term whenever pycomd starts, so a renewal only moves
//! the deadline in the lease table.

use super::args::{is_valid_name, Args};
use super::{Context, Plan};
use crate::registry::{not_owner, unknown};
use pycom_client::proto::Fault;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub fn renew(ctx: &mut Context, args: &Args) -> Plan {
    let result = (|| {
        let service = args.str("service")?;
        let address = args.str("address")?;
        extend(ctx, service, address)
    })();
    Plan::Read(result)
}

/// The hot path, as in `locate::fast`.
pub fn fast(ctx: &mut Context, args: Option<&RawValue>) -> Option<Plan> {
    #[derive(Deserialize)]
    struct Fast<'a> {
        service: &'a str,
        address: &'a str,
    }
    let a: Fast = serde_json::from_str(args?.get()).ok()?;
    if !is_valid_name(a.service) || !is_valid_name(a.address) {
        return None;
    }
    Some(Plan::Read(extend(ctx, a.service, a.address)))
}

fn extend(ctx: &mut Context, service: &str, address: &str) -> Result<Vec<u8>, Fault> {
    #[derive(Serialize)]
    struct Lease {
        #[serde(skip_serializing_if = "Option::is_none")]
        lease_ms: Option<u64>,
    }
    let record = ctx
        .registry
        .state()
        .get(service)
        .filter(|_| ctx.live(service))
        .ok_or_else(|| unknown(service, "renew"))?;
    let owner = ctx.caller.owner();
    if !record.owned_by(address, owner) {
        return Err(not_owner(record, "renew", owner));
    }
    ctx.may_write(service, "renew")?;
    // A probed record has no lease to extend: the answer says so by having none.
    let lease_ms = match record.ttl_ms {
        Some(_) => Some(
            ctx.leases
                .renew(service, ctx.now)
                .ok_or_else(|| unknown(service, "renew"))?,
        ),
        None => None,
    };
    Ok(pycom_client::proto::encode_response(
        Ok(&Lease { lease_ms }),
        None,
    ))
}
