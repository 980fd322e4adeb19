//! A blocking request/reply connection to one endpoint.
//!
//! It uses a DEALER socket with the empty delimiter frame, so it talks to
//! any ROUTER or REP server. Unlike PyCOM's REQ socket it never wedges: after
//! a timeout the socket is thrown away and a fresh one is connected, so a
//! late reply to an abandoned call can never be taken for the next call's.
//!
//! To a server with CURVE on (pycomd with `[security] curve = true`), a
//! connection opened with the server's public key
//! ([`Connection::open_encrypted`]) is encrypted, each socket with a client
//! key pair of its own.

use crate::auth::TokenSlot;
use crate::error::{Error, Result};
use crate::proto::{self, Request, Response};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Default time a call waits for its reply, as in PyCOM.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(5000);

/// A reply: the decoded body and any attachment frames after it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The decoded reply body.
    pub response: Response,
    /// Frames after the body.
    pub attachments: Vec<Vec<u8>>,
}

/// One endpoint, one socket, one call at a time.
pub struct Connection {
    ctx: zmq::Context,
    endpoint: String,
    socket: zmq::Socket,
    timeout: Duration,
    /// The caller's token, sent with every request (see [`Connection::set_token`]).
    token: Option<TokenSlot>,
    /// The server's CURVE public key (Z85), when the connection is encrypted.
    server_key: Option<String>,
}

impl Connection {
    /// Connect to `endpoint` (ZeroMQ connects lazily: this fails only on a
    /// malformed endpoint, never because the peer is down).
    pub fn open(ctx: &zmq::Context, endpoint: &str) -> Result<Connection> {
        Connection::open_with(ctx, endpoint, None)
    }

    /// Connect to `endpoint`, a CURVE server whose public key is
    /// `server_key` (40 Z85 characters, pycomd's `curve/server.public`).
    /// [`Error::Data`] when the key is malformed or this build of libzmq
    /// has no CURVE. A wrong key is no error: calls time out.
    pub fn open_encrypted(ctx: &zmq::Context, endpoint: &str, server_key: &str) -> Result<Connection> {
        let key = check_server_key(server_key)?;
        Connection::open_with(ctx, endpoint, Some(key))
    }

    /// `server_key`: checked already ([`check_server_key`]).
    pub(crate) fn open_with(
        ctx: &zmq::Context,
        endpoint: &str,
        server_key: Option<String>,
    ) -> Result<Connection> {
        let socket = connect(ctx, endpoint, server_key.as_deref())?;
        Ok(Connection {
            ctx: ctx.clone(),
            endpoint: endpoint.to_string(),
            socket,
            timeout: DEFAULT_TIMEOUT,
            token: None,
            server_key,
        })
    }

    /// The endpoint this connection calls.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The server's CURVE public key, when this connection is encrypted.
    pub fn server_key(&self) -> Option<&str> {
        self.server_key.as_deref()
    }

    /// How long a call waits for its reply.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The timeout used by [`Connection::call`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Send `token` with every request from now on, as the caller's
    /// credentials (`extensions["org.pycom.auth"]`); `None`: send none.
    /// A request whose extensions already hold one keeps its own.
    pub fn set_token(&mut self, token: Option<&str>) {
        self.token = token.map(|t| TokenSlot::with(Some(t)));
    }

    /// The token this connection sends, if any.
    pub fn token(&self) -> Option<String> {
        self.token.as_ref()?.get().map(|t| t.to_string())
    }

    /// Send whatever `slot` holds at the time of each call (a context's
    /// token, which a login changes).
    pub(crate) fn share_token(&mut self, slot: TokenSlot) {
        self.token = Some(slot);
    }

    /// Call `interface.method(args)` and return its result, or the remote
    /// error as the [`Error`] variant of its code.
    pub fn invoke(&mut self, interface: &str, method: &str, args: Value) -> Result<Value> {
        let reply = self.call(&Request::new(interface, method, args), &[])?;
        reply.response.result.map_err(Error::from)
    }

    /// Send a request with attachments and wait for the whole reply.
    pub fn call(&mut self, request: &Request, attachments: &[&[u8]]) -> Result<Reply> {
        // The one place a request's body is made: every call carries the token.
        let token = self.token.as_ref().and_then(TokenSlot::get);
        let body = proto::encode_request_body_with_token(request, token.as_deref());
        let mut frames: Vec<&[u8]> = Vec::with_capacity(3 + attachments.len());
        frames.push(b"");
        frames.push(proto::CMD_CALL);
        frames.push(&body);
        frames.extend_from_slice(attachments);
        self.call_frames(&frames)
    }

