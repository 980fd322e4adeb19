//! Probes at scale: thousands of lease-less (PyCOM 0.3) records, live and
//! dead, against the real pycomd. Live services are REP sockets hosted in
//! this process, a few threads polling many sockets each; dead ones are
//! addresses nobody listens on.
//!
//! pycomd must keep every live record (its own limits are never a reason to
//! drop one), drop every dead one, and keep its sockets and file descriptors
//! bounded however many records it probes.

use pycom_client::{Code, Connection, NameserverClient, Registration};
use pycom_e2e::{probed, wait_until, Daemon};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// pycomd's prober: at most 512 sockets, each connected to one address at a
/// time, three fds each (the connection and libzmq's signalling socketpair).
const PROBE_FDS: usize = 512 * 3;
/// pycomd's other descriptors (logs, the store, its other sockets, the
/// clients of this test), and probe connections still closing: libzmq
/// closes a connection on its I/O thread, a moment after the prober let it
/// go, and with every probe on a new connection hundreds may be closing.
const FD_SLACK: usize = 512;
/// Sockets hosted per thread, each thread with a ZeroMQ context of its own:
/// well under libzmq's default cap of 1023 sockets per context (the zmq
/// crate cannot raise ZMQ_MAX_SOCKETS).
const SOCKETS_PER_THREAD: usize = 500;
/// Threads registering at once: group commit makes the durable writes cheap.
const REGISTER_THREADS: usize = 16;

/// The tests here each host or probe thousands of sockets: one at a time,
/// so that a test's deadlines do not depend on its neighbours in this file.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn fifteen_hundred_live_lease_less_services_stay_registered() {
    let _serial = one_at_a_time();
    raise_nofile(5_000);
    let live = LiveServices::start(1_500);
    let d = Daemon::with(
        &[
            ("PYCOMD_PROBE_INTERVAL_MS", "300"),
            ("PYCOMD_PROBE_TIMEOUT_MS", "2000"),
            ("PYCOMD_PROBE_FAILURES", "2"),
        ],
        &[],
    );
    let regs: Vec<Registration> = live
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| probed(&format!("/live/{i}"), ep, &["probes.live"]))
        .collect();
    let started = Instant::now();
    register_all(&d.endpoint, &regs);
    eprintln!("registered {} in {:?}", regs.len(), started.elapsed());

    // Several probe rounds: every service must have been probed at least
    // three times, and none may be dropped meanwhile.
    let mut ns = d.ns();
    let mut max_fds = 0;
    let mut kinds = String::new();
    let rounds = wait_until(Duration::from_secs(25), || {
        let fds = fd_count(d.pid());
        if fds > max_fds {
            max_fds = fds;
            kinds = fd_kinds(d.pid());
        }
        let registered = count(&mut ns, "probes.live");
        assert_eq!(
            registered,
            1_500,
            "live services were dropped: {} of 1500 left after {:?} (probes per service: min {}); \
             pycomd has {} fds open; log (tail):\n{}",
            registered,
            started.elapsed(),
            live.min_probes(),
            fd_count(d.pid()),
            tail(&d.log(), 20)
        );
        live.min_probes() >= 3
    });
    assert!(
        rounds,
        "not every service was probed 3 times within 25 s (min {}); log (tail):\n{}",
        live.min_probes(),
        tail(&d.log(), 20)
    );
    assert_eq!(count(&mut ns, "probes.live"), 1_500);
    eprintln!(
        "1500 live services probed >= 3 times each in {:?}; pycomd used at most {max_fds} fds: {kinds}",
        started.elapsed()
    );
    assert!(
        max_fds < PROBE_FDS + FD_SLACK,
        "pycomd had {max_fds} fds open (bound {}): {kinds}",
        PROBE_FDS + FD_SLACK
    );
    let log = d.log();
    no_fd_exhaustion(&log);
    assert!(!log.contains("dropped: probes unanswered"), "{}", tail(&log, 20));
}

