//! snapshot save, completions, man: backups through pycomd, and what a
//! shell and `man` need.

use super::Failure;
use crate::Cli;
use base64::Engine;
use pycom_client::Context;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// pycomd's operator interface.
const ADMIN: &str = "org.pycom.admin";
/// How long pycomd may take to encode a big registry's snapshot.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

fn field<'a>(value: &'a Value, name: &str) -> Result<&'a Value, Failure> {
    value.get(name).ok_or_else(|| {
        Failure::Client(pycom_client::Error::Data(format!(
            "pycomd's snapshot reply has no '{name}'"
        )))
    })
}

fn number(value: &Value, name: &str) -> Result<u64, Failure> {
    field(value, name)?.as_u64().ok_or_else(|| {
        Failure::Client(pycom_client::Error::Data(format!(
            "pycomd's snapshot reply has a '{name}' that is not a number"
        )))
    })
}

fn data_error(message: String) -> Failure {
    Failure::Client(pycom_client::Error::Data(message))
}

/// `snapshot save FILE`: a consistent snapshot from the first nameserver
/// that answers, checked against the SHA-256 pycomd announced, written to
/// FILE.tmp, synced, and renamed into place.
pub fn save(cli: &Cli, ctx: &Context, file: &Path) -> Result<(), Failure> {
    let endpoint = ctx
        .nameservers()
        .first()
        .cloned()
        .ok_or_else(|| Failure::Usage("no nameserver endpoint given".into()))?;
    let mut conn = ctx.connection(&endpoint)?;
    conn.set_timeout(ctx.default_timeout().max(SNAPSHOT_TIMEOUT));
    let taken = conn.invoke(ADMIN, "snapshot", Value::Null)?;
    let id = number(&taken, "id")?;
    let total = number(&taken, "bytes")?;
    let sha256 = field(&taken, "sha256")?.as_str().unwrap_or_default().to_string();
    conn.set_timeout(ctx.default_timeout());

    let tmp = file.with_extension("tmp");
    let mut out = std::fs::File::create(&tmp)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", tmp.display())))?;
    let fetched = (|| -> Result<(), Failure> {
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        loop {
            let chunk = conn.invoke(ADMIN, "snapshot_chunk", json!({"id": id, "offset": offset}))?;
            let data = field(&chunk, "data")?.as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| data_error(format!("a chunk of the snapshot is not base64: {e}")))?;
            if offset + bytes.len() as u64 > total {
                return Err(data_error(format!(
                    "pycomd sent more than the {total} bytes it announced"
                )));
            }
            hasher.update(&bytes);
            out.write_all(&bytes)
                .map_err(|e| Failure::Usage(format!("cannot write {}: {e}", tmp.display())))?;
            offset += bytes.len() as u64;
            let eof = chunk.get("eof").and_then(Value::as_bool).unwrap_or(false);
            if eof {
                break;
            }
            if bytes.is_empty() {
                return Err(data_error("pycomd sent an empty chunk before the end".into()));
            }
        }
        let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        if offset != total || got != sha256 {
            return Err(data_error(format!(
                "the snapshot arrived damaged: {offset} bytes with SHA-256 {got}, where pycomd announced {total} bytes with SHA-256 {sha256}; nothing was saved"
            )));
        }
        out.sync_all()
            .map_err(|e| Failure::Usage(format!("cannot sync {}: {e}", tmp.display())))?;
        Ok(())
    })();
    drop(out);
    if let Err(e) = fetched {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, file).map_err(|e| {
        Failure::Usage(format!(
            "cannot rename {} to {}: {e}",
            tmp.display(),
            file.display()
        ))
    })?;
    if cli.json() {
        let mut value = taken.clone();
        if let Value::Object(map) = &mut value {
            map.insert("file".into(), Value::String(file.display().to_string()));
        }
        crate::output::json(&value)?;
    } else {
        println!(
            "saved {}: {} records, {} logins, revision {}, log entry {}, {total} bytes, sha256 {sha256}",
            file.display(),
            number(&taken, "records")?,
            number(&taken, "tokens")?,
            number(&taken, "revision")?,
            number(&taken, "index")?,
        );
    }
    Ok(())
}

/// `completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "pycomctl", &mut out);
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}

/// `man [--dir DIR]`: pycomctl.1 on stdout, or it and one page per
/// subcommand (pycomctl-stat.1, ...) into DIR.
pub fn man(dir: Option<&Path>) -> Result<(), Failure> {
    use clap::CommandFactory;
    let command = Cli::command();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        clap_mangen::Man::new(command).render(&mut out)?;
        std::io::stdout().lock().write_all(&out)?;
        return Ok(());
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    clap_mangen::generate_to(command, dir)
        .map_err(|e| Failure::Usage(format!("cannot write the man pages into {}: {e}", dir.display())))?;
    println!("man pages written into {}", dir.display());
    Ok(())
}
