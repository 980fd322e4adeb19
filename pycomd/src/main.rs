//! pycomd: the pycom daemon.
//!
//! Threads, each owning its sockets (ZeroMQ sockets are not thread-safe):
//! - server (this thread): the ROUTER socket and the in-memory registry;
//! - store: writes registry changes to sled in batches, flushes, then hands
//!   the held-back replies to the server;
//! - prober: probes the addresses of lease-less records;
//! - signals: turns SIGTERM/SIGINT/SIGHUP into events for the server.
//!
//! The other threads talk to the server over one inproc PULL socket, so the
//! server waits on a single poll for requests and everything else.

mod config;
mod logging;
mod nameserver;
mod notify;
mod registry;
mod server;
mod signals;

use clap::Parser;
use config::{Overrides, Settings};
use pycom_client::nameserver::{INTERFACE, SERVICE};
use registry::prober::{self, ProbeCmd, ProbeSettings};
use registry::store::Store;
use registry::{Record, Registry};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tracing::{error, info};

const EVENTS_ENDPOINT: &str = "inproc://pycomd-events";
/// How long replies still queued at exit may take to leave.
const EXIT_LINGER_MS: i32 = 2000;

/// The pycom daemon: a PyCOM-compatible nameserver with leases and durable registrations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// ZeroMQ endpoint to serve requests on [default: tcp://127.0.0.1:2012]
    #[arg(long, value_name = "ENDPOINT")]
    listen: Option<String>,
    /// Directory for the registry [default: $STATE_DIRECTORY or ./pycomd-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file [default: /etc/pycomd/pycomd.toml if it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or tracing directives [default: info]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        config_file: cli.config,
        listen: cli.listen,
        data_dir: cli.data_dir,
        log_level: cli.log_level,
        log_format: cli.log_format,
    };
    let settings = match Settings::load(&overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pycomd: {e}");
            return ExitCode::from(2);
        }
    };
    let log = match logging::init(&settings.log_level, &settings.log_format) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("pycomd: {e}");
            return ExitCode::from(2);
        }
    };
    match run(settings, overrides, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings, overrides: Overrides, log: logging::LogControl) -> Result<(), String> {
    let started = Instant::now();
    let ctx = zmq::Context::new();
    let store = Store::open(&settings.data_dir)?;
    let records = store.load()?;

    let router = bind_router(&ctx, &settings)?;
    let address = router
        .get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| settings.listen.clone());
    let events = ctx
        .socket(zmq::PULL)
        .map_err(|e| format!("cannot create the events socket: {e}"))?;
    events
        .bind(EVENTS_ENDPOINT)
        .map_err(|e| format!("cannot bind the events socket: {e}"))?;

    let me = Record {
        service: SERVICE.to_string(),
        address: address.clone(),
        interfaces: vec![INTERFACE.to_string()],
        metadata: [("version".to_string(), env!("CARGO_PKG_VERSION").to_string())].into(),
        ttl_ms: None,
    };
    let mut registry = Registry::new(me, settings.max_records);
    let restored = records.len();
    registry.restore(records, Instant::now());
    let probed: Vec<ProbeCmd> = registry
        .entries()
        .filter(|e| !e.permanent && e.record.ttl_ms.is_none())
        .map(|e| ProbeCmd::Watch {
            service: e.record.service.clone(),
            address: e.record.address.clone(),
            generation: e.generation,
        })
        .collect();

    let store_counters = store.counters();
    let (store_tx, store_thread) = store.spawn(push(&ctx)?);
    let probe_settings = ProbeSettings {
        interval: Duration::from_millis(settings.probe_interval_ms),
        timeout: Duration::from_millis(settings.probe_timeout_ms),
        failures: settings.probe_failures,
    };
    let (probe_tx, probe_thread) = prober::spawn(ctx.clone(), probe_settings, push(&ctx)?);
    for watch in probed {
        let _ = probe_tx.send(watch);
    }
    let (signal_handle, signal_thread) = signals::spawn(push(&ctx)?)?;

    info!(
        endpoint = %address,
        data_dir = %settings.data_dir.display(),
        records = restored,
        startup_ms = started.elapsed().as_millis() as u64,
        "pycomd {} serving",
        env!("CARGO_PKG_VERSION")
    );
    notify::ready();

    let server = server::Server {
        router,
        events,
        registry,
        settings,
        overrides,
        log,
        store: Some(store_tx),
        prober: probe_tx,
        stats: nameserver::Stats::new(store_counters),
        outbox: Default::default(),
    };
    server.run();

    signal_handle.close();
    let _ = signal_thread.join();
    let _ = store_thread.join();
    let _ = probe_thread.join();
    // Dropping the last context waits (up to the linger) for queued replies.
    drop(ctx);
    Ok(())
}

fn bind_router(ctx: &zmq::Context, settings: &Settings) -> Result<zmq::Socket, String> {
    let fail = |what: &str, e: zmq::Error| format!("cannot {what} the request socket: {e}");
    let router = ctx.socket(zmq::ROUTER).map_err(|e| fail("create", e))?;
    router
        .set_rcvhwm(settings.high_water_mark)
        .map_err(|e| fail("configure", e))?;
    router
        .set_sndhwm(settings.high_water_mark)
        .map_err(|e| fail("configure", e))?;
    router
        .set_linger(EXIT_LINGER_MS)
        .map_err(|e| fail("configure", e))?;
    // A hard cap well above max_message_bytes: libzmq drops the connection of
    // a peer that sends a single larger frame, before allocating it. Between
    // the two limits the peer gets a code-4 reply naming the limit.
    let hard_cap = settings
        .max_message_bytes
        .saturating_mul(16)
        .min(i64::MAX as usize) as i64;
    router
        .set_maxmsgsize(hard_cap)
        .map_err(|e| fail("configure", e))?;
    router
        .bind(&settings.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    Ok(router)
}

/// A PUSH socket to the server's events socket, for another thread.
fn push(ctx: &zmq::Context) -> Result<zmq::Socket, String> {
    let socket = ctx
        .socket(zmq::PUSH)
        .map_err(|e| format!("cannot create an events socket: {e}"))?;
    socket
        .connect(EVENTS_ENDPOINT)
        .map_err(|e| format!("cannot connect an events socket: {e}"))?;
    Ok(socket)
}
