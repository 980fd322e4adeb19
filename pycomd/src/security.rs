//! `[security]`: ZeroMQ CURVE on the request endpoint.
//!
//! With `curve = true` the request ROUTER is a CURVE server: clients must
//! know its public key (`PYCOM_SERVER_KEY`), and everything between them
//! and pycomd is encrypted. The key pair lives in `<data_dir>/curve/`:
//! `server.secret` (mode 0600, both keys) and `server.public` (0644, the
//! public key alone, to hand to clients); made at the first start, kept
//! from then on. The pub-sub forwarder, cluster peers and the services
//! pycomd probes stay in plaintext.
//!
//! The default build's vendored libzmq has no CURVE: pycomd then refuses
//! to start with `curve = true` rather than serve in cleartext.

use crate::config::Settings;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Length of a 32-byte key in Z85 text.
pub const KEY_CHARS: usize = 40;

/// The Z85 alphabet (ZeroMQ RFC 32).
const Z85: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// What the operator sees when this build cannot do CURVE.
pub const NO_CURVE: &str = "[security] curve = true, but this pycomd was built with the vendored libzmq, which has no CURVE: build with `cargo build --release --config etc/system-libzmq.toml` (needs libzmq3-dev)";

/// The request socket's CURVE key pair, as Z85 text.
#[derive(Clone)]
pub struct ServerKeys {
    /// What clients need (`PYCOM_SERVER_KEY`).
    pub public: String,
    secret: String,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeys")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ServerKeys {
    /// Make `socket` a CURVE server with this key pair (before it binds).
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), zmq::Error> {
        socket.set_curve_server(true)?;
        socket.set_curve_secretkey(self.secret.as_bytes())
    }
}

/// Whether `[security]` can be honoured by this build and these settings;
/// checked first thing, before the data dir is touched.
pub fn check(settings: &Settings) -> Result<(), String> {
    if !settings.security.curve {
        return Ok(());
    }
    if zmq::has("curve") != Some(true) {
        return Err(NO_CURVE.to_string());
    }
    if settings.cluster.is_some() {
        // Followers forward writes to the leader's request endpoint in
        // plaintext (cluster::relay): they would get no answer.
        return Err("[security] curve = true is not supported with [cluster] yet (members forward writes to the leader's request endpoint without CURVE)".into());
    }
    Ok(())
}

/// The server key pair when `[security] curve` is on (`None` when off):
/// loaded from `<data_dir>/curve/`, or made there at the first start.
/// Call it with the data dir locked, after [`check`].
pub fn server_keys(settings: &Settings) -> Result<Option<ServerKeys>, String> {
    if !settings.security.curve {
        return Ok(None);
    }
    let keys = load_or_create(&curve_dir(&settings.data_dir))?;
    tracing::info!(
        public_key = %keys.public,
        "CURVE on for the request endpoint; clients need PYCOM_SERVER_KEY={} (also in {})",
        keys.public,
        public_path(&settings.data_dir).display()
    );
    Ok(Some(keys))
}

/// `<data_dir>/curve`.
pub fn curve_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("curve")
}

/// `<data_dir>/curve/server.public`: the key clients need.
pub fn public_path(data_dir: &Path) -> PathBuf {
    curve_dir(data_dir).join("server.public")
}

fn load_or_create(dir: &Path) -> Result<ServerKeys, String> {
    let secret_path = dir.join("server.secret");
    let public_path = dir.join("server.public");
    let keys = match std::fs::read_to_string(&secret_path) {
        Ok(text) => {
            let keys = parse_secret_file(&text).map_err(|why| format!("{}: {why}", secret_path.display()))?;
            let mode = std::fs::metadata(&secret_path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0o600);
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "{} is readable by others (mode {mode:03o}): chmod 600 it",
                    secret_path.display()
                );
            }
            keys
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if public_path.exists() {
                return Err(format!(
                    "{} exists but {} does not: restore the secret key file, or remove {} to make a new key pair (clients then need the new public key)",
                    public_path.display(),
                    secret_path.display(),
                    public_path.display()
                ));
            }
            let keys = generate()?;
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let text = format!(
                "# pycomd's CURVE key pair (PYCOM_SERVER_KEY is the public one). Keep it secret.\npublic = \"{}\"\nsecret = \"{}\"\n",
                keys.public, keys.secret
            );
            write_file(&secret_path, &text, 0o600)?;
            tracing::info!("made a new CURVE key pair in {}", secret_path.display());
            keys
        }
        Err(e) => return Err(format!("cannot read {}: {e}", secret_path.display())),
    };
    // server.public is derived from server.secret: (re)written when it is
    // missing or says something else.
    let wanted = format!("{}\n", keys.public);
    match std::fs::read_to_string(&public_path) {
        Ok(text) if text == wanted => {}
        Ok(_) => {
            tracing::warn!(
                "{} did not hold the public key of {}: rewritten",
                public_path.display(),
                secret_path.display()
            );
            write_file(&public_path, &wanted, 0o644)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write_file(&public_path, &wanted, 0o644)?,
        Err(e) => return Err(format!("cannot read {}: {e}", public_path.display())),
    }
    Ok(keys)
}

