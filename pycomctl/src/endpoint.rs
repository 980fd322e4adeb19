//! Nameserver endpoints: checked before use (a malformed one is a usage
//! error, not a timeout), and tried with a plain connect first so that one
//! nobody listens on fails at once instead of after the whole timeout.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Transports ZeroMQ knows that pycomctl passes on unchecked.
const OTHER_TRANSPORTS: &[&str] = &["ws", "wss", "pgm", "epgm", "tipc", "vmci", "inproc"];

/// The endpoints of a comma-separated list, each checked; the error says
/// what is wrong with the first bad one (without naming where it came from).
pub fn parse_list(spec: &str) -> Result<Vec<String>, String> {
    let endpoints: Vec<String> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if endpoints.is_empty() {
        return Err("is empty: give an endpoint such as tcp://127.0.0.1:2012".into());
    }
    for endpoint in &endpoints {
        check(endpoint).map_err(|why| format!("'{endpoint}' {why}"))?;
    }
    Ok(endpoints)
}

fn check(endpoint: &str) -> Result<(), String> {
    let Some((transport, rest)) = endpoint.split_once("://") else {
        let port = if split_host_port(endpoint).is_some() {
            ""
        } else {
            ":2012"
        };
        return Err(format!(
            "is not a ZeroMQ endpoint: it has no transport (did you mean tcp://{endpoint}{port}?)"
        ));
    };
    match transport {
        "tcp" => check_tcp(rest),
        "ipc" if rest.is_empty() => Err("has no path: expected ipc://PATH".into()),
        "ipc" => Ok(()),
        t if OTHER_TRANSPORTS.contains(&t) => Ok(()),
        t => Err(format!(
            "has an unknown transport '{t}': expected tcp://HOST:PORT (or ipc://PATH)"
        )),
    }
}

fn check_tcp(rest: &str) -> Result<(), String> {
    // ZeroMQ's "tcp://source;destination": the destination is what counts.
    let dest = rest.rsplit(';').next().unwrap_or(rest);
    let Some((host, port)) = split_host_port(dest) else {
        return Err(format!(
            "has no port: expected tcp://HOST:PORT, e.g. tcp://{}:2012",
            if dest.is_empty() { "127.0.0.1" } else { dest }
        ));
    };
    if host.is_empty() {
        return Err("has no host: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:2012".into());
    }
    if host == "*" {
        return Err(
            "has the host '*', which is for listening: pycomctl connects to a host, e.g. tcp://127.0.0.1:2012"
                .into(),
        );
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!(
            "has the port '{port}': expected a number from 1 to 65535"
        )),
    }
}

/// `host:port`, `[v6]:port`; `None` without a port.
fn split_host_port(dest: &str) -> Option<(&str, &str)> {
    if let Some(bracketed) = dest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        return Some((host, after.strip_prefix(':')?));
    }
    let (host, port) = dest.rsplit_once(':')?;
    // A bare IPv6 address without brackets has colons but no port.
    if host.contains(':') {
        return None;
    }
    Some((host, port))
}

/// What a plain connect to an endpoint found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Something accepted the connection (not necessarily pycomd), or the
    /// endpoint cannot be tried this way.
    Open,
    /// Nothing can answer there; says why.
    Dead(String),
}

/// Try every endpoint at once, each within `timeout`.
pub fn probe_all(endpoints: &[String], timeout: Duration) -> Vec<Probe> {
    std::thread::scope(|s| {
        let handles: Vec<_> = endpoints
            .iter()
            .map(|e| s.spawn(move || probe(e, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Probe::Open))
            .collect()
    })
}

fn probe(endpoint: &str, timeout: Duration) -> Probe {
    let timeout = timeout.max(Duration::from_millis(1));
    match endpoint.split_once("://") {
        Some(("tcp", rest)) => probe_tcp(rest.rsplit(';').next().unwrap_or(rest), timeout),
        Some(("ipc", path)) if !path.starts_with('@') => probe_ipc(path),
        _ => Probe::Open,
    }
}

fn probe_tcp(dest: &str, timeout: Duration) -> Probe {
    let Some((host, port)) = split_host_port(dest) else {
        return Probe::Open;
    };
    let Ok(port) = port.parse::<u16>() else {
        return Probe::Open;
    };
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Probe::Dead(format!("cannot resolve '{host}': {e}")),
    };
    let mut why = format!("'{host}' resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Probe::Open,
            Err(e) => why = describe(&e, timeout),
        }
    }
    Probe::Dead(why)
}

fn probe_ipc(path: &str) -> Probe {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Probe::Open,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Probe::Dead(format!("no socket at {path}")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Probe::Dead("connection refused".into())
        }
        Err(_) => Probe::Open,
    }
}

fn describe(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            format!("no connection within {} ms", timeout.as_millis())
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_and_bad_endpoints() {
        for good in [
            "tcp://127.0.0.1:2012",
            "tcp://localhost:1",
            "tcp://[::1]:2012",
            "tcp://10.0.0.1:5;10.0.0.2:2012",
            "ipc:///run/pycomd.sock",
            "tcp://a:1, tcp://b:2",
        ] {
            assert!(parse_list(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("localhost:2012", "did you mean tcp://localhost:2012?"),
            ("nohost", "did you mean tcp://nohost:2012?"),
            ("tcp://nohost", "no port"),
            ("tcp://::1", "no port"),
            ("tcp://:2012", "no host"),
            ("tcp://h:0", "from 1 to 65535"),
            ("tcp://h:*", "'*'"),
            ("tcp://*:2012", "for listening"),
            ("ipc://", "no path"),
            ("http://h:1", "unknown transport 'http'"),
            (" , ", "is empty"),
            ("tcp://a:1,b:2", "'b:2'"),
        ] {
            let err = parse_list(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_port_nobody_listens_on_is_dead_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = format!("tcp://{}", listener.local_addr().unwrap());
        let probes = probe_all(&[format!("tcp://127.0.0.1:{port}"), open], Duration::from_secs(5));
        assert_eq!(probes[0], Probe::Dead("connection refused".into()));
        assert_eq!(probes[1], Probe::Open);
    }
}
