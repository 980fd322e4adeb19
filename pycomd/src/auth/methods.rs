//! `org.pycom.authenticator` on pycomd's request endpoint: `authenticate`,
//! `validate`, `logout` (PyCOM 0.6's names and shapes), `check`, and
//! `introspect` (declared once, in `pycom_client::auth::api`). A handler answers at once, or asks for a password check
//! off the server thread, or writes a command (login, logout) through the
//! log.

use super::{Caller, Policy};
use crate::registry::{Command, State};
use pycom_client::auth::{check_len, MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES, MAX_USER_BYTES};
use pycom_client::proto::{self, type_name, Code, Fault};
use pycom_client::service::introspection_of;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::time::Instant;

/// Refusals and logins, by kind, for `stat`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AuthStats {
    pub logins: u64,
    pub login_failures: u64,
    /// Logins answered "retry in N s" without a password check.
    pub logins_throttled: u64,
    /// Requests with a token that is unknown, expired or malformed.
    pub bad_tokens: u64,
    pub denied_reads: u64,
    pub denied_writes: u64,
    pub denied_admin: u64,
}

/// The server's part of access control (present only when it is on).
pub struct Auth {
    pub policy: Policy,
    /// The policy and logins as the pub-sub forwarder sees them.
    pub view: std::sync::Arc<super::view::View>,
    pub hasher: super::hasher::Hasher,
    pub throttle: super::throttle::Shared,
    /// Principals of tokens seen lately (emptied when logins or the policy change).
    pub principals: super::Principals,
    pub stats: AuthStats,
}

/// What a method wants done.
pub enum Step {
    Reply(Result<Vec<u8>, Fault>),
    /// Check this password off the server thread, then log in.
    Verify {
        user: String,
        password: String,
    },
    /// Write this (a logout) and answer once applied.
    Write(Command),
}

fn reply<T: Serialize>(value: &T) -> Step {
    Step::Reply(Ok(proto::encode_response(Ok(value), None)))
}

/// Run `method`. `auth` is `None` when access control is off; `token` is
/// the caller's own, from its request's extensions.
#[allow(clippy::too_many_arguments)]
pub fn dispatch(
    auth: Option<&mut Auth>,
    state: &State,
    caller: &Caller,
    token: Option<&str>,
    method: &str,
    args: Option<&RawValue>,
    now: Instant,
) -> Step {
    if method == "introspect" {
        use pycom_client::auth::api;
        return reply(&introspection_of(api::NAME, api::DOC, api::METHODS));
    }
    let Some(auth) = auth else {
        return Step::Reply(Err(Fault::not_found(
            "org.pycom.authenticator: access control is off in this pycomd ([auth] enabled = false): there is nothing to log in to",
        )));
    };
    let args = match parse(method, args) {
        Ok(args) => args,
        Err(fault) => return Step::Reply(Err(fault)),
    };
    let field = |name: &str, max: usize| string(method, &args, name, max);
    let result = match method {
        "authenticate" => (|| {
            let user = field("user", MAX_USER_BYTES)?.unwrap_or_default();
            let password = field("credentials", MAX_PASSWORD_BYTES)?.unwrap_or_default();
            if let Some(wait) = auth.throttle.held(&user, now) {
                auth.stats.logins_throttled += 1;
                return Err(super::throttle::held_fault(wait));
            }
            if state.tokens().len() >= auth.policy.max_tokens {
                tracing::warn!(
                    max_tokens = auth.policy.max_tokens,
                    "a login was refused: auth.max_tokens reached"
                );
                return Err(Fault::unavailable(format!(
                    "authenticate: pycomd holds {} tokens, the limit auth.max_tokens: retry once some expire or log out",
                    state.tokens().len()
                )));
            }
            Ok(Step::Verify { user, password })
        })(),
        "validate" => (|| {
            let token = field("token", MAX_TOKEN_BYTES)?
                .ok_or_else(|| Fault::bad_request("validate: field 'token' is required"))?;
            let principal = super::principal(&auth.policy, state, &token, super::unix_ms())?;
            let mut answer = serde_json::json!({"name": principal.name, "roles": principal.roles});
            if let Some(interface) = field("interface", pycom_client::pubsub::wire::MAX_TOPIC_BYTES)? {
                let who = Caller::User(std::sync::Arc::new(principal));
                answer["allowed"] = Value::Bool(auth.policy.may_call(&who, &interface));
            }
            Ok(reply(&answer))
        })(),
        "logout" => (|| {
            let token =
                match field("token", MAX_TOKEN_BYTES)?.or(token.map(str::to_string)) {
                    Some(token) => token,
                    None => return Err(Fault::bad_request(
                        "logout: give the token ('token'), or call with it in extensions[\"org.pycom.auth\"]",
                    )),
                };
            super::principal(&auth.policy, state, &token, super::unix_ms())?;
            Ok(Step::Write(Command::Logout {
                token_sha256: super::hex(&super::digest(&token)),
            }))
        })(),
        "check" => (|| {
            let user = field("user", MAX_USER_BYTES)?;
            let allowed = match (caller, &user) {
                (Caller::User(p), _) if p.is_admin() => true,
                (Caller::User(p), Some(user)) => p.name == *user,
                (Caller::User(_), None) => true,
                _ => false,
            };
            if !allowed {
                auth.stats.denied_admin += 1;
                return Err(Fault::denied(format!(
                    "{} may not check the access policy{}: only an admin, or a user about itself",
                    caller.name(),
                    user.as_deref().map_or(String::new(), |u| format!(" of {u}"))
                )));
            }
            let user = user.or_else(|| caller.owner().map(str::to_string));
            Ok(reply(&auth.policy.summary(user.as_deref())))
        })(),
        other => Err(Fault::new(
            Code::MethodNotFound,
            format!("interface org.pycom.authenticator has no method '{other}'"),
        )),
    };
    result.unwrap_or_else(|fault| Step::Reply(Err(fault)))
}

/// `args` as an object (absent or null: no fields).
fn parse(method: &str, args: Option<&RawValue>) -> Result<Map<String, Value>, Fault> {
    match args.map(|raw| serde_json::from_str::<Value>(raw.get())) {
        None => Ok(Map::new()),
        Some(Ok(Value::Object(map))) => Ok(map),
        Some(Ok(Value::Null)) => Ok(Map::new()),
        Some(Ok(other)) => Err(Fault::bad_request(format!(
            "{method}: args must be an object, not {}",
            type_name(&other)
        ))),
        Some(Err(e)) => Err(Fault::bad_request(format!(
            "{method}: args are not valid JSON: {e}"
        ))),
    }
}

/// A string field, bounded before anything uses it (a 1 MB password is
/// code 4 at once, not a hash of a megabyte).
fn string(method: &str, args: &Map<String, Value>, name: &str, max: usize) -> Result<Option<String>, Fault> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            check_len(&format!("{method}: field '{name}'"), s, max).map_err(Fault::bad_request)?;
            Ok(Some(s.clone()))
        }
        Some(other) => Err(Fault::bad_request(format!(
            "{method}: field '{name}' must be a string, not {}",
            type_name(other)
        ))),
    }
}
