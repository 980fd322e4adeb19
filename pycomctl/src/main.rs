//! pycomctl: the operator CLI for pycom.
//!
//! Exit codes: 0 success, 1 the remote side answered with an error (the
//! message goes to stderr), 2 usage error, 3 nameserver or service
//! unreachable or timed out.

mod commands;
mod output;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(version, about = "Query and change a pycomd registry, call pycom services")]
pub struct Cli {
    /// Nameserver endpoint(s), comma-separated: tried in order when one does not answer
    #[arg(long, global = true, env = "PYCOM_NAMESERVER", default_value = pycom_client::nameserver::DEFAULT_ENDPOINT)]
    pub nameserver: String,
    /// How long to wait for each reply, in milliseconds
    #[arg(long, global = true, default_value_t = 5000, value_name = "MS")]
    pub timeout: u64,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ping the nameserver and show its statistics
    Stat,
    /// List registered services
    ListServices {
        /// Only services with an interface matching this regex (anchored at the start)
        #[arg(long, value_name = "RE")]
        interface: Option<String>,
        /// Only services whose name matches this regex (anchored at the start)
        #[arg(long, value_name = "RE")]
        service: Option<String>,
    },
    /// Find a live provider of an interface
    Locate {
        interface: String,
        /// Only this service
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Every live provider, not just one
        #[arg(long)]
        all: bool,
    },
    /// Call a method of a service, located through the nameserver
    Call {
        interface: String,
        method: String,
        /// Arguments as JSON (default: null)
        args: Option<String>,
        /// Call this service rather than any provider
        #[arg(long, value_name = "NAME")]
        service: Option<String>,
        /// Send a file as an attachment (repeatable, in order)
        #[arg(long = "attach", value_name = "FILE")]
        attach: Vec<std::path::PathBuf>,
        /// Write the reply's attachments into DIR as attachment-0, attachment-1, ...
        #[arg(long, value_name = "DIR")]
        save_attachments: Option<std::path::PathBuf>,
    },
    /// Register a service (leased with --ttl, else probed by pycomd)
    Register {
        service: String,
        address: String,
        #[arg(required = true, value_name = "INTERFACE")]
        interfaces: Vec<String>,
        /// Lease length in milliseconds
        #[arg(long, value_name = "MS")]
        ttl: Option<u64>,
    },
    /// Remove a service's record (only its own address may)
    Unregister { service: String, address: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pycomctl: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
