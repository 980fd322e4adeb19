//! Access control's shared parts: where a token travels on the wire, who a
//! caller is, and the users file (htpasswd: `name:hash`) with its password
//! checks, and the throttle on failed logins ([`throttle`]), used by
//! pycomd's authenticator and by a service that checks a password file of
//! its own (PROTOCOL.md section 7).
//!
//! A token is a bare string in `extensions["org.pycom.auth"]`, as PyCOM 0.6
//! sends it; the object form `{"token": "..."}` is accepted on input.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

pub mod throttle;
pub use throttle::Throttle;

/// The request extension that carries the caller's token.
pub const EXTENSION: &str = "org.pycom.auth";
/// The interface that issues and checks tokens.
pub const INTERFACE: &str = "org.pycom.authenticator";
/// pycomd's authenticator's record.
pub const SERVICE: &str = "/org/pycom/authenticator";

/// Longest token accepted (pycomd's are 43 bytes): a bigger one is code 4
/// before anything looks it up.
pub const MAX_TOKEN_BYTES: usize = 256;
/// Longest user name accepted.
pub const MAX_USER_BYTES: usize = 256;
/// Longest password accepted: hashing a megabyte would be a cheap way to
/// burn the server's CPU.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Who made a call: `validate`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The user name.
    pub name: String,
    /// The roles it holds.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Caller {
    /// Whether the caller holds `role` (or `admin`, which holds every role).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role || r == "admin")
    }
}

/// The token in a request's raw `extensions` object, if any.
///
/// Errors (code 4 for the caller) name what is wrong: not a string, or
/// longer than [`MAX_TOKEN_BYTES`].
pub fn token_in_raw(extensions: Option<&RawValue>) -> Result<Option<String>, String> {
    token_ref(extensions).map(|t| t.map(std::borrow::Cow::into_owned))
}

/// [`token_in_raw`] without a copy when the token is a plain string (every
/// request of a logged-in client goes through here).
pub fn token_ref(extensions: Option<&RawValue>) -> Result<Option<std::borrow::Cow<'_, str>>, String> {
    #[derive(Deserialize)]
    struct Ext<'a> {
        #[serde(rename = "org.pycom.auth", borrow, default)]
        auth: Option<&'a RawValue>,
    }
    let Some(raw) = extensions else {
        return Ok(None);
    };
    let ext: Ext =
        serde_json::from_str(raw.get()).map_err(|e| format!("extensions could not be read: {e}"))?;
    let Some(raw) = ext.auth else {
        return Ok(None);
    };
    if let Ok(token) = serde_json::from_str::<&str>(raw.get()) {
        check_len("token", token, MAX_TOKEN_BYTES)?;
        return Ok(Some(std::borrow::Cow::Borrowed(token)));
    }
    let value: Value = serde_json::from_str(raw.get()).map_err(|e| format!("{EXTENSION}: {e}"))?;
    token_in_value(&value).map(|t| t.map(|t| std::borrow::Cow::Owned(t.to_string())))
}

/// The token in a decoded request's extensions, if any.
pub fn token_in(extensions: &Map<String, Value>) -> Result<Option<&str>, String> {
    match extensions.get(EXTENSION) {
        None => Ok(None),
        Some(value) => token_in_value(value),
    }
}

fn token_in_value(value: &Value) -> Result<Option<&str>, String> {
    let token = match value {
        Value::Null => return Ok(None),
        Value::String(token) => token,
        Value::Object(o) => match o.get("token") {
            Some(Value::String(token)) => token,
            _ => {
                return Err(format!(
                    "extension {EXTENSION} must be the token as a string (or {{\"token\": \"...\"}})"
                ))
            }
        },
        other => {
            return Err(format!(
                "extension {EXTENSION} must be the token as a string, not {}",
                crate::proto::type_name(other)
            ))
        }
    };
    check_len("token", token, MAX_TOKEN_BYTES)?;
    Ok(Some(token))
}

/// Code-4 text for a credential longer than its limit.
pub fn check_len(what: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{what} of {} bytes exceeds the limit of {max} bytes",
            value.len()
        ));
    }
    Ok(())
}

/// One user's password hash, checked for its scheme when loaded.
#[derive(Debug, Clone)]
enum Hash {
    Argon2id(String),
    Bcrypt(String),
}

