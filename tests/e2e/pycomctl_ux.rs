//! pycomctl as an operator meets it: no silent retries, quiet broken pipes,
//! a hint when nothing answers, malformed endpoints as usage errors, and
//! the operators' additions (--metadata, renew, --output).

use pycom_client::service::{Interface, Method, Service};
use pycom_client::Context;
use pycom_e2e::{bin, free_port, pycomctl as ctl, stderr, stdout, wait_until, Daemon};
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn ctl_at(nameserver: &str, args: &[&str]) -> Output {
    Command::new(bin("pycomctl"))
        .env_remove("PYCOM_NAMESERVER")
        .arg("--nameserver")
        .arg(nameserver)
        .args(args)
        .output()
        .unwrap()
}

/// A service whose `work` takes `slow` and counts how often it started.
fn slow_service(d: &Daemon, slow: Duration) -> (pycom_client::service::RunningService, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let iface = Interface::new("ux.slow")
        .method(Method::new("work", move |_req| {
            counter.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(slow);
            Ok(json!("worked").into())
        }))
        .method(Method::new("quick", |_req| Ok(json!("quick").into())));
    let running = Service::builder("/ux/slow")
        .context(Context::new(&d.endpoint).unwrap())
        .interface(iface)
        .start()
        .unwrap();
    (running, calls)
}

/// Wait until `calls` reaches `at_least`, then a little longer for any
/// straggler, and return the count.
fn settled(calls: &AtomicUsize, at_least: usize) -> usize {
    wait_until(Duration::from_secs(5), || {
        calls.load(Ordering::SeqCst) >= at_least
    });
    std::thread::sleep(Duration::from_millis(500));
    calls.load(Ordering::SeqCst)
}

#[test]
fn call_runs_a_slow_method_once_unless_retries_are_asked_for() {
    let d = Daemon::start();
    let (_svc, calls) = slow_service(&d, Duration::from_millis(1500));

    let o = ctl(&d, &["--timeout", "300", "call", "ux.slow", "work"]);
    let err = stderr(&o);
    assert_eq!(settled(&calls, 1), 1, "the method ran more than once: {o:?}");
    assert_eq!(o.status.code(), Some(4), "a service that does not answer: {o:?}");
    assert!(!err.contains("retry"), "{err}");
    assert!(err.contains("no reply within 300 ms"), "{err}");

    // Asked for: each retry is said on stderr.
    calls.store(0, Ordering::SeqCst);
    let o = ctl(
        &d,
        &["--timeout", "300", "call", "ux.slow", "work", "--retry", "2"],
    );
    let err = stderr(&o);
    assert_eq!(settled(&calls, 3), 3, "{o:?}");
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert_eq!(err.matches("retrying").count(), 2, "{err}");
    assert!(err.contains("try 2 of 3") && err.contains("try 3 of 3"), "{err}");

    // A quick method with --retry: no retry needed, none said.
    let o = ctl(&d, &["call", "ux.slow", "quick", "--retry", "3"]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).trim(), "quick");
    assert!(!stderr(&o).contains("retry"), "{o:?}");
}

