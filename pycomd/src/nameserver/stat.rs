//! `stat`: a ping that also reports what pycomd holds.

use super::{Context, Outcome};
use serde::Serialize;
use std::sync::atomic::Ordering;

/// The result, serialized as it is (no intermediate JSON value: clients
/// use `stat` as a ping, often).
#[derive(Serialize)]
struct Stat {
    version: &'static str,
    uptime_s: u64,
    services: usize,
    interfaces: usize,
    requests: u64,
    errors: u64,
    failed: u64,
    store: StoreStat,
}

#[derive(Serialize)]
struct StoreStat {
    writes: u64,
    flushes: u64,
}

pub fn stat(ctx: &mut Context) -> Outcome {
    let stats = ctx.stats;
    Outcome::reply(Ok(Stat {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: stats.started.elapsed().as_secs(),
        services: ctx.registry.len(),
        interfaces: ctx.registry.interface_count(),
        requests: stats.requests,
        errors: stats.faults,
        failed: stats.failed,
        store: StoreStat {
            writes: stats.store.writes.load(Ordering::Relaxed),
            flushes: stats.store.flushes.load(Ordering::Relaxed),
        },
    }))
}
