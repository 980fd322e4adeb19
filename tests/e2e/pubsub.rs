//! Pub-sub through the real pycomd with pycom-client's Publisher,
//! Subscriber and Watcher, and pycomctl's pub, sub and watch (PROTOCOL.md
//! 5). The forwarder seen through raw sockets is pubsub_wire.rs.

use pycom_client::pubsub::{Stats, TopicStats};
use pycom_client::{
    Binary, Context, Error, GapPolicy, Message, Registration, ServiceInfo, Start, Subscriber,
};
use pycom_e2e::{bin, leased, stderr, stdout, wait_until, Daemon, Streamed};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long one publication may take to arrive before a test fails.
const ARRIVAL: Duration = Duration::from_secs(5);

fn context(d: &Daemon) -> Context {
    let ctx = Context::new(&d.endpoint).expect("context");
    ctx.set_default_timeout(Duration::from_secs(5));
    ctx
}

/// The next message, or a failure naming what was awaited.
fn next(sub: &mut Subscriber, what: &str) -> Message {
    match sub.recv_timeout(ARRIVAL) {
        Ok(Some(m)) => m,
        Ok(None) => panic!("{what}: nothing arrived within {ARRIVAL:?}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

/// (topic, seq, body, replay) of every message before the one on `fence`
/// (which must come).
fn until_fence(sub: &mut Subscriber, fence: &str) -> Vec<(String, u64, Value, bool)> {
    let mut got = Vec::new();
    loop {
        let m = next(sub, &format!("waiting for the fence {fence} after {got:?}"));
        if m.topic == fence {
            return got;
        }
        got.push((m.topic.clone(), m.seq, m.json(), m.replay));
    }
}

// ---------------------------------------------------------------------
// 1. No slow-joiner loss.

/// PROTOCOL.md 5: "A publication sent after the publisher's connect
/// returned reaches every subscriber whose subscribe returned before it
/// was sent". 1,000 times in a row, each time with a new subscriber, a new
/// publisher, or both, publishing once at once.
#[test]
fn a_publication_right_after_connect_or_subscribe_always_arrives() {
    let d = Daemon::start();
    let ctx = context(&d);
    let mut steady_pub = ctx.publisher("sj.steady").unwrap();
    let mut steady_sub = ctx.subscribe("sj.p.>").unwrap();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..1000u64 {
        let t0 = Instant::now();
        match i % 3 {
            // A new subscriber; a publisher that was there before.
            0 => {
                let topic = format!("sj.s.{i}");
                let mut sub = ctx.subscribe(&topic).unwrap();
                steady_pub.publish_to(&topic, &i).unwrap();
                let m = sub.recv_timeout(ARRIVAL).unwrap();
                let m = m.unwrap_or_else(|| panic!("iteration {i}: a new subscriber missed {topic}"));
                assert_eq!((m.topic.as_str(), m.value::<u64>().unwrap()), (topic.as_str(), i));
            }
            // A new publisher; a subscriber that was there before.
            1 => {
                let topic = format!("sj.p.{i}");
                let mut publisher = ctx.publisher(&topic).unwrap();
                publisher.publish(&i).unwrap();
                let m = steady_sub.recv_timeout(ARRIVAL).unwrap();
                let m = m.unwrap_or_else(|| panic!("iteration {i}: a new publisher's {topic} was lost"));
                assert_eq!((m.topic.as_str(), m.value::<u64>().unwrap()), (topic.as_str(), i));
                assert_eq!((m.src.as_str(), m.seq), (publisher.src(), 1));
            }
            // Both new.
            _ => {
                let topic = format!("sj.b.{i}");
                let mut sub = ctx.subscribe(&topic).unwrap();
                let mut publisher = ctx.publisher(&topic).unwrap();
                publisher.publish(&i).unwrap();
                let m = sub.recv_timeout(ARRIVAL).unwrap();
                let m =
                    m.unwrap_or_else(|| panic!("iteration {i}: new subscriber and publisher, {topic} lost"));
                assert_eq!((m.topic.as_str(), m.value::<u64>().unwrap()), (topic.as_str(), i));
            }
        }
        slowest = slowest.max(t0.elapsed());
    }
    assert_eq!(steady_sub.stats().total.received, 333);
    assert_eq!(steady_sub.stats().total.gaps, 0);
    eprintln!(
        "1,000 joins in {:?}, slowest iteration {slowest:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------
// 2. Patterns, through the real forwarder.

#[test]
fn patterns_match_whole_tokens_through_the_forwarder() {
    let d = Daemon::start();
    let ctx = context(&d);
    let topics = [
        "a", "b", "ab", "a.b", "a.bc", "a.b.c", "a.b.d", "a.x.c", "a.x.c.d", "x.b",
    ];
    let expected: &[(&str, &[&str])] = &[
        ("*", &["a", "b", "ab"]),
        (">", &topics),
        ("a", &["a"]),
        ("a.b", &["a.b"]),
        ("a.*", &["a.b", "a.bc"]),
        ("a.>", &["a.b", "a.bc", "a.b.c", "a.b.d", "a.x.c", "a.x.c.d"]),
        ("a.*.c", &["a.b.c", "a.x.c"]),
        ("a.b.>", &["a.b.c", "a.b.d"]),
        ("*.b", &["a.b", "x.b"]),
        ("*.*", &["a.b", "a.bc", "x.b"]),
    ];
    // Every subscriber also takes the fence, published last: once it is
    // there, everything before it is too (one publisher: in order).
    let mut subs: Vec<Subscriber> = expected
        .iter()
        .map(|(pattern, _)| {
            ctx.subscriber()
                .patterns([*pattern, "zz.fence"])
                .connect()
                .unwrap()
        })
        .collect();
    let mut publisher = ctx.publisher("zz.fence").unwrap();
    for topic in topics {
        publisher.publish_to(topic, &topic).unwrap();
    }
    publisher.publish(&"fence").unwrap();
    for ((pattern, want), sub) in expected.iter().zip(&mut subs) {
        let got: BTreeSet<String> = until_fence(sub, "zz.fence")
            .into_iter()
            .map(|(topic, seq, body, replay)| {
                assert_eq!((seq, replay), (1, false), "{pattern}: {topic}");
                assert_eq!(body, json!(topic), "{pattern}: the body published on {topic}");
                topic
            })
            .collect();
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(got, want, "pattern {pattern}");
    }
    // "a.b" is subscribed upstream as the prefix "a.b": the client drops
    // a.bc, a.b.c and a.b.d itself.
    assert_eq!(subs[3].stats().unmatched, 3, "{:?}", subs[3].stats());
}

// ---------------------------------------------------------------------
// 3. Gaps.

/// What the reading thread of the gap test saw.
enum Seen {
    Message { topic: String, src: String, seq: u64 },
    Gap { topic: String, src: String, missed: u64 },
}

/// A subscriber forced past its high-water mark (1 KiB publications sent
/// while it does not read, through a forwarder whose own queues are small
/// too) sees gaps whose counts add up; with `GapPolicy::Error` its message
/// iterator yields them. A publisher restarting (seq from 1 again, a new
/// src) is no gap.
#[test]
fn a_subscriber_past_its_high_water_mark_reports_gaps_that_add_up() {
    let d = Daemon::with(&[("PYCOMD_PUBSUB__HIGH_WATER_MARK", "20")], &[]);
    let ctx = context(&d);
    let topic = "gap.burst";
    let mut sub = ctx
        .subscriber()
        .patterns([topic, "gap.stop"])
        .gaps(GapPolicy::Error)
        .rcvhwm(10)
        .connect()
        .unwrap();
    let mut publisher = ctx.publisher(topic).unwrap();
    let body = "x".repeat(1024);
    let burst = 30_000u64;
    for _ in 0..burst {
        publisher.publish(&body).unwrap();
    }
    // Only now is the subscriber read, through its message iterator, on a
    // thread of its own (so that a test gone wrong fails, not hangs).
    let (tx, rx) = mpsc::channel::<(Seen, Stats)>();
    let reader = std::thread::spawn(move || loop {
        let item = sub.messages().next().expect("messages() never ends");
        let seen = match item {
            Ok(m) if m.topic == "gap.stop" => return sub.stats().clone(),
            Ok(m) => Seen::Message {
                topic: m.topic,
                src: m.src,
                seq: m.seq,
            },
            Err(Error::Gap { topic, src, missed }) => Seen::Gap { topic, src, missed },
            Err(e) => panic!("the subscriber failed: {e}"),
        };
        if tx.send((seen, sub.stats().clone())).is_err() {
            return sub.stats().clone();
        }
    });
    // Messages lost at the end of the burst show only with a later one:
    // publish one more whenever the subscriber has gone quiet, until the
    // last one published arrives.
    let (mut first, mut last_seen) = (None, 0u64);
    let (mut gap_errors, mut gap_missed, mut messages) = (0u64, 0u64, 0u64);
    let mut stats = Stats::default();
    let mut last_published = burst;
    let deadline = Instant::now() + Duration::from_secs(30);
    while last_seen < last_published {
        assert!(Instant::now() < deadline, "the end of the burst never came");
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((seen, now)) => {
                stats = now;
                match seen {
                    Seen::Message { topic: t, src, seq } => {
                        assert_eq!((t.as_str(), src.as_str()), (topic, publisher.src()));
                        assert!(
                            seq > last_seen,
                            "seq {seq} after {last_seen}: out of order or twice"
                        );
                        first.get_or_insert(seq);
                        last_seen = seq;
                        messages += 1;
                    }
                    Seen::Gap {
                        topic: t,
                        src,
                        missed,
                    } => {
                        assert_eq!((t.as_str(), src.as_str()), (topic, publisher.src()));
                        assert!(missed > 0);
                        gap_errors += 1;
                        gap_missed += missed;
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                last_published = publisher.publish(&body).unwrap();
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the reading thread ended"),
        }
    }
    let first = first.expect("something arrived");
    let t: TopicStats = stats.topics[topic];
    eprintln!("published {last_published}, first received {first}, stats {t:?}, {gap_errors} gap errors");
    assert!(t.gaps > 0 && t.missed > 0, "no gap was forced: {t:?}");
    assert_eq!(
        t.received + t.missed,
        last_published - first + 1,
        "received + missed must be every publication from the first received to the last: {t:?}"
    );
    assert_eq!((t.received, t.gaps, t.missed), (messages, gap_errors, gap_missed));
    assert_eq!(t.duplicates, 0);
    assert_eq!(stats.total, t);

    // A publisher restarting: a new instance, seq from 1 again.
    drop(publisher);
    let mut restarted = ctx.publisher(topic).unwrap();
    for _ in 0..3 {
        restarted.publish(&"again").unwrap();
    }
    for want in 1..=3 {
        let (seen, now) = rx
            .recv_timeout(ARRIVAL)
            .expect("the restarted publisher's messages");
        match seen {
            Seen::Message { src, seq, .. } => assert_eq!((src.as_str(), seq), (restarted.src(), want)),
            Seen::Gap { src, missed, .. } => {
                panic!("a publisher restart was taken for a gap of {missed} (src {src})")
            }
        }
        stats = now;
    }
    let after = stats.topics[topic];
    assert_eq!(
        (after.received, after.gaps, after.missed, after.duplicates),
        (t.received + 3, t.gaps, t.missed, 0),
        "a new src is neither a gap nor a duplicate"
    );
    restarted.publish_to("gap.stop", &true).unwrap();
    drop(rx);
    let final_stats = reader.join().expect("the reading thread");
    assert_eq!(final_stats.topics[topic], after);
}

// ---------------------------------------------------------------------
// 4. The last-value cache.

#[test]
fn a_late_subscriber_gets_each_topics_last_value_once_or_none() {
    let d = Daemon::start();
    let ctx = context(&d);
    let mut early = ctx.subscribe("lvc.>").unwrap();
    let mut publisher = ctx.publisher("lvc.a").unwrap();
    for v in 1..=3 {
        publisher.publish(&v).unwrap();
    }
    publisher.publish_to("lvc.b", &10).unwrap();
    publisher.publish_to("lvc.b", &20).unwrap();
    publisher.publish_to("other.c", &99).unwrap();
    // The forwarder caches before it forwards: once the early subscriber
    // has them all, they are cached.
    for _ in 0..5 {
        next(&mut early, "the live publications");
    }

    let mut late = ctx
        .subscriber()
        .pattern("lvc.>")
        .start(Start::Last)
        .connect()
        .unwrap();
    // Two patterns whose prefixes overlap: the forwarder replays lvc.a
    // for each subscription, the application still gets it once.
    let mut overlapping = ctx
        .subscriber()
        .patterns(["lvc.a", "lvc.>"])
        .start(Start::Last)
        .connect()
        .unwrap();
    publisher.publish_to("lvc.fence.1", &1).unwrap();
    let want = [
        ("lvc.a".to_string(), 3, json!(3), true),
        ("lvc.b".to_string(), 2, json!(20), true),
    ];
    for (name, sub) in [("late", &mut late), ("overlapping", &mut overlapping)] {
        let mut got = until_fence(sub, "lvc.fence.1");
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got, want,
            "{name}: the latest value of each topic, once, marked as a replay"
        );
    }

    // Another late subscriber: the forwarder re-sends the cache, which the
    // first late one must not take again.
    let mut later = ctx
        .subscriber()
        .pattern("lvc.>")
        .start(Start::Last)
        .connect()
        .unwrap();
    publisher.publish_to("lvc.fence.2", &2).unwrap();
    assert_eq!(until_fence(&mut late, "lvc.fence.2"), []);
    let mut got = until_fence(&mut later, "lvc.fence.2");
    got.sort_by(|x, y| x.0.cmp(&y.0));
    let topics: Vec<(&str, Value)> = got.iter().map(|(t, _, v, _)| (t.as_str(), v.clone())).collect();
    assert_eq!(
        topics,
        [
            ("lvc.a", json!(3)),
            ("lvc.b", json!(20)),
            ("lvc.fence.1", json!(1))
        ]
    );

    // Start::New: none of the old values.
    let mut fresh = ctx.subscribe("lvc.>").unwrap();
    publisher.publish_to("lvc.fence.3", &3).unwrap();
    assert_eq!(until_fence(&mut fresh, "lvc.fence.3"), []);
    assert!(
        fresh.stats().replays_skipped >= 4,
        "the replays its own subscription caused were skipped: {:?}",
        fresh.stats()
    );
    for (name, sub) in [("late", &mut late), ("later", &mut later)] {
        assert_eq!(until_fence(sub, "lvc.fence.3"), [], "{name}");
    }
    // The early subscriber saw only live publications all along.
    let mut got = until_fence(&mut early, "lvc.fence.3");
    got.retain(|(_, _, _, replay)| *replay);
    assert_eq!(got, [], "replays reached a subscriber that was there before");
    assert!(early.stats().replays_skipped > 0);
    assert_eq!(early.stats().total.duplicates, 0);
}

// ---------------------------------------------------------------------
// 5. The Watcher.

/// A deterministic pseudo-random sequence (Knuth's MMIX LCG).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The watcher's changes until it has none pending (waiting at most
/// `wait` for each).
fn drain(watcher: &mut pycom_client::Watcher, wait: Duration) -> u64 {
    let mut n = 0;
    while let Some(change) = watcher.next_change(wait).expect("watcher") {
        if let Some(record) = change.record.as_ref().or(change.previous.as_ref()) {
            assert_eq!(record.service, change.service);
        }
        n += 1;
    }
    n
}

/// A watcher kept through 1,000 random registry changes across 40
/// services (registered, updated, unregistered, leases running out) and a
/// pycomd restart in the middle ends with the view `list_services` gives.
#[test]
fn a_watcher_stays_equal_to_the_registry_through_random_changes_and_a_restart() {
    let mut d = Daemon::with(
        &[
            ("PYCOMD_TTL_MIN_MS", "100"),
            ("PYCOMD_UNSAFE_NO_FSYNC", "true"),
            // A short history: a watcher that missed more than this
            // must list again (compacted), not only fetch `changes`.
            ("PYCOMD_CHANGES_RETAINED", "20"),
        ],
        &[],
    );
    let ctx = context(&d);
    let mut watcher = ctx.watch().unwrap();
    // A lost last event is noticed by this idle check: short, so that the
    // end is reached quickly.
    watcher.set_idle_check(Duration::from_millis(300));
    let mut ns = d.ns();
    let mut rng = Lcg(0x5eed_1a15);
    let services = 40u64;
    let interfaces = ["w.alpha", "w.beta", "w.gamma"];
    let mut last: BTreeMap<u64, Registration> = BTreeMap::new();
    let mut changes_seen = 0;
    let started = Instant::now();
    for op in 0..1000u64 {
        if op == 500 {
            assert!(d.terminate().success(), "{}", d.log());
            d.spawn();
            ns = d.ns();
        }
        let i = rng.below(services);
        let service = format!("/watch/s{i:02}");
        let address = format!("tcp://127.0.0.1:{}", 20_000 + i);
        match rng.below(10) {
            // Register, or update: other interfaces or metadata.
            0..=4 => {
                let mut reg = leased(&service, &address, &[], 60_000);
                let mask = 1 + rng.below(7);
                reg.interfaces = (0..3)
                    .filter(|b| mask & (1 << b) != 0)
                    .map(|b| interfaces[b as usize].to_string())
                    .collect();
                if rng.below(2) == 0 {
                    reg.metadata.insert("v".into(), rng.below(5).to_string());
                }
                ns.register(&reg).unwrap();
                last.insert(i, reg);
            }
            // Update the metadata only.
            5 => {
                if let Some(reg) = last.get_mut(&i) {
                    reg.metadata.insert("m".into(), rng.below(1000).to_string());
                    ns.register(reg).unwrap();
                }
            }
            // Unregister (it may be gone already: expired, or never there).
            6 | 7 => match ns.unregister(&service, &address) {
                Ok(_) | Err(Error::ServiceNotFound(_)) => {}
                Err(e) => panic!("unregister {service}: {e}"),
            },
            // A short lease, left to run out.
            8 => {
                let reg = leased(&service, &address, &["w.short"], 100 + rng.below(300));
                ns.register(&reg).unwrap();
                last.insert(i, reg);
            }
            // The same register again: no change at all.
            _ => {
                if let Some(reg) = last.get(&i) {
                    ns.register(reg).unwrap();
                }
            }
        }
        // Usually kept up to date; sometimes left behind, and always in
        // the last 20 operations before the restart (so that it comes
        // back with events pycomd no longer has).
        if !(480..500).contains(&op) && rng.below(4) != 0 {
            changes_seen += drain(&mut watcher, Duration::ZERO);
        }
    }
    // Converged: the watcher at the registry's revision, and then its view
    // is what the registry lists at that revision (leases may still run
    // out meanwhile: each try compares at one revision).
    let mut compared = None;
    let converged = wait_until(Duration::from_secs(20), || {
        changes_seen += drain(&mut watcher, Duration::from_millis(20));
        let revision = ns.stat().unwrap()["revision"].as_u64().unwrap();
        if watcher.revision() != revision {
            return false;
        }
        let page = ns.list_page(None, None, 10_000, None).unwrap();
        assert!(page.next.is_none());
        if page.revision != Some(revision) {
            return false;
        }
        let listed: BTreeMap<String, ServiceInfo> = page
            .services
            .into_iter()
            .map(|r| (r.service.clone(), r))
            .collect();
        compared = Some((revision, listed.len()));
        assert_eq!(
            watcher.view(),
            &listed,
            "the watcher's view at revision {revision} differs from the registry's"
        );
        true
    });
    let revision = ns.stat().unwrap()["revision"].as_u64().unwrap();
    assert!(
        converged,
        "the watcher stayed at revision {} while the registry is at {revision}",
        watcher.revision()
    );
    let (revision, records) = compared.unwrap();
    // The same with list_all, the way an application would compare.
    let all: BTreeMap<String, ServiceInfo> = ns
        .list_all(None, None, false)
        .unwrap()
        .into_iter()
        .map(|r| (r.service.clone(), r))
        .collect();
    if ns.stat().unwrap()["revision"].as_u64() == Some(revision) {
        assert_eq!(watcher.view(), &all);
    }
    assert!(revision > 500, "1,000 operations made only {revision} changes");
    eprintln!(
        "watcher: revision {revision}, {records} records, {changes_seen} changes seen, {} fetched with changes, {} relists, in {:?}",
        watcher.fetched_events(),
        watcher.relists(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------------
// 6. Attachments.

#[test]
fn attachments_pass_through_pub_sub_unchanged() {
    // Large enough for a 2 MiB attachment (spilled to a file on arrival).
    let d = Daemon::with(&[("PYCOMD_MAX_MESSAGE_BYTES", "8388608")], &[]);
    let ctx = context(&d);
    let mut sub = ctx.subscribe("att.>").unwrap();
    let mut publisher = ctx.publisher("att.files").unwrap();
    let big: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
    let sent = [
        b"small".to_vec(),
        Vec::new(),
        (0..=255u8).collect::<Vec<u8>>(),
        big,
    ];
    let binaries: Vec<Binary> = sent.iter().cloned().map(Binary::from_bytes).collect();
    publisher.publish_with(&json!({"files": 4}), &binaries).unwrap();
    publisher
        .publish_to_with("att.other", &"one", &binaries[..1])
        .unwrap();
    publisher.publish(&"none").unwrap();

    let m = next(&mut sub, "the publication with attachments");
    assert_eq!((m.topic.as_str(), m.json()), ("att.files", json!({"files": 4})));
    let got: Vec<Vec<u8>> = m
        .attachments
        .iter()
        .map(|a| a.bytes().unwrap().into_owned())
        .collect();
    assert_eq!(got.len(), sent.len());
    for (i, (got, sent)) in got.iter().zip(&sent).enumerate() {
        assert!(
            got == sent,
            "attachment {i}: {} bytes, sent {}",
            got.len(),
            sent.len()
        );
    }
    assert!(m.attachments[3].path().is_some(), "2 MiB is kept in a file");
    let m = next(&mut sub, "the second publication");
    assert_eq!(m.topic, "att.other");
    assert_eq!(m.attachments.len(), 1);
    assert_eq!(&m.attachments[0].bytes().unwrap()[..], b"small");
    let m = next(&mut sub, "the third publication");
    assert!(m.attachments.is_empty());
}

// ---------------------------------------------------------------------
// 7. pycomctl pub, sub, watch.

fn pycomctl_cmd(d: &Daemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("pycomctl"));
    cmd.env("PYCOM_NAMESERVER", &d.endpoint).args(args);
    cmd
}

/// Run pycomctl to its end (at most 20 s): status code, stdout, stderr.
fn run_pycomctl(d: &Daemon, args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Streamed::spawn(&mut pycomctl_cmd(d, args));
    let status = child.wait_exit(Duration::from_secs(20));
    (status.code(), child.out.join("\n"), child.err.join("\n"))
}

#[test]
fn pycomctl_pub_reaches_a_subscriber() {
    let d = Daemon::start();
    let ctx = context(&d);
    let mut sub = ctx.subscribe("ctl.pub.>").unwrap();
    let (code, out, err) = run_pycomctl(&d, &["pub", "ctl.pub.x", r#"{"n": [1, 2], "s": "é"}"#]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert_eq!(out, "published on ctl.pub.x (seq 1)");
    let m = next(&mut sub, "pycomctl's publication");
    assert_eq!((m.topic.as_str(), m.seq), ("ctl.pub.x", 1));
    assert_eq!(m.json(), json!({"n": [1, 2], "s": "é"}));

    // --json says which src and seq; --attach sends files.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    std::fs::write(&file, b"\x00\x01attached\xff").unwrap();
    let o = pycomctl_cmd(&d, &["--json", "pub", "ctl.pub.y", "7", "--attach"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let said: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let m = next(&mut sub, "pycomctl's publication with an attachment");
    assert_eq!(said["topic"], "ctl.pub.y");
    assert_eq!(
        (said["src"].as_str().unwrap(), said["seq"].as_u64().unwrap()),
        (m.src.as_str(), m.seq)
    );
    assert_eq!(m.json(), json!(7));
    assert_eq!(&m.attachments[0].bytes().unwrap()[..], b"\x00\x01attached\xff");
}

#[test]
fn pycomctl_sub_prints_n_json_lines_once_subscribed() {
    let d = Daemon::start();
    let ctx = context(&d);
    let mut child = Streamed::spawn(&mut pycomctl_cmd(
        &d,
        &["sub", "ctl.sub.*", "--count", "3", "--json"],
    ));
    child.wait_stderr("subscribed", Duration::from_secs(10));
    let mut publisher = ctx.publisher("ctl.sub.a").unwrap();
    publisher.publish_to("ctl.sub.a.deeper", &0).unwrap(); // not matched
    publisher.publish(&json!({"k": 1})).unwrap();
    publisher.publish_to("ctl.sub.b", &"two").unwrap();
    publisher.publish(&json!([3])).unwrap();
    let status = child.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{}", child.output());
    let lines: Vec<Value> = child
        .out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let got: Vec<(&str, u64, &Value, bool)> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["src"], publisher.src());
            assert_eq!(l["attachments"], 0);
            (
                l["topic"].as_str().unwrap(),
                l["seq"].as_u64().unwrap(),
                &l["body"],
                l["replay"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("ctl.sub.a", 1, &json!({"k": 1}), false),
            ("ctl.sub.b", 1, &json!("two"), false),
            ("ctl.sub.a", 2, &json!([3]), false),
        ]
    );
}

#[test]
fn pycomctl_sub_last_prints_the_cached_value() {
    let d = Daemon::start();
    let ctx = context(&d);
    let mut sub = ctx.subscribe("ctl.last").unwrap();
    let mut publisher = ctx.publisher("ctl.last").unwrap();
    publisher.publish(&json!({"v": 1})).unwrap();
    publisher.publish(&json!({"v": 2})).unwrap();
    for _ in 0..2 {
        next(&mut sub, "the publications to cache");
    }
    let (code, out, err) = run_pycomctl(&d, &["sub", "ctl.last", "--last", "--count", "1", "--json"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let line: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(line["body"], json!({"v": 2}));
    assert_eq!(
        (line["seq"].as_u64(), line["replay"].as_bool()),
        (Some(2), Some(true))
    );
    // Without --last: nothing old, only what comes after "subscribed".
    let mut child = Streamed::spawn(&mut pycomctl_cmd(&d, &["sub", "ctl.last", "--count", "1"]));
    child.wait_stderr("subscribed", Duration::from_secs(10));
    publisher.publish(&json!({"v": 3})).unwrap();
    assert!(
        child.wait_exit(Duration::from_secs(10)).success(),
        "{}",
        child.output()
    );
    assert_eq!(child.out, [r#"ctl.last 3 {"v":3}"#]);
}

#[test]
fn pycomctl_watch_prints_a_register_made_after_it_watches() {
    let d = Daemon::start();
    let mut child = Streamed::spawn(&mut pycomctl_cmd(&d, &["--json", "watch", "--count", "2"]));
    child.wait_stderr("watching", Duration::from_secs(10));
    let mut ns = d.ns();
    let mut reg = leased("/ctl/watched", "tcp://127.0.0.1:9", &["ctl.w"], 60_000);
    ns.register(&reg).unwrap();
    reg.metadata.insert("zone".into(), "b".into());
    ns.register(&reg).unwrap();
    assert!(
        child.wait_exit(Duration::from_secs(10)).success(),
        "{}",
        child.output()
    );
    let lines: Vec<Value> = child
        .out
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (listed, changed): (Vec<&Value>, Vec<&Value>) = lines.iter().partition(|l| l["kind"] == "listed");
    let listed: BTreeSet<&str> = listed.iter().map(|l| l["service"].as_str().unwrap()).collect();
    assert_eq!(
        listed,
        BTreeSet::from(["/org/pycom/nameserver", "/org/pycom/pubsub"])
    );
    assert_eq!(changed.len(), 2, "{lines:?}");
    assert_eq!(
        (changed[0]["kind"].as_str(), changed[0]["service"].as_str()),
        (Some("registered"), Some("/ctl/watched"))
    );
    assert_eq!(changed[0]["record"]["address"], "tcp://127.0.0.1:9");
    assert_eq!(changed[1]["kind"], "updated");
    assert_eq!(changed[1]["record"]["metadata"], json!({"zone": "b"}));
    assert_eq!(changed[1]["previous"]["metadata"], json!({}));
    assert_eq!(
        changed[1]["revision"].as_u64().unwrap(),
        changed[0]["revision"].as_u64().unwrap() + 1
    );

    // The text form: REVISION KIND SERVICE ADDRESS INTERFACES METADATA.
    let mut child = Streamed::spawn(&mut pycomctl_cmd(
        &d,
        &["watch", "--service", "/ctl/", "--count", "1"],
    ));
    child.wait_stderr("watching 1 record(s)", Duration::from_secs(10));
    ns.unregister("/ctl/watched", "tcp://127.0.0.1:9").unwrap();
    assert!(
        child.wait_exit(Duration::from_secs(10)).success(),
        "{}",
        child.output()
    );
    let revision = ns.stat().unwrap()["revision"].as_u64().unwrap();
    assert_eq!(
        child.out,
        [
            format!(
                "{} listed /ctl/watched tcp://127.0.0.1:9 ctl.w zone=b",
                revision - 1
            ),
            format!("{revision} unregistered /ctl/watched tcp://127.0.0.1:9 ctl.w zone=b"),
        ]
    );
}

#[test]
fn pycomctl_pub_sub_refuse_bad_topics_and_patterns_with_exit_2() {
    let d = Daemon::start();
    for args in [
        &["pub", "org.pycom.nameserver.events.registered", "{}"][..],
        &["pub", "org.pycom.mine", "1"],
        &["pub", "a.*", "1"],
        &["pub", "a..b", "1"],
        &["pub", "demo.x", "{not json"],
        &["sub", "a.>.b"],
        &["sub", "a*"],
    ] {
        let (code, out, err) = run_pycomctl(&d, args);
        assert_eq!(code, Some(2), "pycomctl {args:?}: {out}\n{err}");
        assert!(out.is_empty(), "pycomctl {args:?} printed {out}");
    }
    let (_, _, err) = run_pycomctl(&d, &["pub", "org.pycom.mine", "1"]);
    assert!(err.contains("reserved"), "{err}");
    let stat = d
        .connection(2000)
        .invoke("org.pycom.pubsub", "stat", Value::Null)
        .unwrap();
    assert_eq!(stat["messages_in"], 0, "nothing was sent: {stat}");
    assert_eq!(stat["dropped_reserved"], 0, "nothing was sent: {stat}");
}

#[test]
fn pycomctl_says_clearly_when_pycomd_runs_without_pub_sub() {
    let d = Daemon::with(&[("PYCOMD_PUBSUB__ENABLED", "false")], &[]);
    for args in [
        &["pub", "demo.x", "1"][..],
        &["sub", "demo.x", "--count", "1"],
        &["watch", "--count", "1"],
    ] {
        let started = Instant::now();
        let (code, out, err) = run_pycomctl(&d, args);
        assert!(
            matches!(code, Some(c) if c != 0),
            "pycomctl {args:?} must fail: {code:?}\n{out}\n{err}"
        );
        assert!(
            err.contains("pub-sub") && err.contains("disabled"),
            "pycomctl {args:?} does not say why: {err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "pycomctl {args:?} took {:?} to say so",
            started.elapsed()
        );
        assert!(out.is_empty(), "{out}");
    }
    // The client library says the same.
    let ctx = context(&d);
    let err = ctx.publisher("demo.x").err().expect("no forwarder");
    assert!(err.to_string().contains("without pub-sub"), "{err}");
    let err = ctx.subscribe("demo.x").err().expect("no forwarder");
    assert!(err.to_string().contains("without pub-sub"), "{err}");
}
