//! What other threads need of access control: the policy in force and the
//! live logins (by token SHA-256), kept up to date by the server thread as
//! it applies `Login`, `Logout` and `ExpireTokens` and reloads the policy.
//! The pub-sub forwarder's ZAP handler reads it to authenticate pub-sub
//! connections (PLAIN: user name `token`, the token as password).

use super::{digest, fingerprint, Policy};
use crate::registry::tokens::{parse_hex, Digest, Tokens};
use crate::registry::{Applied, Command, Map};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The PLAIN user names: "the password is a token", and a peer without
/// a token (any password).
pub use pycom_client::pubsub::{PLAIN_ANONYMOUS_USER as ANONYMOUS_USER, PLAIN_TOKEN_USER as TOKEN_USER};

#[derive(Debug)]
struct Inner {
    policy: Arc<Policy>,
    /// Token SHA-256 -> (user, expiry in unix ms).
    tokens: Map<Digest, (Arc<str>, u64)>,
}

/// Shared between the server thread (writer) and the forwarder (reader).
#[derive(Debug)]
pub struct View {
    inner: RwLock<Inner>,
}

impl View {
    pub fn new(policy: &Policy) -> Arc<View> {
        Arc::new(View {
            inner: RwLock::new(Inner {
                policy: Arc::new(policy.clone()),
                tokens: Map::default(),
            }),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The policy in force (a new `Arc` after each reload).
    pub fn policy(&self) -> Arc<Policy> {
        self.read().policy.clone()
    }

    pub fn set_policy(&self, policy: &Policy) {
        self.write().policy = Arc::new(policy.clone());
    }

    /// Every login the state holds (at start, after a snapshot install).
    pub fn sync(&self, tokens: &Tokens) {
        let mut inner = self.write();
        inner.tokens.clear();
        for token in tokens.shared() {
            if let Some(d) = parse_hex(&token.sha256) {
                inner.tokens.insert(d, (token.name.clone(), token.expires_ms));
            }
        }
    }

    /// Follow one applied command as the registry reported it (the
    /// registry alone decides which logins a login drops or time expires).
    /// Whether it changed the logins.
    pub fn apply(&self, command: &Command, applied: &Applied) -> bool {
        match (command, applied) {
            (
                Command::Login {
                    token_sha256, name, ..
                },
                Applied::LoggedIn { expires_ms, dropped },
            ) => {
                let mut inner = self.write();
                for d in dropped {
                    inner.tokens.remove(d);
                }
                if let Some(d) = parse_hex(token_sha256) {
                    inner.tokens.insert(d, (Arc::from(name.as_str()), *expires_ms));
                }
            }
            (Command::Logout { token_sha256 }, Applied::LoggedOut(true)) => {
                if let Some(d) = parse_hex(token_sha256) {
                    self.write().tokens.remove(&d);
                }
            }
            (_, Applied::TokensExpired(gone)) => {
                let mut inner = self.write();
                for d in gone {
                    inner.tokens.remove(d);
                }
            }
            _ => return false,
        }
        true
    }

    /// A ZAP request's PLAIN credentials: the user id (`""`: anonymous), or
    /// why not.
    pub fn authenticate(&self, user: &[u8], password: &[u8], now_ms: u64) -> Result<String, String> {
        if user == ANONYMOUS_USER.as_bytes() {
            return Ok(String::new());
        }
        if user != TOKEN_USER.as_bytes() {
            return Err(format!(
                "PLAIN user name '{}' is neither '{TOKEN_USER}' (with a token as password) nor '{ANONYMOUS_USER}'",
                String::from_utf8_lossy(user)
            ));
        }
        let Ok(token) = std::str::from_utf8(password) else {
            return Err("the token is not UTF-8".into());
        };
        let d = digest(token);
        let inner = self.read();
        let Some((name, expires_ms)) = inner.tokens.get(&d) else {
            return Err(format!(
                "token {} is not valid (unknown, or logged out)",
                fingerprint(&d)
            ));
        };
        if *expires_ms <= now_ms {
            return Err(format!("token {} expired", fingerprint(&d)));
        }
        if inner.policy.roles_of(name).is_none() {
            return Err(format!(
                "token {}: user {name} is no longer in the users file",
                fingerprint(&d)
            ));
        }
        Ok(name.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::hex;
    use crate::config::AuthSettings;
    use crate::registry::State;

    fn policy(dir: &std::path::Path) -> Policy {
        let file = dir.join("users");
        let hash = bcrypt::hash("pw", 4).expect("bcrypt");
        std::fs::write(&file, format!("alice:{hash}\n")).expect("write");
        Policy::load(&AuthSettings {
            enabled: true,
            users_file: file.display().to_string(),
            ..AuthSettings::default()
        })
        .expect("policy")
    }

    fn login(token: &str, name: &str, expires_ms: u64) -> Command {
        Command::Login {
            token_sha256: hex(&digest(token)),
            name: name.into(),
            roles: vec![],
            expires_ms,
            keep: 2,
        }
    }

    /// Apply `command` to `state` as the registry does, then to `view`.
    fn apply(view: &View, state: &mut State, command: Command) {
        if let (Ok(applied), _) = state.apply(&command) {
            view.apply(&command, &applied);
        }
    }

    #[test]
    fn the_view_follows_logins_logouts_evictions_and_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = View::new(&policy(dir.path()));
        let mut tokens = State::default();
        let ok = |token: &str, now: u64| view.authenticate(b"token", token.as_bytes(), now);
        assert_eq!(view.authenticate(b"anonymous", b"x", 0), Ok(String::new()));
        assert!(view.authenticate(b"alice", b"pw", 0).is_err());
        apply(&view, &mut tokens, login("t1", "alice", 100));
        assert_eq!(ok("t1", 50), Ok("alice".into()));
        assert!(ok("t1", 100).unwrap_err().contains("expired"));
        assert!(ok("t2", 50).is_err());
        // keep = 2: a third login drops the oldest.
        apply(&view, &mut tokens, login("t2", "alice", 200));
        apply(&view, &mut tokens, login("t3", "alice", 300));
        assert!(ok("t1", 50).is_err());
        assert!(ok("t2", 50).is_ok() && ok("t3", 50).is_ok());
        apply(
            &view,
            &mut tokens,
            Command::Logout {
                token_sha256: hex(&digest("t3")),
            },
        );
        assert!(ok("t3", 50).is_err());
        apply(&view, &mut tokens, login("t4", "bob", 400));
        assert!(ok("t4", 50).unwrap_err().contains("no longer in the users file"));
        apply(&view, &mut tokens, Command::ExpireTokens { now_ms: 250 });
        assert!(ok("t2", 50).is_err());
        assert!(ok("t4", 50).is_err() && tokens.tokens().get(&digest("t4")).is_some());
        view.sync(&Tokens::default());
        assert!(ok("t4", 50).is_err());
    }
}
