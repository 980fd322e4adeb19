//! Pub-sub through pycomd's forwarder (PROTOCOL.md 5).
//!
//! - [`Publisher`]: publishes on a topic (`demo.interface.name`); made with
//!   [`Context::publisher`] or [`Publisher::builder`]. Once made, what it
//!   publishes reaches every subscriber that is ready.
//! - [`Subscriber`]: receives what matches NATS-style patterns (`a.b.c`,
//!   `a.*.c`, `a.>`), in order, without duplicates, with gaps counted and
//!   reported as a [`GapPolicy`] says; optionally starting with each topic's
//!   last value ([`Start::Last`]). Made with [`Context::subscribe`] or
//!   [`Context::subscriber`].
//! - [`Watcher`]: an always-correct copy of the registry (or of the part
//!   an application cares about), kept from pycomd's registry events.
//!
//! [`wire`] is the format of publications, shared with pycomd.
//!
//! ```no_run
//! // no_run: needs a pycomd with its forwarder.
//! use pycom_client::Context;
//! let ctx = Context::from_env()?;
//! let mut numbers = ctx.publisher("demo.interface.name")?;
//! numbers.publish(&1.5)?;
//! let numbers: Vec<f64> = ctx.subscribe("demo.interface.name")?.values().take(10).collect::<Result<_, _>>()?;
//! # Ok::<(), pycom_client::Error>(())
//! ```

mod publisher;
mod subscriber;
mod watcher;
pub mod wire;

pub use publisher::{Publisher, PublisherBuilder};
pub use subscriber::{
    GapPolicy, Message, Messages, Start, Stats, Subscriber, SubscriberBuilder, TopicStats, Values,
};
pub use watcher::{Change, ChangeKind, EventKind, RegistryEvent, Watcher};

use crate::context::Context;
use crate::error::{Error, Result};

/// Where pycomd's forwarder takes publishers and subscribers, as its
/// registry record (`/org/pycom/pubsub`) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarder {
    /// Publishers connect here.
    pub xsub: String,
    /// Subscribers connect here.
    pub xpub: String,
    /// pycomd's request endpoint, which answers `org.pycom.pubsub` calls.
    pub address: String,
    /// Peers must authenticate (pycomd's access control is on; metadata
    /// `"auth": "plain"`): ZeroMQ PLAIN, user name `token` and the
    /// context's token as password, or user name `anonymous`.
    pub plain: bool,
}

/// The PLAIN user name that says "the password is a token".
pub const PLAIN_TOKEN_USER: &str = "token";
/// The PLAIN user name of a peer without a token.
pub const PLAIN_ANONYMOUS_USER: &str = "anonymous";
/// The forwarder record's metadata value under `auth` when peers must
/// authenticate with PLAIN.
pub const AUTH_PLAIN: &str = "plain";

/// Where to connect and whether to authenticate: the forwarder's record
/// says (`locate`), or, for an endpoint given by the caller, whether the
/// context carries a token.
fn forwarder_endpoint(
    ctx: &Context,
    given: Option<String>,
    which: impl Fn(Forwarder) -> String,
) -> Result<(String, bool)> {
    match given {
        Some(endpoint) => Ok((endpoint, ctx.token().is_some())),
        None => {
            let forwarder = locate_forwarder(ctx)?;
            let plain = forwarder.plain;
            Ok((which(forwarder), plain))
        }
    }
}

/// Make `socket` a PLAIN client (before it connects) when `plain`: with
/// the context's token, or as `anonymous`.
fn authenticate(socket: &zmq::Socket, ctx: &Context, plain: bool) -> zmq::Result<()> {
    if !plain {
        return Ok(());
    }
    match ctx.token().filter(|t| !t.is_empty()) {
        Some(token) => {
            socket.set_plain_username(Some(PLAIN_TOKEN_USER))?;
            socket.set_plain_password(Some(&token))
        }
        None => {
            // libzmq takes no empty password; pycomd ignores this one.
            socket.set_plain_username(Some(PLAIN_ANONYMOUS_USER))?;
            socket.set_plain_password(Some(PLAIN_ANONYMOUS_USER))
        }
    }
}

