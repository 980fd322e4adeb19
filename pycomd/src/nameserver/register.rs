//! `register {service, address, interface | interfaces, ttl_ms?, metadata?}`.

use super::args::{Args, MAX_NAME_BYTES};
use super::{Context, Plan};
use crate::registry::record::record_size;
use crate::registry::{not_owner, Command, RESERVED_PREFIX};
use pycom_client::proto::{type_name, Fault};
use serde_json::Value;
use std::collections::BTreeMap;

/// Most interfaces one record may carry.
pub const MAX_INTERFACES: usize = 256;
/// Most metadata tags one record may carry.
pub const MAX_METADATA: usize = 64;

pub fn register(ctx: &mut Context, args: &Args) -> Plan {
    match parse(ctx, args) {
        Ok(command) => Plan::Write(command),
        Err(fault) => Plan::fault(fault),
    }
}

fn parse(ctx: &Context, args: &Args) -> Result<Command, Fault> {
    let service = args.str("service")?.to_string();
    let address = args.str("address")?;
    if !is_endpoint(address) {
        return Err(args.fault(format_args!(
            "field 'address' must be a ZeroMQ endpoint like tcp://host:port, not '{address}'"
        )));
    }
    let (interfaces, replace) = match (args.get("interface"), args.get("interfaces")) {
        (Some(_), Some(_)) => {
            return Err(
                args.fault("give either 'interface' (adds one) or 'interfaces' (replaces the set), not both")
            )
        }
        (Some(_), None) => (vec![args.str("interface")?.to_string()], false),
        (None, Some(list)) => (interface_list(args, list)?, true),
        (None, None) => return Err(args.fault("field 'interface' or 'interfaces' is required")),
    };
    let ttl_ms = args.opt_u64("ttl_ms")?;
    if let Some(ttl) = ttl_ms {
        let (min, max) = (ctx.settings.ttl_min_ms, ctx.settings.ttl_max_ms);
        if ttl < min || ttl > max {
            return Err(args.fault(format_args!(
                "field 'ttl_ms' is {ttl}; it must be between {min} and {max}"
            )));
        }
        if let Some(least) = ctx.settings.cluster.as_ref().map(|c| c.min_lease_ms()) {
            if ttl < least {
                return Err(args.fault(format_args!(
                    "field 'ttl_ms' is {ttl}; in a cluster a lease must be at least {least} ms (three election timeouts), or a change of leader could let it run out while its owner renews"
                )));
            }
        }
    }
    let metadata = match args.get("metadata") {
        None => None,
        Some(v) => Some(metadata(args, v)?),
    };
    if service.starts_with(RESERVED_PREFIX) {
        return Err(Fault::denied(format!(
            "register: names under {RESERVED_PREFIX} are pycomd's own; '{service}' cannot be registered"
        )));
    }
    ctx.may_write(&service, "register")?;
    let owner = ctx.caller.owner();
    // Refusals that need no log entry; applying checks ownership again,
    // against the state as it is by then. In a cluster this node's state
    // may be behind (a leader cut off, not yet knowing it): only the log
    // may refuse an owner.
    let lapsed = ctx.leases.lapsed(&service, ctx.now);
    let old = ctx.registry.get(&service);
    match old {
        Some(old) if lapsed.is_none() && !old.owned_by(address, owner) && ctx.cluster.is_none() => {
            return Err(not_owner(old, "register", owner));
        }
        Some(_) => {}
        None if ctx.registry.state().len() >= ctx.settings.max_records => {
            return Err(Fault::unavailable(format!(
                "register: the registry is full ({} records, max_records)",
                ctx.settings.max_records
            )));
        }
        None => {}
    }
    // Sizes as the record will be: 'interface' adds to the old set, and no
    // metadata keeps the old.
    let kept_interfaces: &[String] = match old {
        Some(old) if !replace => &old.interfaces,
        _ => &[],
    };
    let no_metadata = BTreeMap::new();
    let kept_metadata = match (&metadata, old) {
        (Some(m), _) => m,
        (None, Some(old)) => &old.metadata,
        (None, None) => &no_metadata,
    };
    let size = record_size(&service, address, &interfaces, kept_metadata)
        + kept_interfaces.iter().map(String::len).sum::<usize>();
    let max = ctx.settings.max_record_bytes;
    if size > max {
        return Err(args.fault(format_args!(
            "the record would be {size} bytes (service, address, interfaces and metadata); the limit is max_record_bytes = {max}"
        )));
    }
    let total = ctx
        .registry
        .state()
        .bytes()
        .saturating_sub(old.map_or(0, |o| o.size()))
        + size;
    let budget = ctx.settings.max_registry_bytes;
    if total > budget {
        tracing::warn!(
            total,
            budget,
            "a register was refused: max_registry_bytes reached"
        );
        return Err(Fault::unavailable(format!(
            "register: the registry would hold {total} bytes of records; the limit is max_registry_bytes = {budget}"
        )));
    }
    Ok(Command::Register {
        service,
        address: address.to_string(),
        interfaces,
        replace,
        ttl_ms,
        metadata,
        lapsed,
        owner: owner.map(str::to_string),
    })
}

fn interface_list(args: &Args, list: &Value) -> Result<Vec<String>, Fault> {
    let Value::Array(items) = list else {
        return Err(args.fault(format_args!(
            "field 'interfaces' must be a list of strings, not {}",
            type_name(list)
        )));
    };
    if items.is_empty() {
        return Err(args.fault("field 'interfaces' must name at least one interface"));
    }
    if items.len() > MAX_INTERFACES {
        return Err(args.fault(format_args!(
            "field 'interfaces' has {} entries; the limit is {MAX_INTERFACES}",
            items.len()
        )));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => args.check_name("interfaces", s).map(|()| s.clone()),
            other => Err(args.fault(format_args!(
                "field 'interfaces' must be a list of strings, but holds {}",
                type_name(other)
            ))),
        })
        .collect()
}

fn metadata(args: &Args, v: &Value) -> Result<BTreeMap<String, String>, Fault> {
    let Value::Object(map) = v else {
        return Err(args.fault(format_args!(
            "field 'metadata' must be an object of strings, not {}",
            type_name(v)
        )));
    };
    if map.len() > MAX_METADATA {
        return Err(args.fault(format_args!(
            "field 'metadata' has {} tags; the limit is {MAX_METADATA}",
            map.len()
        )));
    }
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) if k.len() <= MAX_NAME_BYTES && s.len() <= MAX_NAME_BYTES => {
                Ok((k.clone(), s.clone()))
            }
            Value::String(_) => Err(args.fault(format_args!(
                "metadata tag '{k}' is too long; keys and values are limited to {MAX_NAME_BYTES} bytes"
            ))),
            other => Err(args.fault(format_args!(
                "metadata tag '{k}' must be a string, not {}",
                type_name(other)
            ))),
        })
        .collect()
}

/// `transport://rest`, as ZeroMQ endpoints are written.
fn is_endpoint(address: &str) -> bool {
    match address.split_once("://") {
        Some((transport, rest)) => {
            !transport.is_empty() && transport.chars().all(|c| c.is_ascii_lowercase()) && !rest.is_empty()
        }
        None => false,
    }
}
