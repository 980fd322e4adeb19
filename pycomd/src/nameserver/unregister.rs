//! `unregister {service, address}`: the owner removes its record.

use super::args::Args;
use super::{Context, Plan};
use crate::registry::{not_owner, unknown, Command};

pub fn unregister(ctx: &mut Context, args: &Args) -> Plan {
    let (service, address) = match (args.str("service"), args.str("address")) {
        (Ok(s), Ok(a)) => (s, a),
        (Err(f), _) | (_, Err(f)) => return Plan::fault(f),
    };
    // Refusals that need no log entry; applying checks again. In a
    // cluster this node's state may be behind (a leader cut off, not yet
    // knowing it): only the log may refuse.
    let write = Plan::Write(Command::Unregister {
        service: service.to_string(),
        address: address.to_string(),
    });
    if ctx.cluster.is_some() {
        return write;
    }
    match ctx.registry.state().get(service) {
        None => Plan::fault(unknown(service, "unregister")),
        Some(record) if record.address != address => Plan::fault(not_owner(record, "unregister")),
        Some(_) => write,
    }
}
