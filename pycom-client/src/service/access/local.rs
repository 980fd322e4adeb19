//! A service's own authenticator ([`Auth::password_file`](super::Auth::password_file)):
//! its users file, the tokens it gave (in memory, bounded), and
//! `org.pycom.authenticator` served on the service's endpoint.

use crate::auth::{self, api, throttle, Caller, Issued, PasswordFile, Validation};
use crate::proto::{Code, Fault};
use crate::service::{Interface, Request};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a token lasts.
pub const TOKEN_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most tokens held at once; logins beyond get code 7.
pub const MAX_TOKENS: usize = 10_000;
/// Most tokens one user holds; a login beyond drops that user's oldest.
pub const MAX_TOKENS_PER_USER: usize = 100;
/// User names whose failed logins are remembered at once.
const THROTTLED_NAMES: usize = 10_000;

/// The answer to a wrong user or a wrong password alike.
const WRONG: &str = "authenticate: wrong user name or password";

struct Held {
    name: String,
    expires: Instant,
}

#[derive(Default)]
struct Tokens {
    by_token: HashMap<String, Held>,
    /// Each user's tokens, oldest first.
    by_user: HashMap<String, VecDeque<String>>,
}

impl Tokens {
    fn remove(&mut self, token: &str) -> Option<Held> {
        let held = self.by_token.remove(token)?;
        if let Some(tokens) = self.by_user.get_mut(&held.name) {
            tokens.retain(|t| t != token);
            if tokens.is_empty() {
                self.by_user.remove(&held.name);
            }
        }
        Some(held)
    }

    fn sweep(&mut self, now: Instant) {
        let before = self.by_token.len();
        self.by_token.retain(|_, h| now < h.expires);
        if self.by_token.len() != before {
            let live = &self.by_token;
            self.by_user.retain(|_, tokens| {
                tokens.retain(|t| live.contains_key(t));
                !tokens.is_empty()
            });
        }
    }
}

pub struct Local {
    users: PasswordFile,
    tokens: Mutex<Tokens>,
    /// Shared by the service's workers: a burst of guesses is not all checked.
    throttle: throttle::Shared,
}

impl Local {
    pub fn new(users: PasswordFile) -> Local {
        Local {
            users,
            tokens: Mutex::new(Tokens::default()),
            throttle: throttle::Shared::new(THROTTLED_NAMES),
        }
    }

    fn tokens(&self) -> MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Check `user`'s password (slow on purpose: on a worker thread) and
    /// give a token.
    pub fn authenticate(&self, user: &str, password: &str, now: Instant) -> Result<Issued, Fault> {
        let too_long = |what, value, max| {
            auth::check_len(what, value, max).map_err(|m| Fault::bad_request(format!("authenticate: {m}")))
        };
        too_long("user", user, auth::MAX_USER_BYTES)?;
        too_long("credentials", password, auth::MAX_PASSWORD_BYTES)?;
        if let Some(wait) = self.throttle.held(user, now) {
            return Err(throttle::held_fault(wait));
        }
        if !self.users.verify(user, password) {
            self.throttle.failed(user, now);
            return Err(Fault::denied(WRONG));
        }
        self.throttle.succeeded(user);
        let token = auth::new_token().map_err(|e| Fault::new(Code::Unknown, format!("authenticate: {e}")))?;
        let mut tokens = self.tokens();
        if tokens.by_token.len() >= MAX_TOKENS {
            tokens.sweep(now);
        }
        let mine = tokens.by_user.get(user).map_or(0, VecDeque::len);
        if mine >= MAX_TOKENS_PER_USER {
            let oldest = tokens.by_user.get(user).and_then(|t| t.front().cloned());
            if let Some(oldest) = oldest {
                tokens.remove(&oldest);
            }
        } else if tokens.by_token.len() >= MAX_TOKENS {
            return Err(Fault::unavailable(format!(
                "authenticate: this service holds {MAX_TOKENS} tokens, its most: retry later"
            )));
        }
        tokens.by_token.insert(
            token.clone(),
            Held {
                name: user.to_string(),
                expires: now + TOKEN_TTL,
            },
        );
        tokens
            .by_user
            .entry(user.to_string())
            .or_default()
            .push_back(token.clone());
        let expires_ms = crate::pubsub::wire::now_ms().saturating_add(TOKEN_TTL.as_millis() as u64);
        Ok(Issued { token, expires_ms })
    }

