//! Access control (PROTOCOL.md section 7): who a caller is, what it may do,
//! and pycomd's authenticator.
//!
//! Off by default (`[auth] enabled = false`): every caller is
//! [`Caller::Open`] and owners are addresses, as before. On: a request's
//! token (`extensions["org.pycom.auth"]`) is looked up by its SHA-256 in
//! the durable state ([`crate::registry::tokens`]) and becomes a
//! [`Caller::User`] with the roles the configuration gives that user now;
//! no token is [`Caller::Anonymous`]. The [`policy`] decides. Logins are
//! checked off the server thread ([`hasher`]), slowed after failures
//! ([`throttle`]), and written as `Login` commands: tokens survive
//! restarts and leader changes, and only their hashes are ever stored.

pub mod hasher;
pub mod methods;
pub mod policy;
pub mod view;

/// The login throttle, shared with a service's own authenticator.
pub use pycom_client::auth::throttle;

use crate::registry::tokens::Digest;
use crate::registry::State;
use pycom_client::proto::Fault;
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};
use std::sync::Arc;

pub use policy::Policy;

/// User names whose failed logins are remembered at once.
pub const THROTTLED_NAMES: usize = 100_000;

/// A logged-in caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: Vec<String>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == policy::ADMIN)
    }
}

/// Who is calling, as handlers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Access control is off: anyone may do anything; addresses own names.
    Open,
    /// No token: the `anonymous` setting and role apply.
    Anonymous,
    User(Arc<Principal>),
}

impl Caller {
    /// The owner its records get: a principal's name, else none (the
    /// address owns them).
    pub fn owner(&self) -> Option<&str> {
        match self {
            Caller::User(p) => Some(&p.name),
            _ => None,
        }
    }

    /// The name refusals use.
    pub fn name(&self) -> &str {
        match self {
            Caller::User(p) => &p.name,
            Caller::Anonymous => "an anonymous caller",
            Caller::Open => "a caller",
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::User(p) if p.is_admin())
    }
}

/// The token's SHA-256: what the state keys logins by.
pub fn digest(token: &str) -> Digest {
    Sha256::digest(token.as_bytes()).into()
}

/// Hex, as commands carry digests.
pub fn hex(digest: &Digest) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A short fingerprint for logs: enough to tell tokens apart, never
/// enough to use one.
pub fn fingerprint(digest: &Digest) -> String {
    hex(digest)[..8].to_string()
}

/// The wall clock in unix ms: token expiry is wall-clock time (it must mean
/// the same after a restart and on every node).
pub fn unix_ms() -> u64 {
    pycom_client::pubsub::wire::now_ms()
}

/// A valid token's principal, with the roles configured now, and when
/// the token expires. Errors are code 5 and say why (unknown, expired,
/// user gone).
pub fn principal(policy: &Policy, state: &State, token: &str, now_ms: u64) -> Result<Principal, Fault> {
    resolve(policy, state, &digest(token), now_ms).map(|(p, _)| p)
}

fn resolve(policy: &Policy, state: &State, digest: &Digest, now_ms: u64) -> Result<(Principal, u64), Fault> {
    let Some(held) = state.tokens().get(digest) else {
        return Err(Fault::denied(format!(
            "token {} is not valid (unknown, or logged out): log in again",
            fingerprint(digest)
        )));
    };
    if held.expires_ms <= now_ms {
        return Err(Fault::denied(format!(
            "token {} expired: log in again",
            fingerprint(digest)
        )));
    }
    let Some(roles) = policy.roles_of(&held.name) else {
        return Err(Fault::denied(format!(
            "token {}: user {} is no longer in the users file",
            fingerprint(digest),
            held.name
        )));
    };
    let principal = Principal {
        name: held.name.to_string(),
        roles,
    };
    Ok((principal, held.expires_ms))
}

/// Principals of the tokens seen lately, so that a request with a token
/// costs one hash and one look-up, not a principal built anew. Emptied
/// whenever logins or the policy change (rare), bounded in entries.
#[derive(Debug, Default)]
pub struct Principals {
    by_digest: crate::registry::Map<Digest, (Arc<Principal>, u64)>,
}

/// Tokens whose principals are kept, at most (then all are forgotten).
const MAX_PRINCIPALS: usize = 65_536;

impl Principals {
    pub fn clear(&mut self) {
        self.by_digest.clear();
    }

    fn get(
        &mut self,
        policy: &Policy,
        state: &State,
        token: &str,
        now_ms: u64,
    ) -> Result<Arc<Principal>, Fault> {
        let digest = digest(token);
        if let Some((principal, expires_ms)) = self.by_digest.get(&digest) {
            if *expires_ms > now_ms {
                return Ok(principal.clone());
            }
        }
        let (principal, expires_ms) = resolve(policy, state, &digest, now_ms)?;
        let principal = Arc::new(principal);
        if self.by_digest.len() >= MAX_PRINCIPALS {
            self.by_digest.clear();
        }
        self.by_digest.insert(digest, (principal.clone(), expires_ms));
        Ok(principal)
    }
}

/// Who is calling: `Open` with access control off; else the token's
/// principal (a bad token is refused, not taken as anonymous, so that a
/// client learns its login ran out), or `Anonymous` without one.
pub fn caller(
    auth: Option<&mut methods::Auth>,
    state: &State,
    extensions: Option<&RawValue>,
) -> Result<Caller, Fault> {
    let Some(auth) = auth else {
        return Ok(Caller::Open);
    };
    let token = pycom_client::auth::token_ref(extensions).map_err(Fault::bad_request)?;
    caller_with(Some(auth), state, token.as_deref())
}

/// [`caller`] for a token already taken out of the extensions.
pub fn caller_with(
    auth: Option<&mut methods::Auth>,
    state: &State,
    token: Option<&str>,
) -> Result<Caller, Fault> {
    let Some(auth) = auth else {
        return Ok(Caller::Open);
    };
    match token {
        None => Ok(Caller::Anonymous),
        Some(token) => auth
            .principals
            .get(&auth.policy, state, token, unix_ms())
            .map(Caller::User),
    }
}