    /// Send raw frames (delimiter included) and wait for a reply. Tests use
    /// it to send what a well-behaved client never would.
    pub fn call_frames(&mut self, frames: &[&[u8]]) -> Result<Reply> {
        let deadline = Instant::now() + self.timeout;
        // With ZMQ_IMMEDIATE the socket is writable only once connected: a
        // dead peer shows up here as a timeout instead of a request queued
        // for ever.
        let ms = i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX);
        let writable = self
            .socket
            .poll(zmq::POLLOUT, ms)
            .map_err(|source| self.transport(source))?;
        if writable == 0 {
            self.reset()?;
            return Err(self.timeout_error());
        }
        let sent = self.socket.send_multipart(frames.iter().copied(), zmq::DONTWAIT);
        if let Err(source) = sent {
            self.reset()?;
            return Err(match source {
                zmq::Error::EAGAIN => self.timeout_error(),
                source => self.transport(source),
            });
        }
        let parts = match self.recv_until(deadline) {
            Ok(parts) => parts,
            Err(e) => {
                self.reset()?;
                return Err(e);
            }
        };
        self.decode(parts)
    }

    fn recv_until(&mut self, deadline: Instant) -> Result<Vec<Vec<u8>>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX);
            let ready = self
                .socket
                .poll(zmq::POLLIN, ms)
                .map_err(|source| self.transport(source))?;
            if ready > 0 {
                return self
                    .socket
                    .recv_multipart(0)
                    .map_err(|source| self.transport(source));
            }
            if Instant::now() >= deadline {
                return Err(self.timeout_error());
            }
        }
    }

    fn decode(&self, mut parts: Vec<Vec<u8>>) -> Result<Reply> {
        // DEALER keeps the empty delimiter the server echoed back.
        if parts.first().is_some_and(|p| p.is_empty()) {
            parts.remove(0);
        }
        let malformed = |message: &str| Error::Malformed {
            endpoint: self.endpoint.clone(),
            message: message.to_string(),
        };
        if parts.is_empty() {
            return Err(malformed("empty reply"));
        }
        let status = parts.remove(0);
        let body = if parts.is_empty() {
            Vec::new()
        } else {
            parts.remove(0)
        };
        let response =
            proto::decode_response(&status, &body).map_err(|e| Error::from_response(&self.endpoint, e))?;
        Ok(Reply {
            response,
            attachments: parts,
        })
    }

    fn transport(&self, source: zmq::Error) -> Error {
        Error::Transport {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            endpoint: self.endpoint.clone(),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Replace the socket, dropping whatever the old one had queued.
    fn reset(&mut self) -> Result<()> {
        self.socket = connect(&self.ctx, &self.endpoint, self.server_key.as_deref())?;
        Ok(())
    }
}

/// The environment variable with the nameserver's CURVE public key
/// ([`Context::from_env`](crate::Context::from_env), pycomctl).
pub const SERVER_KEY_ENV: &str = "PYCOM_SERVER_KEY";

/// The Z85 alphabet (ZeroMQ RFC 32).
const Z85: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// `key` (surrounding blanks aside) if it is a CURVE public key in Z85 and
/// this build of libzmq can use it; else [`Error::Data`] saying why.
pub fn check_server_key(key: &str) -> Result<String> {
    let key = key.trim();
    if key.len() != 40 || !key.chars().all(|c| Z85.contains(c)) {
        return Err(Error::Data(format!(
            "the server key '{key}' is not a CURVE public key: expected 40 Z85 characters, as in pycomd's curve/server.public"
        )));
    }
    if zmq::has("curve") != Some(true) {
        return Err(Error::Data(format!(
            "{SERVER_KEY_ENV} is set but this build of libzmq has no CURVE: build with `cargo build --release --config etc/system-libzmq.toml` (needs libzmq3-dev), or unset {SERVER_KEY_ENV}"
        )));
    }
    Ok(key.to_string())
}

fn connect(ctx: &zmq::Context, endpoint: &str, server_key: Option<&str>) -> Result<zmq::Socket> {
    let transport = |source| Error::Transport {
        endpoint: endpoint.to_string(),
        source,
    };
    let socket = ctx.socket(zmq::DEALER).map_err(transport)?;
    // Never keep a process alive (or a socket's memory) for unsent requests.
    socket.set_linger(0).map_err(transport)?;
    // Queue nothing for a peer that is not connected (see call_frames).
    socket.set_immediate(true).map_err(transport)?;
    if let Some(server_key) = server_key {
        // A key pair per socket: clients need no identity of their own.
        let curve = |source| {
            Error::Data(format!(
                "cannot set up CURVE for {endpoint}: {source} (does this build of libzmq have CURVE?)"
            ))
        };
        let pair = zmq::CurveKeyPair::new().map_err(curve)?;
        socket.set_curve_serverkey(server_key.as_bytes()).map_err(curve)?;
        socket.set_curve_publickey(&pair.public_key).map_err(curve)?;
        socket.set_curve_secretkey(&pair.secret_key).map_err(curve)?;
    }
    socket.connect(endpoint).map_err(|source| Error::Endpoint {
        endpoint: endpoint.to_string(),
        source,
    })?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

    #[test]
    fn server_keys_are_checked() {
        for bad in [
            "",
            "short",
            &KEY[1..],
            &format!("{}~", &KEY[1..]),
            &format!("{KEY}0"),
        ] {
            let err = check_server_key(bad).unwrap_err().to_string();
            assert!(err.contains("40 Z85 characters"), "{bad}: {err}");
        }
        match zmq::has("curve") {
            Some(true) => assert_eq!(check_server_key(&format!(" {KEY}\n")).unwrap(), KEY),
            _ => {
                let err = check_server_key(KEY).unwrap_err().to_string();
                assert!(err.contains("has no CURVE"), "{err}");
                assert!(err.contains("etc/system-libzmq.toml"), "{err}");
            }
        }
    }

    #[test]
    fn an_encrypted_connection_keeps_its_key_across_resets() {
        if zmq::has("curve") != Some(true) {
            return; // the vendored libzmq: nothing to encrypt with
        }
        let ctx = zmq::Context::new();
        let mut conn = Connection::open_encrypted(&ctx, "tcp://127.0.0.1:1", KEY).unwrap();
        assert_eq!(conn.server_key(), Some(KEY));
        conn.set_timeout(Duration::from_millis(50));
        assert!(conn.invoke("a.b", "c", Value::Null).unwrap_err().is_unreachable());
        assert_eq!(conn.server_key(), Some(KEY));
    }
}
