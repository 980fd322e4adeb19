//! pycom-bench: how many requests per second, at what latency, against a
//! raw ZeroMQ echo measured in the same run.
//!
//! ```text
//! pycom-bench --op locate --preload 10000 --clients 4 --in-flight 64 --duration 5
//! pycom-bench --op fdatasync --dir /var/lib/pycomd --duration 5
//! pycom-bench --preload-only --preload 1000000 --preload-clients 8
//! pycom-bench --op pubsub --body-bytes 16,128,1024 --subscribers 1,4
//! pycom-bench --op events --preload 10000 --clients 100 --in-flight 100
//! pycom-bench --op lvc --topics 20000 --body-bytes 1024 --pycomd-pid PID
//! pycom-bench --op locate --token TOKEN          # access control on
//! pycom-bench --op login --user bench --password bench --clients 50
//! pycom-bench --op workflow --scaling 1,16 --repeat 5
//! ```
//!
//! Every run of the operation is followed by the same load on a raw
//! ZeroMQ echo (a ROUTER bouncing frames, started by the tool), and the
//! ratio between the two is printed. `fdatasync` is the exception: it
//! measures the disk alone (append a record, fdatasync, repeat), so there is
//! nothing to compare with an echo. Pub-sub (`pubsub`) has a baseline of
//! its own, a raw `zmq_proxy` with raw PUB/SUB peers; `events` and `lvc`
//! measure pycomd alone (see `pubsub.rs`).

mod background;
mod disk;
mod load;
mod login;
mod ops;
mod pubsub;
mod servers;
mod workflow;

