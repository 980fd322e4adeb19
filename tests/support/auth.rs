//! pycomd with access control on: a users file and a config of the test's
//! making, and calls that carry a token as PyCOM 0.6 sends it.

use crate::Daemon;
use pycom_client::proto::{Fault, Request};
use serde_json::Value;
use std::path::PathBuf;

/// A users file (bcrypt at its lowest cost: tests check rules, not
/// hashing) and a `pycomd.toml` with `[auth]` on, in a temp dir.
pub struct AuthSetup {
    dir: tempfile::TempDir,
}

impl AuthSetup {
    /// `users` (name, password); `config`: the rest of the file after
    /// `[auth] enabled = true` and `users_file` (more `[auth]` keys first,
    /// then tables).
    pub fn new(users: &[(&str, &str)], config: &str) -> AuthSetup {
        let setup = AuthSetup {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        setup.write_users(users);
        let file = format!(
            "[auth]\nenabled = true\nusers_file = \"{}\"\n{config}\n",
            setup.users().display()
        );
        std::fs::write(setup.config(), file).expect("config");
        setup
    }

    pub fn users(&self) -> PathBuf {
        self.dir.path().join("users")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("pycomd.toml")
    }

    pub fn write_users(&self, users: &[(&str, &str)]) {
        let lines: Vec<String> = users
            .iter()
            .map(|(name, pw)| format!("{name}:{}", bcrypt::hash(pw, 4).expect("bcrypt")))
            .collect();
        std::fs::write(self.users(), lines.join("\n") + "\n").expect("users file");
    }

    /// pycomd with this config (and `env`).
    pub fn start_with(&self, env: &[(&str, &str)]) -> Daemon {
        let config = self.config();
        Daemon::with(env, &["--config", config.to_str().expect("utf-8 path")])
    }

    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }
}

/// One call with `token` in `extensions["org.pycom.auth"]`.
pub fn call(
    d: &Daemon,
    token: Option<&str>,
    interface: &str,
    method: &str,
    args: Value,
) -> Result<Value, Fault> {
    let mut request = Request::new(interface, method, args);
    if let Some(token) = token {
        request
            .extensions
            .insert("org.pycom.auth".into(), Value::String(token.into()));
    }
    d.connection(10_000)
        .call(&request, &[])
        .expect("a reply")
        .response
        .result
}

/// Log in at pycomd's authenticator: the token.
pub fn login(d: &Daemon, user: &str, password: &str) -> Result<String, Fault> {
    let answer = call(
        d,
        None,
        "org.pycom.authenticator",
        "authenticate",
        serde_json::json!({"user": user, "credentials": password}),
    )?;
    assert!(answer["expires_ms"].as_u64().is_some(), "{answer}");
    Ok(answer["token"].as_str().expect("token").to_string())
}

/// `validate` at pycomd's authenticator (no token of the caller's own).
pub fn validate(d: &Daemon, args: Value) -> Result<Value, Fault> {
    call(d, None, "org.pycom.authenticator", "validate", args)
}
