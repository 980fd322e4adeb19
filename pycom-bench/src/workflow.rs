//! `--op workflow`: a 3-step workflow hosted by pycomd against the same
//! three calls made directly, one after the other, by the client.
//!
//! The workflow (`--workflow`, default `/bench/workflow`, task `echo`)
//! must be defined in pycomd's workflows directory with three steps
//! calling `bench.echo.echo` (bench/run.sh writes it). This tool hosts
//! that echo service, registered, and measures alternately: direct (three
//! `invoke`s in a row) and through the workflow, each `--repeat` times,
//! at `--clients` clients with one call in flight each. The difference of
//! the p50s is what a workflow costs (its three durable log entries and
//! three hand-offs to a call thread); the throughput at many clients is
//! how many durable runs a second pycomd carries.

use crate::load::{measure, Summary};
use pycom_client::service::{Interface, Service};
use pycom_client::Context;
use serde_json::json;
use std::time::Duration;

pub struct Options<'a> {
    pub nameserver: &'a str,
    pub workflow: &'a str,
    pub clients: Vec<usize>,
    pub duration: Duration,
    pub repeat: usize,
    pub workers: usize,
    pub json: bool,
}

pub fn run(o: &Options) -> Result<(), String> {
    let ctx = Context::new(o.nameserver).map_err(|e| e.to_string())?;
    ctx.set_default_timeout(Duration::from_secs(30));
    let echo = Interface::new("bench.echo").handle("echo", |req| Ok(req.args.clone().into()));
    let service = Service::builder("/bench/wf-echo")
        .context(ctx.clone())
        .workers(o.workers)
        .interface(echo)
        .start()
        .map_err(|e| format!("cannot start the echo service: {e}"))?;
    let address = service.endpoint().to_string();
    // The workflow answers once the echo is registered.
    let mut wf = ctx
        .workflow(o.workflow)
        .map_err(|e| format!("workflow {}: {e} (is it in pycomd's workflows_dir?)", o.workflow))?;
    wf.invoke("echo", json!({"n": 1}))
        .map_err(|e| format!("workflow {} task echo: {e}", o.workflow))?;
    if !o.json {
        println!(
            "{:<9} {:>7} {:>10} {:>8} {:>8} | {:>10} {:>8} {:>8} | {:>9} {:>7}",
            "op",
            "clients",
            "runs/s",
            "p50 us",
            "p99 us",
            "direct/s",
            "p50 us",
            "p99 us",
            "+p50 us",
            "x runs"
        );
    }
    for &clients in &o.clients {
        let mut pairs: Vec<(Summary, Summary)> = Vec::new();
        for _ in 0..o.repeat.max(1) {
            let direct = measure(&ctx, clients, o.duration, |ctx| {
                let mut c = ctx.connect(&address, "bench.echo").map_err(|e| e.to_string())?;
                Ok(Box::new(move |args: &serde_json::Value| {
                    for _ in 0..3 {
                        c.invoke("echo", args)?;
                    }
                    Ok(())
                }))
            })?
            .summary();
            let through = measure(&ctx, clients, o.duration, |ctx| {
                let mut c = ctx.workflow(o.workflow).map_err(|e| e.to_string())?;
                Ok(Box::new(move |args: &serde_json::Value| {
                    c.invoke("echo", args).map(|_| ())
                }))
            })?
            .summary();
            pairs.push((through, direct));
        }
        // The median run by the workflow's p50.
        pairs.sort_by_key(|(w, _)| w.p50_us);
        let (w, d) = &pairs[pairs.len() / 2];
        let extra = w.p50_us as i64 - d.p50_us as i64;
        let ratio = if d.throughput > 0.0 {
            w.throughput / d.throughput
        } else {
            0.0
        };
        if o.json {
            println!(
                "{}",
                json!({"op": "workflow", "clients": clients, "repeat": o.repeat, "workflow": w,
                       "direct": d, "extra_p50_us": extra, "throughput_ratio": ratio})
            );
        } else {
            println!(
                "{:<9} {:>7} {:>10.0} {:>8} {:>8} | {:>10.0} {:>8} {:>8} | {:>9} {:>7.2}",
                "workflow",
                clients,
                w.throughput,
                w.p50_us,
                w.p99_us,
                d.throughput,
                d.p50_us,
                d.p99_us,
                extra,
                ratio
            );
        }
    }
    service.stop();
    Ok(())
}