/// A users file in htpasswd format: `name:hash` per line, argon2id
/// (`$argon2id$...`) or bcrypt (`$2y$`, `$2b$`) hashes; blank lines and
/// `#` comments are skipped.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, Hash>,
}

impl PasswordFile {
    /// Read and check `path`: any other scheme, or a malformed line, is an
    /// error naming the file and the line.
    pub fn load(path: &Path) -> Result<PasswordFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?;
        PasswordFile::parse(&text).map_err(|e| format!("{}:{e}", path.display()))
    }

    /// Parse the file's text; errors start with the line number.
    pub fn parse(text: &str) -> Result<PasswordFile, String> {
        let mut users = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                return Err(format!("{n}: expected name:hash"));
            };
            if name.is_empty() || name.len() > MAX_USER_BYTES {
                return Err(format!("{n}: a user name is 1 to {MAX_USER_BYTES} bytes"));
            }
            let hash = if hash.starts_with("$argon2id$") {
                argon2::PasswordHash::new(hash)
                    .map_err(|e| format!("{n}: user {name}: the argon2id hash does not parse: {e}"))?;
                Hash::Argon2id(hash.to_string())
            } else if hash.starts_with("$2y$") || hash.starts_with("$2b$") {
                if hash.len() != 60 {
                    return Err(format!(
                        "{n}: user {name}: a bcrypt hash is 60 characters, this one {}",
                        hash.len()
                    ));
                }
                Hash::Bcrypt(hash.to_string())
            } else {
                let scheme = hash
                    .split('$')
                    .nth(1)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("plain text");
                return Err(format!(
                    "{n}: user {name}: the hash scheme '{scheme}' is not accepted (argon2id or bcrypt $2y$/$2b$ only; make one with `pycomctl auth passwd {name}`)"
                ));
            };
            if users.insert(name.to_string(), hash).is_some() {
                return Err(format!("{n}: user {name} appears twice"));
            }
        }
        Ok(PasswordFile { users })
    }

    /// The user names, in no order.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Whether the file names `user`.
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// How many users it holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether it holds no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Slow on purpose (the hash's cost),
    /// and as slow for an unknown user (a dummy hash is checked), so that
    /// timing does not tell which names exist. The hash crates compare in
    /// constant time.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(Hash::Argon2id(hash)) => verify_argon2(hash, password),
            Some(Hash::Bcrypt(hash)) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = verify_argon2(dummy_hash(), password);
                false
            }
        }
    }
}

fn verify_argon2(hash: &str, password: &str) -> bool {
    use argon2::PasswordVerifier;
    match argon2::PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of nothing anyone knows, at the default cost.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("pycom: no such user").unwrap_or_default())
}

/// An argon2id hash of `password` for a users file, at argon2-cffi's
/// default cost (64 MiB, 3 passes, 4 lanes), with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(64 * 1024, 3, 4, None).map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

// The authenticator's methods (PROTOCOL.md 7): the typed client below,
// and what a service checking a password file of its own answers.
crate::interface! {
    /// Issues and checks tokens: pycomd's, or a service's own password file.
    pub mod api = "org.pycom.authenticator" {
        /// Exchange a user's password for a token: {"token", "expires_ms"} (unix time in ms).
        /// A wrong user or password is code 5, the same message for both.
        fn authenticate(user: String, credentials: String) -> Issued;
        /// Who a token belongs to: {"name", "roles"}, and "allowed" (the call grants) when
        /// interface is given. An unknown or expired token is code 5.
        fn validate(token: String; interface: String, method: String) -> Validation;
        /// End a token's life: {}.
        fn logout(token: String) -> Value;
        /// The access policy, and what user may do (for admin, or the user itself).
        fn check(; user: String) -> Value;
    }
}

/// `authenticate`'s answer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// The token to send with every call.
    pub token: String,
    /// When it stops being valid, in ms since the Unix epoch.
    pub expires_ms: u64,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token", &redacted(&self.token))
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// `validate`'s answer: the caller, and whether the authenticator allows
/// the call asked about (only when one was).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    /// Who the token belongs to.
    #[serde(flatten)]
    pub caller: Caller,
    /// pycomd's `call` grants for the interface (and method) asked about;
    /// `None` when none was asked about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<bool>,
}