/// Run pycomctl with its stdout closed before it writes (`| head` that
/// has already exited), and return how it ended and what it said.
fn with_stdout_closed(d: &Daemon, args: &[&str]) -> Output {
    let mut child = Command::new(bin("pycomctl"))
        .env("PYCOM_NAMESERVER", &d.endpoint)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_ends_pycomctl_quietly() {
    let d = Daemon::start();
    for i in 0..50 {
        let o = ctl(
            &d,
            &[
                "register",
                &format!("/ux/pipe/{i}"),
                "tcp://127.0.0.1:9",
                "ux.pipe",
                "--ttl",
                "60000",
            ],
        );
        assert!(o.status.success(), "{o:?}");
    }
    for args in [
        &["list-services"][..],
        &["--json", "list-services"],
        &["stat"],
        &["--output", "json", "locate", "ux.pipe", "--all"],
    ] {
        let o = with_stdout_closed(&d, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "pycomctl {args:?}: {o:?}");
        assert!(!err.contains("panicked"), "pycomctl {args:?}: {err}");
        assert!(err.is_empty(), "pycomctl {args:?} said: {err}");
    }
}

#[test]
fn nothing_answering_names_the_endpoint_and_asks_if_pycomd_runs() {
    // Nothing listens: refused at once, no need to wait out the timeout.
    let dead = format!("tcp://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let o = ctl_at(&dead, &["--timeout", "4000", "stat"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        err.contains(&format!("no answer from {dead}: is pycomd running?")),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "a refused connection waited {:?}",
        started.elapsed()
    );

    // Something listens but never speaks ZeroMQ (a wrong port): the
    // timeout, then the same hint.
    let wrong = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let wrong = format!("tcp://{}", wrong.local_addr().unwrap());
    let o = ctl_at(&wrong, &["--timeout", "300", "list-services"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        err.contains(&format!("no answer from {wrong}: is pycomd running?")),
        "{err}"
    );
    assert!(err.contains("no reply within 300 ms"), "{err}");

    // Failover skips a refused endpoint without waiting for it.
    let d = Daemon::start();
    let started = Instant::now();
    let o = ctl_at(&format!("{dead},{}", d.endpoint), &["--timeout", "4000", "stat"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "{:?}",
        started.elapsed()
    );

    // The codes are in --help.
    let help = stdout(&Command::new(bin("pycomctl")).arg("--help").output().unwrap());
    assert!(help.contains("Exit status"), "{help}");
    assert!(help.contains("is pycomd running"), "{help}");
    assert!(help.contains("4  "), "{help}");
}

#[test]
fn a_malformed_endpoint_is_a_usage_error() {
    for (endpoint, says) in [
        ("localhost:2012", "tcp://localhost:2012"),
        ("tcp://nohost", "no port"),
        ("tcp://nohost:http", "port"),
        ("tcp://*:2012", "*"),
        ("udpx://h:1", "transport"),
    ] {
        let o = ctl_at(endpoint, &["--timeout", "300", "stat"]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{endpoint}: {o:?}");
        assert!(err.contains(endpoint) && err.contains(says), "{endpoint}: {err}");
        assert!(err.contains("--nameserver"), "{endpoint}: {err}");
    }
    // From the environment: the message names the variable.
    let o = Command::new(bin("pycomctl"))
        .env("PYCOM_NAMESERVER", "localhost:2012")
        .arg("stat")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("PYCOM_NAMESERVER"), "{o:?}");
}

#[test]
fn register_with_metadata_renew_and_output_formats() {
    let d = Daemon::start();
    let o = ctl(
        &d,
        &[
            "register",
            "/ux/meta",
            "tcp://127.0.0.1:7",
            "ux.meta",
            "--ttl",
            "60000",
            "--metadata",
            "team=ops",
            "--metadata",
            "url=http://x/?a=b",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let o = ctl(&d, &["--output", "json", "locate", "ux.meta"]);
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["metadata"], json!({"team": "ops", "url": "http://x/?a=b"}));
    // --json is the same as --output json.
    assert_eq!(ctl(&d, &["--json", "locate", "ux.meta"]).stdout, o.stdout);
    let table = stdout(&ctl(
        &d,
        &["--output", "table", "list-services", "--service", "/ux"],
    ));
    assert!(table.starts_with("SERVICE"), "{table}");
    assert!(table.contains("team=ops"), "{table}");

    let o = ctl(&d, &["renew", "/ux/meta", "tcp://127.0.0.1:7"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("renewed /ux/meta"), "{o:?}");
    let o = ctl(
        &d,
        &["--output", "json", "renew", "/ux/meta", "tcp://127.0.0.1:7"],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["service"], "/ux/meta");
    assert_eq!(v["renewed"], true);
    // Someone else's record, and one that does not exist: pycomd says no.
    assert_eq!(
        ctl(&d, &["renew", "/ux/meta", "tcp://127.0.0.1:8"]).status.code(),
        Some(1)
    );
    assert_eq!(
        ctl(&d, &["renew", "/ux/none", "tcp://127.0.0.1:7"]).status.code(),
        Some(1)
    );

    for bad in [
        &[
            "register",
            "/ux/b",
            "tcp://127.0.0.1:7",
            "i",
            "--metadata",
            "novalue",
        ][..],
        &["register", "/ux/b", "tcp://127.0.0.1:7", "i", "--metadata", "=v"],
        &["--output", "yaml", "stat"],
        &["--json", "--output", "table", "stat"],
    ] {
        let o = ctl(&d, bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {o:?}");
    }
}

#[test]
fn list_services_long_shows_how_each_record_is_kept() {
    let d = Daemon::start();
    let echo = pycom_e2e::EchoService::start();
    let mut ns = d.ns();
    ns.register(&pycom_e2e::leased(
        "/long/leased",
        "tcp://127.0.0.1:1",
        &["long"],
        60_000,
    ))
    .expect("register a leased record");
    ns.register(&pycom_e2e::probed("/long/probed", &echo.endpoint, &["long"]))
        .expect("register a probed record");
    let out = ctl(
        &d,
        &[
            "--output",
            "json",
            "list-services",
            "--service",
            "/long/",
            "--long",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(listed.len(), 2);
    let leased = &listed[0]["state"];
    assert_eq!(leased["kept_by"], "lease");
    assert_eq!(leased["ttl_ms"], 60_000);
    let left = leased["lease_left_ms"].as_u64().expect("lease_left_ms");
    assert!(left > 50_000 && left <= 60_000, "{left} ms left of 60,000");
    assert!(leased["revision"].as_u64().is_some());
    let probed = &listed[1]["state"];
    assert_eq!(probed["kept_by"], "probes");
    assert_eq!(probed["lease_left_ms"], Value::Null);
    // The table has the columns.
    let out = ctl(&d, &["list-services", "--long"]);
    let table = stdout(&out);
    assert!(
        table.contains("KEPT BY") && table.contains("LEASE LEFT") && table.contains("probes"),
        "{table}"
    );
}

#[test]
fn list_services_long_counts_unanswered_probes() {
    let d = Daemon::with(
        &[
            ("PYCOMD_PROBE_INTERVAL_MS", "100"),
            ("PYCOMD_PROBE_TIMEOUT_MS", "100"),
            ("PYCOMD_PROBE_FAILURES", "1000"),
        ],
        &[],
    );
    let echo = pycom_e2e::EchoService::start();
    let dead = format!("tcp://127.0.0.1:{}", pycom_e2e::free_port());
    let mut ns = d.ns();
    ns.register(&pycom_e2e::probed("/fails/dead", &dead, &["fails"]))
        .expect("register a probed record at a dead address");
    ns.register(&pycom_e2e::probed("/fails/live", &echo.endpoint, &["fails"]))
        .expect("register a probed record at a live one");
    let failures = |service: &str| -> Option<u64> {
        let out = ctl(
            &d,
            &[
                "--output",
                "json",
                "list-services",
                "--service",
                service,
                "--long",
            ],
        );
        let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).ok()?;
        listed.first()?["state"]["probe_failures"].as_u64()
    };
    // Asked the same again and again: the count moves (a long list is not
    // a cached reply, though the revision stays the same).
    assert!(
        pycom_e2e::wait_until(std::time::Duration::from_secs(10), || failures("/fails/dead")
            .is_some_and(|n| n >= 3)),
        "the dead address's failures are counted: {}",
        stdout(&ctl(&d, &["list-services", "--long"]))
    );
    assert_eq!(failures("/fails/live"), Some(0), "a live address has none");
    let table = stdout(&ctl(&d, &["list-services", "--long", "--service", "/fails/"]));
    assert!(table.contains("PROBES FAILED"), "{table}");
}

/// A CURVE key is Z85, which may start with '-' (about one key in 85): it
/// is taken as the value of --server-key, not as another flag.
#[test]
fn a_server_key_starting_with_a_dash_is_a_value() {
    let key = format!("-{}", "c".repeat(39));
    let o = ctl_at("tcp://127.0.0.1:1", &["--server-key", &key, "stat"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.contains("unexpected argument"), "{err}");
    assert!(err.contains("CURVE") || err.contains("no answer"), "{err}");
}