#[test]
fn five_thousand_dead_addresses_are_all_dropped() {
    let _serial = one_at_a_time();
    raise_nofile(2_000);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pycomd.toml");
    // Registered while probes are far off; then pycomd restarts with fast
    // probes and finds all 5000 due at once, ten times what it probes at a time.
    std::fs::write(&config, "probe_interval_ms = 3600000\n").unwrap();
    let config_arg = config.to_str().unwrap();
    let mut d = Daemon::with(&[], &["--config", config_arg]);
    let regs: Vec<Registration> = dead_addresses(5_000)
        .iter()
        .enumerate()
        .map(|(i, ep)| probed(&format!("/dead/{i}"), ep, &["probes.dead"]))
        .collect();
    let started = Instant::now();
    register_all(&d.endpoint, &regs);
    eprintln!("registered {} in {:?}", regs.len(), started.elapsed());
    assert_eq!(count(&mut d.ns(), "probes.dead"), 5_000);

    std::fs::write(
        &config,
        "probe_interval_ms = 200\nprobe_timeout_ms = 200\nprobe_failures = 2\n",
    )
    .unwrap();
    assert!(d.terminate().success(), "{}", tail(&d.log(), 20));
    d.spawn();
    let restarted = Instant::now();
    let mut ns = d.ns();
    let mut max_fds = 0;
    let dropped = wait_until(Duration::from_secs(25), || {
        max_fds = max_fds.max(fd_count(d.pid()));
        count(&mut ns, "probes.dead") == 0
    });
    assert!(
        dropped,
        "{} of 5000 dead records left after {:?}; log (tail):\n{}",
        count(&mut ns, "probes.dead"),
        restarted.elapsed(),
        tail(&d.log(), 20)
    );
    eprintln!(
        "5000 dead records dropped {:?} after the restart; pycomd used at most {max_fds} fds",
        restarted.elapsed()
    );
    let log = d.log();
    no_fd_exhaustion(&log);
    assert!(
        max_fds < PROBE_FDS + FD_SLACK,
        "pycomd had {max_fds} fds open (bound {})",
        PROBE_FDS + FD_SLACK
    );
    // 5000 due at once, 512 at a time, each holding its slot 200 ms: the
    // last start about 2 s late, and pycomd says so.
    assert!(
        log.contains("probes are running late"),
        "no warning that the probe limit was reached; log (tail):\n{}",
        tail(&log, 20)
    );
}

#[test]
fn live_services_survive_among_dead_ones() {
    let _serial = one_at_a_time();
    raise_nofile(4_000);
    let live = LiveServices::start(1_000);
    let d = Daemon::with(
        &[
            ("PYCOMD_PROBE_INTERVAL_MS", "300"),
            ("PYCOMD_PROBE_TIMEOUT_MS", "1000"),
            ("PYCOMD_PROBE_FAILURES", "2"),
        ],
        &[],
    );
    let dead = dead_addresses(2_000);
    // Interleaved: two dead, one live.
    let mut regs = Vec::new();
    for (i, ep) in live.endpoints.iter().enumerate() {
        regs.push(probed(
            &format!("/mixed/dead/{}", 2 * i),
            &dead[2 * i],
            &["probes.dead"],
        ));
        regs.push(probed(&format!("/mixed/live/{i}"), ep, &["probes.live"]));
        regs.push(probed(
            &format!("/mixed/dead/{}", 2 * i + 1),
            &dead[2 * i + 1],
            &["probes.dead"],
        ));
    }
    let started = Instant::now();
    register_all(&d.endpoint, &regs);
    eprintln!("registered {} in {:?}", regs.len(), started.elapsed());

    let mut ns = d.ns();
    let mut max_fds = 0;
    let dead_gone = wait_until(Duration::from_secs(25), || {
        max_fds = max_fds.max(fd_count(d.pid()));
        let registered = count(&mut ns, "probes.live");
        assert_eq!(
            registered,
            1_000,
            "live services were dropped: {registered} of 1000 left after {:?}; log (tail):\n{}",
            started.elapsed(),
            tail(&d.log(), 20)
        );
        count(&mut ns, "probes.dead") == 0
    });
    assert!(
        dead_gone,
        "{} of 2000 dead records left after {:?}; log (tail):\n{}",
        count(&mut ns, "probes.dead"),
        started.elapsed(),
        tail(&d.log(), 20)
    );
    eprintln!(
        "2000 dead records dropped {:?} after the first register, 1000 live ones kept; \
         pycomd used at most {max_fds} fds",
        started.elapsed()
    );
    // The live ones were probed, not merely not yet looked at.
    assert!(
        wait_until(Duration::from_secs(10), || live.min_probes() >= 2),
        "some live services were not probed twice (min {})",
        live.min_probes()
    );
    assert_eq!(count(&mut ns, "probes.live"), 1_000);
    assert!(
        max_fds < PROBE_FDS + FD_SLACK,
        "pycomd had {max_fds} fds open (bound {})",
        PROBE_FDS + FD_SLACK
    );
    no_fd_exhaustion(&d.log());
}