use clap::{Parser, ValueEnum};
use load::{Load, Summary};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Op {
    /// Nameserver ping.
    Stat,
    /// Nameserver look-up among --preload services.
    Locate,
    /// Durable register of a new service (flushed before the reply).
    Register,
    /// Lease renewal of --preload services.
    Renew,
    /// pycom-client Component calls to a pycom-client echo service (one in flight per client).
    Invoke,
    /// Pipelined raw DEALER calls to the pycom-client echo service.
    InvokeRaw,
    /// The disk alone: append a --record-bytes record to a file in --dir and
    /// fdatasync it, one thread (no nameserver, no raw echo baseline).
    Fdatasync,
    /// Pub-sub through pycomd's forwarder, 1 publisher to --subscribers,
    /// each --body-bytes: throughput and latency, against a raw zmq_proxy.
    Pubsub,
    /// --preload new services registered at once (--clients x
    /// --in-flight) while a subscriber counts the registry's events.
    Events,
    /// Fill the forwarder's last-value cache with --topics topics and
    /// report pycomd's memory (--pycomd-pid) against its cache_bytes.
    Lvc,
    /// Access control on: --clients logins at once (--user, --password)
    /// while one client locates, then logins back to back for --duration.
    Login,
    /// A 3-step workflow (--workflow, defined in pycomd's workflows_dir)
    /// against the same three calls made directly; --scaling clients.
    Workflow,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Load tool for pycomd and pycom services, with a raw ZeroMQ echo baseline"
)]
struct Cli {
    /// What to measure
    #[arg(long, value_enum, default_value = "stat")]
    op: Op,
    /// pycomd endpoint (for stat, locate, register, renew)
    #[arg(long, env = "PYCOM_NAMESERVER", default_value = pycom_client::nameserver::DEFAULT_ENDPOINT)]
    nameserver: String,
    /// Client sockets (threads)
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Run once per client count, e.g. 1,4,16,64 (overrides --clients)
    #[arg(long, value_delimiter = ',')]
    scaling: Vec<usize>,
    /// Requests each client keeps in flight
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Seconds each measurement runs
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Services registered before locate/renew runs
    #[arg(long, default_value_t = 10_000)]
    preload: usize,
    /// Client sockets (threads) registering the --preload services in parallel
    #[arg(long, default_value_t = 4)]
    preload_clients: usize,
    /// Registers each preload client keeps in flight
    #[arg(long, default_value_t = 256)]
    preload_in_flight: usize,
    /// Only register the --preload services (leased for an hour), report how long it took, and exit
    #[arg(long)]
    preload_only: bool,
    /// Directory for --op fdatasync: put it on the filesystem of pycomd's data dir
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Bytes appended before each fdatasync (--op fdatasync): about one log entry
    #[arg(long, default_value_t = 200)]
    record_bytes: usize,
    /// Worker threads of the echo service (invoke)
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Measure each row this many times (each with its baseline) and report the median run
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// While pycomd is measured, another client loops list_services (whole
    /// lists, or pages walking the registry): what big reads cost the others
    #[arg(long, value_enum, value_name = "LISTS")]
    background_lists: Option<background::Lists>,
    /// Skip the raw ZeroMQ echo baseline
    #[arg(long)]
    no_baseline: bool,
    /// One JSON object per measurement on stdout
    #[arg(long)]
    json: bool,
    /// A token every nameserver request carries (access control on)
    #[arg(long, env = "PYCOM_TOKEN")]
    token: Option<String>,
    /// Log in first (--user, --password) and carry that token
    #[arg(long, conflicts_with = "token")]
    login: bool,
    /// invoke, invoke-raw: the echo service requires authentication, its
    /// callers' tokens checked with --nameserver's pycomd (cached); give
    /// the calls a token with --login
    #[arg(long)]
    guarded: bool,
    /// User name for --op login
    #[arg(long, default_value = "bench")]
    user: String,
    /// Password for --op login
    #[arg(long, default_value = "bench")]
    password: String,
    /// No progress line
    #[arg(long)]
    quiet: bool,
    /// The workflow --op workflow runs (task `echo`, three steps of bench.echo.echo)
    #[arg(long, default_value = "/bench/workflow")]
    workflow: String,
    /// Pub-sub body sizes in bytes (--op pubsub; --op lvc takes the first)
    #[arg(long, value_delimiter = ',', default_value = "16,128,1024")]
    body_bytes: Vec<usize>,
    /// Pub-sub subscriber counts, one row each (--op pubsub)
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    subscribers: Vec<usize>,
    /// Publications a second of the pub-sub latency runs: modest, so
    /// that queues stay empty
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Pub-sub throughput runs: messages in flight at most (sent, not yet
    /// received by the slowest subscriber); default --hwm / 4; 0: no limit
    #[arg(long)]
    window: Option<u64>,
    /// High-water mark of every pub-sub socket the tool makes (and of the
    /// raw proxy); give pycomd the same (PYCOMD_PUBSUB__HIGH_WATER_MARK)
    #[arg(long, default_value_t = 10_000)]
    hwm: i32,
    /// The peers on pycomd's forwarder: pycom-client's, or raw sockets
    #[arg(long, value_enum, default_value = "client")]
    pubsub_peers: pubsub::Peers,
    /// Topics published for --op lvc
    #[arg(long, default_value_t = 20_000)]
    topics: usize,
    /// pycomd's process id, for its memory (--op lvc)
    #[arg(long, value_name = "PID")]
    pycomd_pid: Option<u32>,
    /// Internal: run a server (echo or service) for a parent pycom-bench
    #[arg(long, hide = true, value_name = "KIND")]
    serve: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pycom-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    if let Some(kind) = &cli.serve {
        let guard = cli.guarded.then_some(cli.nameserver.as_str());
        return servers::serve(kind, cli.workers, cli.hwm, guard);
    }
    if cli.duration <= 0.0 || cli.in_flight == 0 {
        return Err("--duration and --in-flight must be positive".into());
    }
    let ctx = zmq::Context::new();
    let preloader = ops::Preload {
        clients: cli.preload_clients,
        in_flight: cli.preload_in_flight,
    };
    if cli.preload_only {
        return preload_only(cli, &ctx, &preloader);
    }
    let duration = Duration::from_secs_f64(cli.duration);
    if cli.op == Op::Fdatasync {
        return fdatasync(cli, duration);
    }
    if matches!(cli.op, Op::Pubsub | Op::Events | Op::Lvc) {
        return pubsub::run(cli);
    }
    if cli.op == Op::Login {
        return login::run(cli, &ctx, &preloader);
    }
    if cli.op == Op::Workflow {
        return workflow::run(&workflow::Options {
            nameserver: &cli.nameserver,
            workflow: &cli.workflow,
            clients: if cli.scaling.is_empty() {
                vec![cli.clients]
            } else {
                cli.scaling.clone()
            },
            duration,
            repeat: cli.repeat,
            workers: cli.workers.max(4),
            json: cli.json,
        });
    }
    let echo = if cli.no_baseline {
        None
    } else {
        Some(servers::Child::spawn("echo", 1)?)
    };
    let service = match cli.op {
        Op::Invoke | Op::InvokeRaw if cli.guarded => Some(servers::Child::spawn_with(
            "service",
            &[
                "--workers",
                &cli.workers.to_string(),
                "--guarded",
                "--nameserver",
                &cli.nameserver,
            ],
        )?),
        Op::Invoke | Op::InvokeRaw => Some(servers::Child::spawn("service", cli.workers)?),
        _ => None,
    };
    let target = service
        .as_ref()
        .map_or(cli.nameserver.clone(), |s| s.endpoint.clone());
    let token = match cli.login {
        true => Some(login::token(cli, &ctx)?),
        false => cli.token.clone(),
    };
    let bodies = ops::Bodies::prepare(cli.op, cli.preload, token.as_deref());
    if bodies.needs_preload() {
        let started = Instant::now();
        preloader.run(&ctx, &target, cli.preload)?;
        if !cli.quiet {
            eprintln!(
                "preloaded {} services in {:.2} s",
                cli.preload,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let counts = if cli.scaling.is_empty() {
        vec![cli.clients]
    } else {
        cli.scaling.clone()
    };
    print_header(cli);
    for clients in counts {
        let in_flight = if cli.op == Op::Invoke { 1 } else { cli.in_flight };
        let label = format!("{:?}", cli.op).to_lowercase();
        let mut runs = Vec::with_capacity(cli.repeat);
        for _ in 0..cli.repeat.max(1) {
            let background = match cli.background_lists {
                Some(lists) => Some(background::Background::start(&ctx, &cli.nameserver, lists)?),
                None => None,
            };
            let measured = if cli.op == Op::Invoke {
                ops::invoke_with_components(&target, clients, duration, token.as_deref())?
            } else {
                let body = |c: usize, s: u64| bodies.body(c, s);
                Load {
                    endpoint: &target,
                    clients,
                    in_flight,
                    duration,
                    body: &body,
                    progress: !cli.quiet,
                    label: &label,
                }
                .run(&ctx)?
            }
            .summary();
            if let Some(background) = background {
                let said = background.stop()?;
                eprintln!("(background: {said})");
            }
            // The baseline right after, under the same conditions.
            let baseline = match &echo {
                Some(echo) => {
                    let body = |c: usize, s: u64| bodies.body(c, s);
                    let m = Load {
                        endpoint: &echo.endpoint,
                        clients,
                        in_flight,
                        duration,
                        body: &body,
                        progress: !cli.quiet,
                        label: "raw echo",
                    }
                    .run(&ctx)?;
                    Some(m.summary())
                }
                None => None,
            };
            runs.push((measured, baseline));
        }
        let (measured, baseline) = median(&mut runs);
        report(cli, &label, clients, in_flight, measured, baseline.as_ref());
    }
    Ok(())
}

/// The median run, by throughput ratio (by throughput without a baseline).
fn median(runs: &mut [(Summary, Option<Summary>)]) -> &(Summary, Option<Summary>) {
    let key = |(m, b): &(Summary, Option<Summary>)| match b {
        Some(b) if b.throughput > 0.0 => m.throughput / b.throughput,
        _ => m.throughput,
    };
    runs.sort_by(|x, y| key(x).total_cmp(&key(y)));
    &runs[runs.len() / 2]
}

fn print_header(cli: &Cli) {
    if !cli.json {
        println!(
            "{:<10} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>7} | {:>10} {:>8} | {:>7} {:>7}",
            "op",
            "clients",
            "in-flight",
            "req/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "errors",
            "echo req/s",
            "echo p50",
            "x req/s",
            "x p50"
        );
    }
}

/// `--preload-only`: register the --preload services and say how fast.
fn preload_only(cli: &Cli, ctx: &zmq::Context, preloader: &ops::Preload) -> Result<(), String> {
    let started = Instant::now();
    preloader.run(ctx, &cli.nameserver, cli.preload)?;
    let elapsed = started.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 {
        cli.preload as f64 / elapsed
    } else {
        0.0
    };
    if cli.json {
        let line = json!({
            "op": "preload", "services": cli.preload, "clients": preloader.clients,
            "in_flight": preloader.in_flight, "elapsed_s": elapsed, "throughput": rate,
        });
        println!("{line}");
    } else {
        println!(
            "preloaded {} services in {elapsed:.2} s ({rate:.0}/s; {} clients x {} in flight)",
            cli.preload, preloader.clients, preloader.in_flight
        );
    }
    Ok(())
}

/// `--op fdatasync`: the disk's own latency, one thread, reported in the
/// same row and JSON shape as the other operations, without a baseline.
fn fdatasync(cli: &Cli, duration: Duration) -> Result<(), String> {
    let dir = cli
        .dir
        .as_deref()
        .ok_or("--op fdatasync needs --dir DIR (on the filesystem to measure)")?;
    disk::check_dir(dir)?;
    if cli.clients != 1 || cli.scaling.iter().any(|&c| c != 1) || cli.in_flight != 1 {
        return Err("--op fdatasync runs one thread with one write in flight: drop --clients, --scaling and --in-flight".into());
    }
    let probe = disk::Fdatasync {
        dir,
        record_bytes: cli.record_bytes,
        duration,
        progress: !cli.quiet,
    };
    print_header(cli);
    let mut runs = Vec::with_capacity(cli.repeat);
    for _ in 0..cli.repeat.max(1) {
        runs.push((probe.run()?.summary(), None));
    }
    let (measured, _) = median(&mut runs);
    report(cli, "fdatasync", 1, 1, measured, None);
    if !cli.json {
        println!(
            "(fdatasync: the disk alone, no raw echo baseline; {} B appended to a file in {} and fdatasync'd, one thread; latency = write + fdatasync)",
            probe.record_bytes.max(1),
            dir.display()
        );
    }
    Ok(())
}

fn report(cli: &Cli, op: &str, clients: usize, in_flight: usize, m: &Summary, base: Option<&Summary>) {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let tput_ratio = base.map(|b| ratio(m.throughput, b.throughput));
    let p50_ratio = base.map(|b| ratio(m.p50_us as f64, b.p50_us as f64));
    if cli.json {
        let mut line = json!({
            "op": op, "clients": clients, "in_flight": in_flight, "duration_s": cli.duration, "repeat": cli.repeat,
            "result": m, "raw_echo": base,
            "throughput_ratio": tput_ratio, "p50_ratio": p50_ratio,
        });
        if cli.op == Op::Fdatasync {
            line["dir"] = json!(cli.dir);
            line["record_bytes"] = json!(cli.record_bytes.max(1));
        }
        println!("{line}");
        return;
    }
    let (bt, bp) = base.map_or((String::from("-"), String::from("-")), |b| {
        (format!("{:.0}", b.throughput), b.p50_us.to_string())
    });
    let fmt_ratio = |r: Option<f64>| r.map_or(String::from("-"), |r| format!("{r:.2}"));
    println!(
        "{:<10} {:>7} {:>9} {:>10.0} {:>8} {:>8} {:>8} {:>7} | {:>10} {:>8} | {:>7} {:>7}",
        op,
        clients,
        in_flight,
        m.throughput,
        m.p50_us,
        m.p99_us,
        m.p999_us,
        m.errors,
        bt,
        bp,
        fmt_ratio(tput_ratio),
        fmt_ratio(p50_ratio)
    );
}
