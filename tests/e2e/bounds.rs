//! pycomd stays bounded whatever clients ask: list_services comes in pages
//! or up to max_reply_bytes, and the bytes of big replies that peers have
//! not read are bounded by max_pending_reply_bytes.

use pycom_client::{Code, Connection, NameserverClient};
use pycom_e2e::{leased, wait_until, Daemon};
use std::time::Duration;

/// Register `n` leased services `/b/<i>` (interface `even` or `odd`) from
/// several clients at once.
fn fill(d: &Daemon, n: usize) {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let endpoint = d.endpoint.clone();
            std::thread::spawn(move || {
                let ctx = zmq::Context::new();
                let mut ns = NameserverClient::new(Connection::open(&ctx, &endpoint).expect("connect"));
                for i in (t..n).step_by(8) {
                    let iface = if i % 2 == 0 { "even" } else { "odd" };
                    ns.register(&leased(
                        &format!("/b/{i:05}"),
                        "tcp://127.0.0.1:1",
                        &[iface],
                        600_000,
                    ))
                    .expect("register");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a filling thread");
    }
}

/// Every page of a listing, following `next`: the services in order, the
/// number of pages, and the revisions they were read at.
fn all_pages(
    ns: &mut NameserverClient,
    interface: Option<&str>,
    service: Option<&str>,
    limit: u64,
) -> (Vec<String>, usize, Vec<u64>) {
    let (mut seen, mut after, mut pages, mut revisions) = (Vec::new(), None::<String>, 0, Vec::new());
    loop {
        let page = ns
            .list_page(interface, service, limit, after.as_deref())
            .expect("a page");
        pages += 1;
        assert!(
            page.services.len() as u64 <= limit,
            "a page holds at most 'limit' records"
        );
        revisions.push(page.revision.expect("every page says its revision"));
        seen.extend(page.services.into_iter().map(|s| s.service));
        match page.next {
            Some(next) => after = Some(next),
            None => return (seen, pages, revisions),
        }
    }
}

/// A client that sends these request bodies and reads none of the replies
/// (its receive queue holds one), once pycomd has read them all; dropping
/// it goes away.
fn unread(
    d: &Daemon,
    ns: &mut NameserverClient,
    bodies: impl Iterator<Item = String>,
) -> (zmq::Socket, zmq::Context) {
    let requests = |ns: &mut NameserverClient| ns.stat().expect("stat")["requests"].as_u64().unwrap_or(0);
    let start = requests(ns);
    let ctx = zmq::Context::new();
    let greedy = ctx.socket(zmq::DEALER).expect("socket");
    greedy.set_rcvhwm(1).expect("rcvhwm");
    greedy.set_rcvbuf(4096).expect("rcvbuf");
    greedy.connect(&d.endpoint).expect("connect");
    let mut sent = 0;
    for body in bodies {
        greedy
            .send_multipart([&b""[..], b"CALL", body.as_bytes()], 0)
            .expect("send");
        sent += 1;
    }
    assert!(
        wait_until(Duration::from_secs(10), || requests(ns) > start + sent),
        "pycomd should have read the {sent} requests"
    );
    (greedy, ctx)
}

#[test]
fn pages_cover_every_record_once_in_order() {
    let d = Daemon::start();
    fill(&d, 2_500);
    let mut ns = d.ns();
    let (seen, pages, revisions) = all_pages(&mut ns, None, None, 1000);
    // At least three pages of at most 1,000 (more if one was cut short in time).
    assert!(pages >= 3, "{pages} pages");
    // Every record once, pycomd's own included, in order.
    assert_eq!(seen.len(), 2_500 + pycom_e2e::OWN_RECORDS);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages come in service order, without repeats");
    assert!(revisions.windows(2).all(|w| w[0] == w[1]));
    // A filter with pages: only the even ones.
    let (even, _, _) = all_pages(&mut ns, Some("even"), Some("/b/"), 10_000);
    assert_eq!(even.len(), 1_250);
    let first = ns.list_page(None, None, 1000, None).expect("a page");
    assert!(
        first.next.is_some(),
        "a first page of 1,000 out of 2,501 says where to go on"
    );
}

#[test]
fn a_whole_list_over_max_reply_bytes_names_the_way_out() {
    let d = Daemon::with(&[("PYCOMD_MAX_REPLY_BYTES", "65536")], &[]);
    fill(&d, 2_000);
    let mut ns = d.ns();
    let err = ns.list_services(None, None).unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest));
    let message = err.to_string();
    assert!(
        message.contains("max_reply_bytes = 65536") && message.contains("'limit' and 'after'"),
        "{message}"
    );
    // A narrower filter fits, and pages always do.
    assert_eq!(
        ns.list_services(None, Some("/b/0000"))
            .expect("a narrow list")
            .len(),
        10
    );
    let page = ns.list_page(None, None, 5_000, None).expect("a page");
    assert!(
        !page.services.is_empty() && page.next.is_some(),
        "a page is cut at max_reply_bytes"
    );
}

