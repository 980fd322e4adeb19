//! `locate {interface, service?, as_list?}`: a live provider, or all of them.

use super::args::{is_valid_name, Args};
use super::{Context, Plan};
use crate::registry::Record;
use pycom_client::proto::{self, Fault};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub fn locate(ctx: &mut Context, args: &Args) -> Plan {
    let parsed = (|| {
        let interface = args.str("interface")?;
        let service = args.opt_str("service")?;
        let as_list = args.opt_bool("as_list")?.unwrap_or(false);
        find(ctx, interface, service, as_list)
    })();
    Plan::Read(parsed)
}

/// The hot path: args decoded in place, borrowed. `None` when they need the
/// general path (a wrong type, an escaped or invalid name), which then
/// names the problem.
pub fn fast(ctx: &mut Context, args: Option<&RawValue>) -> Option<Plan> {
    #[derive(Deserialize)]
    struct Fast<'a> {
        interface: &'a str,
        #[serde(default)]
        service: Option<&'a str>,
        #[serde(default)]
        as_list: Option<bool>,
    }
    let a: Fast = serde_json::from_str(args?.get()).ok()?;
    if !is_valid_name(a.interface) || a.service.is_some_and(|s| !is_valid_name(s)) {
        return None;
    }
    Some(Plan::Read(find(
        ctx,
        a.interface,
        a.service,
        a.as_list.unwrap_or(false),
    )))
}

/// The encoded response: records come from the registry already as JSON.
fn find(ctx: &Context, interface: &str, service: Option<&str>, as_list: bool) -> Result<Vec<u8>, Fault> {
    let not_found = || match service {
        Some(s) => Fault::not_found(format!(
            "locate: no live service '{s}' provides interface '{interface}'"
        )),
        None => Fault::not_found(format!(
            "locate: no live service provides interface '{interface}'"
        )),
    };
    let at = At {
        nameserver: Revision {
            revision: ctx.registry.state().revision(),
        },
    };
    if as_list {
        let all = ctx.registry.providers(interface, service, |s| ctx.live(s));
        if all.is_empty() {
            return Err(not_found());
        }
        let views: Vec<_> = all.into_iter().map(Record::view).collect();
        return Ok(proto::encode_response_with(Ok(&views), None, Some(&at)));
    }
    ctx.registry
        .pick(interface, service, |s| ctx.live(s))
        .map(|json| proto::encode_response_with(Ok(json), None, Some(&at)))
        .ok_or_else(not_found)
}

/// `extensions["org.pycom.nameserver"] = {"revision": n}`: the revision the
/// answer was read at (a watcher's starting point).
#[derive(Serialize)]
struct At {
    #[serde(rename = "org.pycom.nameserver")]
    nameserver: Revision,
}

#[derive(Serialize)]
struct Revision {
    revision: u64,
}