fn generate() -> Result<ServerKeys, String> {
    let pair = zmq::CurveKeyPair::new().map_err(|e| format!("cannot make a CURVE key pair: {e}"))?;
    let encode = |key: &[u8]| zmq::z85_encode(key).map_err(|e| format!("cannot encode a CURVE key: {e}"));
    Ok(ServerKeys {
        public: encode(&pair.public_key)?,
        secret: encode(&pair.secret_key)?,
    })
}

/// `public = "..."` and `secret = "..."` lines (comments and blank lines
/// aside), each a Z85 key.
fn parse_secret_file(text: &str) -> Result<ServerKeys, String> {
    let (mut public, mut secret) = (None, None);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("line {}", n + 1);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "{}: expected `public = \"KEY\"` or `secret = \"KEY\"`",
                at()
            ));
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format!("{}: the key must be in double quotes", at()))?;
        let slot = match name.trim() {
            "public" => &mut public,
            "secret" => &mut secret,
            other => {
                return Err(format!(
                    "{}: unknown key '{other}' (expected public or secret)",
                    at()
                ))
            }
        };
        validate_key(value).map_err(|why| format!("{}: {why}", at()))?;
        *slot = Some(value.to_string());
    }
    match (public, secret) {
        (Some(public), Some(secret)) => Ok(ServerKeys { public, secret }),
        (None, _) => Err("no `public = \"...\"` line".into()),
        (_, None) => Err("no `secret = \"...\"` line".into()),
    }
}

/// A 32-byte key in Z85: 40 characters of its alphabet.
pub fn validate_key(key: &str) -> Result<(), String> {
    if let Some(bad) = key.chars().find(|c| !Z85.contains(*c)) {
        return Err(format!(
            "'{bad}' is not a Z85 character: a key is {KEY_CHARS} Z85 characters"
        ));
    }
    if key.len() != KEY_CHARS {
        return Err(format!(
            "the key has {} characters, a CURVE key in Z85 has {KEY_CHARS}",
            key.len()
        ));
    }
    Ok(())
}

/// `text` into `path` with `mode`, whole or not at all (a temporary file,
/// fsync-ed, renamed over it).
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    // The umask may have taken bits off `mode`: a public key must be readable.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";

    #[test]
    fn keys_are_checked() {
        validate_key(KEY).unwrap();
        assert!(validate_key(&KEY[1..]).unwrap_err().contains("39 characters"));
        assert!(validate_key(&format!("{}\"", &KEY[1..]))
            .unwrap_err()
            .contains("'\"'"));
        assert!(validate_key(&format!("{}~", &KEY[1..]))
            .unwrap_err()
            .contains("Z85"));
    }

    #[test]
    fn secret_file_lines() {
        let text = format!("# c\npublic = \"{KEY}\"\nsecret = \"{KEY}\"\n");
        let keys = parse_secret_file(&text).unwrap();
        assert_eq!(keys.public, KEY);
        assert!(format!("{keys:?}").contains("<redacted>"));
        assert!(parse_secret_file(&format!("public = \"{KEY}\"\n"))
            .unwrap_err()
            .contains("secret"));
        assert!(
            parse_secret_file(&format!("public = {KEY}\nsecret = \"{KEY}\"\n"))
                .unwrap_err()
                .contains("line 1")
        );
        assert!(parse_secret_file(&format!("public = \"{KEY}\"\nsecret = \"x{}\"\n", &KEY[1..])).is_ok());
        assert!(
            parse_secret_file(&format!("public = \"{KEY}\"\nsecret = \"{}\"\n", &KEY[2..]))
                .unwrap_err()
                .contains("line 2")
        );
        assert!(parse_secret_file("colour = \"blue\"\n")
            .unwrap_err()
            .contains("colour"));
    }

    #[test]
    fn off_needs_nothing() {
        let settings = Settings::default();
        check(&settings).unwrap();
        assert!(server_keys(&settings).unwrap().is_none());
    }

    #[test]
    fn refused_without_curve_support() {
        let mut settings = Settings::default();
        settings.security.curve = true;
        match zmq::has("curve") {
            Some(true) => check(&settings).unwrap(),
            _ => assert!(check(&settings).unwrap_err().contains("etc/system-libzmq.toml")),
        }
    }

    #[test]
    fn key_files_are_made_then_kept() {
        if zmq::has("curve") != Some(true) {
            return; // the vendored build cannot make keys
        }
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let public = std::fs::read_to_string(dir.path().join("server.public")).unwrap();
        assert_eq!(public, format!("{}\n", first.public));
        let mode = |name: &str| {
            std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("server.secret"), 0o600);
        assert_eq!(mode("server.public"), 0o644);
        std::fs::remove_file(dir.path().join("server.public")).unwrap();
        let again = load_or_create(dir.path()).unwrap();
        assert_eq!((again.public, again.secret), (first.public, first.secret));
        std::fs::write(dir.path().join("server.secret"), "public = \"short\"\n").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(err.contains("server.secret"), "{err}");
    }
}