#[test]
fn unread_big_replies_are_bounded_in_bytes() {
    let d = Daemon::with(
        &[
            ("PYCOMD_MAX_PENDING_REPLY_BYTES", "2097152"),
            ("PYCOMD_MAX_REPLY_BYTES", "4194304"),
        ],
        &[],
    );
    fill(&d, 4_000);
    let before_kib = d.rss_kib();
    let mut ns = d.ns();
    // A client sends 150 different big lists and reads nothing.
    let greedy = unread(&d, &mut ns, (0..150).map(|i| {
        format!(r#"{{"interface": "org.pycom.nameserver", "method": "list_services", "args": {{"service": "/b/|x{i}"}}}}"#)
    }));
    // pycomd holds at most the limit (plus the one reply being made) of them.
    let stat = ns.stat().expect("stat");
    let pending = stat["pending_reply_bytes"].as_u64().expect("pending_reply_bytes");
    assert!(
        pending <= 2 * 2_097_152,
        "pending reply bytes {pending} should stay near the limit"
    );
    let grown_kib = d.rss_kib().saturating_sub(before_kib);
    assert!(
        grown_kib < 64 * 1024,
        "pycomd's memory grew by {grown_kib} KiB for unread replies"
    );
    // Meanwhile another big list is refused with code 7, naming the limit.
    let refused = ns.list_services(None, Some("/b/0"));
    let err = match refused {
        Ok(list) => panic!(
            "a big list ({} records) should be refused while the limit is held",
            list.len()
        ),
        Err(err) => err,
    };
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    assert!(
        err.to_string().contains("max_pending_reply_bytes = 2097152"),
        "{err}"
    );
    // Small reads go on.
    assert!(ns.locate("even", None).is_ok());
    // Once the greedy client goes away, its replies are released.
    drop(greedy);
    assert!(
        wait_until(Duration::from_secs(10), || ns
            .list_services(None, Some("/b/0"))
            .is_ok()),
        "big reads work again once the unread replies are gone"
    );
}

#[test]
fn identical_big_lists_share_one_reply() {
    let d = Daemon::with(&[("PYCOMD_MAX_PENDING_REPLY_BYTES", "1048576")], &[]);
    fill(&d, 4_000);
    // 100 identical whole lists from one client that reads nothing: one buffer.
    let mut ns = d.ns();
    let body = r#"{"interface": "org.pycom.nameserver", "method": "list_services"}"#;
    let _greedy = unread(&d, &mut ns, std::iter::repeat_n(body.to_string(), 100));
    let list = ns
        .list_services(None, None)
        .expect("the same list, shared, is not refused");
    assert_eq!(list.len(), 4_000 + pycom_e2e::OWN_RECORDS);
    let pending = ns.stat().expect("stat")["pending_reply_bytes"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        pending < 1_048_576,
        "one shared buffer, not 100 copies: {pending} bytes pending"
    );
}

#[test]
fn records_and_the_registry_are_bounded_in_bytes() {
    let d = Daemon::with(
        &[
            ("PYCOMD_MAX_RECORD_BYTES", "1024"),
            ("PYCOMD_MAX_REGISTRY_BYTES", "8192"),
        ],
        &[],
    );
    let mut ns = d.ns();
    let mut big = leased("/big", "tcp://127.0.0.1:1", &["big"], 60_000);
    big.metadata.insert("blob".into(), "x".repeat(1000));
    let err = ns.register(&big).unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest));
    assert!(err.to_string().contains("max_record_bytes = 1024"), "{err}");
    // About 100 bytes each: the 8 KiB budget takes some 80 of them.
    let mut accepted = 0;
    let refused = (0..200).find_map(|i| {
        let reg = leased(
            &format!("/fill/{i:03}"),
            "tcp://127.0.0.1:1",
            &["fill.interface.name.long"; 1],
            60_000,
        );
        let mut reg = reg;
        reg.metadata.insert("zone".into(), "x".repeat(50));
        match ns.register(&reg) {
            Ok(_) => {
                accepted += 1;
                None
            }
            Err(e) => Some(e),
        }
    });
    let err = refused.expect("the registry budget should run out");
    assert_eq!(err.code(), Some(Code::Unavailable));
    assert!(err.to_string().contains("max_registry_bytes = 8192"), "{err}");
    assert!((50..100).contains(&accepted), "{accepted} records accepted");
    // Room again once one goes.
    ns.unregister("/fill/000", "tcp://127.0.0.1:1")
        .expect("unregister");
    let mut again = leased(
        "/fill/again",
        "tcp://127.0.0.1:1",
        &["fill.interface.name.long"],
        60_000,
    );
    again.metadata.insert("zone".into(), "x".repeat(50));
    ns.register(&again).expect("room again after an unregister");
}

#[test]
fn pycomctl_lists_past_max_reply_bytes_page_by_page() {
    let d = Daemon::with(&[("PYCOMD_MAX_REPLY_BYTES", "65536")], &[]);
    fill(&d, 2_000);
    let out = pycom_e2e::pycomctl(&d, &["--output", "json", "list-services"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("a JSON list");
    assert_eq!(listed.len(), 2_000 + pycom_e2e::OWN_RECORDS);
}
