//! `introspect`: the nameserver described in PyCOM 0.4's format, which
//! PyCOM's proxy client reads before its first call.

use super::Plan;
use serde_json::{json, Map, Value};

pub struct MethodDoc {
    pub name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    /// Keys of an object result that the proxy client turns into a tuple.
    results: &'static [&'static str],
    doc: &'static str,
}

const DOCSTRING: &str = "The pycom nameserver: services register here, clients locate them.";

/// Every method pycomd serves: dispatch and introspect read this one list.
pub const METHODS: &[MethodDoc] = &[
    MethodDoc {
        name: "stat",
        required: &[],
        optional: &[],
        results: &[],
        doc: "Ping; returns version, uptime_s, services, interfaces and request counters.",
    },
    MethodDoc {
        name: "register",
        required: &["service", "address"],
        optional: &["interface", "interfaces", "ttl_ms", "metadata"],
        results: &[],
        doc: "Register a service at an address: 'interface' adds one, 'interfaces' replaces the set. \
              With ttl_ms the record is leased, else probed. Acknowledged once on disk.",
    },
    MethodDoc {
        name: "renew",
        required: &["service", "address"],
        optional: &[],
        results: &[],
        doc: "Extend a lease. Code 3 when the record is unknown or expired.",
    },
    MethodDoc {
        name: "unregister",
        required: &["service", "address"],
        optional: &[],
        results: &[],
        doc: "Remove a record; only its owning address may.",
    },
    MethodDoc {
        name: "locate",
        required: &["interface"],
        optional: &["service", "as_list"],
        results: &["address", "service", "interfaces"],
        doc: "One live provider of an interface (load spread round-robin), or all with as_list.",
    },
    MethodDoc {
        name: "list_services",
        required: &[],
        optional: &["interface", "service"],
        results: &[],
        doc: "Records whose service and one interface match start-anchored regular expressions.",
    },
    MethodDoc {
        name: "introspect",
        required: &[],
        optional: &[],
        results: &["name", "methods", "docstring"],
        doc: "Provides introspection information for a service.",
    },
];

pub fn introspect() -> Plan {
    let methods: Map<String, Value> = METHODS
        .iter()
        .map(|m| {
            let doc = json!({
                "required_arguments": m.required,
                "optional_arguments": m.optional,
                "results": m.results,
                "docstring": m.doc,
            });
            (m.name.to_string(), doc)
        })
        .collect();
    Plan::reply(Ok(json!({
        "name": pycom_client::nameserver::INTERFACE,
        "docstring": DOCSTRING,
        "methods": methods,
    })))
}
