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
        201,
        "the preload registered 200 services"
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
