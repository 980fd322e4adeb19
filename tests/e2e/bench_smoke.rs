//! A short run of pycom-bench: it starts, measures against a real pycomd
//! and its own raw ZeroMQ echo, and prints sane numbers. Speeds are not
//! asserted here (shared machines are noisy): BENCHMARKS.md records them.

use pycom_e2e::{bin, Daemon};
use serde_json::Value;
use std::process::Command;

fn bench(args: &[&str]) -> Vec<Value> {
    let out = Command::new(bin("pycom-bench"))
        .args(["--json", "--quiet", "--duration", "1"])
        .args(args)
        .output()
        .expect("run pycom-bench");
    assert!(
        out.status.success(),
        "pycom-bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn assert_sane(run: &Value) {
    let result = &run["result"];
    assert!(result["ok"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(result["errors"], 0, "{run}");
    assert!(result["throughput"].as_f64().unwrap() > 0.0, "{run}");
    let (p50, p99) = (
        result["p50_us"].as_u64().unwrap(),
        result["p99_us"].as_u64().unwrap(),
    );
    assert!(p50 > 0 && p50 <= p99, "{run}");
    let echo = &run["raw_echo"];
    assert!(echo["throughput"].as_f64().unwrap() > 0.0, "{run}");
    assert!(run["throughput_ratio"].as_f64().unwrap() > 0.0, "{run}");
}

#[test]
fn stat_and_locate_against_pycomd() {
    let d = Daemon::start();
    let runs = bench(&[
        "--nameserver",
        &d.endpoint,
        "--op",
        "stat",
        "--clients",
        "2",
        "--in-flight",
        "8",
    ]);
    assert_eq!(runs.len(), 1);
    assert_sane(&runs[0]);
    let runs = bench(&[
        "--nameserver",
        &d.endpoint,
        "--op",
        "locate",
        "--preload",
        "200",
        "--scaling",
        "1,2",
    ]);
    assert_eq!(runs.len(), 2, "one line per client count");
    runs.iter().for_each(assert_sane);
    assert_eq!(
        d.ns().stat().unwrap()["services"],
        200 + pycom_e2e::OWN_RECORDS,
        "the preload registered 200 services (pycomd lists itself and its forwarder)"
    );
}

#[test]
fn durable_register_and_invoke() {
    let d = Daemon::start();
    let runs = bench(&["--nameserver", &d.endpoint, "--op", "register", "--clients", "4"]);
    assert_sane(&runs[0]);
    let registered = runs[0]["result"]["ok"].as_u64().unwrap();
    let stat = d.ns().stat().unwrap();
    assert!(stat["store"]["writes"].as_u64().unwrap() >= registered, "{stat}");
    let runs = bench(&["--op", "invoke", "--clients", "2"]);
    assert_sane(&runs[0]);
}

#[test]
fn pubsub_events_and_cache_memory() {
    let d = Daemon::start();
    let runs = bench(&[
        "--nameserver",
        &d.endpoint,
        "--op",
        "pubsub",
        "--body-bytes",
        "16",
        "--subscribers",
        "2",
        "--rate",
        "200",
    ]);
    assert_eq!(runs.len(), 1, "one row per size and subscriber count");
    let run = &runs[0];
    for key in [
        "throughput",
        "raw_proxy_throughput",
        "latency",
        "raw_proxy_latency",
    ] {
        let f = &run[key];
        assert!(f["received"].as_u64().unwrap() > 0, "{key}: {run}");
        assert!(f["msgs_per_s"].as_f64().unwrap() > 0.0, "{key}: {run}");
    }
    for key in ["latency", "raw_proxy_latency"] {
        let (p50, p99) = (
            run[key]["p50_us"].as_u64().unwrap(),
            run[key]["p99_us"].as_u64().unwrap(),
        );
        assert!(p50 > 0 && p50 <= p99, "{key}: {run}");
    }
    // The window keeps every queue below its high-water mark: a gap would
    // be a lost message.
    assert_eq!(run["gaps_all_runs"], 0, "{run}");
    assert_eq!(run["raw_proxy_gaps_all_runs"], 0, "{run}");
    assert!(run["throughput_ratio"].as_f64().unwrap() > 0.0, "{run}");

    let runs = bench(&[
        "--nameserver",
        &d.endpoint,
        "--op",
        "events",
        "--preload",
        "200",
        "--clients",
        "4",
        "--in-flight",
        "8",
    ]);
    assert_eq!(runs[0]["all_arrived_every_run"], true, "{}", runs[0]);
    assert_eq!(runs[0]["result"]["events"], 200, "{}", runs[0]);
    assert!(
        runs[0]["result"]["events_per_s"].as_f64().unwrap() > 0.0,
        "{}",
        runs[0]
    );

    let pid = d.pid().to_string();
    let runs = bench(&[
        "--nameserver",
        &d.endpoint,
        "--op",
        "lvc",
        "--topics",
        "50",
        "--body-bytes",
        "64",
        "--pycomd-pid",
        &pid,
    ]);
    let lvc = &runs[0];
    assert!(lvc["topics_cached"].as_u64().unwrap() >= 50, "{lvc}");
    assert!(lvc["cache_bytes"].as_u64().unwrap() > 50 * 64, "{lvc}");
    assert!(lvc["rss_after"].as_u64().unwrap() > 0, "{lvc}");
}
