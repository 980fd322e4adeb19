//! pycom-client against a real pycomd: calling, hosting, recovery,
//! sessions, attachments, the interface! proxy.

use pycom_client::service::{Interface, Method, Reply, Service};
use pycom_client::{Binary, Code, Context, Error, Fault, Limits, RetryPolicy};
use pycom_e2e::fixtures::{calc, Calc, Total};
use pycom_e2e::{free_port, wait_until, Daemon};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn ctx(d: &Daemon) -> Context {
    let ctx = Context::new(&d.endpoint).unwrap();
    ctx.set_default_timeout(Duration::from_millis(2000));
    ctx
}

fn echo_interface() -> Interface {
    Interface::new("test.echo")
        .handle("echo", |req| Ok(req.args.clone().into()))
        .handle("whoami", |_req| Ok(json!(std::process::id()).into()))
}

#[test]
fn typed_proxy_calls_and_errors_map_to_codes() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let _svc = Service::builder("/test/calc")
        .context(ctx.clone())
        .interface(calc::interface(Arc::new(Calc)))
        .start()
        .unwrap();
    let mut calc = calc::Client(ctx.locate(calc::NAME).unwrap());
    assert_eq!(calc.add(2, 3, None).unwrap(), Total { total: 5 });
    assert_eq!(calc.add(2, 3, Some(4)).unwrap().total, 9);
    assert_eq!(calc.divide(9, 3).unwrap(), 3);
    let err = calc.divide(1, 0).unwrap_err();
    assert!(
        matches!(&err, Error::BadRequest(m) if m.contains("b must not be 0")),
        "{err:?}"
    );
    assert_eq!(err.code(), Some(Code::BadRequest));
    assert!(err.to_string().contains("b must not be 0"));

    // The dynamic API reaches the same service.
    let mut dynamic = ctx.locate("test.calc").unwrap();
    let total: Total = dynamic.invoke_as("add", json!({"a": 1, "b": 1})).unwrap();
    assert_eq!(total.total, 2);
    let err = dynamic.invoke("add", json!({"a": "one", "b": 1})).unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest));
    assert!(err.to_string().contains("field 'a'"), "{err}");
    assert_eq!(
        dynamic.invoke("add", json!({"a": 1})).unwrap_err().code(),
        Some(Code::BadRequest)
    );
    assert_eq!(
        dynamic.invoke("nope", json!(null)).unwrap_err().code(),
        Some(Code::MethodNotFound)
    );
    let err = ctx.locate("test.missing").err().expect("no such interface");
    assert_eq!(err.code(), Some(Code::ServiceNotFound));

    // introspect in PyCOM 0.4's format, generated from the declaration.
    let intro = dynamic.invoke("introspect", json!(null)).unwrap();
    assert_eq!(intro["name"], "test.calc");
    assert_eq!(
        intro["docstring"],
        "Arithmetic, declared once for client and server."
    );
    let add = &intro["methods"]["add"];
    assert_eq!(add["required_arguments"], json!(["a", "b"]));
    assert_eq!(add["optional_arguments"], json!(["c"]));
    assert_eq!(add["results"], json!(["total"]));
    assert_eq!(add["docstring"], "Add a and b, and c when given.");
}

#[test]
fn a_component_survives_its_service_restarting_at_the_same_address() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let bind = format!("tcp://127.0.0.1:{}", free_port());
    // ZeroMQ releases a closed listener asynchronously: a restart binds as
    // soon as the port is free again, as a restarted process would.
    let host = || {
        let mut running = None;
        let bound = wait_until(Duration::from_secs(5), || {
            running = Service::builder("/test/restart")
                .context(ctx.clone())
                .bind(&bind)
                .interface(echo_interface())
                .start()
                .ok();
            running.is_some()
        });
        assert!(bound, "cannot bind {bind} again");
        running.unwrap()
    };
    let svc = host();
    let mut echo = ctx.locate("test.echo").unwrap();
    echo.set_timeout(Duration::from_millis(500));
    assert_eq!(echo.invoke("echo", json!(1)).unwrap(), json!(1));
    svc.stop();
    let restarted = Instant::now();
    let _svc = host();
    assert_eq!(echo.invoke("echo", json!(2)).unwrap(), json!(2));
    eprintln!(
        "same address: call succeeded {:?} after the restart",
        restarted.elapsed()
    );
}