    /// Whose `token` is; `allowed` (always true: a password file has no
    /// grants) when an interface is asked about.
    pub fn validate_token(&self, token: &str, interface: Option<&str>) -> Result<Validation, Fault> {
        let now = Instant::now();
        let mut tokens = self.tokens();
        let name = match tokens.by_token.get(token) {
            Some(held) if now < held.expires => held.name.clone(),
            Some(_) => {
                tokens.remove(token);
                return Err(Fault::denied("the token has expired: log in again"));
            }
            None => return Err(Fault::denied("the token is unknown or expired: log in again")),
        };
        Ok(Validation {
            caller: Caller {
                name,
                roles: Vec::new(),
            },
            allowed: interface.map(|_| true),
        })
    }

    pub fn logout(&self, token: &str) {
        self.tokens().remove(token);
    }

    pub fn sweep(&self, now: Instant) {
        self.tokens().sweep(now);
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.tokens().by_token.len()
    }
}

/// `org.pycom.authenticator` as the service serves it (no `check`: that is
/// pycomd's policy).
pub fn interface(local: Arc<Local>) -> Interface {
    let mut iface = api::interface(Arc::new(Served(local)));
    iface.methods.remove("check");
    iface
}

struct Served(Arc<Local>);

impl api::Handler for Served {
    fn authenticate(&self, _: &mut Request, user: String, credentials: String) -> Result<Issued, Fault> {
        self.0.authenticate(&user, &credentials, Instant::now())
    }

    fn validate(
        &self,
        _: &mut Request,
        token: String,
        interface: Option<String>,
        _method: Option<String>,
    ) -> Result<Validation, Fault> {
        self.0.validate_token(&token, interface.as_deref())
    }

    fn logout(&self, _: &mut Request, token: String) -> Result<Value, Fault> {
        self.0.logout(&token);
        Ok(json!({}))
    }

    fn check(&self, _: &mut Request, _user: Option<String>) -> Result<Value, Fault> {
        Err(Fault::new(
            Code::MethodNotFound,
            "check: this service checks a password file of its own and has no policy to show",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A users file with a cheap bcrypt hash, so the tests run fast.
    fn local() -> Local {
        let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
        Local::new(PasswordFile::parse(&format!("alice:{hash}\n")).expect("users"))
    }

    #[test]
    fn tokens_are_given_checked_and_ended() {
        let local = local();
        let now = Instant::now();
        let issued = local.authenticate("alice", "s3cret", now).expect("login");
        assert_eq!(issued.token.len(), 43, "32 bytes, URL-safe base64");
        assert!(issued
            .token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(issued.expires_ms > crate::pubsub::wire::now_ms() + 7 * 3600 * 1000);
        let v = local.validate_token(&issued.token, Some("com.x")).expect("valid");
        assert_eq!(v.caller.name, "alice");
        assert_eq!(v.allowed, Some(true));
        assert_eq!(local.validate_token(&issued.token, None).unwrap().allowed, None);
        local.logout(&issued.token);
        let gone = local.validate_token(&issued.token, None).unwrap_err();
        assert_eq!(gone.code, Code::AccessDenied);
        let wrong_user = local.authenticate("bob", "s3cret", now).unwrap_err();
        let wrong_password = local.authenticate("alice", "nope", now).unwrap_err();
        assert_eq!(wrong_user, wrong_password, "the same answer for both");
        assert_eq!(wrong_user.code, Code::AccessDenied);
        let long = local.authenticate("alice", &"x".repeat(5000), now).unwrap_err();
        assert_eq!(long.code, Code::BadRequest, "{long}");
    }

    #[test]
    fn wrong_passwords_in_a_row_make_the_user_wait() {
        let local = local();
        let now = Instant::now();
        for _ in 0..throttle::FREE_FAILURES {
            let e = local.authenticate("alice", "nope", now).unwrap_err();
            assert_eq!(e.message, WRONG);
        }
        // Even the right password waits now, without being checked.
        let wait = local.authenticate("alice", "s3cret", now).unwrap_err();
        assert_eq!(wait.code, Code::AccessDenied);
        assert!(wait.message.contains("retry in 1 s"), "{wait}");
        let later = now + Duration::from_secs(2);
        local
            .authenticate("alice", "s3cret", later)
            .expect("after the wait");
        // A success starts the count again.
        assert!(local.authenticate("alice", "nope", later).unwrap_err().message == WRONG);
    }

    #[test]
    fn a_users_tokens_are_bounded_its_oldest_going_first() {
        let local = local();
        let now = Instant::now();
        let first = local.authenticate("alice", "s3cret", now).unwrap();
        for _ in 0..MAX_TOKENS_PER_USER {
            local.authenticate("alice", "s3cret", now).unwrap();
        }
        assert_eq!(local.held(), MAX_TOKENS_PER_USER);
        assert!(local.validate_token(&first.token, None).is_err());
        local.sweep(now + TOKEN_TTL);
        assert_eq!(local.held(), 0);
    }
}
