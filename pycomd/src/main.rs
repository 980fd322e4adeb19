//! pycomd's command line: flags, logging, then [`pycomd::run`].

use clap::Parser;
use pycomd::config::{Overrides, Settings, SYSTEM_CONFIG};
use pycomd::{logging, Failure, Launch};
use std::path::PathBuf;
use std::process::ExitCode;

/// The pycom daemon: a PyCOM-compatible nameserver with leases and durable registrations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// ZeroMQ endpoint to serve requests on [default: tcp://127.0.0.1:2012]
    #[arg(long, value_name = "ENDPOINT")]
    listen: Option<String>,
    /// Directory for the registry [default: $STATE_DIRECTORY or ./pycomd-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file [default: $PYCOMD_CONFIG, else /etc/pycomd/pycomd.toml if it exists]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or tracing directives [default: info]
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Start even if the data dir is damaged: keep a copy of the damaged
    /// files, drop what cannot be read, and log how many acknowledged
    /// changes that lost
    #[arg(long)]
    recover: bool,
    /// Load and check the configuration (defaults, config file, PYCOMD_*
    /// environment, flags), print the effective settings as TOML and exit:
    /// 0 when valid, 2 with the error. Opens no data dir, binds nothing
    #[arg(long)]
    check_config: bool,
    /// Make the data dir (--data-dir, or the configuration's) hold the
    /// registry in FILE, a snapshot `pycomctl snapshot save` took, and
    /// exit: 0 when restored, 2 when FILE is damaged or the data dir is not
    /// empty. Start pycomd on the data dir afterwards
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// With --restore: replace a data dir that is not empty (what it holds
    /// is moved into DIR/replaced-<time>/)
    #[arg(long, requires = "restore")]
    force: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        config_file: cli.config,
        listen: cli.listen,
        data_dir: cli.data_dir,
        log_level: cli.log_level,
        log_format: cli.log_format,
    };
    let config_file = config_file_read(&overrides);
    let settings = match Settings::load(&overrides) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pycomd: {e}");
            return ExitCode::from(2);
        }
    };
    let log_control = match logging::init(&settings.log_level, &settings.log_format) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("pycomd: {e}");
            return ExitCode::from(2);
        }
    };
    let exposed = pycomd::config::exposed(&settings.listen).filter(|_| !settings.auth.enabled);
    if let Some(why) = exposed {
        tracing::warn!(
            "pycomd listens on {} ({why}) without access control: anyone who can connect can register, renew, unregister and look up services. Turn on [auth] (README, \"Access control\"), listen on tcp://127.0.0.1 (the default), or keep the port behind a firewall",
            settings.listen
        );
    }
    if let Some(file) = &cli.restore {
        return restore(file, &settings.data_dir, cli.force);
    }
    if cli.check_config {
        // The users file and grants are checked as a start would.
        if settings.auth.enabled {
            if let Err(e) = pycomd::auth::Policy::load(&settings.auth) {
                eprintln!("pycomd: {e}");
                return ExitCode::from(2);
            }
        }
        print_settings(&settings, config_file.as_deref());
        return ExitCode::SUCCESS;
    }
    let launch = Launch {
        overrides,
        log_control,
        recover: cli.recover,
    };
    match pycomd::run(settings, launch) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Start(e)) => {
            tracing::error!("{e}");
            eprintln!("pycomd: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Unwritten(_)) => ExitCode::FAILURE,
    }
}

/// `--restore FILE`: the data dir made from a backup, or why not.
fn restore(file: &std::path::Path, data_dir: &std::path::Path, force: bool) -> ExitCode {
    match pycomd::backup::restore(file, data_dir, force) {
        Ok(done) => {
            if let Some(aside) = &done.moved_aside {
                println!("moved what {} held into {}", data_dir.display(), aside.display());
            }
            println!(
                "restored {} records and {} logins at revision {} (log entry {}) from {} into {}; start pycomd with --data-dir {}",
                done.records,
                done.tokens,
                done.revision,
                done.index,
                file.display(),
                data_dir.display(),
                data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("pycomd: {e}");
            ExitCode::from(2)
        }
    }
}

/// The config file [`Settings::load`] reads: `--config`, else
/// `$PYCOMD_CONFIG`, else the system one if it exists.
fn config_file_read(overrides: &Overrides) -> Option<PathBuf> {
    overrides
        .config_file
        .clone()
        .or_else(|| {
            std::env::var_os("PYCOMD_CONFIG")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.is_file()))
}

/// `table` as TOML under `[path]`: its plain keys, then its tables
/// (`[path.key]`) and lists of tables (`[[path.key]]`).
fn toml_table(out: &mut String, path: &str, table: &serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    let is_tables = |v: &Value| matches!(v, Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object));
    out.push_str(&format!("\n[{path}]\n"));
    for (key, value) in table {
        if !value.is_null() && !value.is_object() && !is_tables(value) {
            out.push_str(&format!("{} = {value}\n", toml_key(key)));
        }
    }
    for (key, value) in table {
        match value {
            Value::Object(inner) => toml_table(out, &format!("{path}.{key}"), inner),
            Value::Array(items) if is_tables(value) => {
                for item in items {
                    if let Value::Object(inner) = item {
                        out.push_str(&format!("\n[[{path}.{key}]]\n"));
                        for (k, v) in inner {
                            out.push_str(&format!("{} = {v}\n", toml_key(k)));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// A key as TOML writes it: bare when it can be, else quoted (the keys of
/// user tables, such as roles, may hold anything).
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match bare {
        true => key.to_string(),
        false => serde_json::Value::String(key.to_string()).to_string(),
    }
}

/// `--check-config`: the effective settings as a TOML config file would
/// give them, those at their default marked.
fn print_settings(settings: &Settings, config_file: Option<&std::path::Path>) {
    use std::io::Write;
    let as_map = |s: &Settings| match serde_json::to_value(s) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => Default::default(),
    };
    let (effective, defaults) = (as_map(settings), as_map(&Settings::default()));
    let mut text = String::from(
        "# pycomd's effective settings: built-in defaults, then the config file,\n\
         # PYCOMD_* environment variables, flags (valid: pycomd would start with them).\n",
    );
    match config_file {
        Some(path) => text.push_str(&format!("# config file: {}\n", path.display())),
        None => text.push_str("# config file: none\n"),
    }
    let mut tables = String::new();
    for (name, value) in &effective {
        let line = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::Object(table) => {
                toml_table(&mut tables, name, table);
                continue;
            }
            // A JSON string, number, bool or list of them is valid TOML.
            other => format!("{name} = {other}"),
        };
        if defaults.get(name) == Some(value) {
            text.push_str(&format!("{line:<48} # default\n"));
        } else {
            text.push_str(&format!("{line}\n"));
        }
    }
    text.push_str(&tables);
    // Nothing to do about a closed stdout: the check itself passed.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
