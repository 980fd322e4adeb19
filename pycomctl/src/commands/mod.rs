//! One function per subcommand; each talks to pycomd through pycom-client.

mod auth;
mod call;
mod cluster;
mod ops;
mod pubsub;
mod registry;
mod workflow;

use crate::endpoint::{self, Probe};
use crate::token::{self, Source};
use crate::{AuthCommand, Cli, Command};
use pycom_client::{Context, NameserverClient, NameserverHandle};
use std::time::Duration;

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The remote side answered with an error.
    Client(pycom_client::Error),
    Usage(String),
    /// No nameserver answered.
    NoNameserver {
        endpoints: Vec<String>,
        why: String,
    },
    /// The called service did not answer.
    NoService {
        address: String,
        interface: String,
        service: String,
        why: String,
    },
    /// stdout could not be written (a closed pipe ends pycomctl quietly).
    Output(std::io::Error),
}

impl Failure {
    /// 1 remote error (or unwritable output), 2 bad usage, 3 no
    /// nameserver answered, 4 the called service did not answer.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Client(_) | Failure::Output(_) => 1,
            Failure::Usage(_) => 2,
            Failure::NoNameserver { .. } => 3,
            Failure::NoService { .. } => 4,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(e) => write!(f, "{e}"),
            Failure::Usage(m) => write!(f, "{m}"),
            Failure::NoNameserver { endpoints, why } => write!(
                f,
                "no answer from {}: is pycomd running? ({why})",
                endpoints.join(", ")
            ),
            Failure::NoService {
                address,
                interface,
                service,
                why,
            } => write!(
                f,
                "no answer from {address} ({interface} of {service}): {why}; the call may have run there all the same"
            ),
            Failure::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

impl From<pycom_client::Error> for Failure {
    fn from(e: pycom_client::Error) -> Failure {
        Failure::Client(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Output(e)
    }
}

/// What a transport failure amounts to, in a few words.
pub fn unanswered(e: &pycom_client::Error) -> String {
    match e {
        pycom_client::Error::Timeout { timeout_ms, .. } => format!("no reply within {timeout_ms} ms"),
        pycom_client::Error::Transport { source, .. } => format!("no reply: {source}"),
        other => other.to_string(),
    }
}

/// Run the command; `nameserver_from` names where `--nameserver` came
/// from (the flag or `PYCOM_NAMESERVER`), for the usage errors.
pub fn run(cli: &Cli, nameserver_from: &str) -> Result<(), Failure> {
    // Nothing to send: no nameserver needed.
    if let Command::Auth {
        command: AuthCommand::Passwd { user, password_stdin },
    } = &cli.command
    {
        return auth::passwd(user, *password_stdin);
    }
    match &cli.command {
        Command::Completions { shell } => return ops::completions(*shell),
        Command::Man { dir } => return ops::man(dir.as_deref()),
        _ => {}
    }
    let endpoints = endpoint::parse_list(&cli.nameserver)
        .map_err(|why| Failure::Usage(format!("{nameserver_from} {why}")))?;
    let timeout = Duration::from_millis(cli.timeout);
    // The nameservers' CURVE key (--server-key, PYCOM_SERVER_KEY): checked
    // before anything is sent.
    let server_key = cli
        .server_key
        .as_deref()
        .filter(|key| !key.trim().is_empty())
        .map(pycom_client::connection::check_server_key)
        .transpose()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // A plain connect first: where nothing listens, say so now rather than
    // after the timeout, and fail over past it without waiting.
    let probes = endpoint::probe_all(&endpoints, timeout);
    let (mut order, mut dead) = (Vec::new(), Vec::new());
    for (e, probe) in endpoints.iter().zip(&probes) {
        match probe {
            Probe::Open => order.push(e.clone()),
            Probe::Dead(why) => dead.push((e.clone(), why.clone())),
        }
    }
    if order.is_empty() {
        let why = if dead.iter().all(|(_, why)| *why == dead[0].1) {
            format!("no reply: {}", dead[0].1)
        } else {
            let each: Vec<String> = dead.iter().map(|(e, why)| format!("{e}: {why}")).collect();
            format!("no reply: {}", each.join("; "))
        };
        return Err(Failure::NoNameserver { endpoints, why });
    }
    order.extend(dead.into_iter().map(|(e, _)| e));
    let mut ctx = Context::with_nameservers(order)?;
    if let Some(key) = &server_key {
        ctx = ctx.with_server_key(key)?;
    }
    ctx.set_default_timeout(timeout);
    // Every call carries the token: PYCOM_TOKEN's, else the saved one
    // (but a login, which gets a new one).
    let carried = token::current(|why| crate::output::note(format_args!("pycomctl: {why}")));
    if let Some((token, _)) = carried
        .as_ref()
        .filter(|_| !matches!(cli.command, Command::Login { .. }))
    {
        ctx.set_token(token.as_str());
    }
    let source = carried.map(|(_, source)| source);
    dispatch(cli, &ctx, source.as_ref()).map_err(|f| match f {
        // Every call but the one to a service (call.rs maps that one)
        // goes to the nameserver.
        Failure::Client(e) if e.is_unreachable() => Failure::NoNameserver {
            why: match (&e, &server_key) {
                // CURVE refuses silently: a missing or wrong key is a timeout.
                (pycom_client::Error::Timeout { .. }, Some(_)) => format!(
                    "{}; is the server key pycomd's? (its data dir's curve/server.public)",
                    unanswered(&e)
                ),
                (pycom_client::Error::Timeout { .. }, None) => format!(
                    "{}; if pycomd has [security] curve on, give its key: --server-key or PYCOM_SERVER_KEY",
                    unanswered(&e)
                ),
                _ => unanswered(&e),
            },
            endpoints,
        },
        // Refused without a token: say how to get one.
        Failure::Client(pycom_client::Error::AccessDenied(message))
            if source.is_none() && !matches!(cli.command, Command::Login { .. } | Command::Whoami) =>
        {
            Failure::Client(pycom_client::Error::AccessDenied(format!(
                "{message} (pycomctl carries no token: see pycomctl login)"
            )))
        }
        other => other,
    })
}

fn dispatch(cli: &Cli, ctx: &Context, token: Option<&Source>) -> Result<(), Failure> {
    let mut ns = ctx.nameserver();
    match &cli.command {
        Command::Login {
            user,
            password_stdin,
            print_token,
        } => auth::login(cli, ctx, user.as_deref(), *password_stdin, *print_token, token),
        Command::Logout => auth::logout(cli, ctx, token),
        Command::Whoami => auth::whoami(cli, ctx, token),
        Command::Auth {
            command: AuthCommand::Check { user },
        } => auth::check(cli, ctx, user.as_deref()),
        Command::Auth {
            command: AuthCommand::Passwd { user, password_stdin },
        } => auth::passwd(user, *password_stdin),
        Command::Stat => registry::stat(cli, &mut ns),
        Command::Workflows => workflow::list(cli, ctx),
        Command::Runs {
            workflow,
            state,
            limit,
        } => workflow::runs(cli, ctx, workflow, state, *limit),
        Command::Run { command } => workflow::run(cli, ctx, command),
        Command::Cluster {
            command: crate::ClusterCommand::Status,
        } => cluster::status(cli, &mut ns),
        Command::Cluster { command } => cluster::change(cli, ctx, &mut ns, command),
        Command::ListServices {
            interface,
            service,
            long,
        } => registry::list_services(cli, &mut ns, interface.as_deref(), service.as_deref(), *long),
        Command::Locate {
            interface,
            service,
            all,
        } => registry::locate(cli, &mut ns, interface, service.as_deref(), *all),
        Command::Register {
            service,
            address,
            interfaces,
            ttl,
            metadata,
        } => registry::register(
            cli,
            &mut ns,
            registry::NewRecord {
                service,
                address,
                interfaces,
                ttl_ms: *ttl,
                metadata,
            },
        ),
        Command::Renew { service, address } => registry::renew(cli, &mut ns, service, address),
        Command::Unregister { service, address } => registry::unregister(cli, &mut ns, service, address),
        Command::Call {
            interface,
            method,
            args,
            service,
            attach,
            save_attachments,
            retry,
        } => call::call(
            cli,
            ctx,
            call::Target {
                interface,
                method,
                args: args.as_deref(),
                service: service.as_deref(),
                attach,
                save_attachments: save_attachments.as_deref(),
                retries: *retry,
            },
        ),
        Command::Snapshot {
            command: crate::SnapshotCommand::Save { file },
        } => ops::save(cli, ctx, file),
        Command::Completions { shell } => ops::completions(*shell),
        Command::Man { dir } => ops::man(dir.as_deref()),
        Command::Pub { topic, body, attach } => pubsub::publish(cli, ctx, topic, body, attach),
        Command::Sub {
            patterns,
            last,
            count,
        } => pubsub::subscribe(cli, ctx, patterns, *last, *count),
        Command::Watch {
            interface,
            service,
            count,
        } => pubsub::watch(cli, ctx, interface.as_deref(), service.as_deref(), *count),
    }
}

/// The nameserver client every command uses: failover over `--nameserver`.
pub type Nameserver = NameserverClient<NameserverHandle>;
