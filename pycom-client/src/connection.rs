//! A blocking request/reply connection to one endpoint.
//!
//! It uses a DEALER socket with the empty delimiter frame, so it talks to
//! any ROUTER or REP server. Unlike PyCOM's REQ socket it never wedges: after
//! a timeout the socket is thrown away and a fresh one is connected, so a
//! late reply to an abandoned call can never be taken for the next call's.

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
}

impl Connection {
    /// Connect to `endpoint` (ZeroMQ connects lazily: this fails only on a
    /// malformed endpoint, never because the peer is down).
    pub fn open(ctx: &zmq::Context, endpoint: &str) -> Result<Connection> {
        let socket = connect(ctx, endpoint)?;
        Ok(Connection {
            ctx: ctx.clone(),
            endpoint: endpoint.to_string(),
            socket,
            timeout: DEFAULT_TIMEOUT,
            token: None,
        })
    }

    /// The endpoint this connection calls.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
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
        self.socket = connect(&self.ctx, &self.endpoint)?;
        Ok(())
    }
}

fn connect(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket> {
    let transport = |source| Error::Transport {
        endpoint: endpoint.to_string(),
        source,
    };
    let socket = ctx.socket(zmq::DEALER).map_err(transport)?;
    // Never keep a process alive (or a socket's memory) for unsent requests.
    socket.set_linger(0).map_err(transport)?;
    // Queue nothing for a peer that is not connected (see call_frames).
    socket.set_immediate(true).map_err(transport)?;
    socket.connect(endpoint).map_err(|source| Error::Endpoint {
        endpoint: endpoint.to_string(),
        source,
    })?;
    Ok(socket)
}
