//! pycomd's forwarder seen through plain ZeroMQ sockets, as a peer in any
//! language sees it (PROTOCOL.md 5): the readiness handshake, forwarding,
//! the last-value cache, what is dropped and counted, and the registry's
//! change events with their revisions and `changes`.

use pycom_client::pubsub::wire::{Header, READY_PREFIX};
use pycom_e2e::{leased, probed, Daemon};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

type Frames = Vec<Vec<u8>>;

fn recv(socket: &zmq::Socket, timeout: Duration) -> Option<Frames> {
    socket.set_rcvtimeo(timeout.as_millis() as i32).ok()?;
    socket.recv_multipart(0).ok()
}

/// A SUB socket subscribed to `prefixes`, ready (the forwarder answered its
/// readiness topic). Returns what arrived before the readiness message.
fn subscriber(d: &Daemon, prefixes: &[&str]) -> (zmq::Socket, Vec<Frames>) {
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_linger(0).unwrap();
    sub.connect(&d.xpub).unwrap();
    for p in prefixes {
        sub.set_subscribe(p.as_bytes()).unwrap();
    }
    let ready = format!(
        "{READY_PREFIX}{}",
        std::process::id() as u128 * 1_000_000 + rand_nonce()
    );
    sub.set_subscribe(ready.as_bytes()).unwrap();
    let mut before = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let Some(frames) = recv(&sub, Duration::from_millis(200)) else {
            continue;
        };
        if frames[0] == ready.as_bytes() {
            let header = Header::decode(&frames[1]).expect("ready header");
            assert_eq!(header.seq, 1);
            sub.set_unsubscribe(ready.as_bytes()).unwrap();
            return (sub, before);
        }
        before.push(frames);
    }
    panic!("the forwarder never answered {ready}");
}

fn rand_nonce() -> u128 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u128;
    t * 1000 + N.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as u128
}

/// An XPUB socket connected to the forwarder, ready once the forwarder's
/// subscription to everything has come.
fn publisher(d: &Daemon) -> zmq::Socket {
    let ctx = zmq::Context::new();
    let publisher = ctx.socket(zmq::XPUB).unwrap();
    publisher.set_linger(1000).unwrap();
    publisher.connect(&d.xsub).unwrap();
    let sub = recv(&publisher, Duration::from_secs(10)).expect("the forwarder's subscription");
    assert_eq!(sub, vec![vec![1u8]], "the forwarder subscribes to everything");
    publisher
}

fn publish(socket: &zmq::Socket, frames: &[&[u8]]) {
    socket.send_multipart(frames.iter().copied(), 0).unwrap();
}

fn header(src: &str, seq: u64) -> Vec<u8> {
    Header {
        src: src.into(),
        seq,
        ts: 1,
        replay: false,
    }
    .encode()
}

fn pubsub_stat(d: &Daemon) -> Value {
    d.connection(2000)
        .invoke("org.pycom.pubsub", "stat", Value::Null)
        .expect("org.pycom.pubsub stat")
}

#[test]
fn the_forwarder_is_found_through_the_nameserver() {
    let d = Daemon::start();
    let record = d.ns().locate("org.pycom.pubsub", None).unwrap();
    assert_eq!(record.service, "/org/pycom/pubsub");
    assert_eq!(record.metadata["xsub"], d.xsub);
    assert_eq!(record.metadata["xpub"], d.xpub);
    let stat = pubsub_stat(&d);
    assert_eq!(stat["xsub"], d.xsub.as_str());
    let ns_stat = d.ns().stat().unwrap();
    assert_eq!(ns_stat["pubsub"]["xpub"], d.xpub.as_str());
    // introspect works (PyCOM proxies read it first).
    let intro = d
        .connection(2000)
        .invoke("org.pycom.pubsub", "introspect", Value::Null)
        .unwrap();
    assert!(intro.to_string().contains("topics"), "{intro}");
}

#[test]
fn a_publication_after_readiness_reaches_a_ready_subscriber() {
    let d = Daemon::start();
    let (sub, _) = subscriber(&d, &["demo."]);
    let publisher = publisher(&d);
    for seq in 1..=100u64 {
        publish(
            &publisher,
            &[
                b"demo.x",
                &header("p", seq),
                seq.to_string().as_bytes(),
                b"attached",
            ],
        );
    }
    for seq in 1..=100u64 {
        let frames = recv(&sub, Duration::from_secs(5)).expect("publication");
        assert_eq!(frames[0], b"demo.x");
        assert_eq!(Header::decode(&frames[1]).unwrap().seq, seq);
        assert_eq!(frames[2], seq.to_string().as_bytes());
        assert_eq!(frames[3], b"attached", "attachments pass through");
    }
    let stat = pubsub_stat(&d);
    assert_eq!(stat["messages_in"], 100);
}