/// Many PyCOM 0.3-like services: REP sockets answering every request with
/// code 4, as PyCOM 0.3 answers the probe's unknown interface.
struct LiveServices {
    endpoints: Vec<String>,
    /// Requests each service answered, by index.
    probes: Arc<Vec<AtomicU32>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl LiveServices {
    fn start(n: usize) -> LiveServices {
        let probes: Arc<Vec<AtomicU32>> = Arc::new((0..n).map(|_| AtomicU32::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let mut endpoints = Vec::with_capacity(n);
        let mut threads = Vec::new();
        for first in (0..n).step_by(SOCKETS_PER_THREAD) {
            let last = (first + SOCKETS_PER_THREAD).min(n);
            let ctx = zmq::Context::new();
            let sockets: Vec<zmq::Socket> = (first..last)
                .map(|_| {
                    let socket = ctx.socket(zmq::REP).expect("REP socket");
                    socket.set_linger(0).expect("linger");
                    socket.bind("tcp://127.0.0.1:*").expect("bind");
                    endpoints.push(socket.get_last_endpoint().expect("endpoint").expect("utf-8"));
                    socket
                })
                .collect();
            let (probes, stop) = (probes.clone(), stop.clone());
            threads.push(std::thread::spawn(move || serve(&sockets, first, &probes, &stop)));
        }
        LiveServices {
            endpoints,
            probes,
            stop,
            threads,
        }
    }

    /// The fewest requests any one service answered.
    fn min_probes(&self) -> u32 {
        self.probes
            .iter()
            .map(|p| p.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }
}

fn serve(sockets: &[zmq::Socket], first: usize, probes: &[AtomicU32], stop: &AtomicBool) {
    let mut items: Vec<zmq::PollItem> = sockets.iter().map(|s| s.as_poll_item(zmq::POLLIN)).collect();
    while !stop.load(Ordering::Relaxed) {
        if zmq::poll(&mut items, 50).unwrap_or(0) <= 0 {
            continue;
        }
        for (i, item) in items.iter().enumerate() {
            if !item.is_readable() {
                continue;
            }
            let socket = &sockets[i];
            if socket.recv_multipart(zmq::DONTWAIT).is_ok() {
                let reply: [&[u8]; 2] = [b"OK", br#"{"code": 4, "error": "Unsupported interface"}"#];
                let _ = socket.send_multipart(reply, zmq::DONTWAIT);
                probes[first + i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for LiveServices {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `n` TCP addresses nobody listens on: loopback ports outside the
/// ephemeral range (so no test's `free_port` or `*` bind takes one
/// meanwhile), each checked to refuse a connection now.
fn dead_addresses(n: usize) -> Vec<String> {
    let range: Vec<u16> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let (low, high) = match range[..] {
        [low, high] => (low, high),
        _ => (32768, 60999),
    };
    let below = (1025..low).rev();
    let above = high.saturating_add(1)..=u16::MAX;
    let mut dead = Vec::with_capacity(n);
    for port in below.chain(above) {
        if dead.len() == n {
            break;
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            dead.push(format!("tcp://127.0.0.1:{port}"));
        }
    }
    assert_eq!(dead.len(), n, "not enough unused ports outside {low}-{high}");
    dead
}

/// Register everything, from several clients at once.
fn register_all(endpoint: &str, regs: &[Registration]) {
    let chunk = regs.len().div_ceil(REGISTER_THREADS);
    std::thread::scope(|scope| {
        for part in regs.chunks(chunk) {
            scope.spawn(move || {
                let mut ns = client(endpoint);
                for reg in part {
                    ns.register(reg)
                        .unwrap_or_else(|e| panic!("register {}: {e}", reg.service));
                }
            });
        }
    });
}

fn client(endpoint: &str) -> NameserverClient {
    let ctx = zmq::Context::new();
    let mut conn = Connection::open(&ctx, endpoint).expect("connect");
    conn.set_timeout(Duration::from_secs(10));
    NameserverClient::new(conn)
}

/// How many live records provide `interface`.
fn count(ns: &mut NameserverClient, interface: &str) -> usize {
    match ns.locate_all(interface, None) {
        Ok(list) => list.len(),
        Err(e) if e.code() == Some(Code::ServiceNotFound) => 0,
        Err(e) => panic!("locate {interface}: {e}"),
    }
}

/// Open file descriptors of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// What a process's file descriptors are: how many sockets, eventfds...
fn fd_kinds(pid: u32) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        let kind = target.split('[').next().unwrap_or_default().trim_end_matches(':');
        *kinds.entry(kind.to_string()).or_default() += 1;
    }
    format!("{kinds:?}")
}

/// This process hosts thousands of sockets: raise its soft fd limit to the
/// hard one, and make sure that is enough.
fn raise_nofile(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0, "getrlimit");
        // An unlimited hard limit is capped by the kernel (fs.nr_open): ask for what is needed.
        let target = if lim.rlim_max == libc::RLIM_INFINITY {
            needed.max(lim.rlim_cur)
        } else {
            lim.rlim_max
        };
        if lim.rlim_cur < target {
            lim.rlim_cur = target;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        }
    }
    assert!(
        lim.rlim_cur >= needed,
        "this test needs {needed} file descriptors; the hard limit is {}",
        lim.rlim_cur
    );
}

/// pycomd never ran out of descriptors or sockets (libzmq says EMFILE for both).
fn no_fd_exhaustion(log: &str) {
    let mut hits = log.lines().filter(|l| l.contains("Too many open files"));
    if let Some(first) = hits.next() {
        panic!(
            "pycomd ran out of file descriptors or sockets, {} times; the first:\n{first}",
            hits.count() + 1
        );
    }
}

fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A measurement, not a check: 10,000 lease-less records at live
/// addresses, probed as fast as pycomd can (`PROBES_INTERVAL_MS`, default
/// 200) or at a given interval. The services are one ROUTER socket bound to
/// 10,000 ports (a REP socket per port would take 30,000 fds here).
/// `cargo test --release -p pycom-e2e --test probes -- --ignored --nocapture`
#[test]
#[ignore = "a measurement: run it with --ignored --nocapture"]
fn measure_ten_thousand_records() {
    let _serial = one_at_a_time();
    const N: usize = 10_000;
    raise_nofile(16_000);
    let interval = std::env::var("PROBES_INTERVAL_MS").unwrap_or_else(|_| "200".into());
    let dead = std::env::var("PROBES_DEAD").is_ok();
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).unwrap();
    router.set_linger(0).unwrap();
    let endpoints: Vec<String> = if dead {
        dead_addresses(N)
    } else {
        (0..N)
            .map(|_| {
                router.bind("tcp://127.0.0.1:*").unwrap();
                router.get_last_endpoint().unwrap().unwrap()
            })
            .collect()
    };
    let answered = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let host = {
        let (answered, stop) = (answered.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if router.poll(zmq::POLLIN, 50).unwrap_or(0) <= 0 {
                    continue;
                }
                while let Ok(mut frames) = router.recv_multipart(zmq::DONTWAIT) {
                    frames.truncate(2);
                    frames.push(b"OK".to_vec());
                    frames.push(br#"{"code": 4, "error": "Unsupported interface"}"#.to_vec());
                    let _ = router.send_multipart(frames, zmq::DONTWAIT);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let d = Daemon::with(
        &[
            ("PYCOMD_PROBE_INTERVAL_MS", interval.as_str()),
            ("PYCOMD_PROBE_TIMEOUT_MS", if dead { "500" } else { "2000" }),
            ("PYCOMD_PROBE_FAILURES", if dead { "1" } else { "3" }),
        ],
        &[],
    );
    let regs: Vec<Registration> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| probed(&format!("/m/{i}"), ep, &["probes.m"]))
        .collect();
    let started = Instant::now();
    register_all(&d.endpoint, &regs);
    let registered = started.elapsed();
    let mut ns = d.ns();
    let (mut max_fds, mut max_tcp, mut max_unix, mut max_threads) = (0, 0, 0, 0);
    let mut first_round = None;
    let mut last = (Instant::now(), answered.load(Ordering::Relaxed));
    let mut rates = Vec::new();
    while started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        let (tcp, unix, other) = socket_kinds(d.pid());
        max_fds = max_fds.max(tcp + unix + other);
        max_tcp = max_tcp.max(tcp);
        max_unix = max_unix.max(unix);
        max_threads =
            max_threads.max(std::fs::read_dir(format!("/proc/{}/task", d.pid())).map_or(0, |t| t.count()));
        let n = answered.load(Ordering::Relaxed) as usize;
        if first_round.is_none() && !dead && n >= N {
            first_round = Some(started.elapsed());
        }
        if dead && first_round.is_none() && count(&mut ns, "probes.m") == 0 {
            first_round = Some(started.elapsed());
            break;
        }
        if last.0.elapsed() >= Duration::from_secs(2) {
            rates.push((n - last.1 as usize) as f64 / last.0.elapsed().as_secs_f64());
            last = (Instant::now(), n as u32);
        }
    }
    let left = count(&mut ns, "probes.m");
    stop.store(true, Ordering::Relaxed);
    let _ = host.join();
    let log = d.log();
    eprintln!(
        "{N} {} records, probe_interval_ms={interval}: registered in {registered:?}; \
         first round done {first_round:?} after the first register; \
         probes answered per second (2 s windows): {rates:.0?}; \
         pycomd at most {max_fds} fds ({max_tcp} TCP, {max_unix} unix: {} ZeroMQ sockets), \
         {max_threads} threads; {left} records left; late warnings: {}; Too many open files: {}",
        if dead { "dead" } else { "live" },
        max_unix / 2,
        log.matches("probes are running late").count(),
        log.contains("Too many open files"),
    );
    for line in log.lines().filter(|l| l.contains("WARN")).take(3) {
        eprintln!("{line}");
    }
}

/// A process's sockets: (TCP, unix, everything else), from /proc.
fn socket_kinds(pid: u32) -> (usize, usize, usize) {
    let unix: std::collections::HashSet<String> = std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6).map(String::from))
        .collect();
    let (mut tcp, mut unix_n, mut other) = (0, 0, 0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        match target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
            Some(inode) if unix.contains(inode) => unix_n += 1,
            Some(_) => tcp += 1,
            None => other += 1,
        }
    }
    (tcp, unix_n, other)
}
