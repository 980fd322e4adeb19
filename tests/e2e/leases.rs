//! Seed issue 1: records no longer live for ever. Leased records expire;
//! lease-less ones are probed and dropped when their service dies.

use pycom_client::Code;
use pycom_e2e::{leased, probed, wait_until, Daemon, EchoService};
use std::time::{Duration, Instant};

#[test]
fn a_lease_expires_promptly_after_its_deadline() {
    let d = Daemon::start();
    let mut ns = d.ns();
    let registered = Instant::now();
    assert_eq!(
        ns.register(&leased("/short", "tcp://127.0.0.1:1", &["s"], 1000))
            .unwrap(),
        Some(1000)
    );
    assert!(ns.locate("s", None).is_ok());
    assert!(wait_until(Duration::from_secs(5), || ns
        .locate("s", None)
        .is_err()));
    let gone_after = registered.elapsed();
    assert!(
        gone_after >= Duration::from_millis(1000),
        "expired early: {gone_after:?}"
    );
    assert!(
        gone_after < Duration::from_millis(2000),
        "expired late: {gone_after:?}"
    );
    assert_eq!(
        ns.locate("s", None).unwrap_err().code(),
        Some(Code::ServiceNotFound)
    );
    // Hidden at the deadline; removed (and logged) once its expiry is durable.
    assert!(wait_until(Duration::from_secs(5), || d
        .log()
        .contains("lease expired")));
}

#[test]
fn renewing_keeps_a_record_alive_and_renew_after_expiry_is_code_3() {
    let d = Daemon::start();
    let mut ns = d.ns();
    ns.register(&leased("/renewed", "tcp://127.0.0.1:1", &["r"], 1000))
        .unwrap();
    let until = Instant::now() + Duration::from_millis(3000);
    while Instant::now() < until {
        ns.renew("/renewed", "tcp://127.0.0.1:1").unwrap();
        assert!(ns.locate("r", None).is_ok(), "a renewed record must stay");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(wait_until(Duration::from_secs(5), || ns
        .locate("r", None)
        .is_err()));
    let err = ns.renew("/renewed", "tcp://127.0.0.1:1").unwrap_err();
    assert_eq!(
        err.code(),
        Some(Code::ServiceNotFound),
        "client should re-register: {err}"
    );
}

#[test]
fn ttl_out_of_bounds_is_code_4() {
    let d = Daemon::with(
        &[("PYCOMD_TTL_MIN_MS", "500"), ("PYCOMD_TTL_MAX_MS", "60000")],
        &[],
    );
    let mut ns = d.ns();
    for ttl in [10, 60_001] {
        let err = ns
            .register(&leased("/t", "tcp://127.0.0.1:1", &["t"], ttl))
            .unwrap_err();
        assert_eq!(err.code(), Some(Code::BadRequest));
        assert!(err.to_string().contains("between 500 and 60000"), "{err}");
    }
}

const FAST_PROBES: &[(&str, &str)] = &[
    ("PYCOMD_PROBE_INTERVAL_MS", "100"),
    ("PYCOMD_PROBE_TIMEOUT_MS", "250"),
    ("PYCOMD_PROBE_FAILURES", "3"),
];

#[test]
fn a_live_lease_less_service_stays_and_a_dead_one_is_dropped() {
    let d = Daemon::with(FAST_PROBES, &[]);
    let mut ns = d.ns();
    let alive = EchoService::start();
    let doomed = EchoService::start();
    ns.register(&probed("/alive", &alive.endpoint, &["a"])).unwrap();
    ns.register(&probed("/doomed", &doomed.endpoint, &["d"])).unwrap();
    // Many probe rounds: the live one must stay the whole time.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(ns.locate("a", None).is_ok());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ns.locate("d", None).is_ok());
    let killed = Instant::now();
    drop(doomed);
    assert!(
        wait_until(Duration::from_secs(5), || ns.locate("d", None).is_err()),
        "a dead service must be dropped; log:\n{}",
        d.log()
    );
    eprintln!("dead lease-less service dropped after {:?}", killed.elapsed());
    assert!(ns.locate("a", None).is_ok(), "the live one stays");
    assert!(d.log().contains("probes unanswered"));
}

#[test]
fn a_service_that_never_answered_is_dropped() {
    let d = Daemon::with(FAST_PROBES, &[]);
    let mut ns = d.ns();
    let port = pycom_e2e::free_port();
    ns.register(&probed("/ghost", &format!("tcp://127.0.0.1:{port}"), &["g"]))
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || ns
        .locate("g", None)
        .is_err()));
}

/// A pycomd stopped (SIGSTOP) for longer than a lease, while its owner
/// keeps renewing: on resuming, the renewals waiting unread are not
/// expired out from under it (etcd #12528). Every lease starts a fresh
/// term after a stall.
#[test]
fn a_stall_does_not_expire_leases_whose_owners_kept_renewing() {
    let d = Daemon::start();
    let mut ns = d.ns();
    ns.register(&leased("/stalled", "tcp://127.0.0.1:1", &["stall"], 1000))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renewer = {
        let (stop, endpoint) = (stop.clone(), d.endpoint.clone());
        std::thread::spawn(move || {
            let ctx = zmq::Context::new();
            let mut conn = pycom_client::Connection::open(&ctx, &endpoint).unwrap();
            conn.set_timeout(Duration::from_secs(10));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = conn.invoke(
                    "org.pycom.nameserver",
                    "renew",
                    serde_json::json!({"service": "/stalled", "address": "tcp://127.0.0.1:1"}),
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    d.signal("STOP");
    // Longer than the lease: the renewals queue up unread. (A wait for
    // time itself to pass, not for a condition.)
    std::thread::sleep(Duration::from_millis(2500));
    d.signal("CONT");
    for _ in 0..10 {
        assert!(
            ns.locate("stall", None).is_ok(),
            "the lease expired although its owner renewed all along: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renewer.join().unwrap();
    assert!(!d.log().contains("lease expired"), "{}", d.log());
    assert!(
        d.log().contains("pycomd stalled"),
        "the stall is logged: {}",
        d.log()
    );
}
