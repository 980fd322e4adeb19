//! pycomctl: the operator CLI for pycom.
//!
//! Exit codes (also in `--help` and the README): 0 success, 1 the remote
//! side answered with an error (the message goes to stderr), 2 usage error,
//! 3 no nameserver answered, 4 the called service did not answer.

mod commands;
mod endpoint;
mod output;
mod token;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the remote side answered with an error (its message on stderr), or
     the output could not be written
  2  usage error: a bad argument, a malformed endpoint or ARGS_JSON, an
     unreadable file (nothing was sent)
  3  no nameserver answered: no answer from tcp://...: is pycomd running?
     (pub, sub, watch: or pycomd's pub-sub forwarder did not answer)
  4  the called service did not answer in time (call); the method may
     have run all the same

A reader that goes away (pycomctl ... | head) ends pycomctl quietly.

Access control: after `pycomctl login`, every command carries the token
saved in $XDG_CONFIG_HOME/pycom/token (else ~/.config/pycom/token);
PYCOM_TOKEN, when set, is carried instead.";

const LOGIN_EXAMPLES: &str = "\
Examples:
  pycomctl login alice                      # asks for the password on the terminal
  printf '%s\\n' \"$PASSWORD\" | pycomctl login alice --password-stdin
  export PYCOM_TOKEN=$(pycomctl login svc-billing --password-stdin --print-token < secret)";

const AUTH_EXAMPLES: &str = "\
Examples:
  pycomctl auth passwd alice >> /etc/pycomd/users       # asks twice on the terminal
  pycomctl auth passwd svc-billing --password-stdin < secret
  pycomctl auth check                                    # the policy as it applies to you
  pycomctl auth check svc-billing                        # (admin) as it applies to svc-billing";

const STAT_EXAMPLES: &str = "\
Examples:
  pycomctl stat
  pycomctl --nameserver tcp://10.0.0.5:2012 stat --json";
const LIST_EXAMPLES: &str = "\
Examples:
  pycomctl list-services
  pycomctl list-services --interface 'com\\.example\\.' --long";
const LOCATE_EXAMPLES: &str = "\
Examples:
  pycomctl locate com.example.calc
  pycomctl locate com.example.calc --all --json";
const CALL_EXAMPLES: &str = "\
Examples:
  pycomctl call com.example.calc add '{\"a\": 1, \"b\": 2}'
  pycomctl call com.example.files put '\"report.pdf\"' --attach report.pdf";
const REGISTER_EXAMPLES: &str = "\
Examples:
  pycomctl register /com/example/calc tcp://10.0.0.7:5000 com.example.calc --ttl 30000
  pycomctl register /com/example/web tcp://10.0.0.8:5000 com.example.web --metadata zone=eu";
const RENEW_EXAMPLES: &str = "\
Examples:
  pycomctl renew /com/example/calc tcp://10.0.0.7:5000";
const UNREGISTER_EXAMPLES: &str = "\
Examples:
  pycomctl unregister /com/example/calc tcp://10.0.0.7:5000";
const CLUSTER_EXAMPLES: &str = "\
Examples:
  pycomctl cluster status
  pycomctl cluster add 4 --peer 10.0.0.4:2016 --client tcp://10.0.0.4:2012
  pycomctl cluster remove 4
  pycomctl cluster transfer-leader 2";
const PUB_EXAMPLES: &str = "\
Examples:
  pycomctl pub demo.greetings '{\"text\": \"hello\"}'";
const SUB_EXAMPLES: &str = "\
Examples:
  pycomctl sub 'demo.>'
  pycomctl sub demo.greetings --last --count 1 --json";
const WATCH_EXAMPLES: &str = "\
Examples:
  pycomctl watch
  pycomctl watch --interface com.example.calc --count 10";
const LOGOUT_EXAMPLES: &str = "\
Examples:
  pycomctl logout";
const WHOAMI_EXAMPLES: &str = "\
Examples:
  pycomctl whoami";
const SNAPSHOT_EXAMPLES: &str = "\
Examples:
  pycomctl snapshot save /var/backups/pycomd-$(date +%F).snap
  pycomd --restore /var/backups/pycomd-2026-01-31.snap --data-dir /var/lib/pycomd-restored

The file is pycomd's snapshot format (a header with the length and crc32c of
the registry); pycomctl checks it against the SHA-256 pycomd announces before
it renames it into place. With access control on, only the admin role may.";
const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  pycomctl completions bash > /etc/bash_completion.d/pycomctl
  pycomctl completions zsh > \"${fpath[1]}/_pycomctl\"
  pycomctl completions fish > ~/.config/fish/completions/pycomctl.fish";
