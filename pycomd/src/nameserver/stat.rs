//! `stat`: a ping that also reports what pycomd holds.

use super::{Context, Outcome};
use serde_json::json;
use std::sync::atomic::Ordering;

pub fn stat(ctx: &mut Context) -> Outcome {
    let stats = ctx.stats;
    Outcome::reply(Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": stats.started.elapsed().as_secs(),
        "services": ctx.registry.len(),
        "interfaces": ctx.registry.interface_count(),
        "requests": stats.requests,
        "errors": stats.faults,
        "failed": stats.failed,
        "store": {
            "writes": stats.store.writes.load(Ordering::Relaxed),
            "flushes": stats.store.flushes.load(Ordering::Relaxed),
        },
    })))
}
