//! A burst of new connections is answered: the listen backlog
//! (`listen_backlog`, ZMQ_BACKLOG) is large enough that the kernel does
//! not drop the connections of clients arriving all at once.

use pycom_e2e::Daemon;
use std::time::{Duration, Instant};

/// Open `n` DEALER connections at once, send `stat` on each, and count the
/// replies that arrive within `within`.
fn burst(endpoint: &str, n: usize, within: Duration) -> usize {
    // A context holds at most 1,023 sockets (ZMQ_MAX_SOCKETS).
    let contexts: Vec<zmq::Context> = (0..n.div_ceil(1000)).map(|_| zmq::Context::new()).collect();
    let sockets: Vec<zmq::Socket> = (0..n)
        .map(|i| {
            let s = contexts[i / 1000]
                .socket(zmq::DEALER)
                .expect("a socket (is the open-files limit high enough?)");
            s.set_linger(0).expect("linger");
            s.connect(endpoint).expect("connect");
            s
        })
        .collect();
    let body = br#"{"interface": "org.pycom.nameserver", "method": "stat"}"#;
    for s in &sockets {
        s.send_multipart([&b""[..], b"CALL", &body[..]], 0).expect("send");
    }
    let deadline = Instant::now() + within;
    let mut answered = vec![false; n];
    let mut count = 0;
    while count < n && Instant::now() < deadline {
        let mut items: Vec<zmq::PollItem> = sockets.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
        if zmq::poll(&mut items, 50).expect("poll") == 0 {
            continue;
        }
        let ready: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(i, item)| item.is_readable() && !answered[*i])
            .map(|(i, _)| i)
            .collect();
        drop(items);
        for i in ready {
            if sockets[i].recv_multipart(zmq::DONTWAIT).is_ok() {
                answered[i] = true;
                count += 1;
            }
        }
    }
    count
}

/// The backlog of the socket listening on `port`, as the kernel reports
/// it (`ss`: Send-Q of a listening socket), if `ss` is there.
fn listen_backlog(port: u16) -> Option<u64> {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(2)?.parse().ok()
}

#[test]
fn a_burst_of_3000_new_connections_is_answered() {
    let d = Daemon::start();
    // The listening socket's queue holds the whole burst (ZeroMQ's default
    // is 100, which the kernel overflows, dropping connections for a second
    // at least). The kernel caps it at net.core.somaxconn.
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096);
    match listen_backlog(d.port) {
        Some(backlog) => assert!(
            backlog >= 4096.min(somaxconn),
            "the listen backlog is {backlog}; it should be listen_backlog = 4096 (or somaxconn = {somaxconn})"
        ),
        None => eprintln!("(ss is not installed: the backlog itself is not checked)"),
    }
    let answered = burst(&d.endpoint, 3_000, Duration::from_secs(10));
    assert_eq!(
        answered, 3_000,
        "{answered} of 3000 new connections answered within 10 s"
    );
    d.ns().stat().expect("pycomd still serves");
}
