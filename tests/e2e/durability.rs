//! Registrations survive restarts and `kill -9`: an acknowledged register
//! is on disk.

use pycom_client::{Code, Registration};
use pycom_e2e::{leased, probed, Daemon, EchoService};
use std::time::{Duration, Instant};

#[test]
fn sigterm_exits_0_and_a_restart_keeps_records() {
    let mut d = Daemon::start();
    let svc = EchoService::start();
    d.ns()
        .register(&leased("/kept", "tcp://127.0.0.1:1", &["k"], 60_000))
        .unwrap();
    d.ns()
        .register(&probed("/probed", &svc.endpoint, &["p"]))
        .unwrap();
    d.ns()
        .register(&leased("/gone", "tcp://127.0.0.1:2", &["g"], 60_000))
        .unwrap();
    d.ns().unregister("/gone", "tcp://127.0.0.1:2").unwrap();
    let status = d.terminate();
    assert!(
        status.success(),
        "SIGTERM should exit 0, got {status}; log:\n{}",
        d.log()
    );
    d.spawn();
    let mut ns = d.ns();
    assert_eq!(ns.locate("k", None).unwrap().service, "/kept");
    assert_eq!(ns.locate("p", None).unwrap().service, "/probed");
    assert_eq!(
        ns.locate("g", None).unwrap_err().code(),
        Some(Code::ServiceNotFound)
    );
    // Ownership survives too.
    let err = ns
        .register(&leased("/kept", "tcp://127.0.0.1:9", &["k"], 60_000))
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AccessDenied));
}

#[test]
fn kill_9_right_after_acks_loses_nothing() {
    let mut d = Daemon::start();
    // Several clients at once, so acknowledgements share flushes.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let endpoint = d.endpoint.clone();
            std::thread::spawn(move || {
                let ctx = zmq::Context::new();
                let conn = pycom_client::Connection::open(&ctx, &endpoint).unwrap();
                let mut ns = pycom_client::NameserverClient::new(conn);
                for i in 0..50 {
                    ns.register(&leased(
                        &format!("/k9/{t}/{i}"),
                        "tcp://127.0.0.1:1",
                        &["k9"],
                        60_000,
                    ))
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    d.kill9();
    d.spawn();
    let all = d.ns().locate_all("k9", None).unwrap();
    assert_eq!(all.len(), 400, "every acknowledged register must survive kill -9");
}

#[test]
fn leases_get_a_fresh_full_term_after_restart() {
    let mut d = Daemon::start();
    d.ns()
        .register(&leased("/fresh", "tcp://127.0.0.1:1", &["f"], 2000))
        .unwrap();
    // Let most of the lease run out while pycomd is down.
    let down = Instant::now();
    d.kill9();
    while down.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    d.spawn();
    let restarted = Instant::now();
    let mut ns = d.ns();
    // At 1.5 s + restart, the old term would have ended; the fresh one has not.
    while restarted.elapsed() < Duration::from_millis(1200) {
        assert!(ns.locate("f", None).is_ok(), "lease should restart in full");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pycom_e2e::wait_until(Duration::from_secs(5), || ns
        .locate("f", None)
        .is_err()));
}

#[test]
fn registrations_are_acknowledged_in_batches_under_load() {
    let d = Daemon::start();
    let started = Instant::now();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let endpoint = d.endpoint.clone();
            std::thread::spawn(move || {
                let ctx = zmq::Context::new();
                let mut ns = pycom_client::NameserverClient::new(
                    pycom_client::Connection::open(&ctx, &endpoint).unwrap(),
                );
                for i in 0..100 {
                    let reg = Registration {
                        service: format!("/batch/{t}/{i}"),
                        address: "tcp://127.0.0.1:1".into(),
                        interfaces: vec!["b".into()],
                        ttl_ms: Some(60_000),
                        metadata: Default::default(),
                    };
                    ns.register(&reg).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    eprintln!(
        "1600 durable registers from 16 clients in {:?}",
        started.elapsed()
    );
    assert_eq!(d.ns().locate_all("b", None).unwrap().len(), 1600);
    let stat = d.ns().stat().unwrap();
    let writes = stat["store"]["writes"].as_u64().unwrap();
    let flushes = stat["store"]["flushes"].as_u64().unwrap();
    eprintln!("{writes} writes in {flushes} flushes");
    assert_eq!(writes, 1600);
    assert!(
        flushes < writes,
        "concurrent writes must share flushes: {writes} writes, {flushes} flushes"
    );
}