/// A successful login: the token (carried by every call from then on),
/// when it expires, and who it says the caller is.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The token.
    pub token: String,
    /// When it stops being valid, in ms since the Unix epoch.
    pub expires_ms: u64,
    /// The user and the roles it holds.
    pub caller: Caller,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("token", &redacted(&self.token))
            .field("expires_ms", &self.expires_ms)
            .field("caller", &self.caller)
            .finish()
    }
}

/// A token as logs and `Debug` may show it: its first characters.
fn redacted(token: &str) -> String {
    let shown: String = token.chars().take(4).collect();
    format!("{shown}... ({} bytes)", token.len())
}

/// A new token: 32 random bytes, URL-safe base64 without padding (43
/// characters).
pub fn new_token() -> Result<String, String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The token a context and everything made from it carry: shared, so that
/// logging in (or out) on a context changes what its components, its
/// nameserver calls and its services' registrations send from then on.
#[derive(Clone, Default)]
pub(crate) struct TokenSlot(Arc<RwLock<Option<Arc<str>>>>);

impl TokenSlot {
    pub(crate) fn with(token: Option<&str>) -> TokenSlot {
        let slot = TokenSlot::default();
        slot.set(token);
        slot
    }

    pub(crate) fn get(&self) -> Option<Arc<str>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, token: Option<&str>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = token.filter(|t| !t.is_empty()).map(Arc::from);
    }

    /// Whether both are the same slot (not merely the same token).
    pub(crate) fn is(&self, other: &TokenSlot) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Clear it, returning what it held.
    pub(crate) fn take(&self) -> Option<Arc<str>> {
        self.0.write().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for TokenSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.get() {
            Some(token) => write!(f, "TokenSlot({})", redacted(&token)),
            None => write!(f, "TokenSlot(none)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_and_bcrypt_verify_and_other_schemes_are_refused_by_line() {
        let argon = hash_password("s3cret").expect("hash");
        let bcrypt = bcrypt::hash("hunter2", 4)
            .expect("bcrypt")
            .replacen("$2b$", "$2y$", 1);
        let file = PasswordFile::parse(&format!("# users\nalice:{argon}\n\nbob:{bcrypt}\n")).expect("parse");
        assert!(file.verify("alice", "s3cret"));
        assert!(!file.verify("alice", "S3cret"));
        assert!(file.verify("bob", "hunter2"));
        assert!(!file.verify("carol", "s3cret"));
        let md5 = PasswordFile::parse(&format!("alice:{argon}\nmallory:$apr1$xyz$abc\n")).unwrap_err();
        assert!(
            md5.starts_with("2: user mallory: the hash scheme 'apr1'"),
            "{md5}"
        );
        let plain = PasswordFile::parse("eve:password").unwrap_err();
        assert!(plain.contains("'plain text' is not accepted"), "{plain}");
        let argon2i = PasswordFile::parse("x:$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$abc").unwrap_err();
        assert!(argon2i.contains("'argon2i'"), "{argon2i}");
    }

    #[test]
    fn tokens_come_as_strings_or_objects_and_are_bounded() {
        let raw = |s: &str| serde_json::from_str::<Box<RawValue>>(s).expect("raw");
        let bare = raw(r#"{"org.pycom.auth": "abc", "other": [1]}"#);
        assert_eq!(token_in_raw(Some(&bare)), Ok(Some("abc".into())));
        let object = raw(r#"{"org.pycom.auth": {"token": "abc"}}"#);
        assert_eq!(token_in_raw(Some(&object)), Ok(Some("abc".into())));
        assert_eq!(token_in_raw(Some(&raw("{}"))), Ok(None));
        assert_eq!(token_in_raw(None), Ok(None));
        assert!(token_in_raw(Some(&raw(r#"{"org.pycom.auth": 5}"#))).is_err());
        let long = raw(&format!(r#"{{"org.pycom.auth": "{}"}}"#, "x".repeat(10_000)));
        let err = token_in_raw(Some(&long)).unwrap_err();
        assert!(err.contains("10000 bytes exceeds the limit of 256"), "{err}");
    }
}
