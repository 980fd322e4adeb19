//! Hostile input: every case gets a FAIL or a code-4 reply that names the
//! problem, quickly, and pycomd keeps serving everyone else.

use pycom_client::Code;
use pycom_e2e::Daemon;
use std::time::{Duration, Instant};

/// Send raw frames on a DEALER and return `(status, body)` of the reply.
fn raw(d: &Daemon, frames: &[&[u8]]) -> (Vec<u8>, String) {
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    s.connect(&d.endpoint).unwrap();
    s.send_multipart(frames.iter().copied(), 0).unwrap();
    assert!(
        s.poll(zmq::POLLIN, 3000).unwrap() > 0,
        "no reply to {:?}",
        frames.iter().map(|f| f.len()).collect::<Vec<_>>()
    );
    let mut parts = s.recv_multipart(0).unwrap();
    if parts.first().is_some_and(|p| p.is_empty()) {
        parts.remove(0);
    }
    let status = parts.first().cloned().unwrap_or_default();
    let body = parts
        .get(1)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    (status, body)
}

fn code4(d: &Daemon, frames: &[&[u8]], needle: &str) {
    let (status, body) = raw(d, frames);
    assert_eq!(status, b"OK", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 4, "{body}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains(needle), "{error:?} should mention {needle:?}");
}

fn still_serves(d: &Daemon) {
    d.ns_with_timeout(2000).stat().expect("pycomd must keep serving");
}

#[test]
fn unknown_command_and_empty_message_get_fail() {
    let d = Daemon::start();
    let (status, body) = raw(&d, &[b"", b"PING", b"{}"]);
    assert_eq!(status, b"FAIL");
    assert!(body.contains("unknown command"), "{body}");
    let (status, _) = raw(&d, &[b""]);
    assert_eq!(status, b"FAIL");
    let (status, _) = raw(&d, &[b"", b"\xff\x00garbage"]);
    assert_eq!(status, b"FAIL");
    still_serves(&d);
}

#[test]
fn a_dealer_without_delimiter_is_answered_too() {
    let d = Daemon::start();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.connect(&d.endpoint).unwrap();
    s.send_multipart(
        [
            &b"CALL"[..],
            br#"{"interface":"org.pycom.nameserver","method":"stat"}"#,
        ],
        0,
    )
    .unwrap();
    assert!(s.poll(zmq::POLLIN, 3000).unwrap() > 0);
    let parts = s.recv_multipart(0).unwrap();
    assert_eq!(parts[0], b"OK");
}

#[test]
fn bad_bodies_are_code_4_naming_the_problem() {
    let d = Daemon::start();
    code4(&d, &[b"", b"CALL"], "no body");
    code4(&d, &[b"", b"CALL", b"\xff\xfe\xfd"], "not valid JSON");
    code4(&d, &[b"", b"CALL", b"{\"interface\": "], "not valid JSON");
    code4(&d, &[b"", b"CALL", b"42"], "must be a JSON object");
    code4(
        &d,
        &[b"", b"CALL", br#"{"method": "stat"}"#],
        "'interface' is required",
    );
    code4(
        &d,
        &[b"", b"CALL", br#"{"interface": [], "method": "stat"}"#],
        "'interface' must be a string",
    );
    code4(
        &d,
        &[
            b"",
            b"CALL",
            br#"{"interface": "org.pycom.nameserver", "method": "stat", "version": "2.0"}"#,
        ],
        "version",
    );
    let register = |args: &str| {
        format!(r#"{{"interface": "org.pycom.nameserver", "method": "register", "args": {args}}}"#)
    };
    code4(
        &d,
        &[b"", b"CALL", register("[1]").as_bytes()],
        "args must be an object",
    );
    code4(
        &d,
        &[b"", b"CALL", register(r#"{"service": 1}"#).as_bytes()],
        "field 'service' must be a string",
    );
    code4(
        &d,
        &[b"", b"CALL", register(r#"{"service": "/x"}"#).as_bytes()],
        "field 'address' is required",
    );
    code4(
        &d,
        &[
            b"",
            b"CALL",
            register(r#"{"service": "/x", "address": "nowhere", "interface": "i"}"#).as_bytes(),
        ],
        "ZeroMQ endpoint",
    );
    code4(
        &d,
        &[
            b"",
            b"CALL",
            register(r#"{"service": "/x", "address": "tcp://h:1", "interface": "i", "ttl_ms": -5}"#)
                .as_bytes(),
        ],
        "ttl_ms",
    );
    code4(
        &d,
        &[
            b"",
            b"CALL",
            register(r#"{"service": "/x", "address": "tcp://h:1", "interfaces": "i"}"#).as_bytes(),
        ],
        "must be a list",
    );
    let long = "x".repeat(5000);
    code4(
        &d,
        &[
            b"",
            b"CALL",
            register(&format!(r#"{{"service": "{long}"}}"#)).as_bytes(),
        ],
        "the limit is 1024",
    );
    still_serves(&d);
}

#[test]
fn deep_nesting_is_refused() {
    let d = Daemon::start();
    let deep = format!(
        r#"{{"interface": "org.pycom.nameserver", "method": "locate", "args": {}{}}}"#,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    code4(&d, &[b"", b"CALL", deep.as_bytes()], "recursion limit");
    still_serves(&d);
}

#[test]
fn oversized_messages_are_refused_with_the_limit_named() {
    let d = Daemon::with(&[("PYCOMD_MAX_MESSAGE_BYTES", "65536")], &[]);
    let big = vec![b'a'; 100_000];
    code4(&d, &[b"", b"CALL", &big], "max_message_bytes = 65536");
    // Many frames, each small, adding up to too much.
    let chunk = vec![0u8; 10_000];
    let mut frames: Vec<&[u8]> = vec![
        b"",
        b"CALL",
        br#"{"interface":"org.pycom.nameserver","method":"stat"}"#,
    ];
    frames.extend(std::iter::repeat_n(&chunk[..], 20));
    code4(&d, &frames, "max_message_bytes");
    still_serves(&d);
}

#[test]
fn catastrophic_regexes_run_in_linear_time() {
    let d = Daemon::start();
    let mut ns = d.ns();
    for i in 0..50 {
        ns.register(&pycom_e2e::leased(
            &format!("/{}{}", "a".repeat(40), i),
            "tcp://h:1",
            &["i"],
            60_000,
        ))
        .unwrap();
    }
    let started = Instant::now();
    let found = ns.list_services(None, Some("/(a+)+$")).unwrap();
    assert!(found.is_empty());
    let found = ns.list_services(Some("(x|x?)+y"), Some("(.*a){20}")).unwrap();
    assert!(found.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "regex took {:?}",
        started.elapsed()
    );
    // Constructs only a backtracking engine supports are refused, not run.
    let err = ns.list_services(None, Some("(a)\\1")).unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest));
    let huge = "(a{1000}){1000}";
    assert_eq!(
        ns.list_services(None, Some(huge)).unwrap_err().code(),
        Some(Code::BadRequest)
    );
}

#[test]
fn random_bytes_never_break_the_daemon() {
    let d = Daemon::start();
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::DEALER).unwrap();
    s.set_linger(0).unwrap();
    s.connect(&d.endpoint).unwrap();
    // A fixed xorshift stream: reproducible "random" frames.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut sent = 0;
    for _ in 0..500 {
        let nframes = (next() % 5) as usize + 1;
        let frames: Vec<Vec<u8>> = (0..nframes)
            .map(|_| {
                let len = (next() % 64) as usize;
                let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if next() % 3 == 0 {
                    f = b"CALL".to_vec();
                }
                f
            })
            .collect();
        s.send_multipart(&frames, 0).unwrap();
        sent += 1;
    }
    // Every message gets some reply (FAIL or OK); count them.
    let mut got = 0;
    while got < sent && s.poll(zmq::POLLIN, 2000).unwrap() > 0 {
        s.recv_multipart(0).unwrap();
        got += 1;
    }
    assert_eq!(got, sent, "every message must be answered");
    still_serves(&d);
}

#[test]
fn a_client_that_never_reads_does_not_starve_others_or_grow_memory() {
    let d = Daemon::start();
    let before = d.rss_kib();
    let ctx = zmq::Context::new();
    let flood = ctx.socket(zmq::DEALER).unwrap();
    flood.set_linger(0).unwrap();
    flood.set_sndhwm(0).unwrap();
    flood.set_rcvhwm(1).unwrap();
    flood.connect(&d.endpoint).unwrap();
    let body = br#"{"interface":"org.pycom.nameserver","method":"list_services"}"#;
    for _ in 0..50_000 {
        flood.send_multipart([&b""[..], b"CALL", body], 0).unwrap();
    }
    // Others are served promptly while the flood is processed.
    let started = Instant::now();
    still_serves(&d);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stat took {:?}",
        started.elapsed()
    );
    let after = d.rss_kib();
    assert!(
        after < before + 100 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn deep_args_are_refused_on_every_method_even_those_that_ignore_them() {
    let d = Daemon::start();
    for method in ["stat", "introspect", "locate", "renew"] {
        let deep = format!(
            r#"{{"interface": "org.pycom.nameserver", "method": "{method}", "args": {}{}}}"#,
            "[".repeat(200_000),
            "]".repeat(200_000)
        );
        code4(&d, &[b"", b"CALL", deep.as_bytes()], "deeper than 128");
    }
    still_serves(&d);
}

#[test]
fn attachments_to_the_nameserver_are_refused() {
    let d = Daemon::start();
    let stat = br#"{"interface": "org.pycom.nameserver", "method": "stat"}"#;
    code4(&d, &[b"", b"CALL", stat, b"one"], "takes no attachments");
    // Thousands of tiny frames: refused as well, without keeping them all.
    let mut frames: Vec<&[u8]> = vec![b"", b"CALL", stat];
    frames.extend(std::iter::repeat_n(&b"x"[..], 5_000));
    code4(&d, &frames, "5000 frame(s) after its body");
    still_serves(&d);
}
