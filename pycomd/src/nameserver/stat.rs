//! `stat`: a ping that also reports what pycomd holds.

use super::{Context, Plan};
use crate::log::LogStats;
use serde::Serialize;

/// The result, serialized as it is (no intermediate JSON value: clients
/// use `stat` as a ping, often).
#[derive(Serialize)]
struct Stat<'a> {
    version: &'static str,
    uptime_s: u64,
    services: usize,
    interfaces: usize,
    leases: usize,
    revision: u64,
    requests: u64,
    errors: u64,
    failed: u64,
    dropped_replies: u64,
    /// Bytes of big replies (shared, or cached) not yet taken by their peers.
    pending_reply_bytes: usize,
    store: LogStats,
    pubsub: Pubsub,
    /// The HTTP endpoint's address (metrics, health), or why it is off.
    http: Http<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a crate::cluster::Status>,
    /// Logins and refusals by kind (access control on).
    #[serde(skip_serializing_if = "Option::is_none")]
    auth: Option<&'a crate::auth::methods::AuthStats>,
    /// Runs by state, and the engine's counters (workflows hosted).
    #[serde(skip_serializing_if = "Option::is_none")]
    workflows: Option<Workflows<'a>>,
}

#[derive(Serialize)]
struct Workflows<'a> {
    hosted: usize,
    running: usize,
    ended_kept: usize,
    ended_bytes: usize,
    #[serde(flatten)]
    stats: &'a crate::workflow::Stats,
}

/// The forwarder's counters, or why it does not run.
#[derive(Serialize)]
#[serde(untagged)]
enum Pubsub {
    Running(crate::pubsub::methods::PubsubStat),
    Off { off: String },
}

#[derive(Serialize)]
#[serde(untagged)]
enum Http<'a> {
    Running(&'a str),
    Off { off: &'a str },
}

pub fn stat(ctx: &mut Context) -> Plan {
    let stats = ctx.stats;
    Plan::reply(Ok(Stat {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: stats.started.elapsed().as_secs(),
        services: ctx.registry.len(),
        interfaces: ctx.registry.interface_count(),
        leases: ctx.leases.len(),
        revision: ctx.registry.state().revision(),
        requests: stats.requests,
        errors: stats.faults,
        failed: stats.failed,
        dropped_replies: stats.dropped_replies,
        pending_reply_bytes: ctx.replies.pending_bytes(),
        store: (ctx.log_stats)(),
        pubsub: match ctx.pubsub {
            crate::pubsub::Started::Running(forwarder) => Pubsub::Running(forwarder.stat()),
            crate::pubsub::Started::Off(why) => Pubsub::Off { off: why.clone() },
        },
        http: match ctx.http {
            crate::http::Started::Running(address) => Http::Running(address),
            crate::http::Started::Off(why) => Http::Off { off: why },
        },
        cluster: ctx.cluster,
        auth: ctx.auth_stats,
        workflows: ctx.workflows.map(|(hosted, stats)| {
            let runs = ctx.registry.state().runs();
            Workflows {
                hosted,
                running: runs.running(),
                ended_kept: runs.ended(),
                ended_bytes: runs.ended_bytes(),
                stats,
            }
        }),
    }))
}
