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
use pycom_client::proto::{Code, Fault};
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
    pub result: Result<Value, Fault>,
    /// A change to persist before `result` may be sent.
    pub write: Option<StoreOp>,
    /// A change to what the prober watches.
    pub probe: Option<ProbeCmd>,
}

impl Outcome {
    pub fn reply(result: Result<Value, Fault>) -> Outcome {
        Outcome {
            result,
            write: None,
            probe: None,
        }
    }

    pub fn durable(op: StoreOp, result: Value) -> Outcome {
        Outcome {
            result: Ok(result),
            write: Some(op),
            probe: None,
        }
    }

    pub fn with_probe(mut self, probe: ProbeCmd) -> Outcome {
        self.probe = Some(probe);
        self
    }
}

/// Run `method` with `args`.
pub fn dispatch(ctx: &mut Context, method: &str, args: &Value) -> Outcome {
    // `stat` and `introspect` ignore their args, as PyCOM's did.
    match method {
        "stat" => return stat::stat(ctx),
        "introspect" => return introspect::introspect(),
        _ => {}
    }
    let Some(name) = known(method) else {
        return Outcome::reply(Err(Fault::new(
            Code::MethodNotFound,
            format!("interface org.pycom.nameserver has no method '{method}'"),
        )));
    };
    let args = match Args::new(name, args) {
        Ok(args) => args,
        Err(fault) => return Outcome::reply(Err(fault)),
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
