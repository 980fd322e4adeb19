//! A userspace TCP proxy standing for one network link, so that tests can
//! cut links between processes without root (no iptables, no netns).
//!
//! [`LinkProxy::start`] listens on a free `127.0.0.1` port and forwards
//! every connection made to it to a target address, bytes both ways, with
//! plain threads: one acceptor, and two per connection (one per
//! direction). Connections are capped ([`MAX_CONNECTIONS`]); beyond the cap
//! new ones wait in the kernel's listen backlog until one ends, so threads
//! never pile up. Dropping the proxy closes everything and joins every
//! thread.
//!
//! Three states, switched at any time:
//!
//! - **forwarding** (the start, and after [`LinkProxy::heal`]);
//! - **cut** ([`LinkProxy::cut`]): a link that fails loudly, like a peer
//!   that restarted or a firewall that rejects. Every current connection
//!   is shut down both ways at once (both ends read EOF, writes fail), and
//!   new connections are accepted then closed at once. Whatever was in
//!   flight is lost, as with a reset.
//! - **blackholed** ([`LinkProxy::blackhole`]): a link that fails
//!   silently, like a cable pulled or packets dropped. Nothing is closed:
//!   the proxy stops moving bytes (each direction holds at most the chunk
//!   it had read, then stops reading, so the senders' socket buffers fill
//!   and their writes block), and new connections are accepted and held
//!   without connecting to the target. Neither side learns anything; only
//!   its own timeouts tell it. On heal the held bytes are delivered in
//!   order and held connections go through, as TCP's retransmissions
//!   would after a short outage. A held new connection whose client gives
//!   up (closes) is dropped quietly; an established one keeps its place
//!   until heal or cut: a close (or reset) waits for the heal like data,
//!   so the other side never learns of it through a blackhole.
//!
//! Where userspace differs from the network: a cut link's new connections
//! see their connect succeed, then EOF (not ECONNREFUSED); a blackholed
//! link's new connections complete their handshake (the kernel answers it)
//! and only what follows is held; bytes a direction was already writing
//! when `blackhole()` was called may still arrive (packets on the wire).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections a proxy carries at once (two threads each).
pub const MAX_CONNECTIONS: usize = 64;

/// How long connecting to the target may take before the client's
/// connection is closed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the link does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Forwarding,
    Cut,
    Blackholed,
}

/// A proxied link from `addr()` to a target; see the module documentation.
pub struct LinkProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every change of `mode`/`stopping`, and when a
    /// connection ends.
    changed: Condvar,
}

struct State {
    mode: LinkState,
    stopping: bool,
    next_id: u64,
    /// The sockets of live connections, to shut down on cut and stop.
    conns: HashMap<u64, Sockets>,
    /// Connections accepted over the proxy's life.
    accepted: u64,
}

struct Sockets {
    client: TcpStream,
    target: Option<TcpStream>,
}

