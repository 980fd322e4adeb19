//! A remote interface to call: `invoke` with timeouts, retries and
//! re-location when its service restarts or moves.

use crate::auth::{self, Login, TokenSlot};
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
///
/// Its calls carry the token of the context it was made from (as that
/// token is at each call), until it gets one of its own: from
/// [`login`](Component::login) at a service that checks a password file
/// of its own, or [`set_token`](Component::set_token).
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
    /// The token calls carry now: the context's, or the component's own.
    token: TokenSlot,
    /// The context's token, to go back to after a logout.
    context_token: TokenSlot,
}

impl Component {
    /// A component calling `interface` at `address`, re-located through
    /// `locator` (if any) when a call fails in transport.
    pub(crate) fn new(
        zmq: &zmq::Context,
        timeout: Duration,
        locator: Option<Arc<dyn Locator>>,
        token: TokenSlot,
        interface: &str,
        service: Option<&str>,
        address: &str,
    ) -> Result<Component> {
        let mut conn = Connection::open(zmq, address)?;
        conn.set_timeout(timeout);
        conn.share_token(token.clone());
        Ok(Component {
            zmq: zmq.clone(),
            locator,
            interface: interface.to_string(),
            service: service.map(str::to_string),
            conn,
            session_id: None,
            retry: RetryPolicy::default(),
            limits: Limits::default(),
            token: token.clone(),
            context_token: token,
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

    /// The token this component's calls carry now, if any.
    pub fn token(&self) -> Option<String> {
        self.token.get().map(|t| t.to_string())
    }

    /// Carry `token` (`None`: no token) from now on instead of the
    /// context's; only this component.
    pub fn set_token(&mut self, token: Option<&str>) {
        self.carry(TokenSlot::with(token));
    }

    /// Log in at this component's service, for a service that checks a
    /// password file of its own
    /// ([`Auth::password_file`](crate::service::Auth::password_file)): call
    /// `authenticate` and then `validate` of `org.pycom.authenticator` at
    /// the component's address, and carry the token it gives, on this
    /// component only, from then on (the context and its nameserver calls
    /// keep theirs). The token lives in that service process: after the
    /// service restarts (or the component follows it elsewhere) calls get
    /// code 5 until the component logs in again.
    ///
    /// For services that let pycomd check their callers, log in on the
    /// context instead ([`Context::login`](crate::Context::login)); such a
    /// service answers this with [`Error::ServiceNotFound`].
    pub fn login(&mut self, user: &str, password: &str) -> Result<Login> {
        auth::check_len("the user name", user, auth::MAX_USER_BYTES).map_err(Error::Data)?;
        auth::check_len("the password", password, auth::MAX_PASSWORD_BYTES).map_err(Error::Data)?;
        let mut authenticator = auth::api::Client(Direct(self));
        let issued = authenticator.authenticate(user.into(), password.into())?;
        let validation = authenticator.validate(issued.token.clone(), None, None)?;
        self.set_token(Some(&issued.token));
        Ok(Login {
            token: issued.token,
            expires_ms: issued.expires_ms,
            caller: validation.caller,
        })
    }

    /// End the token this component got from [`login`](Component::login)
    /// (or [`set_token`](Component::set_token)) at its service, and carry
    /// the context's token again. Without a token of its own, nothing to
    /// do. The token is dropped here even when the service cannot be told.
    pub fn logout(&mut self) -> Result<()> {
        if self.token.is(&self.context_token) {
            return Ok(());
        }
        let own = self.token.take();
        self.carry(self.context_token.clone());
        if let Some(token) = own {
            auth::api::Client(Direct(self)).logout(token.to_string())?;
        }
        Ok(())
    }

    fn carry(&mut self, token: TokenSlot) {
        self.conn.share_token(token.clone());
        self.token = token;
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
        let interface = self.interface.clone();
        self.call_on(&interface, method, args, &frames, attempts)
    }

    /// One call of `interface.method` at this component's address, tried
    /// up to `attempts` times (re-located between tries).
    fn call_on(
        &mut self,
        interface: &str,
        method: &str,
        args: Value,
        frames: &[&[u8]],
        attempts: u32,
    ) -> Result<Output> {
        let mut attempt = 1;
        loop {
            let mut request = Request::new(interface, method, args.clone());
            request.session_id = self.session_id.clone();
            match self.conn.call(&request, frames) {
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
                    tracing::debug!(interface, method, attempt, "retrying after: {e}");
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
                        conn.share_token(self.token.clone());
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

/// Calls to another interface at a component's address, once each (no
/// retries: a password is not sent twice on a timeout).
struct Direct<'a>(&'a mut Component);

impl Invoker for Direct<'_> {
    fn invoke_value(&mut self, interface: &str, method: &str, args: Value) -> Result<Value> {
        Ok(self.0.call_on(interface, method, args, &[], 1)?.result)
    }
}
