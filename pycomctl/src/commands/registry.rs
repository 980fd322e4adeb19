//! stat, list-services, locate, register, renew, unregister.

use super::Failure;
use super::Nameserver;
use crate::output;
use crate::Cli;
use pycom_client::{Registration, ServiceInfo};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub fn stat(cli: &Cli, ns: &mut Nameserver) -> Result<(), Failure> {
    let stat = ns.stat()?;
    if cli.json() {
        output::json(&stat)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = match &stat {
        Value::Object(map) => map.iter().map(|(k, v)| vec![k.clone(), plain(v)]).collect(),
        other => vec![vec!["result".into(), plain(other)]],
    };
    output::table(&["FIELD", "VALUE"], &rows)?;
    Ok(())
}

pub fn list_services(
    cli: &Cli,
    ns: &mut Nameserver,
    interface: Option<&str>,
    service: Option<&str>,
    long: bool,
) -> Result<(), Failure> {
    // Page by page: a whole list is bounded by pycomd's max_reply_bytes.
    let services = ns.list_all(interface, service, long)?;
    if long && !cli.json() {
        print_long(&services)?;
    } else {
        print_services(cli, &services)?;
    }
    Ok(())
}

pub fn locate(
    cli: &Cli,
    ns: &mut Nameserver,
    interface: &str,
    service: Option<&str>,
    all: bool,
) -> Result<(), Failure> {
    let services = if all {
        ns.locate_all(interface, service)?
    } else {
        vec![ns.locate(interface, service)?]
    };
    if cli.json() && !all {
        output::json(&json!(services[0]))?;
    } else {
        print_services(cli, &services)?;
    }
    Ok(())
}

/// What `register` asks for.
pub struct NewRecord<'a> {
    pub service: &'a str,
    pub address: &'a str,
    pub interfaces: &'a [String],
    pub ttl_ms: Option<u64>,
    pub metadata: &'a [(String, String)],
}

pub fn register(cli: &Cli, ns: &mut Nameserver, r: NewRecord) -> Result<(), Failure> {
    let mut metadata = BTreeMap::new();
    for (key, value) in r.metadata {
        if metadata.insert(key.clone(), value.clone()).is_some() {
            return Err(Failure::Usage(format!("--metadata {key} is given twice")));
        }
    }
    let (service, address) = (r.service, r.address);
    let lease = ns.register(&Registration {
        service: service.to_string(),
        address: address.to_string(),
        interfaces: r.interfaces.to_vec(),
        ttl_ms: r.ttl_ms,
        metadata,
    })?;
    if cli.json() {
        output::json(&json!({"service": service, "lease_ms": lease}))?;
    } else {
        match lease {
            Some(ms) => output::line(format_args!(
                "registered {service} at {address} with a lease of {ms} ms"
            ))?,
            None => output::line(format_args!(
                "registered {service} at {address} (probed: no lease)"
            ))?,
        }
    }
    Ok(())
}

pub fn renew(cli: &Cli, ns: &mut Nameserver, service: &str, address: &str) -> Result<(), Failure> {
    let answer = ns.renew(service, address)?;
    let lease = answer.get("lease_ms").and_then(Value::as_u64);
    if cli.json() {
        output::json(&json!({"service": service, "renewed": true, "lease_ms": lease}))?;
    } else {
        match lease {
            Some(ms) => output::line(format_args!("renewed {service}: a lease of {ms} ms from now"))?,
            None => output::line(format_args!(
                "renewed {service}: it is probed, so it has no lease to extend"
            ))?,
        }
    }
    Ok(())
}

pub fn unregister(cli: &Cli, ns: &mut Nameserver, service: &str, address: &str) -> Result<(), Failure> {
    ns.unregister(service, address)?;
    if cli.json() {
        output::json(&json!({"service": service, "unregistered": true}))?;
    } else {
        output::line(format_args!("unregistered {service}"))?;
    }
    Ok(())
}

fn print_services(cli: &Cli, services: &[ServiceInfo]) -> std::io::Result<()> {
    if cli.json() {
        return output::json(&json!(services));
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let meta: Vec<String> = s.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                s.service.clone(),
                s.address.clone(),
                s.interfaces.join(","),
                meta.join(","),
            ]
        })
        .collect();
    output::table(&["SERVICE", "ADDRESS", "INTERFACES", "METADATA"], &rows)
}

/// The table of `list-services --long`.
fn print_long(services: &[ServiceInfo]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let state = s.state.as_ref();
            let kept_by = state.map_or("-".to_string(), |st| st.kept_by.clone());
            let left = match state.and_then(|st| st.lease_left_ms.zip(st.ttl_ms)) {
                Some((left, ttl)) => format!("{:.1}s of {:.1}s", left as f64 / 1e3, ttl as f64 / 1e3),
                None => "-".into(),
            };
            let revision = state.map_or("-".to_string(), |st| st.revision.to_string());
            let failures = state
                .and_then(|st| st.probe_failures)
                .map_or("-".to_string(), |n| n.to_string());
            let meta: Vec<String> = s.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                s.service.clone(),
                s.address.clone(),
                s.interfaces.join(","),
                kept_by,
                left,
                failures,
                revision,
                meta.join(","),
            ]
        })
        .collect();
    output::table(
        &[
            "SERVICE",
            "ADDRESS",
            "INTERFACES",
            "KEPT BY",
            "LEASE LEFT",
            "PROBES FAILED",
            "REVISION",
            "METADATA",
        ],
        &rows,
    )
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