impl Sockets {
    fn shutdown(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(t) = &self.target {
            let _ = t.shutdown(Shutdown::Both);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take the proxy down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_timeout<'a>(&self, guard: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
        match self.changed.wait_timeout(guard, d) {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        }
    }

    fn forget(&self, id: u64) {
        self.lock().conns.remove(&id);
        self.changed.notify_all();
    }
}

impl LinkProxy {
    /// A forwarding proxy to `target` on a free 127.0.0.1 port.
    pub fn start(target: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: LinkState::Forwarding,
                stopping: false,
                next_id: 0,
                conns: HashMap::new(),
                accepted: 0,
            }),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy {addr}->{target}"))
            .spawn(move || accept_loop(listener, target, s))
            .expect("spawn the proxy acceptor");
        LinkProxy {
            addr,
            target,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// What the link does now.
    pub fn state(&self) -> LinkState {
        self.shared.lock().mode
    }

    /// Connections open now (held ones included).
    pub fn connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> u64 {
        self.shared.lock().accepted
    }

    /// Reset the link: shut down every connection now, and close new ones
    /// as soon as they are accepted, until [`heal`](LinkProxy::heal).
    pub fn cut(&self) {
        self.set(LinkState::Cut);
    }

    /// Stop moving bytes, silently, until [`heal`](LinkProxy::heal) (or a
    /// cut, which then closes the held connections).
    pub fn blackhole(&self) {
        self.set(LinkState::Blackholed);
    }

    /// Forward again: held bytes and connections go through.
    pub fn heal(&self) {
        self.set(LinkState::Forwarding);
    }

    fn set(&self, mode: LinkState) {
        let mut st = self.shared.lock();
        st.mode = mode;
        if mode == LinkState::Cut {
            for sockets in st.conns.values() {
                sockets.shutdown();
            }
        }
        drop(st);
        self.shared.changed.notify_all();
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            for sockets in st.conns.values() {
                sockets.shutdown();
            }
        }
        self.shared.changed.notify_all();
        // Wake a blocking accept(); the acceptor sees `stopping` and closes it.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    loop {
        // Stay under the cap: wait for a connection to end.
        {
            let mut st = shared.lock();
            loop {
                threads.retain(|t| !t.is_finished());
                if st.stopping || st.conns.len() < MAX_CONNECTIONS {
                    break;
                }
                st = shared.wait_timeout(st, Duration::from_millis(100));
            }
            if st.stopping {
                break;
            }
        }
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                // EMFILE and the like: back off rather than spin.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let id = {
            let mut st = shared.lock();
            if st.stopping {
                break;
            }
            st.accepted += 1;
            if st.mode == LinkState::Cut {
                drop(st);
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(clone) = client.try_clone() else {
                continue;
            };
            let id = st.next_id;
            st.next_id += 1;
            st.conns.insert(
                id,
                Sockets {
                    client: clone,
                    target: None,
                },
            );
            id
        };
        let s = shared.clone();
        match std::thread::Builder::new()
            .name(format!("proxy conn {id}"))
            .spawn(move || connection(id, client, target, s))
        {
            Ok(t) => threads.push(t),
            Err(_) => shared.forget(id),
        }
    }
    drop(listener);
    for t in threads {
        let _ = t.join();
    }
}

/// One connection: held while blackholed, then connected to the target and
/// pumped both ways until both directions end.
fn connection(id: u64, client: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    if !hold(&client, &shared) {
        let _ = client.shutdown(Shutdown::Both);
        shared.forget(id);
        return;
    }
    let upstream = match TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(_) => {
            // The target is down: the client sees its connection close.
            let _ = client.shutdown(Shutdown::Both);
            shared.forget(id);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    {
        let mut st = shared.lock();
        let cut_meanwhile = st.stopping || st.mode == LinkState::Cut;
        match (st.conns.get_mut(&id), upstream.try_clone()) {
            (Some(sockets), Ok(clone)) if !cut_meanwhile => sockets.target = Some(clone),
            _ => {
                drop(st);
                let _ = upstream.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
                shared.forget(id);
                return;
            }
        }
    }
    let down = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy conn {id} down"))
                .spawn(move || pump(u, c, &s))
                .ok()
        }
        _ => None,
    };
    if down.is_none() {
        let _ = client.shutdown(Shutdown::Both);
        let _ = upstream.shutdown(Shutdown::Both);
    } else {
        pump(client, upstream, &shared);
    }
    if let Some(t) = down {
        let _ = t.join();
    }
    shared.forget(id);
}

/// Wait while the link is blackholed. True to go on and connect; false
/// when cut, stopping, or the client gave up meanwhile.
fn hold(client: &TcpStream, shared: &Shared) -> bool {
    let mut st = shared.lock();
    loop {
        if st.stopping || st.mode == LinkState::Cut {
            return false;
        }
        if st.mode == LinkState::Forwarding {
            return true;
        }
        st = shared.wait_timeout(st, Duration::from_millis(50));
        drop(st);
        if client_closed(client) {
            return false;
        }
        st = shared.lock();
    }
}

/// Whether the client closed a connection it has not sent anything on
/// (EOF or an error pending); data it sent waits for the target.
fn client_closed(client: &TcpStream) -> bool {
    if client.set_nonblocking(true).is_err() {
        return true;
    }
    let mut b = [0u8; 1];
    let closed = match client.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::Interrupted,
    };
    closed || client.set_nonblocking(false).is_err()
}

/// Wait until bytes may move. False when the link was cut or the proxy is
/// stopping (the held chunk is lost, as with a reset).
fn may_forward(shared: &Shared) -> bool {
    let mut st = shared.lock();
    loop {
        if st.stopping || st.mode == LinkState::Cut {
            return false;
        }
        if st.mode == LinkState::Forwarding {
            return true;
        }
        st = match shared.changed.wait(st) {
            Ok(g) => g,
            Err(e) => e.into_inner(),
        };
    }
}

