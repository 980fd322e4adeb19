//! `renew {service, address}`: extend a lease. Never touches the disk:
//! leases restart in full when pycomd restarts.

use super::args::{is_valid_name, Args};
use super::{Context, Outcome};
use pycom_client::proto::Fault;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub fn renew(ctx: &mut Context, args: &Args) -> Outcome {
    let result = (|| {
        let service = args.str("service")?;
        let address = args.str("address")?;
        extend(ctx, service, address)
    })();
    Outcome::encoded(result)
}

/// The hot path, as in `locate::fast`.
pub fn fast(ctx: &mut Context, args: Option<&RawValue>) -> Option<Outcome> {
    #[derive(Deserialize)]
    struct Fast<'a> {
        service: &'a str,
        address: &'a str,
    }
    let a: Fast = serde_json::from_str(args?.get()).ok()?;
    if !is_valid_name(a.service) || !is_valid_name(a.address) {
        return None;
    }
    Some(Outcome::encoded(extend(ctx, a.service, a.address)))
}

fn extend(ctx: &mut Context, service: &str, address: &str) -> Result<Vec<u8>, Fault> {
    #[derive(Serialize)]
    struct Lease {
        #[serde(skip_serializing_if = "Option::is_none")]
        lease_ms: Option<u64>,
    }
    let lease_ms = ctx.registry.renew(service, address, ctx.now)?;
    Ok(pycom_client::proto::encode_response(
        Ok(&Lease { lease_ms }),
        None,
    ))
}
