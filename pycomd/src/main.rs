//! pycomd's command line: flags, logging, then [`pycomd::run`].

use clap::Parser;
use pycomd::config::{Overrides, Settings};
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
    /// Configuration file [default: /etc/pycomd/pycomd.toml if it exists]
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