/// Copy `from` to `to` until EOF (passed on as a half close) or an error
/// (both sockets shut down, which ends the other direction too). While
/// blackholed, neither crosses: they wait for the heal like data.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                if may_forward(shared) {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                break;
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                may_forward(shared);
                break;
            }
        };
        if !may_forward(shared) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait_until;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Echoes every byte back, one thread per connection; stops (closing
    /// its connections) when dropped.
    struct Echo {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Echo {
        fn start() -> Echo {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            listener.set_nonblocking(true).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || {
                let (mut threads, mut open) = (Vec::new(), Vec::new());
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            open.push(s.try_clone().unwrap());
                            threads.push(std::thread::spawn(move || {
                                let mut buf = [0u8; 4096];
                                while let Ok(n) = s.read(&mut buf) {
                                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = s.shutdown(Shutdown::Both);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
                for s in &open {
                    let _ = s.shutdown(Shutdown::Both);
                }
                for t in threads {
                    let _ = t.join();
                }
            });
            Echo {
                addr,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn connect(p: &LinkProxy) -> TcpStream {
        let s = TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Send `msg` and read the echo of it.
    fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    /// Whether `s` was closed by the other side: EOF or an error, within 5 s.
    fn closed(s: &mut TcpStream) -> bool {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 16];
        match s.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        }
    }

    /// Whether nothing arrives on `s` for `ms` milliseconds.
    fn silent(s: &mut TcpStream, ms: u64) -> bool {
        s.set_read_timeout(Some(Duration::from_millis(ms))).unwrap();
        let mut b = [0u8; 16];
        let quiet = matches!(s.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        quiet
    }

    #[test]
    fn forwards_both_ways_on_many_connections() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        assert_eq!(p.target(), echo.addr);
        let mut conns: Vec<TcpStream> = (0..5).map(|_| connect(&p)).collect();
        for (i, s) in conns.iter_mut().enumerate() {
            let msg = format!("hello {i}");
            assert_eq!(round_trip(s, msg.as_bytes()).unwrap(), msg.as_bytes());
        }
        // A large transfer, more than the socket buffers hold.
        let big: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = conns.pop().unwrap();
        let mut reader = s.try_clone().unwrap();
        let expected = big.clone();
        let r = std::thread::spawn(move || {
            let mut got = vec![0u8; expected.len()];
            reader.read_exact(&mut got).unwrap();
            got == expected
        });
        s.write_all(&big).unwrap();
        assert!(r.join().unwrap(), "the echo came back altered");
        assert_eq!(p.state(), LinkState::Forwarding);
    }

    #[test]
    fn cut_closes_connections_and_refuses_new_ones_until_healed() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        let mut a = connect(&p);
        assert_eq!(round_trip(&mut a, b"before").unwrap(), b"before");
        p.cut();
        assert_eq!(p.state(), LinkState::Cut);
        assert!(closed(&mut a), "an established connection survived the cut");
        // New connections are accepted and closed at once.
        let mut b = connect(&p);
        let _ = b.write_all(b"during");
        assert!(closed(&mut b), "a new connection went through a cut link");
        assert!(wait_until(Duration::from_secs(5), || p.connections() == 0));
        p.heal();
        let mut c = connect(&p);
        assert_eq!(round_trip(&mut c, b"after").unwrap(), b"after");
    }

    #[test]
    fn blackhole_holds_bytes_and_delivers_them_on_heal() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        let mut a = connect(&p);
        assert_eq!(round_trip(&mut a, b"before").unwrap(), b"before");
        p.blackhole();
        assert_eq!(p.state(), LinkState::Blackholed);
        // Writes succeed (the bytes sit in buffers), nothing comes back,
        // and the connection is not closed.
        a.write_all(b"held").unwrap();
        assert!(silent(&mut a, 300), "bytes crossed a blackholed link");
        // A new connection is accepted, then held.
        let mut b = connect(&p);
        b.write_all(b"queued").unwrap();
        assert!(
            silent(&mut b, 300),
            "a new connection went through a blackholed link"
        );
        assert_eq!(p.connections(), 2);
        p.heal();
        let mut got = [0u8; 4];
        a.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"held");
        let mut got = [0u8; 6];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"queued");
        assert_eq!(round_trip(&mut a, b"after").unwrap(), b"after");
    }

    #[test]
    fn a_blackholed_sender_blocks_rather_than_losing_bytes() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        let mut a = connect(&p);
        assert_eq!(round_trip(&mut a, b"x").unwrap(), b"x");
        p.blackhole();
        // Fill the buffers on the way: the writer blocks (times out).
        a.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0usize;
        let blocked = loop {
            match a.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => break matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            }
            if sent > 256 * 1024 * 1024 {
                break false;
            }
        };
        assert!(blocked, "the writer never blocked ({sent} bytes written)");
        // Heal: every byte written comes back, in order.
        p.heal();
        let mut got = vec![0u8; sent];
        a.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_close_does_not_cross_a_blackhole() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = LinkProxy::start(listener.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let target = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 16];
            s.read_exact(&mut buf[..1]).unwrap();
            s.write_all(b"y").unwrap();
            // Wait for the client's close.
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            tx.send(()).unwrap();
        });
        let mut a = connect(&p);
        assert_eq!(round_trip(&mut a, b"x").unwrap(), b"y");
        p.blackhole();
        drop(a);
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the close crossed a blackholed link"
        );
        p.heal();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the close arrives after the heal");
        target.join().unwrap();
        assert!(wait_until(Duration::from_secs(5), || p.connections() == 0));
    }

    #[test]
    fn cut_after_blackhole_closes_held_connections() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        let mut a = connect(&p);
        assert_eq!(round_trip(&mut a, b"x").unwrap(), b"x");
        p.blackhole();
        let mut b = connect(&p);
        assert!(wait_until(Duration::from_secs(5), || p.connections() == 2));
        p.cut();
        assert!(closed(&mut a));
        assert!(closed(&mut b));
        assert!(wait_until(Duration::from_secs(5), || p.connections() == 0));
    }

    #[test]
    fn held_connections_whose_clients_give_up_are_dropped() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        p.blackhole();
        for _ in 0..10 {
            drop(connect(&p));
        }
        assert!(wait_until(Duration::from_secs(5), || p.accepted() == 10));
        assert!(
            wait_until(Duration::from_secs(5), || p.connections() == 0),
            "{} held connections left",
            p.connections()
        );
    }

    #[test]
    fn either_side_closing_ends_the_connection() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        // The client closes.
        for _ in 0..20 {
            let mut s = connect(&p);
            assert_eq!(round_trip(&mut s, b"ping").unwrap(), b"ping");
        }
        assert!(wait_until(Duration::from_secs(5), || p.connections() == 0));
        // The client half-closes: the echo still comes back, then EOF.
        let mut s = connect(&p);
        s.write_all(b"bye").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");
        // The target goes away: clients see their connections close.
        let mut s = connect(&p);
        assert_eq!(round_trip(&mut s, b"ping").unwrap(), b"ping");
        let addr = echo.addr;
        drop(echo);
        assert!(closed(&mut s), "the target's close did not reach the client");
        drop(s);
        assert!(wait_until(Duration::from_secs(5), || p.connections() == 0));
        // Nothing listens at the target now: connections are closed at once.
        let refused = TcpStream::connect(addr).is_err();
        if refused {
            let mut s = connect(&p);
            assert!(closed(&mut s));
        }
    }

    #[test]
    fn the_cap_holds_new_connections_in_the_backlog() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        let mut conns: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| connect(&p)).collect();
        for s in &mut conns {
            assert_eq!(round_trip(s, b"k").unwrap(), b"k");
        }
        assert_eq!(p.connections(), MAX_CONNECTIONS);
        // One more: the kernel takes it, the proxy does not yet.
        let mut extra = connect(&p);
        extra.write_all(b"late").unwrap();
        assert!(silent(&mut extra, 300));
        drop(conns.pop());
        let mut got = [0u8; 4];
        extra.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"late");
    }

    #[test]
    fn drop_closes_everything_promptly() {
        let echo = Echo::start();
        let p = LinkProxy::start(echo.addr);
        let addr = p.addr();
        let mut a = connect(&p);
        assert_eq!(round_trip(&mut a, b"x").unwrap(), b"x");
        p.blackhole();
        let mut b = connect(&p);
        assert!(wait_until(Duration::from_secs(5), || p.connections() == 2));
        let t = std::time::Instant::now();
        drop(p);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "drop took {:?}",
            t.elapsed()
        );
        assert!(closed(&mut a));
        assert!(closed(&mut b));
        // The listener is gone.
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    }
}