#[test]
fn a_component_follows_its_service_to_a_new_address() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let host = || {
        Service::builder("/test/moving")
            .context(ctx.clone())
            .interface(echo_interface())
            .start()
            .unwrap()
    };
    let first = host();
    let old = first.endpoint().to_string();
    let mut echo = ctx.locate("test.echo").unwrap();
    echo.set_timeout(Duration::from_millis(500));
    assert_eq!(echo.invoke("echo", json!("a")).unwrap(), json!("a"));
    first.stop();
    let restarted = Instant::now();
    let second = host();
    assert_ne!(second.endpoint(), old, "the new instance has a new port");
    assert_eq!(echo.invoke("echo", json!("b")).unwrap(), json!("b"));
    eprintln!(
        "new address: call succeeded {:?} after the restart",
        restarted.elapsed()
    );
    assert_eq!(echo.address(), second.endpoint());
}

#[test]
fn no_retry_for_methods_marked_unsafe() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let svc = Service::builder("/test/unsafe")
        .context(ctx.clone())
        .interface(echo_interface())
        .start()
        .unwrap();
    let mut echo = ctx.locate("test.echo").unwrap();
    echo.set_timeout(Duration::from_millis(300));
    echo.set_retry(RetryPolicy::default().except(["echo"]));
    svc.stop();
    let _second = Service::builder("/test/unsafe")
        .context(ctx.clone())
        .interface(echo_interface())
        .start()
        .unwrap();
    // echo may have run before the failure was seen: it is not retried.
    assert!(matches!(
        echo.invoke("echo", json!(1)),
        Err(Error::Timeout { .. })
    ));
    // whoami is safe: retried on the new instance.
    assert!(echo.invoke("whoami", json!(null)).is_ok());
}

#[test]
fn renewal_keeps_a_service_registered_across_many_lease_periods() {
    let d = Daemon::with(&[("PYCOMD_TTL_MIN_MS", "100")], &[]);
    let ctx = ctx(&d);
    let _svc = Service::builder("/test/renewed")
        .context(ctx.clone())
        .lease(Duration::from_millis(500))
        .interface(echo_interface())
        .start()
        .unwrap();
    let mut ns = d.ns();
    let until = Instant::now() + Duration::from_millis(4000);
    while Instant::now() < until {
        assert!(ns.locate("test.echo", None).is_ok(), "the lease must be renewed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_service_registers_again_when_pycomd_forgets_it() {
    let mut d = Daemon::with(&[("PYCOMD_TTL_MIN_MS", "100")], &[]);
    let ctx = ctx(&d);
    ctx.set_default_timeout(Duration::from_millis(300));
    let _svc = Service::builder("/test/again")
        .context(ctx.clone())
        .lease(Duration::from_millis(600))
        .interface(echo_interface())
        .start()
        .unwrap();
    d.kill9();
    std::fs::remove_dir_all(&d.data_dir).unwrap();
    d.spawn();
    assert_eq!(
        d.log()
            .lines()
            .filter(|l| l.contains("serving") && l.contains("records=0"))
            .count(),
        2,
        "both starts had an empty registry"
    );
    let mut ns = d.ns();
    assert!(
        wait_until(Duration::from_secs(10), || ns.locate("test.echo", None).is_ok()),
        "the service must register again"
    );
}

#[test]
fn a_graceful_stop_unregisters() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let svc = Service::builder("/test/stop")
        .context(ctx.clone())
        .interface(echo_interface())
        .start()
        .unwrap();
    assert!(d.ns().locate("test.echo", None).is_ok());
    svc.stop();
    assert_eq!(
        d.ns().locate("test.echo", None).unwrap_err().code(),
        Some(Code::ServiceNotFound)
    );
}

#[test]
fn many_threads_share_one_context() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let _svc = Service::builder("/test/threads")
        .context(ctx.clone())
        .interface(echo_interface())
        .start()
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let ctx = ctx.clone();
            std::thread::spawn(move || {
                let mut echo = ctx.locate("test.echo").unwrap();
                for i in 0..200 {
                    assert_eq!(echo.invoke("echo", json!([t, i])).unwrap(), json!([t, i]));
                }
                // The nameserver handle is shared too.
                ctx.nameserver().stat().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_slow_handler_does_not_block_the_others() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let iface = echo_interface().handle("slow", move |_req| {
        let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(10));
        Ok(json!("slow done").into())
    });
    let _svc = Service::builder("/test/slow")
        .context(ctx.clone())
        .workers(2)
        .interface(iface)
        .start()
        .unwrap();
    let slow_ctx = ctx.clone();
    let slow = std::thread::spawn(move || {
        let mut c = slow_ctx.locate("test.echo").unwrap();
        c.set_timeout(Duration::from_secs(15));
        c.invoke("slow", json!(null)).unwrap()
    });
    let mut fast = ctx.locate("test.echo").unwrap();
    for i in 0..20 {
        assert_eq!(fast.invoke("echo", json!(i)).unwrap(), json!(i));
    }
    assert!(
        !slow.is_finished(),
        "the slow call is still held while fast ones complete"
    );
    release.send(()).unwrap();
    assert_eq!(slow.join().unwrap(), json!("slow done"));
}

#[test]
fn a_panicking_handler_is_code_1_and_the_service_keeps_running() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let iface = echo_interface().handle("boom", |_req| panic!("kaboom"));
    let _svc = Service::builder("/test/panic")
        .context(ctx.clone())
        .workers(1)
        .interface(iface)
        .start()
        .unwrap();
    let mut c = ctx.locate("test.echo").unwrap();
    for _ in 0..3 {
        let err = c.invoke("boom", json!(null)).unwrap_err();
        assert_eq!(err.code(), Some(Code::Unknown));
        assert!(err.to_string().contains("panicked"), "{err}");
    }
    assert_eq!(
        c.invoke("echo", json!("still here")).unwrap(),
        json!("still here")
    );
}

