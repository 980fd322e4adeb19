//! One function per subcommand; each talks to pycomd through pycom-client.

mod call;
mod registry;

use crate::{Cli, Command};
use pycom_client::{Context, NameserverClient, NameserverHandle};
use std::time::Duration;

/// Why a command failed; decides the exit code.
#[derive(Debug)]
pub enum Failure {
    Client(pycom_client::Error),
    Usage(String),
}

impl Failure {
    /// 1 for a remote error, 2 for bad usage, 3 when nothing answered.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Client(e) if e.is_unreachable() => 3,
            Failure::Client(_) => 1,
            Failure::Usage(_) => 2,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(e) => write!(f, "{e}"),
            Failure::Usage(m) => write!(f, "{m}"),
        }
    }
}

impl From<pycom_client::Error> for Failure {
    fn from(e: pycom_client::Error) -> Failure {
        Failure::Client(e)
    }
}

pub fn run(cli: &Cli) -> Result<(), Failure> {
    let ctx = Context::new(&cli.nameserver)?;
    ctx.set_default_timeout(Duration::from_millis(cli.timeout));
    let mut ns = ctx.nameserver();
    match &cli.command {
        Command::Stat => registry::stat(cli, &mut ns),
        Command::ListServices { interface, service } => {
            registry::list_services(cli, &mut ns, interface.as_deref(), service.as_deref())
        }
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
        } => registry::register(cli, &mut ns, service, address, interfaces, *ttl),
        Command::Unregister { service, address } => registry::unregister(cli, &mut ns, service, address),
        Command::Call {
            interface,
            method,
            args,
            service,
            attach,
            save_attachments,
        } => call::call(
            cli,
            &ctx,
            call::Target {
                interface,
                method,
                args: args.as_deref(),
                service: service.as_deref(),
                attach,
                save_attachments: save_attachments.as_deref(),
            },
        ),
    }
}

/// The nameserver client every command uses: failover over `--nameserver`.
pub type Nameserver = NameserverClient<NameserverHandle>;