/// Ask the nameserver where the forwarder is.
pub fn locate_forwarder(ctx: &Context) -> Result<Forwarder> {
    let info = ctx
        .nameserver()
        .locate(wire::INTERFACE, Some(wire::SERVICE))
        .map_err(|e| match e {
            Error::ServiceNotFound(_) => Error::ServiceNotFound(format!(
                "no pub-sub forwarder is registered (service {}): pycomd runs without pub-sub \
                 (disabled, or its endpoints taken by another process)",
                wire::SERVICE
            )),
            other => other,
        })?;
    // A forwarder bound to every interface lists `tcp://*:2013` or
    // `tcp://0.0.0.0:2013`, which one cannot connect to from elsewhere:
    // such hosts are replaced by the host pycomd was reached at.
    let fallback: Vec<&str> = std::iter::once(info.address.as_str())
        .chain(ctx.nameservers().iter().map(String::as_str))
        .collect();
    let endpoint = |key: &str| -> Result<String> {
        match info.metadata.get(key) {
            Some(endpoint) if endpoint.contains("://") => Ok(connectable(endpoint, &fallback)),
            Some(endpoint) => Err(Error::Data(format!(
                "the pub-sub forwarder's record has a malformed '{key}' endpoint '{endpoint}'"
            ))),
            None => Err(Error::Data(format!(
                "the pub-sub forwarder's record ({}) has no '{key}' endpoint in its metadata",
                wire::SERVICE
            ))),
        }
    };
    Ok(Forwarder {
        xsub: endpoint("xsub")?,
        xpub: endpoint("xpub")?,
        address: info.address.clone(),
        plain: info.metadata.get("auth").is_some_and(|a| a == AUTH_PLAIN),
    })
}

/// `endpoint`, with a wildcard TCP host (`*`, `0.0.0.0`, `[::]`) replaced
/// by the first concrete host among `fallback` endpoints.
fn connectable(endpoint: &str, fallback: &[&str]) -> String {
    let Some((host, port)) = tcp_host_port(endpoint) else {
        return endpoint.to_string();
    };
    if !is_wildcard(host) {
        return endpoint.to_string();
    }
    match fallback
        .iter()
        .filter_map(|e| tcp_host_port(e))
        .map(|(host, _)| host)
        .find(|host| !is_wildcard(host))
    {
        Some(host) => format!("tcp://{host}:{port}"),
        None => format!("tcp://127.0.0.1:{port}"),
    }
}

fn tcp_host_port(endpoint: &str) -> Option<(&str, &str)> {
    let rest = endpoint.strip_prefix("tcp://")?;
    // "tcp://source;destination": the destination is where to connect.
    let dest = rest.rsplit(';').next().unwrap_or(rest);
    dest.rsplit_once(':')
}

fn is_wildcard(host: &str) -> bool {
    matches!(host, "*" | "0.0.0.0" | "[::]" | "::" | "[*]")
}

/// A wait for the forwarder that ran out, when the forwarder
/// authenticates: say that a refused handshake looks the same.
fn hint_refused(e: Error, plain: bool) -> Error {
    match e {
        Error::NotReady {
            endpoint,
            timeout_ms,
            what,
        } if plain => Error::NotReady {
            endpoint,
            timeout_ms,
            what: format!(
                "{what} (the forwarder authenticates its peers: a bad, expired or logged-out token is refused at the handshake)"
            ),
        },
        other => other,
    }
}

/// Milliseconds of a timeout, for error messages.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What ZeroMQ's `poll` takes for "wait this long": whole milliseconds,
/// rounded up so that a wait never ends just before its deadline.
fn poll_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i64::MAX)
}

fn transport(endpoint: &str) -> impl Fn(zmq::Error) -> Error + '_ {
    move |source| Error::Transport {
        endpoint: endpoint.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_become_the_host_pycomd_was_reached_at() {
        let fb = ["tcp://*:2012", "tcp://10.0.0.5:2012"];
        assert_eq!(connectable("tcp://*:2013", &fb), "tcp://10.0.0.5:2013");
        assert_eq!(connectable("tcp://0.0.0.0:2014", &fb), "tcp://10.0.0.5:2014");
        assert_eq!(connectable("tcp://127.0.0.1:2014", &fb), "tcp://127.0.0.1:2014");
        assert_eq!(connectable("ipc:///tmp/x", &fb), "ipc:///tmp/x");
        assert_eq!(
            connectable("tcp://*:2013", &["tcp://*:1"]),
            "tcp://127.0.0.1:2013"
        );
    }

    #[test]
    fn poll_waits_round_up() {
        use std::time::Duration;
        assert_eq!(poll_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_ms(Duration::ZERO), 0);
        assert_eq!(poll_ms(Duration::from_millis(5)), 5);
    }
}