fn counter_interface() -> Interface {
    Interface::new("test.counter").handle("increment", |req| {
        let n = req.session.get("n").and_then(Value::as_i64).unwrap_or(0) + 1;
        req.session.insert("n".into(), json!(n));
        Ok(json!(n).into())
    })
}

#[test]
fn sessions_are_per_client_and_expire() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let idle = Duration::from_millis(1000);
    let _svc = Service::builder("/test/sessions")
        .context(ctx.clone())
        .sessions(idle, 100)
        .interface(counter_interface().handle("peek", |_req| Ok(json!("no state").into())))
        .start()
        .unwrap();
    let mut a = ctx.locate("test.counter").unwrap();
    let mut b = ctx.locate("test.counter").unwrap();
    // No session until a handler stores something.
    assert_eq!(a.invoke("peek", json!(null)).unwrap(), json!("no state"));
    assert_eq!(a.session_id(), None);
    assert_eq!(a.invoke("increment", json!(null)).unwrap(), json!(1));
    assert_eq!(a.invoke("increment", json!(null)).unwrap(), json!(2));
    assert_eq!(b.invoke("increment", json!(null)).unwrap(), json!(1));
    assert!(a.session_id().is_some() && a.session_id() != b.session_id());
    // Let a's session sit idle past the timeout (time itself is the condition here).
    let idle_until = Instant::now() + idle + Duration::from_millis(200);
    while Instant::now() < idle_until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = a.invoke("increment", json!(null)).unwrap_err();
    assert_eq!(err.code(), Some(Code::SessionExpired));
    // The component drops the expired id: the next call starts afresh.
    assert_eq!(a.invoke("increment", json!(null)).unwrap(), json!(1));
}

