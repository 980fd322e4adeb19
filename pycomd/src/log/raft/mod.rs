//! The replicated log: [`RaftLog`] is the [`Log`] of a cluster member, on
//! openraft.
//!
//! Threads: the Raft thread (`pycomd-raft`, a current-thread tokio runtime)
//! owns the `Raft` handle, the peer listener ([`net`]) and one task per
//! proposal; the log store's writer thread ([`store`]) makes entries
//! durable with group commit and a real fdatasync; the server thread keeps
//! the state, as on a single node. The state machine ([`sm`]) is a proxy:
//! what Raft applies is posted to the server's mailbox as `Committed`, in
//! log order, on every node; snapshots are taken from the server and
//! installed through it.
//!
//! A write proposed here carries this node's id and a sequence number
//! ([`Request`]); the reply waits in [`RaftLog`] and is claimed when this
//! node applies the entry, leader or follower alike, so a client sees its
//! write on the node that answered it. A proposal that cannot be appended
//! (no leader; a leader that moved) is refused with outcome `not_applied`;
//! one appended and then lost or not committed within `write_timeout_ms`
//! answers `unknown`.

pub mod net;
pub mod sm;
pub mod store;

use super::{Log, LogId, LogStats, Proposal, Refused, ReplyTo};
use crate::cluster::{self, Outcome, Role, Status};
use crate::config::{ClusterSettings, Member};
use crate::mailbox::{Event, Poster};
use crate::registry::Command;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RPCError};
use openraft::{Config, ServerState, SnapshotPolicy};
use pycom_client::proto::Fault;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::info;

/// What the log replicates: a command and where it was proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The proposing node, this run of it, and its count of proposals:
    /// that node finds the reply waiting when it applies the entry (and a
    /// restarted node does not mistake an entry of its last run for one
    /// of this run's).
    pub origin: u64,
    pub boot: u64,
    pub seq: u64,
    pub command: Command,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{} {}", self.origin, self.seq, self.command.name())
    }
}

/// What applying answers the proposer's `client_write` (the server
/// answers the client; this only ends the wait).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {}

/// A member as the membership keeps it: how peers and clients reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub peer: String,
    pub client: String,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{{peer {}, client {}}}", self.peer, self.client)
    }
}

openraft::declare_raft_types!(
    /// pycomd's Raft types.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = Node,
);

pub type RaftLogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot's bytes: the registry state as JSON (`log::snapshot`'s data).
pub type SnapshotData = Vec<u8>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
pub type Raft = openraft::Raft<TypeConfig, sm::StateMachine>;

/// pycomd's log id for openraft's.
pub fn log_id(id: &RaftLogId) -> LogId {
    LogId {
        term: id.leader_id.term,
        node: id.leader_id.node_id,
        index: id.index,
    }
}

/// The server's mailbox, shared by the Raft thread's tasks (a poster owns
/// a ZeroMQ socket, which one thread at a time may use).
pub type SharedPoster = Arc<std::sync::Mutex<Poster>>;

pub fn post(poster: &SharedPoster, event: Event) {
    poster.lock().unwrap_or_else(|p| p.into_inner()).post(event);
}

/// What the server thread asks of the Raft thread.
enum Ctl {
    /// A proposal, and whether a follower may hand it to the leader: a
    /// client's write may; the leader's own (an expiry, a probe verdict)
    /// may not, since a node that lost the lead no longer knows the leases.
    Propose(Request, bool),
    Admin(cluster::Admin, u64),
    Shutdown(std::sync::mpsc::Sender<()>),
}

/// Most proposals queued for the Raft thread before writes get code 7.
const QUEUE: usize = 16 * 1024;

pub struct RaftLog {
    me: u64,
    ctl: tokio::sync::mpsc::Sender<Ctl>,
    /// Replies waiting for their entries, by sequence number.
    pending: HashMap<u64, (ReplyTo, Instant)>,
    /// This run of the node: random, so entries of an earlier run are
    /// never taken for this one's.
    boot: u64,
    next_seq: u64,
    write_timeout: Duration,
    thread: Option<JoinHandle<()>>,
    writes: u64,
    last_index: u64,
    /// To say the log stopped, once Raft has.
    poster: SharedPoster,
}

/// The Raft timing for a heartbeat interval: elections after 4 to 8
/// missed heartbeats (openraft adds a leader lease of the longest: a
/// leader killed is replaced after about 1.5 election timeouts).
fn raft_config(settings: &ClusterSettings) -> Result<Arc<Config>, String> {
    let heartbeat = settings.heartbeat_ms;
    let config = Config {
        cluster_name: "pycom".into(),
        heartbeat_interval: heartbeat,
        election_timeout_min: heartbeat * 4,
        election_timeout_max: settings.election_timeout_max_ms(),
        enable_pre_vote: Some(true),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(10_000),
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| format!("cluster timing: {e}"))
}

