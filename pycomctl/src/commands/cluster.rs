//! cluster status, add, remove, transfer-leader: a member's view of its
//! cluster (from `stat`), and changes asked of the leader.

use super::{Failure, Nameserver};
use crate::output;
use crate::{Cli, ClusterCommand};
use pycom_client::Context;
use serde_json::{json, Value};

/// The leader's request endpoint, as the member asked says.
fn leader(ns: &mut Nameserver) -> Result<String, Failure> {
    let stat = ns.stat()?;
    let cluster = stat.get("cluster").filter(|c| c.is_object()).ok_or_else(|| {
        Failure::Client(pycom_client::Error::Data(
            "this pycomd is a single node, not a cluster member (no [cluster] in its configuration)".into(),
        ))
    })?;
    cluster
        .get("leader")
        .and_then(|l| l.get("client"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            Failure::Client(pycom_client::Error::Unavailable(
                "the cluster has no leader now (an election may be under way): retry".into(),
            ))
        })
}

/// Ask the leader for a change, and print what it did.
pub fn change(
    cli: &Cli,
    ctx: &Context,
    ns: &mut Nameserver,
    command: &ClusterCommand,
) -> Result<(), Failure> {
    let (method, args) = match command {
        ClusterCommand::Status => return status(cli, ns),
        ClusterCommand::Add { id, peer, client } => {
            ("add", json!({"id": id, "peer": peer, "client": client}))
        }
        ClusterCommand::Remove { id } => ("remove", json!({ "id": id })),
        ClusterCommand::TransferLeader { id } => ("transfer_leader", json!({ "id": id })),
    };
    let leader = leader(ns)?;
    // A connection that carries pycomctl's token, as every call does.
    let mut conn = ctx.connection(&leader)?;
    // Adding a member waits for it to catch up.
    conn.set_timeout(ctx.default_timeout().max(std::time::Duration::from_secs(30)));
    let done = conn.invoke("org.pycom.cluster", method, args)?;
    if cli.json() {
        output::json(&done)?;
    } else {
        println!("{method}: done ({done}) by the leader at {leader}");
    }
    Ok(())
}

pub fn status(cli: &Cli, ns: &mut Nameserver) -> Result<(), Failure> {
    let stat = ns.stat()?;
    let Some(cluster) = stat.get("cluster").filter(|c| c.is_object()) else {
        return Err(Failure::Client(pycom_client::Error::Data(
            "this pycomd is a single node, not a cluster member (no [cluster] in its configuration)".into(),
        )));
    };
    if cli.json() {
        output::json(cluster)?;
        return Ok(());
    }
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    };
    let node = text(cluster.get("node"));
    let leader = cluster.get("leader");
    let leader_id = text(leader.and_then(|l| l.get("id")));
    println!(
        "node {node}: {}, term {}, leader {} ({}), commit {} applied {}",
        text(cluster.get("role")),
        text(cluster.get("term")),
        leader_id,
        text(leader.and_then(|l| l.get("client"))),
        text(cluster.get("commit_index")),
        text(cluster.get("applied_index")),
    );
    let rows: Vec<Vec<String>> = cluster
        .get("members")
        .and_then(Value::as_object)
        .map(|members| {
            members
                .iter()
                .map(|(id, client)| {
                    let what = match (id == &leader_id, id == &node) {
                        (true, true) => "leader (this node)",
                        (true, false) => "leader",
                        (false, true) => "this node",
                        (false, false) => "",
                    };
                    vec![id.clone(), text(Some(client)), what.to_string()]
                })
                .collect()
        })
        .unwrap_or_default();
    output::table(&["ID", "CLIENT", ""], &rows)?;
    Ok(())
}
