//! A remote interface to call: `invoke` with timeouts, retries and
//! re-location when its service restarts or moves.

use crate::binary::{Attachment, Binary, Limits};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::locate::Locator;
use crate::proto::{Code, Request};
use crate::proxy::Invoker;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// When a failed call is tried again.
///
/// A call is retried only after a transport failure (timeout, peer gone):
/// the request may or may not have run, so only methods safe to run twice
/// should be retried. By default every method is assumed safe, as PyCOM's
/// methods were mostly look-ups; name the unsafe ones with [`RetryPolicy::except`].
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Pause between tries.
    pub backoff: Duration,
    unsafe_methods: HashSet<String>,
    safe_only: Option<HashSet<String>>,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(50),
            unsafe_methods: HashSet::new(),
            safe_only: None,
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Retry every method except these.
    pub fn except<S: Into<String>>(mut self, methods: impl IntoIterator<Item = S>) -> RetryPolicy {
        self.unsafe_methods.extend(methods.into_iter().map(Into::into));
        self
    }

    /// Retry only these methods.
    pub fn only<S: Into<String>>(mut self, methods: impl IntoIterator<Item = S>) -> RetryPolicy {
        self.safe_only = Some(methods.into_iter().map(Into::into).collect());
        self
    }

    /// Tries in all, at least 1.
    pub fn attempts(mut self, attempts: u32) -> RetryPolicy {
        self.attempts = attempts.max(1);
        self
    }

    fn attempts_for(&self, method: &str) -> u32 {
        let safe = !self.unsafe_methods.contains(method)
            && self.safe_only.as_ref().is_none_or(|only| only.contains(method));
        if safe {
            self.attempts.max(1)
        } else {
            1
        }
    }
}

/// What a call returned: its result and any attachments.
#[derive(Debug)]
pub struct Output {
    /// The method's result.
    pub result: Value,
    /// The reply's attachments.
    pub attachments: Vec<Attachment>,
}

/// A remote interface. Not shared between threads: make one per thread
/// (they are cheap; the [`Context`](crate::Context) is shared).
pub struct Component {
    zmq: zmq::Context,
    /// Where to ask for the service's new address; `None`: never re-located.
    locator: Option<Arc<dyn Locator>>,
    interface: String,
    service: Option<String>,
    conn: Connection,
    session_id: Option<String>,
    retry: RetryPolicy,
    limits: Limits,
}

impl Component {
    /// A component calling `interface` at `address`, re-located through
    /// `locator` (if any) when a call fails in transport.
    pub(crate) fn new(
        zmq: &zmq::Context,
        timeout: Duration,
        locator: Option<Arc<dyn Locator>>,
        interface: &str,
        service: Option<&str>,
        address: &str,
    ) -> Result<Component> {
        let mut conn = Connection::open(zmq, address)?;
        conn.set_timeout(timeout);
        Ok(Component {
            zmq: zmq.clone(),
            locator,
            interface: interface.to_string(),
            service: service.map(str::to_string),
            conn,
            session_id: None,
            retry: RetryPolicy::default(),
            limits: Limits::default(),
        })
    }

    /// The interface this component calls.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The address calls go to now (it changes when the service moves).
    pub fn address(&self) -> &str {
        self.conn.endpoint()
    }

    /// The session the service gave this component, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Timeout of each try of each call.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.conn.set_timeout(timeout);
    }

    /// Which methods are retried, how often.
    pub fn set_retry(&mut self, retry: RetryPolicy) {
        self.retry = retry;
    }

    /// Attachment limits for calls and replies.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Call `method` with `args` (anything serializable) and return the result.
    pub fn invoke(&mut self, method: &str, args: impl Serialize) -> Result<Value> {
        Ok(self.call(method, args, &[])?.result)
    }

    /// Like [`invoke`](Component::invoke), decoding the result into `T`.
    pub fn invoke_as<T: DeserializeOwned>(&mut self, method: &str, args: impl Serialize) -> Result<T> {
        let value = self.invoke(method, args)?;
        crate::proxy::from_value(method, value)
    }

    /// Like [`invoke`](Component::invoke), with this call's own timeout.
    pub fn invoke_timeout(&mut self, method: &str, args: impl Serialize, timeout: Duration) -> Result<Value> {
        let previous = self.conn.timeout();
        self.conn.set_timeout(timeout);
        let result = self.invoke(method, args);
        self.conn.set_timeout(previous);
        result
    }

    /// Call with attachments; returns the result and the reply's attachments.
    pub fn call(&mut self, method: &str, args: impl Serialize, attachments: &[Binary]) -> Result<Output> {
        let args = crate::proxy::to_value("args", &args)?;
        self.limits
            .check_outgoing(attachments)
            .map_err(Error::Attachment)?;
        let frames: Vec<&[u8]> = attachments.iter().map(Binary::as_bytes).collect();
        let attempts = self.retry.attempts_for(method);
        let mut attempt = 1;
        loop {
            let mut request = Request::new(&self.interface, method, args.clone());
            request.session_id = self.session_id.clone();
            match self.conn.call(&request, &frames) {
                Ok(reply) => {
                    let response = reply.response;
                    if let Some(id) = response.session_id {
                        self.session_id = Some(id);
                    }
                    return match response.result {
                        Ok(result) => Ok(Output {
                            result,
                            attachments: self
                                .limits
                                .receive(reply.attachments)
                                .map_err(Error::Attachment)?,
                        }),
                        Err(fault) => {
                            if fault.code == Code::SessionExpired {
                                // The next call starts a new session.
                                self.session_id = None;
                            }
                            Err(Error::from(fault))
                        }
                    };
                }
                Err(e) if e.is_unreachable() && attempt < attempts => {
                    tracing::debug!(interface = %self.interface, method, attempt, "retrying after: {e}");
                    std::thread::sleep(self.retry.backoff);
                    self.relocate();
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Ask the nameserver where the service is now; move there if it moved.
    fn relocate(&mut self) {
        let Some(locator) = &self.locator else {
            return;
        };
        let found = locator.provider(&self.interface, self.service.as_deref());
        match found {
            Ok(info) if info.address != self.conn.endpoint() => {
                match Connection::open(&self.zmq, &info.address) {
                    Ok(mut conn) => {
                        conn.set_timeout(self.conn.timeout());
                        tracing::info!(interface = %self.interface, from = %self.conn.endpoint(), to = %info.address, "service moved");
                        self.conn = conn;
                        // A session lives in one service process.
                        self.session_id = None;
                    }
                    Err(e) => tracing::warn!("cannot connect to the new address {}: {e}", info.address),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(interface = %self.interface, "re-locating failed: {e}"),
        }
    }
}

impl Invoker for Component {
    fn invoke_value(&mut self, interface: &str, method: &str, args: Value) -> Result<Value> {
        if interface != self.interface {
            return Err(Error::Data(format!(
                "this component calls '{}', not '{interface}'",
                self.interface
            )));
        }
        self.invoke(method, args)
    }
}