/// The cluster's files in the data dir.
pub fn raft_dir(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("raft")
}

impl RaftLog {
    /// Start the Raft thread for this node. `sm` is the opened state
    /// machine (its snapshot already handed to the server's state).
    pub fn start(
        settings: &ClusterSettings,
        members: BTreeMap<u64, Member>,
        store: store::LogStore,
        sm: sm::StateMachine,
        poster: SharedPoster,
    ) -> Result<RaftLog, String> {
        let me = settings.node_id;
        let config = raft_config(settings)?;
        let election_timeout = Duration::from_millis(settings.election_timeout_max_ms());
        let listener = std::net::TcpListener::bind(&settings.peer_listen)
            .map_err(|e| format!("cannot bind cluster.peer_listen = {}: {e}", settings.peer_listen))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cluster.peer_listen: {e}"))?;
        let (ctl, mut requests) = tokio::sync::mpsc::channel::<Ctl>(QUEUE);
        let members: BTreeMap<u64, Node> = members
            .into_iter()
            .map(|(id, m)| {
                (
                    id,
                    Node {
                        peer: m.peer,
                        client: m.client,
                    },
                )
            })
            .collect();
        let own_poster = poster.clone();
        let join = settings.join;
        let network = net::PeerNetwork {
            configured: Arc::new(members.clone()),
        };
        let (started_tx, started_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("pycomd-raft".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("cannot start the Raft runtime: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let raft = match Raft::new(me, config, network.clone(), store, sm).await {
                        Ok(raft) => raft,
                        Err(e) => {
                            let _ = started_tx.send(Err(format!("cannot start Raft: {e}")));
                            return;
                        }
                    };
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = started_tx.send(Err(format!("cluster.peer_listen: {e}")));
                            return;
                        }
                    };
                    let contact = net::LeaderContact::default();
                    tokio::spawn(net::serve(listener, me, raft.clone(), contact.clone()));
                    // Every member starts with the same members: the first
                    // start forms the cluster; later ones are told it exists.
                    // A joining node waits to be added.
                    if !join {
                        if let Err(e) = raft.initialize(members).await {
                            if e.api_error().is_none() {
                                let _ = started_tx.send(Err(format!("cannot form the cluster: {e}")));
                                return;
                            }
                        }
                    }
                    let _ = started_tx.send(Ok(()));
                    tokio::spawn(watch(
                        raft.clone(),
                        me,
                        network.clone(),
                        poster.clone(),
                        (contact, election_timeout),
                    ));
                    while let Some(ctl) = requests.recv().await {
                        match ctl {
                            Ctl::Propose(request, forward) => {
                                tokio::spawn(propose(
                                    raft.clone(),
                                    request,
                                    forward,
                                    network.clone(),
                                    poster.clone(),
                                ));
                            }
                            Ctl::Admin(op, id) => {
                                let poster = poster.clone();
                                let raft = raft.clone();
                                tokio::spawn(async move {
                                    let result = admin(&raft, op).await;
                                    post(&poster, Event::AdminDone { id, result });
                                });
                            }
                            Ctl::Shutdown(done) => {
                                let _ = raft.shutdown().await;
                                let _ = done.send(());
                                break;
                            }
                        }
                    }
                });
            })
            .map_err(|e| format!("cannot start the Raft thread: {e}"))?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("the Raft thread stopped while starting".into()),
        }
        info!(node = me, peer = %settings.peer_listen, "cluster member started");
        Ok(RaftLog {
            me,
            ctl,
            pending: HashMap::new(),
            boot: uuid::Uuid::new_v4().as_u64_pair().0,
            next_seq: 0,
            write_timeout: Duration::from_millis(settings.write_timeout_ms),
            thread: Some(thread),
            writes: 0,
            last_index: 0,
            poster: own_poster,
        })
    }
}

impl Log for RaftLog {
    fn propose(&mut self, proposal: Proposal) -> Result<(), Box<Refused>> {
        self.next_seq += 1;
        let request = Request {
            origin: self.me,
            boot: self.boot,
            seq: self.next_seq,
            command: proposal.command.clone(),
        };
        let forward = proposal.reply.is_some();
        if self.ctl.try_send(Ctl::Propose(request, forward)).is_err() {
            let fault = Fault::unavailable(format!(
                "{}: {QUEUE} writes are already waiting for the cluster; nothing was changed: retry",
                proposal.command.name()
            ));
            return Err(Box::new(Refused { proposal, fault }));
        }
        if let Some(reply) = proposal.reply {
            self.pending
                .insert(self.next_seq, (reply, Instant::now() + self.write_timeout));
        }
        Ok(())
    }

