//! `org.pycom.nameserver`: one file per method. A handler checks its
//! arguments against what it can read (the registry, the lease table) and
//! returns a [`Plan`]: a reply to send now, or a [`Command`] to write
//! through the log, answered once it is durable and applied ([`written`]).
//! Handlers do no I/O and change no state; `renew` alone moves a lease
//! deadline, which is not state.

mod args;
mod changes;
mod introspect;
mod list_services;
mod locate;
mod register;
mod renew;
mod stat;
mod unregister;

pub use locate::Located;

use crate::config::Settings;
use crate::leases::Leases;
use crate::log::LogStats;
use crate::registry::{Applied, Command, Registry};
use args::Args;
use pycom_client::proto::{self, Code, Fault};
use pycom_client::router::{Body, SharedBody};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// What a handler may read (and, for `renew`, the lease table; for big
/// reads, the reply cache and the count of reply bytes not yet taken).
pub struct Context<'a> {
    pub registry: &'a Registry,
    pub leases: &'a mut Leases,
    pub settings: &'a Settings,
    pub stats: &'a Stats,
    /// The log's counters, read only by `stat`.
    pub log_stats: &'a dyn Fn() -> LogStats,
    pub now: Instant,
    pub replies: &'a mut Replies,
    /// The pub-sub forwarder, for `stat`.
    pub pubsub: &'a crate::pubsub::Started,
    /// The HTTP endpoint, for `stat`.
    pub http: &'a crate::http::Started,
    /// Consecutive unanswered probes by address (`list_services` long).
    pub probe_failures: &'a crate::registry::Map<String, u32>,
    /// Workflows hosted and the engine's counters (for `stat`).
    pub workflows: Option<(usize, &'a crate::workflow::Stats)>,
    /// This node in its cluster, if it is in one (for `stat`).
    pub cluster: Option<&'a crate::cluster::Status>,
    /// Who is calling (`Open` with access control off).
    pub caller: &'a crate::auth::Caller,
    /// The access policy, when access control is on.
    pub policy: Option<&'a crate::auth::Policy>,
    /// Its counters, for `stat`.
    pub auth_stats: Option<&'a crate::auth::methods::AuthStats>,
    /// Buffers for the bodies of `locate`'s replies.
    pub bodies: &'a mut pycom_client::router::BodyPool,
}

/// Big replies: the last one made, for a client asking the same again at
/// the same revision (a loop of whole lists costs one), and the bytes held
/// by big replies peers have not taken yet ([`SharedBody`]).
#[derive(Debug, Default)]
pub struct Replies {
    pub pending: Arc<AtomicUsize>,
    last: Option<(u64, String, Body, bool)>,
}

impl Replies {
    /// The reply made for `args` at `revision`, if it was the last one made.
    pub fn cached(&self, revision: u64, args: &str) -> Option<Plan> {
        let (rev, key, body, fault) = self.last.as_ref()?;
        (*rev == revision && key == args).then(|| Plan::Body {
            body: body.clone(),
            fault: *fault,
        })
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// Make `bytes` a reply, shared and counted if big, and remember it
    /// unless it reads more than the revision says (the clock: leases left).
    pub fn keep(&mut self, revision: u64, args: &str, bytes: Vec<u8>, fault: bool, remember: bool) -> Plan {
        let body = if bytes.len() >= SHARED_REPLY_BYTES {
            Body::Shared(SharedBody::new(bytes, &self.pending))
        } else {
            Body::Owned(bytes)
        };
        if remember {
            self.last = Some((revision, args.to_string(), body.clone(), fault));
        }
        Plan::Body { body, fault }
    }
}

/// Replies at least this big are shared between identical requests and
/// counted against `max_pending_reply_bytes`.
pub const SHARED_REPLY_BYTES: usize = 64 * 1024;

impl Context<'_> {
    /// May the caller `what` (register, renew, unregister) `service`?
    /// Always, with access control off.
    pub fn may_write(&self, service: &str, what: &str) -> Result<(), Fault> {
        match self.policy {
            Some(policy) => policy.may_register(self.caller, service, what),
            None => Ok(()),
        }
    }

    /// Whether `service`'s lease (if it has one) has not run out.
    ///
    /// A cluster's followers keep no lease deadlines (renewals go to the
    /// leader, unlogged): a record is live there until the leader's expiry
    /// commits.
    pub fn live(&self, service: &str) -> bool {
        self.cluster.is_some_and(|c| !c.is_leader()) || self.leases.is_live(service)
    }
}

/// A handler's answer.
#[derive(Debug)]
pub enum Plan {
    /// Answer now: the encoded response body, or the fault.
    Read(Result<Vec<u8>, Fault>),
    /// Write this through the log; answer once it is durable and applied.
    Write(Command),
    /// Answer now with a body that may be shared with other replies.
    Body { body: Body, fault: bool },
    /// Answer now with a success reply already encoded in a recycled
    /// buffer (`locate`'s: no copy on the way out, see `router::recycled`).
    Recycled(pycom_client::router::RecycledBody),
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
/// `located`: a locate's args, when the server has already read them.
pub fn dispatch(ctx: &mut Context, method: &str, args: Option<&RawValue>, located: Option<Located>) -> Plan {
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
        "locate" => locate::fast(ctx, args, located),
        "renew" => renew::fast(ctx, args),
        _ => None,
    };
    if let Some(plan) = fast {
        return plan;
    }
    let args_key = args.map_or("null", |raw| raw.get());
    if name == "list_services" {
        if let Some(plan) = ctx.replies.cached(ctx.registry.state().revision(), args_key) {
            return plan;
        }
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
        "changes" => changes::changes(ctx, &args),
        _ => list_services::list_services(ctx, &args, args_key),
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