const MAN_EXAMPLES: &str = "\
Examples:
  pycomctl man | man -l -
  pycomctl man --dir /usr/local/share/man/man1";

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Query and change a pycomd registry, call pycom services",
    after_help = EXIT_STATUS
)]
pub struct Cli {
    /// Nameserver endpoint(s), comma-separated: tried in order when one does not answer
    #[arg(long, global = true, env = "PYCOM_NAMESERVER", default_value = pycom_client::nameserver::DEFAULT_ENDPOINT)]
    pub nameserver: String,
    /// How long to wait for each reply, in milliseconds
    #[arg(long, global = true, default_value_t = 5000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// The nameserver's CURVE public key (40 Z85 characters), for a pycomd
    /// with `[security] curve = true`: its data dir's curve/server.public.
    /// Needs a pycomctl built with etc/system-libzmq.toml
    // Z85 keys may start with '-' (about one in 85): taken as the value.
    #[arg(
        long,
        global = true,
        env = "PYCOM_SERVER_KEY",
        value_name = "KEY",
        allow_hyphen_values = true
    )]
    pub server_key: Option<String>,
    /// Output format: tables (or a call's plain result), or JSON
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// Print JSON instead of tables (the same as --output json)
    #[arg(long, global = true, conflicts_with = "output")]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl Cli {
    /// JSON output (`--output json` or `--json`)?
    pub fn json(&self) -> bool {
        self.json || self.output == Some(Format::Json)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ping the nameserver and show its statistics
    #[command(after_help = STAT_EXAMPLES)]
    Stat,
    /// List registered services
    #[command(after_help = LIST_EXAMPLES)]
    ListServices {
        /// Only services with an interface matching this regex (anchored at the start)
        #[arg(long, value_name = "RE")]
        interface: Option<String>,
        /// Only services whose name matches this regex (anchored at the start)
        #[arg(long, value_name = "RE")]
        service: Option<String>,
        /// Also how each record is kept alive: lease (and what is left of it) or probes, and its revision
        #[arg(long)]
        long: bool,
    },
    /// Find a live provider of an interface
    #[command(after_help = LOCATE_EXAMPLES)]
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
    #[command(after_help = CALL_EXAMPLES)]
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
        /// When the service does not answer within --timeout, locate it again
        /// and call again, up to N more times (each said on stderr). Only for
        /// methods safe to run twice: an unanswered call may still have run
        #[arg(long, value_name = "N", default_value_t = 0)]
        retry: u32,
    },
    /// Register a service (leased with --ttl, else probed by pycomd)
    #[command(after_help = REGISTER_EXAMPLES)]
    Register {
        service: String,
        address: String,
        #[arg(required = true, value_name = "INTERFACE")]
        interfaces: Vec<String>,
        /// Lease length in milliseconds
        #[arg(long, value_name = "MS")]
        ttl: Option<u64>,
        /// A metadata entry of the record (repeatable)
        #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_metadata)]
        metadata: Vec<(String, String)>,
    },
    /// Extend the lease of a service's record (only its own address may)
    #[command(after_help = RENEW_EXAMPLES)]
    Renew { service: String, address: String },
    /// Remove a service's record (only its own address may)
    #[command(after_help = UNREGISTER_EXAMPLES)]
    Unregister { service: String, address: String },
    /// A cluster member's view of its cluster
    #[command(after_help = CLUSTER_EXAMPLES)]
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Publish one message through pycomd's forwarder (once the forwarder
    /// has taken the connection) and exit
    #[command(after_help = PUB_EXAMPLES)]
    Pub {
        /// Dot-separated tokens, e.g. demo.interface.name (not org.pycom.*)
        topic: String,
        /// The message body, as JSON
        #[arg(value_name = "JSON")]
        body: String,
        /// Send a file as an attachment (repeatable, in order)
        #[arg(long = "attach", value_name = "FILE")]
        attach: Vec<std::path::PathBuf>,
    },
    /// Print publications as they arrive: one line each, `TOPIC SEQ BODY`
    /// (with --json, one JSON object per line). Missed messages are said on
    /// stderr, and so is "subscribed" once every later publication will arrive
    #[command(after_help = SUB_EXAMPLES)]
    Sub {
        /// Topic patterns: a.b.c exact, a.*.c one token, a.> the rest
        #[arg(required = true, value_name = "PATTERN")]
        patterns: Vec<String>,
        /// Start with the last value of each matching topic pycomd has
        #[arg(long)]
        last: bool,
        /// Exit after N messages
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print the registry's records, then each change as it happens, one
    /// line each: `REVISION KIND SERVICE ADDRESS INTERFACES METADATA`
    /// (KIND `listed` for the records at the start)
    #[command(after_help = WATCH_EXAMPLES)]
    Watch {
        /// Only services with an interface matching this regex (anchored at the start)
        #[arg(long, value_name = "RE")]
        interface: Option<String>,
        /// Only services whose name matches this regex (anchored at the start)
        #[arg(long, value_name = "RE")]
        service: Option<String>,
        /// Exit after N changes (the records listed at the start not counted)
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Log in to pycomd: the token is saved (owner-only) and carried by
    /// every later pycomctl command until it expires or `pycomctl logout`
    #[command(after_help = LOGIN_EXAMPLES)]
    Login {
        /// The user name (default: $USER)
        user: Option<String>,
        /// Read the password from the first line of standard input instead of the terminal
        #[arg(long)]
        password_stdin: bool,
        /// Print the token on stdout instead of saving it (for PYCOM_TOKEN)
        #[arg(long)]
        print_token: bool,
    },
    /// End the saved token's life at pycomd and remove it
    #[command(after_help = LOGOUT_EXAMPLES)]
    Logout,
    /// Who pycomd says the carried token belongs to, and its roles
    #[command(after_help = WHOAMI_EXAMPLES)]
    Whoami,
    /// Users-file lines and pycomd's access policy
    #[command(after_help = AUTH_EXAMPLES)]
    Auth {
        #[command(subcommand)]
        command: AuthCommand,
    },
    /// The workflows pycomd hosts, with their tasks
    #[command(after_help = WORKFLOW_EXAMPLES)]
    Workflows,
    /// Workflow runs, newest first
    #[command(after_help = WORKFLOW_EXAMPLES)]
    Runs {
        /// Only runs of this workflow (its service path)
        #[arg(long, value_name = "WORKFLOW")]
        workflow: Option<String>,
        /// Only runs in this state: running, succeeded, failed, cancelled, interrupted
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// At most this many (1 to 1000)
        #[arg(long, value_name = "N", default_value_t = 100)]
        limit: usize,
    },
    /// One workflow run: show, start, cancel, redrive
    #[command(after_help = WORKFLOW_EXAMPLES)]
    Run {
        #[command(subcommand)]
        command: RunCommand,
    },
    /// Backups: a consistent snapshot of pycomd's registry, taken while it
    /// runs (restore it with pycomd --restore)
    #[command(after_help = SNAPSHOT_EXAMPLES)]
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCommand,
    },
    /// Print a shell completion script for pycomctl
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print pycomctl's man page, or write one per subcommand into a directory
    #[command(after_help = MAN_EXAMPLES)]
    Man {
        /// Write pycomctl.1 and pycomctl-<subcommand>.1 here instead
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

const WORKFLOW_EXAMPLES: &str = "Examples:
  pycomctl workflows
  pycomctl run start /demo/workflow/1 task1 '{\"n\": 1}'   # prints the run id
  pycomctl runs --state failed
  pycomctl run show 3f2a...
  pycomctl run redrive 3f2a...";

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Every step of a run: attempts, durations, errors, and its result
    Show { run_id: String },
    /// Start a run of TASK of WORKFLOW with JSON args; prints its id (--wait: its result)
    Start {
        workflow: String,
        task: String,
        #[arg(value_name = "JSON", default_value = "{}")]
        args: String,
        /// Wait for the run to end and print its result
        #[arg(long)]
        wait: bool,
    },
    /// Stop a running run (no later step is started; no compensation runs)
    Cancel { run_id: String },
    /// Run a failed or interrupted run again from the step that failed
    Redrive { run_id: String },
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save a consistent snapshot of the registry (pycomd's snapshot
    /// format, checked against its SHA-256) to FILE
    #[command(after_help = SNAPSHOT_EXAMPLES)]
    Save { file: std::path::PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Print a users-file line `USER:$argon2id$...` for a password (asked
    /// twice on the terminal); nothing is sent anywhere
    #[command(after_help = AUTH_EXAMPLES)]
    Passwd {
        user: String,
        /// Read the password from the first line of standard input instead of the terminal
        #[arg(long)]
        password_stdin: bool,
    },
    /// pycomd's access policy: its users file, roles and grants, and what
    /// USER (default: you) may do. Only for admin, or the user itself
    #[command(after_help = AUTH_EXAMPLES)]
    Check { user: Option<String> },
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// This node's role, the leader, the term, the members, commit and applied indices
    #[command(after_help = CLUSTER_EXAMPLES)]
    Status,
    /// Join a new node (started with the cluster's members and its own id):
    /// first as a learner, which catches up, then as a voter
    #[command(after_help = CLUSTER_EXAMPLES)]
    Add {
        id: u64,
        /// Its Raft endpoint, host:port
        #[arg(long)]
        peer: String,
        /// Its request endpoint, tcp://host:port
        #[arg(long)]
        client: String,
    },
    /// Remove a voter from the cluster
    #[command(after_help = CLUSTER_EXAMPLES)]
    Remove { id: u64 },
    /// Hand the leadership to another voter
    #[command(after_help = CLUSTER_EXAMPLES)]
    TransferLeader { id: u64 },
}

fn parse_metadata(entry: &str) -> Result<(String, String), String> {
    match entry.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        Some(_) => Err("the key is empty: expected KEY=VALUE".into()),
        None => Err("no '=': expected KEY=VALUE".into()),
    }
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let nameserver_from = match matches.value_source("nameserver") {
        Some(ValueSource::EnvVariable) => "PYCOM_NAMESERVER",
        _ => "--nameserver",
    };
    match commands::run(&cli, nameserver_from) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`| head`): nothing more to say to anyone.
        Err(commands::Failure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            output::note(format_args!("pycomctl: {e}"));
            ExitCode::from(e.exit_code())
        }
    }
}