    fn close(&mut self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.ctl.try_send(Ctl::Shutdown(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Replies still waiting: their writes may yet commit elsewhere.
        for seq in self.pending.keys().copied().collect::<Vec<_>>() {
            post(
                &self.poster,
                Event::Refused {
                    seq,
                    outcome: Outcome::Unknown,
                    leader: None,
                    why: "this cluster member is stopping".into(),
                },
            );
        }
        post(&self.poster, Event::LogStopped { failed_batches: 0 });
    }

    fn snapshot(&mut self, _snapshot: super::snapshot::Snapshot) {
        // Raft decides when to snapshot (every 10,000 entries) and asks
        // the server for the state itself.
    }

    fn stats(&self) -> LogStats {
        LogStats {
            writes: self.writes,
            last_index: self.last_index,
            ..LogStats::default()
        }
    }

    fn claim(&mut self, origin: u64, boot: u64, seq: u64, index: u64) -> Option<ReplyTo> {
        self.writes += 1;
        self.last_index = self.last_index.max(index);
        if origin != self.me || boot != self.boot {
            return None;
        }
        self.pending.remove(&seq).map(|(reply, _)| reply)
    }

    fn refused(&mut self, seq: u64) -> Option<ReplyTo> {
        self.pending.remove(&seq).map(|(reply, _)| reply)
    }

    fn overdue(&mut self, now: Instant) -> Vec<ReplyTo> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        late.into_iter()
            .filter_map(|seq| self.pending.remove(&seq).map(|(reply, _)| reply))
            .collect()
    }

    fn write_timeout(&self) -> Option<Duration> {
        Some(self.write_timeout)
    }

    fn admin(&mut self, op: cluster::Admin, id: u64) -> Result<(), Fault> {
        self.ctl
            .try_send(Ctl::Admin(op, id))
            .map_err(|_| Fault::unavailable("the cluster member is busy or stopping: retry"))
    }
}

/// Carry out a cluster change on this node (which must lead).
async fn admin(raft: &Raft, op: cluster::Admin) -> Result<serde_json::Value, Fault> {
    use openraft::ChangeMembers;
    use std::collections::BTreeSet;
    let refused =
        |e: openraft::error::RaftError<TypeConfig, ClientWriteError<TypeConfig>>| match e.into_api_error() {
            Some(ClientWriteError::ForwardToLeader(to)) => Fault::unavailable(format!(
                "cluster changes are made by the leader; this node is not it (the leader is {})",
                to.leader_node
                    .map_or_else(|| "not known now".to_string(), |n| n.client)
            )),
            Some(other) => Fault::bad_request(other.to_string()),
            None => Fault::unavailable("the cluster member is stopping"),
        };
    match op {
        cluster::Admin::Add { id, peer, client } => {
            info!(id, %peer, %client, "adding a cluster member: as a learner first");
            raft.add_learner(id, Node { peer, client }, true)
                .await
                .map_err(refused)?;
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(refused)?;
            info!(id, "the new member votes");
            Ok(serde_json::json!({ "added": id }))
        }
        cluster::Admin::Remove { id } => {
            raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(refused)?;
            info!(id, "removed a cluster member");
            Ok(serde_json::json!({ "removed": id }))
        }
        cluster::Admin::TransferLeader { id } => {
            if !raft.is_leader() {
                return Err(Fault::unavailable(
                    "leadership is transferred by the leader; this node is not it",
                ));
            }
            raft.trigger()
                .transfer_leader(id)
                .await
                .map_err(|e| Fault::unavailable(e.to_string()))?;
            Ok(serde_json::json!({ "transferring_to": id }))
        }
    }
}

/// Propose on this node; a follower hands it to the leader over the peer
/// link. Success shows as this node's own apply; failures are posted.
async fn propose(
    raft: Raft,
    request: Request,
    forward: bool,
    network: net::PeerNetwork,
    poster: SharedPoster,
) {
    let seq = request.seq;
    let refuse = |outcome, leader: Option<String>, why: String| {
        post(
            &poster,
            Event::Refused {
                seq,
                outcome,
                leader,
                why,
            },
        );
    };
    // Just after an election no node may name a leader yet (or the leader
    // not yet be sure of its lease): nothing was appended, so asking again
    // a little later is safe, for up to a second.
    let patience = Instant::now() + Duration::from_secs(1);
    let error = loop {
        let error = match raft.client_write(request.clone()).await {
            Ok(_) => return,
            Err(e) => match e.into_api_error() {
                Some(e) => e,
                None => return refuse(Outcome::NotApplied, None, "the cluster member is stopping".into()),
            },
        };
        let leaderless = matches!(&error, ClientWriteError::ForwardToLeader(to) if to.leader_id.is_none());
        if !leaderless || Instant::now() >= patience {
            break error;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    match error {
        ClientWriteError::ForwardToLeader(_) if !forward => refuse(
            Outcome::NotApplied,
            None,
            "this node no longer leads; the new leader decides about leases and probes".into(),
        ),
        ClientWriteError::ForwardToLeader(to) => match (to.leader_id, to.leader_node) {
            (Some(leader), Some(node)) => {
                match net::forward(leader, network.peer(leader, &node), request).await {
                    Ok(Ok(())) => {}
                    Ok(Err(ClientWriteError::ForwardToLeader(to))) => refuse(
                        Outcome::NotApplied,
                        to.leader_node.map(|n| n.client),
                        "the leader moved while the write was on its way".into(),
                    ),
                    Ok(Err(e)) => refuse(Outcome::Unknown, Some(node.client), e.to_string()),
                    Err(RPCError::Unreachable(e)) => refuse(
                        Outcome::NotApplied,
                        Some(node.client),
                        format!("the leader (node {leader}) cannot be reached: {e}"),
                    ),
                    Err(e) => refuse(Outcome::Unknown, Some(node.client), e.to_string()),
                }
            }
            _ => refuse(
                Outcome::NotApplied,
                None,
                "no leader is known (an election may be under way)".into(),
            ),
        },
        ClientWriteError::LogEntryDiscarded(_) => refuse(
            Outcome::Unknown,
            None,
            "the leader changed after the write was appended".into(),
        ),
        other => refuse(Outcome::NotApplied, None, other.to_string()),
    }
}

/// Post this node's view of the cluster whenever it changes.
async fn watch(
    raft: Raft,
    me: u64,
    network: net::PeerNetwork,
    poster: SharedPoster,
    (contact, election_timeout): (net::LeaderContact, Duration),
) {
    let mut metrics = raft.metrics();
    let mut last: Option<Status> = None;
    loop {
        // A leader whose lease a majority has not renewed lately (cut off,
        // or just elected and not yet heard back) takes no writes: its
        // state may be behind. openraft checks the lease without a round
        // trip.
        let leads = metrics.borrow_watched().state == ServerState::Leader;
        let cut_off = leads
            && raft
                .get_read_log_id(openraft::raft::ReadPolicy::LeaseRead)
                .await
                .is_err();
        let status = {
            let m = metrics.borrow_watched();
            let membership = m.membership_config.membership();
            // Clients as this node's configuration gives them, as peers.
            let client = |id: &u64, node: &Node| {
                network
                    .configured
                    .get(id)
                    .map_or_else(|| node.client.clone(), |n| n.client.clone())
            };
            let members: BTreeMap<u64, String> = membership
                .nodes()
                .map(|(id, node)| (*id, client(id, node)))
                .collect();
            let leader = m.current_leader.and_then(|id| {
                membership.get_node(&id).map(|node| cluster::Leader {
                    id,
                    client: client(&id, node),
                })
            });
            Status {
                node: me,
                role: match m.state {
                    ServerState::Leader => Role::Leader,
                    ServerState::Follower => Role::Follower,
                    ServerState::Candidate => Role::Candidate,
                    ServerState::Learner => Role::Learner,
                    ServerState::Shutdown => Role::Shutdown,
                },
                leader,
                term: m.current_term,
                members,
                commit_index: m.local_committed.map_or(0, |c| c.index),
                applied_index: m.last_applied.map_or(0, |a| a.index),
                // A follower (or learner) not hearing from a leader for
                // longer than an election timeout: its reads may be behind.
                cut_off: match m.state {
                    ServerState::Leader => cut_off,
                    _ => contact.silence() > election_timeout,
                },
            }
        };
        if last.as_ref() != Some(&status) {
            last = Some(status.clone());
            post(&poster, Event::Cluster(status));
        }
        // A leader cut off changes nothing Raft reports: look again every
        // tick as well (often while a leader is not sure of its lease).
        let tick = Duration::from_millis(if cut_off { 20 } else { 100 });
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                // Metrics change with every entry; the server needs no
                // more than a few updates a second for indices.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(tick) => {}
        }
    }
}
