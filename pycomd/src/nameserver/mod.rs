//! `org.pycom.nameserver`: one file per method, all sharing [`Context`] in
//! and [`Outcome`] out. Handlers check their arguments and ask the
//! registry; they do no I/O. The server turns an [`Outcome`] into a reply,
//! at once or after the store has flushed the write.

mod args;
mod introspect;
mod list_services;
mod locate;
mod register;
mod renew;
mod stat;
mod unregister;

use crate::config::Settings;
use crate::registry::prober::ProbeCmd;
use crate::registry::store::StoreCounters;
use crate::registry::{Registry, StoreOp};
use args::Args;
use pycom_client::proto::{self, Code, Fault};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::Arc;
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
    pub store: Arc<StoreCounters>,
}

impl Stats {
    pub fn new(store: Arc<StoreCounters>) -> Stats {
        Stats {
            started: Instant::now(),
            requests: 0,
            faults: 0,
            failed: 0,
            store,
        }
    }
}

/// What a handler may read and change.
pub struct Context<'a> {
    pub registry: &'a mut Registry,
    pub settings: &'a Settings,
    pub stats: &'a Stats,
    pub now: Instant,
}

/// A handler's answer.
#[derive(Debug)]
pub struct Outcome {
    /// The encoded response body, or the fault to answer with.
    pub result: Result<Vec<u8>, Fault>,
    /// A change to persist before `result` may be sent.
    pub write: Option<StoreOp>,
    /// A change to what the prober watches.
    pub probe: Option<ProbeCmd>,
}

impl Outcome {
    /// Answer now with any serializable result (or the fault).
    pub fn reply<T: Serialize>(result: Result<T, Fault>) -> Outcome {
        Outcome::encoded(result.map(|value| proto::encode_response(Ok(&value), None)))
    }

    /// Answer now with a fault.
    pub fn fault(fault: Fault) -> Outcome {
        Outcome::encoded(Err(fault))
    }

    /// Answer now with a response body already encoded.
    pub fn encoded(result: Result<Vec<u8>, Fault>) -> Outcome {
        Outcome {
            result,
            write: None,
            probe: None,
        }
    }

    /// Answer with `result` once `op` is on disk.
    pub fn durable<T: Serialize>(op: StoreOp, result: T) -> Outcome {
        Outcome {
            result: Ok(proto::encode_response(Ok(&result), None)),
            write: Some(op),
            probe: None,
        }
    }

    pub fn with_probe(mut self, probe: ProbeCmd) -> Outcome {
        self.probe = Some(probe);
        self
    }
}

/// Run `method` with `args` (raw JSON, `None` when absent or null).
pub fn dispatch(ctx: &mut Context, method: &str, args: Option<&RawValue>) -> Outcome {
    // `stat` and `introspect` ignore their args, as PyCOM's did.
    match method {
        "stat" => return stat::stat(ctx),
        "introspect" => return introspect::introspect(),
        _ => {}
    }
    let Some(name) = known(method) else {
        return Outcome::fault(Fault::new(
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
    if let Some(outcome) = fast {
        return outcome;
    }
    let value: Value = match args.map(|raw| serde_json::from_str(raw.get())) {
        None => Value::Null,
        Some(Ok(value)) => value,
        Some(Err(e)) => {
            return Outcome::fault(Fault::bad_request(format!(
                "{name}: args are not valid JSON: {e}"
            )))
        }
    };
    let args = match Args::new(name, &value) {
        Ok(args) => args,
        Err(fault) => return Outcome::fault(fault),
    };
    match name {
        "register" => register::register(ctx, &args),
        "renew" => renew::renew(ctx, &args),
        "unregister" => unregister::unregister(ctx, &args),
        "locate" => locate::locate(ctx, &args),
        _ => list_services::list_services(ctx, &args),
    }
}

/// The method's name as a `'static` string, for error messages.
fn known(method: &str) -> Option<&'static str> {
    ["register", "renew", "unregister", "locate", "list_services"]
        .into_iter()
        .find(|m| *m == method)
}