#[test]
fn attachments_of_every_size_travel_both_ways() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let limits = Limits {
        max_total_bytes: 8 * 1024 * 1024,
        spill_threshold: 64 * 1024,
    };
    let iface = Interface::new("test.files").method(Method::new("mirror", |req| {
        // Report how each attachment arrived, and send them all back.
        let mut reply = Reply::default();
        let mut seen = Vec::new();
        for a in &req.attachments {
            seen.push(json!({"len": a.len(), "spilled": a.path().is_some()}));
            let bytes = a.bytes().map_err(|e| Fault::new(Code::Unknown, e.to_string()))?;
            reply = reply.attach(Binary::from_bytes(bytes.into_owned()));
        }
        reply.value = json!(seen);
        Ok(reply)
    }));
    let _svc = Service::builder("/test/files")
        .context(ctx.clone())
        .limits(limits)
        .interface(iface)
        .start()
        .unwrap();
    let mut c = ctx.locate("test.files").unwrap();
    c.set_limits(limits);
    let large: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let cases: Vec<Vec<Binary>> = vec![
        vec![],
        vec![Binary::from_bytes(b"one".to_vec())],
        (0..10)
            .map(|i| Binary::from_bytes(vec![i as u8; i * 100]))
            .collect(),
        vec![Binary::from_bytes(large.clone()), Binary::from_bytes(Vec::new())],
    ];
    for sent in cases {
        let out = c.call("mirror", json!(null), &sent).unwrap();
        assert_eq!(out.attachments.len(), sent.len());
        for (i, (a, b)) in sent.iter().zip(&out.attachments).enumerate() {
            assert_eq!(a.as_bytes(), &b.bytes().unwrap()[..], "attachment {i} changed");
            let spilled = a.len() > limits.spill_threshold;
            assert_eq!(
                out.result[i]["spilled"],
                json!(spilled),
                "service side, attachment {i}"
            );
            assert_eq!(b.path().is_some(), spilled, "client side, attachment {i}");
        }
    }
    // Over the limit: refused before sending, with the limit named.
    let too_big = vec![Binary::from_bytes(vec![0u8; 9 * 1024 * 1024])];
    let err = c.call("mirror", json!(null), &too_big).unwrap_err();
    assert!(matches!(err, Error::Attachment(_)), "{err}");
    assert!(err.to_string().contains("exceed the limit"), "{err}");
    // A client with a higher limit meets the service's own check: code 4.
    c.set_limits(Limits {
        max_total_bytes: 64 * 1024 * 1024,
        ..limits
    });
    let err = c.call("mirror", json!(null), &too_big).unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest), "{err}");
}

#[test]
fn nameserver_failover_uses_the_next_endpoint() {
    let d = Daemon::start();
    let dead = format!("tcp://127.0.0.1:{}", free_port());
    let ctx = Context::new(&format!("{dead},{}", d.endpoint)).unwrap();
    ctx.set_default_timeout(Duration::from_millis(300));
    let stat = ctx.nameserver().stat().unwrap();
    assert!(stat["version"].is_string());
    let _svc = Service::builder("/test/failover")
        .context(ctx.clone())
        .interface(echo_interface())
        .start()
        .unwrap();
    assert!(ctx.locate("test.echo").is_ok());
    let none = Context::new(&dead).unwrap();
    none.set_default_timeout(Duration::from_millis(200));
    assert!(none.nameserver().stat().unwrap_err().is_unreachable());
}

#[test]
fn hosting_answers_unknown_interfaces_methods_and_bad_bodies() {
    let d = Daemon::start();
    let ctx = ctx(&d);
    let svc = Service::builder("/test/bad")
        .context(ctx.clone())
        .interface(echo_interface())
        .start()
        .unwrap();
    let mut conn = d.connection(2000);
    let mut direct = pycom_client::Connection::open(ctx.zmq(), svc.endpoint()).unwrap();
    let err = direct.invoke("test.other", "echo", json!(null)).unwrap_err();
    assert_eq!(err.code(), Some(Code::ServiceNotFound));
    let err = direct.invoke("test.echo", "missing", json!(null)).unwrap_err();
    assert_eq!(err.code(), Some(Code::MethodNotFound));
    let reply = direct.call_frames(&[b"", b"CALL", b"{not json"]).unwrap();
    assert_eq!(reply.response.result.unwrap_err().code, Code::BadRequest);
    assert!(matches!(
        direct.call_frames(&[b"", b"HELLO"]),
        Err(Error::Failed { .. })
    ));
    conn.invoke("org.pycom.nameserver", "stat", json!(null)).unwrap();
}
