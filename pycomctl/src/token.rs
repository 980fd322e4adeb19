//! Where `pycomctl login` keeps the token between runs:
//! `$XDG_CONFIG_HOME/pycom/token`, else `~/.config/pycom/token`, readable
//! by its owner only (0600, in a 0700 directory). `PYCOM_TOKEN`, when set,
//! is used instead.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The environment variable whose token overrides the saved one.
pub const ENV: &str = pycom_client::context::TOKEN_ENV;

/// Where the token came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `PYCOM_TOKEN`.
    Env,
    /// The token file.
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Env => write!(f, "{ENV}"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The token file's path, from the environment.
pub fn path() -> Result<PathBuf, String> {
    path_from(std::env::var_os("XDG_CONFIG_HOME"), std::env::var_os("HOME"))
}

fn path_from(
    xdg_config_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    // The XDG spec: a relative XDG_CONFIG_HOME is to be ignored.
    let config = match xdg_config_home.map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ => match home.map(PathBuf::from) {
            Some(home) if home.is_absolute() => home.join(".config"),
            _ => {
                return Err(
                    "no place for the token: neither XDG_CONFIG_HOME nor HOME is set to an absolute path"
                        .into(),
                )
            }
        },
    };
    Ok(config.join("pycom").join("token"))
}

/// The token to send, and where it came from: `PYCOM_TOKEN` if set, else
/// the token file if there is one. A file that cannot be read is said on
/// stderr (by `warn`) and skipped.
pub fn current(warn: impl Fn(String)) -> Option<(String, Source)> {
    if let Some(token) = std::env::var(ENV).ok().filter(|t| !t.trim().is_empty()) {
        return Some((token.trim().to_string(), Source::Env));
    }
    let path = path().ok()?;
    match load(&path) {
        Ok(Some(token)) => {
            if let Some(why) = too_open(&path) {
                warn(why);
            }
            Some((token, Source::File(path)))
        }
        Ok(None) => None,
        Err(e) => {
            warn(format!("cannot read the token file {}: {e}", path.display()));
            None
        }
    }
}

/// The token saved in `path`, if there is one.
pub fn load(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Save `token` in `path`, readable by its owner only: written whole to a
/// new file beside it, then renamed over the old one.
pub fn save(path: &Path, token: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the token file has no directory"))?;
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let temp = dir.join(format!(".token.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = (|| {
        let mut file = options.open(&temp)?;
        // A temp file left by a crashed run may have been made otherwise.
        #[cfg(unix)]
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Remove the token file; whether there was one.
pub fn remove(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Why the file at `path` is too open, if it is (others may read it).
fn too_open(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            return Some(format!(
                "the token file {} can be read by others (mode {:o}): chmod 600 it, or log in again",
                path.display(),
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_follows_xdg_then_home() {
        let p = path_from(Some("/x/conf".into()), Some("/home/u".into())).unwrap();
        assert_eq!(p, PathBuf::from("/x/conf/pycom/token"));
        let p = path_from(None, Some("/home/u".into())).unwrap();
        assert_eq!(p, PathBuf::from("/home/u/.config/pycom/token"));
        let p = path_from(Some("relative".into()), Some("/home/u".into())).unwrap();
        assert_eq!(p, PathBuf::from("/home/u/.config/pycom/token"));
        assert!(path_from(None, None).is_err());
    }

    #[test]
    fn saved_for_the_owner_only_loaded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf/pycom/token");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, "tok-1").unwrap();
        assert_eq!(load(&path).unwrap().as_deref(), Some("tok-1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
            assert_eq!(too_open(&path), None);
            // Saving again over a file others could read leaves an owner-only one.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(too_open(&path).unwrap().contains("chmod 600"));
            save(&path, "tok-2").unwrap();
            assert_eq!(mode(&path), 0o600);
        }
        assert_eq!(load(&path).unwrap().as_deref(), Some("tok-2"));
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
        assert_eq!(load(&path).unwrap(), None);
    }
}
