//! `unregister {service, address}`: the owner (or an admin) removes its record.

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
    if let Err(fault) = ctx.may_write(service, "unregister") {
        return Plan::fault(fault);
    }
    let owner = ctx.caller.owner();
    let admin = ctx.caller.is_admin();
    let write = Plan::Write(Command::Unregister {
        service: service.to_string(),
        address: address.to_string(),
        owner: owner.map(str::to_string),
        admin,
    });
    if ctx.cluster.is_some() {
        return write;
    }
    match ctx.registry.state().get(service) {
        None => Plan::fault(unknown(service, "unregister")),
        Some(record) if !admin && !record.owned_by(address, owner) => {
            Plan::fault(not_owner(record, "unregister", owner))
        }
        Some(_) => write,
    }
}
