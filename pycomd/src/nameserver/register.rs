//! `register {service, address, interface | interfaces, ttl_ms?, metadata?}`.

use super::args::{Args, MAX_NAME_BYTES};
use super::{Context, Outcome};
use crate::registry::prober::ProbeCmd;
use crate::registry::Registration;
use pycom_client::proto::{type_name, Fault};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Most interfaces one record may carry.
pub const MAX_INTERFACES: usize = 256;
/// Most metadata tags one record may carry.
pub const MAX_METADATA: usize = 64;

pub fn register(ctx: &mut Context, args: &Args) -> Outcome {
    match parse(ctx, args) {
        Ok(reg) => apply(ctx, reg),
        Err(fault) => Outcome::fault(fault),
    }
}

fn apply(ctx: &mut Context, reg: Registration) -> Outcome {
    let (record, op) = match ctx.registry.register(reg, ctx.now) {
        Ok(done) => done,
        Err(fault) => return Outcome::fault(fault),
    };
    tracing::info!(
        service = %record.service,
        address = %record.address,
        interfaces = ?record.interfaces,
        ttl_ms = ?record.ttl_ms,
        "registered"
    );
    let (result, probe) = match record.ttl_ms {
        Some(ttl) => (
            json!({"lease_ms": ttl}),
            ProbeCmd::Unwatch {
                service: record.service,
            },
        ),
        None => (
            json!({}),
            ProbeCmd::Watch {
                generation: ctx.registry.generation(&record.service).unwrap_or(0),
                service: record.service,
                address: record.address,
            },
        ),
    };
    Outcome::durable(op, result).with_probe(probe)
}

fn parse(ctx: &Context, args: &Args) -> Result<Registration, Fault> {
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
    }
    let metadata = match args.get("metadata") {
        None => None,
        Some(v) => Some(metadata(args, v)?),
    };
    Ok(Registration {
        service,
        address: address.to_string(),
        interfaces,
        replace,
        ttl_ms,
        metadata,
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