#[test]
fn bad_reserved_and_oversized_publications_are_dropped_and_counted() {
    let d = Daemon::with(&[("PYCOMD_MAX_MESSAGE_BYTES", "4096")], &[]);
    let (sub, _) = subscriber(&d, &[""]);
    let publisher = publisher(&d);
    let h = header("p", 1);
    let big = vec![b'1'; 5000];
    let bad: Vec<Vec<&[u8]>> = vec![
        vec![b"org.pycom.nameserver.events.registered", &h, b"{}"],
        vec![b"a..b", &h, b"1"],
        vec![b"a.*", &h, b"1"],
        vec![b"\xff\xfe", &h, b"1"],
        vec![b"a.b", b"not json", b"1"],
        vec![b"a.b", br#"{"src":"p","seq":1,"ts":1,"replay":true}"#, b"1"],
        vec![b"a.b", br#"{"seq":1}"#, b"1"],
        vec![b"a.b", &h],
        vec![b"a.b"],
        vec![b"a.b", &h, b"\xff"],
        vec![b"a.b", &h, &big],
    ];
    for frames in &bad {
        publish(&publisher, frames);
    }
    publish(&publisher, &[b"fence", &h, b"true"]);
    let frames = recv(&sub, Duration::from_secs(5)).expect("the fence");
    assert_eq!(frames[0], b"fence", "nothing bad was forwarded before it");
    let stat = pubsub_stat(&d);
    assert_eq!(stat["dropped_reserved"], 1, "{stat}");
    assert_eq!(stat["dropped_oversize"], 1, "{stat}");
    assert_eq!(stat["dropped_malformed"], 9, "{stat}");
    assert!(
        d.log().contains("topics under org.pycom. are pycomd's own"),
        "{}",
        d.log()
    );
}

#[test]
fn a_late_subscriber_gets_the_last_value_of_each_topic_marked_as_a_replay() {
    let d = Daemon::start();
    let publisher = publisher(&d);
    let (early, _) = subscriber(&d, &["lvc."]);
    for (topic, seq, body) in [
        ("lvc.a", 1, "1"),
        ("lvc.a", 2, "2"),
        ("lvc.b", 1, "10"),
        ("other", 1, "0"),
    ] {
        publish(
            &publisher,
            &[topic.as_bytes(), &header("p", seq), body.as_bytes()],
        );
    }
    // Once the early subscriber has them, the forwarder has cached them.
    for _ in 0..3 {
        recv(&early, Duration::from_secs(5)).expect("live publication");
    }
    let (_late, before_ready) = subscriber(&d, &["lvc."]);
    let mut replays: Vec<(String, u64, bool, String)> = before_ready
        .iter()
        .map(|f| {
            let h = Header::decode(&f[1]).unwrap();
            (
                String::from_utf8(f[0].clone()).unwrap(),
                h.seq,
                h.replay,
                String::from_utf8(f[2].clone()).unwrap(),
            )
        })
        .collect();
    replays.sort();
    assert_eq!(
        replays,
        vec![
            ("lvc.a".to_string(), 2, true, "2".to_string()),
            ("lvc.b".to_string(), 1, true, "10".to_string()),
        ]
    );
    let topics = d
        .connection(2000)
        .invoke("org.pycom.pubsub", "topics", json!({"limit": 2}))
        .unwrap();
    let names: Vec<&str> = topics
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["lvc.a", "lvc.b"]);
}

fn event(frames: &Frames) -> (String, Value) {
    let topic = String::from_utf8(frames[0].clone()).unwrap();
    (topic, serde_json::from_slice(&frames[2]).unwrap())
}

/// Events on the subscription until `n` came (and no more within a
/// short while after the last).
fn events(sub: &zmq::Socket, n: usize) -> Vec<(String, Value)> {
    let mut got = Vec::new();
    while got.len() < n {
        match recv(sub, Duration::from_secs(10)) {
            Some(frames) => got.push(event(&frames)),
            None => panic!("only {} of {n} events came: {got:?}", got.len()),
        }
    }
    got
}

#[test]
fn every_registry_change_is_one_event_with_the_next_revision() {
    let d = Daemon::with(
        &[
            ("PYCOMD_PROBE_INTERVAL_MS", "100"),
            ("PYCOMD_PROBE_TIMEOUT_MS", "100"),
            ("PYCOMD_PROBE_FAILURES", "1"),
        ],
        &[],
    );
    let (sub, _) = subscriber(&d, &["org.pycom.nameserver.events."]);
    let mut ns = d.ns();
    let start = ns.stat().unwrap()["revision"].as_u64().unwrap();
    let addr = "tcp://127.0.0.1:9";
    let mut reg = leased("/ev/a", addr, &["ev.a"], 60_000);
    ns.register(&reg).unwrap();
    ns.register(&reg).unwrap(); // identical: nothing
    ns.renew("/ev/a", addr).unwrap(); // a renewal: nothing
    reg.metadata.insert("v".into(), "2".into());
    ns.register(&reg).unwrap(); // changed: updated
    ns.unregister("/ev/a", addr).unwrap();
    ns.register(&leased("/ev/short", addr, &["ev.b"], 1_000)).unwrap(); // will expire
    ns.register(&probed("/ev/dead", "tcp://127.0.0.1:1", &["ev.c"]))
        .unwrap(); // will be dropped
    let got = events(&sub, 5);
    let kinds: Vec<&str> = got.iter().map(|(_, b)| b["event"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "registered",
            "updated",
            "unregistered",
            "registered",
            "registered"
        ]
    );
    for (i, (topic, body)) in got.iter().enumerate() {
        assert_eq!(body["revision"], start + 1 + i as u64, "{topic} {body}");
        assert_eq!(topic, &format!("org.pycom.nameserver.events.{}", kinds[i]));
    }
    assert_eq!(got[1].1["metadata"]["v"], "2");
    // Then, in either order, the lease running out and the probes failing.
    let more = events(&sub, 2);
    let mut last: Vec<&str> = more.iter().map(|(_, b)| b["event"].as_str().unwrap()).collect();
    last.sort();
    assert_eq!(last, ["dropped", "expired"]);
    assert_eq!(more[0].1["revision"], start + 6);
    assert_eq!(more[1].1["revision"], start + 7);
    assert!(
        recv(&sub, Duration::from_millis(300)).is_none(),
        "no further events"
    );

    // `changes` answers the same, from any revision retained.
    let changes = ns.changes(start + 2, None).unwrap();
    assert_eq!(changes["revision"], start + 7);
    let events: Vec<&str> = changes["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.len(), 5);
    assert_eq!(events[0], "unregistered");
    assert_eq!(ns.changes(start + 7, None).unwrap()["events"], json!([]));
    // locate and list say the revision they read at.
    let mut conn = d.connection(2000);
    let reply = conn
        .call(
            &pycom_client::proto::Request::new(
                "org.pycom.nameserver",
                "locate",
                json!({"interface": "org.pycom.nameserver"}),
            ),
            &[],
        )
        .unwrap();
    assert_eq!(
        reply.response.extensions["org.pycom.nameserver"]["revision"],
        start + 7
    );
}

#[test]
fn revisions_survive_a_restart_and_old_history_answers_compacted() {
    let mut d = Daemon::start();
    let mut ns = d.ns();
    for i in 0..5 {
        ns.register(&leased(
            &format!("/rev/{i}"),
            "tcp://127.0.0.1:9",
            &["rev.x"],
            60_000,
        ))
        .unwrap();
    }
    let before = ns.stat().unwrap()["revision"].as_u64().unwrap();
    assert!(
        ns.changes(before - 5, None).unwrap()["events"]
            .as_array()
            .unwrap()
            .len()
            == 5
    );
    d.terminate();
    d.spawn();
    let (sub, _) = subscriber(&d, &["org.pycom.nameserver.events."]);
    let mut ns = d.ns();
    assert_eq!(ns.stat().unwrap()["revision"], before);
    let compacted = ns.changes(before - 5, None).unwrap();
    assert_eq!(compacted["compacted"], true, "{compacted}");
    assert_eq!(compacted["revision"], before);
    ns.register(&leased("/rev/new", "tcp://127.0.0.1:9", &["rev.x"], 60_000))
        .unwrap();
    let got = events(&sub, 1);
    assert_eq!(got[0].1["revision"], before + 1, "no revision is reused");
}
