//! pycomd as a replicated cluster (Raft): several real daemons, links cut
//! through proxies, processes killed and stopped, client histories checked
//! for linearizability. The harness is `pycom_e2e::cluster`.

use pycom_client::Code;
use pycom_e2e::cluster::{Cluster, History};
use pycom_e2e::{leased, wait_until};
use std::time::Duration;

#[test]
fn three_nodes_elect_a_leader_and_replicate_a_register() {
    let cluster = Cluster::start(3);
    let leader = cluster.expect_leader(Duration::from_secs(10));
    let follower = cluster.follower(Duration::from_secs(10));
    assert_ne!(leader, follower);

    // A register sent to a follower is acknowledged once committed.
    let history = History::new();
    let reg = leased(
        "/cluster/first",
        "tcp://127.0.0.1:7001",
        &["cluster.test"],
        600_000,
    );
    let mut ns = cluster.ns(follower);
    history
        .register(1, &mut ns, &reg)
        .unwrap_or_else(|e| panic!("register through follower {follower}: {e}; {}", cluster.report()));

    // Every node has it (followers apply it once they learn the commit).
    for id in cluster.ids() {
        let mut ns = cluster.ns(id);
        let seen = wait_until(Duration::from_secs(10), || {
            ns.locate("cluster.test", Some("/cluster/first"))
                .is_ok_and(|info| info.address == reg.address)
        });
        assert!(seen, "node {id} never located the record; {}", cluster.report());
    }
    assert!(
        cluster.wait_converged(Duration::from_secs(10)),
        "the nodes did not converge; {}",
        cluster.report()
    );

    // Ownership is the cluster's: another address is refused, on any node.
    let mut other = cluster.ns(leader);
    let thief = leased(
        "/cluster/first",
        "tcp://127.0.0.1:7002",
        &["cluster.test"],
        600_000,
    );
    let err = history.register(2, &mut other, &thief).unwrap_err();
    assert_eq!(err.code(), Some(Code::AccessDenied), "{err}");
    for id in cluster.ids() {
        history
            .read(3, &mut cluster.ns(id), "cluster.test", "/cluster/first")
            .unwrap();
    }
    history.check().unwrap_or_else(|e| panic!("{e}"));
}
