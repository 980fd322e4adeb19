//! `org.pycom.nameserver`: one file per method. A handler checks its
//! arguments against what it can read (the registry, the lease table) and
//! returns a [`Plan`]: a reply to send now, or a [`Command`] to write
//! through the log, answered once it is durable and applied ([`written`]).
//! Handlers do no I/O and change no state; `renew` alone moves a lease
//! deadline, which is not state.

mod args;
mod introspect;
mod list_services;
mod locate;
mod register;
mod renew;
mod stat;
mod unregister;

use crate::config::Settings;
use crate::leases::Leases;
use crate::log::LogStats;
use crate::registry::{Applied, Command, Registry};
use args::Args;
use pycom_client::proto::{self, Code, Fault};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::Instant;

/// Request counters, reported by `stat`.
#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    pub requests: u64,
    /// Replies with a non-zero code.
    pub faults: u64,
    /// Requests answered `FAIL` (not a call at all).
    pub failed: u64,
    /// Replies dropped because their peer was gone or at its high-water mark.
    pub dropped_replies: u64,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            started: Instant::now(),
            requests: 0,
            faults: 0,
            failed: 0,
            dropped_replies: 0,
        }
    }
}

/// What a handler may read (and, for `renew`, the lease table).
pub struct Context<'a> {
    pub registry: &'a Registry,
    pub leases: &'a mut Leases,
    pub settings: &'a Settings,
    pub stats: &'a Stats,
    pub log: LogStats,
    pub now: Instant,
}

impl Context<'_> {
    /// Whether `service`'s lease (if it has one) has not run out.
    pub fn live(&self, service: &str) -> bool {
        self.leases.is_live(service, self.now)
    }
}

/// A handler's answer.
#[derive(Debug)]
pub enum Plan {
    /// Answer now: the encoded response body, or the fault.
    Read(Result<Vec<u8>, Fault>),
    /// Write this through the log; answer once it is durable and applied.
    Write(Command),
}

impl Plan {
    /// Answer now with any serializable result (or the fault).
    pub fn reply<T: Serialize>(result: Result<T, Fault>) -> Plan {
        Plan::Read(result.map(|value| proto::encode_response(Ok(&value), None)))
    }

    pub fn fault(fault: Fault) -> Plan {
        Plan::Read(Err(fault))
    }
}

/// The reply to a write, from what applying it did.
pub fn written(result: &Result<Applied, Fault>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Lease {
        #[serde(skip_serializing_if = "Option::is_none")]
        lease_ms: Option<u64>,
    }
    match result {
        Ok(Applied::Registered(record)) => proto::encode_response(
            Ok(&Lease {
                lease_ms: record.ttl_ms,
            }),
            None,
        ),
        Ok(_) => proto::encode_response(Ok(&Lease { lease_ms: None }), None),
        Err(fault) => proto::encode_fault(fault, None),
    }
}

/// Run `method` with `args` (raw JSON, `None` when absent or null).
pub fn dispatch(ctx: &mut Context, method: &str, args: Option<&RawValue>) -> Plan {
    // `stat` and `introspect` ignore their args, as PyCOM's did.
    match method {
        "stat" => return stat::stat(ctx),
        "introspect" => return introspect::introspect(),
        _ => {}
    }
    let Some(name) = known(method) else {
        return Plan::fault(Fault::new(
            Code::MethodNotFound,
            format!("interface org.pycom.nameserver has no method '{method}'"),
        ));
    };
    // The hottest methods first try their args borrowed, in place; what
    // that cannot take goes the general way below, which names problems.
    let fast = match name {
        "locate" => locate::fast(ctx, args),
        "renew" => renew::fast(ctx, args),
        _ => None,
    };
    if let Some(plan) = fast {
        return plan;
    }
    let value: Value = match args.map(|raw| serde_json::from_str(raw.get())) {
        None => Value::Null,
        Some(Ok(value)) => value,
        Some(Err(e)) => {
            return Plan::fault(Fault::bad_request(format!(
                "{name}: args are not valid JSON: {e}"
            )))
        }
    };
    let args = match Args::new(name, &value) {
        Ok(args) => args,
        Err(fault) => return Plan::fault(fault),
    };
    match name {
        "register" => register::register(ctx, &args),
        "renew" => renew::renew(ctx, &args),
        "unregister" => unregister::unregister(ctx, &args),
        "locate" => locate::locate(ctx, &args),
        _ => list_services::list_services(ctx, &args),
    }
}

/// The method's name as a `'static` string, for error messages: one of
/// those the nameserver's declaration (`pycom_client::nameserver::api`) lists.
fn known(method: &str) -> Option<&'static str> {
    pycom_client::nameserver::api::METHODS
        .iter()
        .map(|m| m.name)
        .find(|m| *m == method)
}
