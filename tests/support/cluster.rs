//! A pycomd cluster for fault tests: n real daemons, each with its own data
//! dir, log, client port, Raft peer port and config file, optionally with a
//! [`LinkProxy`] on every ordered pair of nodes so that links can be cut;
//! process faults (kill -9, SIGSTOP/SIGCONT, SIGTERM, restart); who leads;
//! and a [`History`] recorder for the [linearizability](crate::linearizability)
//! checker.
//!
//! Links: node i reaches node j's peer port through proxy (i, j), whose
//! address node i's config gives as member j's `peer` (each node has its
//! own config, with its own view of the peers' addresses); likewise, with
//! [`ClusterOptions::proxy_relays`], j's client endpoint through a second
//! proxy (i, j), given as member j's `client` (the way a follower relays
//! writes to the leader), so that a partition cuts relays too. The proxies
//! of (i, j) carry the connections i opens to j: i's requests to j and j's
//! replies to them. So [`Cluster::cut`]`(i, j)` is one-way (i cannot call
//! j; j can still call i); [`Cluster::disconnect`] and
//! [`Cluster::partition`] cut both ways. Test clients always reach the
//! nodes directly.
//!
//! This needs pycomd to reach each peer at the address its own config
//! gives, not at one stored in the replicated membership (which is one
//! node's view for all).

use crate::linearizability::{self, CheckError, Outcome, RegistryInput, RegistryOp, RegistryOutput};
use crate::proxy::LinkProxy;
use crate::{wait_until, Daemon};
use pycom_client::proxy::Invoker;
use pycom_client::{Code, Connection, Context, NameserverClient, Registration, ServiceInfo};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a [`Cluster`] is set up.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// A [`LinkProxy`] on every ordered pair of nodes for the Raft peer
    /// port (needed to cut links).
    pub proxies: bool,
    /// With `proxies`, one for the client endpoint too (relayed writes).
    pub proxy_relays: bool,
    /// `[cluster] write_timeout_ms`.
    pub write_timeout_ms: u64,
    /// Extra top-level config lines (`key = value`).
    pub settings: Vec<String>,
    /// Extra `[cluster]` lines (`key = value`).
    pub cluster_settings: Vec<String>,
    /// Extra `PYCOMD_*` environment of every node.
    pub env: Vec<(String, String)>,
    /// Extra flags of every node.
    pub args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            proxies: true,
            proxy_relays: true,
            write_timeout_ms: 2000,
            settings: Vec::new(),
            cluster_settings: Vec::new(),
            env: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// One member as a node's config lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// `host:port` this node reaches the member's Raft port at.
    pub peer: String,
    /// The member's client endpoint (`tcp://host:port`).
    pub client: String,
}

/// Everything one node's config file says.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: u64,
    pub listen: String,
    pub data_dir: PathBuf,
    pub peer_listen: String,
    pub write_timeout_ms: u64,
    /// Every member, this node included, in id order.
    pub members: Vec<Member>,
    pub settings: Vec<String>,
    pub cluster_settings: Vec<String>,
}

impl NodeConfig {
    /// The TOML pycomd reads with `--config`.
    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        t.push_str(&format!("listen = {}\n", toml_string(&self.listen)));
        t.push_str(&format!(
            "data_dir = {}\n",
            toml_string(&self.data_dir.to_string_lossy())
        ));
        for line in &self.settings {
            t.push_str(line);
            t.push('\n');
        }
        t.push_str("\n[cluster]\n");
        t.push_str(&format!("node_id = {}\n", self.node_id));
        t.push_str(&format!("peer_listen = {}\n", toml_string(&self.peer_listen)));
        t.push_str(&format!("write_timeout_ms = {}\n", self.write_timeout_ms));
        for line in &self.cluster_settings {
            t.push_str(line);
            t.push('\n');
        }
        t.push_str("\n[cluster.members]\n");
        for m in &self.members {
            t.push_str(&format!(
                "{} = {{ peer = {}, client = {} }}\n",
                m.id,
                toml_string(&m.peer),
                toml_string(&m.client)
            ));
        }
        t
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The ports of one node.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    peer: u16,
}

/// The configs of every node: node i lists member j (j != i) at
/// `view(i, j)`, its peer address and client endpoint as i reaches them.
fn node_configs(
    ports: &[Ports],
    data_dirs: &[PathBuf],
    view: impl Fn(u64, u64) -> (String, String),
    options: &ClusterOptions,
) -> Vec<NodeConfig> {
    let ids = 1..=ports.len() as u64;
    ids.clone()
        .map(|i| {
            let me = ports[(i - 1) as usize];
            NodeConfig {
                node_id: i,
                listen: format!("tcp://127.0.0.1:{}", me.client),
                data_dir: data_dirs[(i - 1) as usize].clone(),
                peer_listen: format!("127.0.0.1:{}", me.peer),
                write_timeout_ms: options.write_timeout_ms,
                members: ids
                    .clone()
                    .map(|j| {
                        let (peer, client) = if i == j {
                            (
                                format!("127.0.0.1:{}", me.peer),
                                format!("tcp://127.0.0.1:{}", me.client),
                            )
                        } else {
                            view(i, j)
                        };
                        Member { id: j, peer, client }
                    })
                    .collect(),
                settings: options.settings.clone(),
                cluster_settings: options.cluster_settings.clone(),
            }
        })
        .collect()
}

/// One node of a [`Cluster`].
pub struct Node {
    pub id: u64,
    /// The process (its client endpoint, log, data dir...).
    pub daemon: Daemon,
    pub peer_port: u16,
    pub config_path: PathBuf,
    pub config: NodeConfig,
    /// SIGSTOPped (and not SIGCONTinued since).
    stopped: bool,
}

impl Node {
    /// Where the node keeps its files: config, log, `data/`.
    pub fn dir(&self) -> &Path {
        self.config_path.parent().expect("the node's directory")
    }

    /// SIGSTOPped (and not continued since).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }
}

/// n pycomd processes forming one cluster; every process is killed (and
/// every proxy closed) when dropped. Node ids are 1..=n.
pub struct Cluster {
    // Dropped first: the processes, then the links.
    nodes: Vec<Node>,
    links: BTreeMap<(u64, u64), Link>,
    zmq: zmq::Context,
}

/// The proxies node i reaches node j through.
struct Link {
    peer: LinkProxy,
    client: Option<LinkProxy>,
}

impl Link {
    fn each(&self, f: impl Fn(&LinkProxy)) {
        f(&self.peer);
        if let Some(c) = &self.client {
            f(c);
        }
    }
}

/// The `stat` of each live node (`None`: no answer).
pub type Stats = Vec<(u64, Option<Value>)>;

impl Cluster {
    /// n nodes with proxies on every link, started and serving (not
    /// necessarily with a leader yet: see [`Cluster::leader`]).
    pub fn start(n: usize) -> Cluster {
        Cluster::with(n, ClusterOptions::default())
    }

    pub fn with(n: usize, options: ClusterOptions) -> Cluster {
        assert!(n >= 1, "a cluster has at least one node");
        // The nodes' ports stay bound until the processes start, so that
        // the proxies (and parallel tests) cannot take them meanwhile.
        let reserve = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            let port = l.local_addr().expect("its address").port();
            (port, l)
        };
        let mut reserved = Vec::new();
        let ports: Vec<Ports> = (0..n)
            .map(|_| {
                let (client, a) = reserve();
                let (peer, b) = reserve();
                reserved.extend([a, b]);
                Ports { client, peer }
            })
            .collect();
        let mut links = BTreeMap::new();
        if options.proxies {
            for i in 1..=n as u64 {
                for j in (1..=n as u64).filter(|&j| j != i) {
                    let to = |port: u16| LinkProxy::start(SocketAddr::from(([127, 0, 0, 1], port)));
                    let p = ports[(j - 1) as usize];
                    let link = Link {
                        peer: to(p.peer),
                        client: options.proxy_relays.then(|| to(p.client)),
                    };
                    links.insert((i, j), link);
                }
            }
        }
        let dirs: Vec<tempfile::TempDir> = (0..n)
            .map(|_| {
                tempfile::Builder::new()
                    .prefix("pycom-cluster")
                    .tempdir()
                    .expect("temp dir")
            })
            .collect();
        let data_dirs: Vec<PathBuf> = dirs.iter().map(|d| d.path().join("data")).collect();
        let view = |i: u64, j: u64| {
            let p = ports[(j - 1) as usize];
            let link = links.get(&(i, j));
            let peer = match link {
                Some(l) => l.peer.addr().to_string(),
                None => format!("127.0.0.1:{}", p.peer),
            };
            let client = match link.and_then(|l| l.client.as_ref()) {
                Some(c) => format!("tcp://{}", c.addr()),
                None => format!("tcp://127.0.0.1:{}", p.client),
            };
            (peer, client)
        };
        let configs = node_configs(&ports, &data_dirs, view, &options);
        // No forwarder unless asked: its ports, picked by the system, could
        // take one of the ports above between their release and the launch.
        let env: Vec<(&str, &str)> = std::iter::once(("PYCOMD_PUBSUB__ENABLED", "false"))
            .chain(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect();
        let mut nodes = Vec::new();
        for ((dir, config), p) in dirs.into_iter().zip(configs).zip(&ports) {
            let config_path = dir.path().join("pycomd.toml");
            std::fs::write(&config_path, config.to_toml()).expect("write the node's config");
            let mut args: Vec<String> = vec!["--config".into(), config_path.display().to_string()];
            args.extend(options.args.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let data_dir = config.data_dir.clone();
            nodes.push(Node {
                id: config.node_id,
                daemon: Daemon::unstarted(p.client, dir, data_dir, &env, &args),
                peer_port: p.peer,
                config_path,
                config,
                stopped: false,
            });
        }
        let mut cluster = Cluster {
            nodes,
            links,
            zmq: zmq::Context::new(),
        };
        drop(reserved);
        // All at once: a node may wait for its peers before it serves.
        for node in &mut cluster.nodes {
            node.daemon.launch();
        }
        for node in &mut cluster.nodes {
            node.daemon.wait_serving();
        }
        cluster
    }

    /// The node ids, 1..=n.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, id: u64) -> &Node {
        self.nodes
            .get((id as usize).wrapping_sub(1))
            .unwrap_or_else(|| panic!("no node {id} in a cluster of {}", self.nodes.len()))
    }

    fn node_mut(&mut self, id: u64) -> &mut Node {
        let n = self.nodes.len();
        self.nodes
            .get_mut((id as usize).wrapping_sub(1))
            .unwrap_or_else(|| panic!("no node {id} in a cluster of {n}"))
    }

    /// Node `id`'s process.
    pub fn daemon(&self, id: u64) -> &Daemon {
        &self.node(id).daemon
    }

    /// Node `id`'s client endpoint.
    pub fn endpoint(&self, id: u64) -> &str {
        &self.node(id).daemon.endpoint
    }

    /// Every client endpoint, comma-separated, in id order (for
    /// [`Context::new`] and `PYCOM_NAMESERVER`).
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.daemon.endpoint.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client context over every node, with failover.
    pub fn context(&self) -> Context {
        Context::new(&self.endpoints()).expect("a context for the cluster")
    }

    /// A nameserver client of node `id` alone, with a 5 s timeout.
    pub fn ns(&self, id: u64) -> NameserverClient {
        self.ns_with_timeout(id, 5000)
    }

    pub fn ns_with_timeout(&self, id: u64, ms: u64) -> NameserverClient {
        let mut conn = Connection::open(&self.zmq, self.endpoint(id)).expect("connect");
        conn.set_timeout(Duration::from_millis(ms));
        NameserverClient::new(conn)
    }

    /// Started, and neither killed nor stopped.
    pub fn is_live(&self, id: u64) -> bool {
        let n = self.node(id);
        n.daemon.is_started() && !n.stopped
    }

    /// The live nodes' ids.
    pub fn live(&self) -> Vec<u64> {
        self.ids().into_iter().filter(|&id| self.is_live(id)).collect()
    }

    /// Node `id`'s `stat` (1 s timeout), or `None` when it is not live or
    /// does not answer.
    pub fn stat(&self, id: u64) -> Option<Value> {
        if !self.is_live(id) {
            return None;
        }
        self.ns_with_timeout(id, 1000).stat().ok()
    }

    /// The `stat` of every live node.
    pub fn stats(&self) -> Stats {
        self.live().into_iter().map(|id| (id, self.stat(id))).collect()
    }

    /// The leader, once one is agreed on (see [`agreed_leader`]), polling
    /// until `timeout`.
    pub fn leader(&self, timeout: Duration) -> Option<u64> {
        let mut found = None;
        wait_until(timeout, || {
            found = agreed_leader(&self.stats(), self.nodes.len());
            found.is_some()
        });
        found
    }

    /// Like [`Cluster::leader`], but panics (with every node's stat and
    /// log) when there is none.
    pub fn expect_leader(&self, timeout: Duration) -> u64 {
        match self.leader(timeout) {
            Some(id) => id,
            None => panic!("no leader within {timeout:?}; {}", self.report()),
        }
    }

    /// Some live node other than the leader (which must exist).
    pub fn follower(&self, timeout: Duration) -> u64 {
        let leader = self.expect_leader(timeout);
        self.live()
            .into_iter()
            .find(|&id| id != leader)
            .unwrap_or_else(|| panic!("no live follower; {}", self.report()))
    }

    /// Whether every live node reports the same `revision` (and
    /// `cluster.applied_index`), polling until `timeout`.
    pub fn wait_converged(&self, timeout: Duration) -> bool {
        wait_until(timeout, || converged(&self.stats()))
    }

    /// Every node's state, stat and log, for assertion messages.
    pub fn report(&self) -> String {
        let mut r = String::new();
        for n in &self.nodes {
            let state = if !n.daemon.is_started() {
                "down"
            } else if n.stopped {
                "stopped"
            } else {
                "live"
            };
            let stat = self
                .stat(n.id)
                .map(|v| v.get("cluster").cloned().unwrap_or(v).to_string())
                .unwrap_or_else(|| "-".into());
            r.push_str(&format!(
                "\n== node {} ({state}) {} peer port {}\nstat: {stat}\nlog:\n{}",
                n.id,
                n.daemon.endpoint,
                n.peer_port,
                n.daemon.log()
            ));
        }
        r
    }

    // Processes.

    /// SIGKILL node `id` and reap it.
    pub fn kill9(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.daemon.kill9();
        node.stopped = false;
    }

    /// SIGSTOP node `id`: it stays, silent, until [`Cluster::cont`].
    pub fn stop(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.daemon.signal("STOP");
        node.stopped = true;
    }

    /// SIGCONT a node stopped with [`Cluster::stop`].
    pub fn cont(&mut self, id: u64) {
        let node = self.node_mut(id);
        node.daemon.signal("CONT");
        node.stopped = false;
    }

    /// SIGTERM node `id` (continuing it first if stopped) and wait for its
    /// exit status.
    pub fn terminate(&mut self, id: u64) -> ExitStatus {
        if self.node(id).stopped {
            self.cont(id);
        }
        self.node_mut(id).daemon.terminate()
    }

    /// Start node `id` again, with the same ports, data and config (after
    /// SIGTERM first when it runs); waits until it serves.
    pub fn restart(&mut self, id: u64) {
        if self.node(id).daemon.is_started() {
            let status = self.terminate(id);
            assert!(status.success(), "node {id} exited with {status} on SIGTERM");
        }
        self.node_mut(id).daemon.spawn();
    }

    // Links.

    fn link(&self, i: u64, j: u64) -> &Link {
        self.links
            .get(&(i, j))
            .unwrap_or_else(|| panic!("no link ({i}, {j}): start the cluster with proxies, i != j"))
    }

    /// The proxy node i reaches node j's Raft peer port through.
    pub fn proxy(&self, i: u64, j: u64) -> &LinkProxy {
        &self.link(i, j).peer
    }

    /// The proxy node i reaches node j's client endpoint through (relayed
    /// writes), with [`ClusterOptions::proxy_relays`].
    pub fn relay_proxy(&self, i: u64, j: u64) -> Option<&LinkProxy> {
        self.link(i, j).client.as_ref()
    }

    /// Reset what i opens to j (one way), until healed.
    pub fn cut(&self, i: u64, j: u64) {
        self.link(i, j).each(LinkProxy::cut);
    }

    /// Silently hold what i sends to j (one way), until healed.
    pub fn blackhole(&self, i: u64, j: u64) {
        self.link(i, j).each(LinkProxy::blackhole);
    }

    /// Forward again from i to j.
    pub fn heal(&self, i: u64, j: u64) {
        self.link(i, j).each(LinkProxy::heal);
    }

    /// Cut i and j off from each other, both ways.
    pub fn disconnect(&self, i: u64, j: u64) {
        self.cut(i, j);
        self.cut(j, i);
    }

    /// Cut every link between `side` and the other nodes, both ways.
    pub fn partition(&self, side: &[u64]) {
        self.crossing(side, LinkProxy::cut);
    }

    /// Blackhole every link between `side` and the other nodes, both ways.
    pub fn partition_blackhole(&self, side: &[u64]) {
        self.crossing(side, LinkProxy::blackhole);
    }

    /// Cut node `id` off from every other node.
    pub fn isolate(&self, id: u64) {
        self.partition(&[id]);
    }

    /// Every link forwards again.
    pub fn heal_all(&self) {
        for link in self.links.values() {
            link.each(LinkProxy::heal);
        }
    }

    fn crossing(&self, side: &[u64], f: impl Fn(&LinkProxy)) {
        for (&(i, j), link) in &self.links {
            if side.contains(&i) != side.contains(&j) {
                link.each(&f);
            }
        }
    }
}

/// The leader the live nodes agree on, from their `stat`s (`live`: the
/// answers of the live nodes, `None` for no answer; `size`: the number of
/// members). Trusted only when the node itself says role "leader", and
/// nodes that name it leader in its term are a majority of the live nodes
/// and a quorum of the cluster: a deposed leader that has not heard of its
/// successor, or a minority that lost touch, is never taken for it.
pub fn agreed_leader(live: &[(u64, Option<Value>)], size: usize) -> Option<u64> {
    struct View {
        id: u64,
        role: String,
        leader: Option<u64>,
        term: Option<u64>,
        /// A leader not sure of its lease takes no writes yet.
        cut_off: bool,
    }
    let view = |id: u64, v: &Value| -> Option<View> {
        let c = v.get("cluster")?;
        Some(View {
            id,
            role: c.get("role")?.as_str()?.to_string(),
            leader: c.get("leader").and_then(|l| l.get("id")).and_then(Value::as_u64),
            term: c.get("term").and_then(Value::as_u64),
            cut_off: c.get("cut_off").and_then(Value::as_bool).unwrap_or(false),
        })
    };
    let views: Vec<View> = live.iter().filter_map(|(id, v)| view(*id, v.as_ref()?)).collect();
    // Every node that says it leads (a deposed one may still say so).
    views
        .iter()
        .filter(|v| v.role == "leader" && v.leader == Some(v.id) && !v.cut_off)
        .find(|claim| {
            let agree = views
                .iter()
                .filter(|v| v.leader == Some(claim.id) && v.term == claim.term)
                .count();
            agree * 2 > live.len() && agree * 2 > size
        })
        .map(|claim| claim.id)
}

/// Whether every live node answered, with the same `revision` and
/// `cluster.applied_index` (absent counts as a value).
pub fn converged(live: &[(u64, Option<Value>)]) -> bool {
    let key = |v: &Value| {
        (
            v.get("revision").and_then(Value::as_u64),
            v.get("cluster")
                .and_then(|c| c.get("applied_index"))
                .and_then(Value::as_u64),
        )
    };
    let mut keys = live.iter().map(|(_, v)| v.as_ref().map(key));
    match keys.next() {
        Some(Some(first)) => first.0.is_some() && keys.all(|k| k == Some(first)),
        _ => false,
    }
}

/// Records the operations of many clients (threads) on the registry, for
/// [`linearizability::check_registry`]. Cheap to clone: clones record into
/// the same history. Times are ns from the recorder's creation.
///
/// The helpers ([`History::register`], [`History::unregister`],
/// [`History::read`]) make the call and record it, classified: code 5 is
/// a refusal, code 3 (unregister, locate) "not found"; anything else that
/// is not a success (a timeout, code 7, a transport error) is an unknown
/// outcome. Use leases that outlive the test: expiry is not modelled.
/// Note that a failover client ([`Context::nameserver`]) may send a call
/// twice: the history sees one call, which is what its caller saw.
#[derive(Clone)]
pub struct History {
    start: Instant,
    ops: Arc<Mutex<Vec<RegistryOp>>>,
}

impl Default for History {
    fn default() -> History {
        History::new()
    }
}

/// A call recorded as invoked, not yet returned; recorded with an unknown
/// outcome if dropped without [`Pending::returned`] (a client that panicked).
pub struct Pending {
    history: History,
    op: Option<RegistryOp>,
}

impl Pending {
    /// It returned `output` now.
    pub fn returned(mut self, output: RegistryOutput) {
        let at = self.history.now();
        if let Some(mut op) = self.op.take() {
            op.outcome = Outcome::Returned { at, output };
            self.history.push(op);
        }
    }

    /// Whether it took effect is unknown (timeout, code 7...).
    pub fn unknown(mut self) {
        if let Some(op) = self.op.take() {
            self.history.push(op);
        }
    }

    /// Record `output`, or an unknown outcome for `None`.
    pub fn finish(self, output: Option<RegistryOutput>) {
        match output {
            Some(o) => self.returned(o),
            None => self.unknown(),
        }
    }

    /// It certainly did not take effect (code 7 with outcome
    /// `not_applied`): left out of the history, so that the checker holds
    /// pycomd to that claim.
    pub fn discard(mut self) {
        self.op = None;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(op) = self.op.take() {
            self.history.push(op);
        }
    }
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            ops: Arc::default(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn push(&self, op: RegistryOp) {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).push(op);
    }

    /// Record that `client` invokes `input` on `key` now.
    pub fn invoke(&self, client: u64, key: &str, input: RegistryInput) -> Pending {
        Pending {
            op: Some(RegistryOp {
                client,
                key: key.to_string(),
                input,
                call: self.now(),
                outcome: Outcome::Unknown,
            }),
            history: self.clone(),
        }
    }

    /// `register`, recorded.
    pub fn register<I: Invoker>(
        &self,
        client: u64,
        ns: &mut NameserverClient<I>,
        reg: &Registration,
    ) -> pycom_client::Result<Option<u64>> {
        let input = RegistryInput::Register {
            address: reg.address.clone(),
        };
        let pending = self.invoke(client, &reg.service, input);
        let result = ns.register(reg);
        pending.finish(classify_write(&result, false));
        result
    }

    /// `unregister`, recorded.
    pub fn unregister<I: Invoker>(
        &self,
        client: u64,
        ns: &mut NameserverClient<I>,
        service: &str,
        address: &str,
    ) -> pycom_client::Result<Value> {
        let input = RegistryInput::Unregister {
            address: address.to_string(),
        };
        let pending = self.invoke(client, service, input);
        let result = ns.unregister(service, address);
        pending.finish(classify_write(&result, true));
        result
    }

    /// Read who owns `service`: `locate(interface, service)`, recorded.
    pub fn read<I: Invoker>(
        &self,
        client: u64,
        ns: &mut NameserverClient<I>,
        interface: &str,
        service: &str,
    ) -> pycom_client::Result<ServiceInfo> {
        let pending = self.invoke(client, service, RegistryInput::Read);
        let result = ns.locate(interface, Some(service));
        pending.finish(classify_read(&result, service));
        result
    }

    /// The operations recorded so far (completed ones, and those dropped
    /// unfinished), in completion order.
    pub fn ops(&self) -> Vec<RegistryOp> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn len(&self) -> usize {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Check the history so far.
    pub fn check(&self) -> Result<(), CheckError> {
        linearizability::check_registry(&self.ops())
    }
}

/// What a register (or, with `unregister`, an unregister) answer says
/// happened; `None` when it may or may not have taken effect.
pub fn classify_write<T>(result: &pycom_client::Result<T>, unregister: bool) -> Option<RegistryOutput> {
    match result {
        Ok(_) => Some(RegistryOutput::Ok),
        Err(e) => match e.code() {
            Some(Code::AccessDenied) => Some(RegistryOutput::Refused),
            Some(Code::ServiceNotFound) if unregister => Some(RegistryOutput::NotFound),
            _ => None,
        },
    }
}

/// What a `locate` of `service` says its owner is; `None` when unknown.
pub fn classify_read(result: &pycom_client::Result<ServiceInfo>, service: &str) -> Option<RegistryOutput> {
    match result {
        Ok(info) if info.service == service => Some(RegistryOutput::Read(Some(info.address.clone()))),
        Ok(_) => None,
        Err(e) if e.code() == Some(Code::ServiceNotFound) => Some(RegistryOutput::Read(None)),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::LinkState;
    use serde_json::json;

    fn configs(n: usize, proxies: bool) -> (Vec<Ports>, Vec<NodeConfig>) {
        let ports: Vec<Ports> = (0..n as u16)
            .map(|i| Ports {
                client: 5000 + i,
                peer: 6000 + i,
            })
            .collect();
        let dirs: Vec<PathBuf> = (1..=n)
            .map(|i| PathBuf::from(format!("/tmp/n{i}/data")))
            .collect();
        let view = |i: u64, j: u64| {
            if proxies {
                (
                    format!("127.0.0.1:{}", 7000 + 10 * i + j),
                    format!("tcp://127.0.0.1:{}", 8000 + 10 * i + j),
                )
            } else {
                (
                    format!("127.0.0.1:{}", 6000 + j - 1),
                    format!("tcp://127.0.0.1:{}", 5000 + j - 1),
                )
            }
        };
        let options = ClusterOptions {
            proxies,
            ..ClusterOptions::default()
        };
        let c = node_configs(&ports, &dirs, view, &options);
        (ports, c)
    }

    #[test]
    fn each_node_gets_its_own_view_of_the_peers() {
        let (_, c) = configs(3, true);
        assert_eq!(c.len(), 3);
        let text = c[1].to_toml();
        assert_eq!(
            text,
            "listen = \"tcp://127.0.0.1:5001\"\n\
             data_dir = \"/tmp/n2/data\"\n\
             \n\
             [cluster]\n\
             node_id = 2\n\
             peer_listen = \"127.0.0.1:6001\"\n\
             write_timeout_ms = 2000\n\
             \n\
             [cluster.members]\n\
             1 = { peer = \"127.0.0.1:7021\", client = \"tcp://127.0.0.1:8021\" }\n\
             2 = { peer = \"127.0.0.1:6001\", client = \"tcp://127.0.0.1:5001\" }\n\
             3 = { peer = \"127.0.0.1:7023\", client = \"tcp://127.0.0.1:8023\" }\n"
        );
        // Node 1 sees 2 and 3 through proxies (1, 2) and (1, 3), itself as it is.
        let peers: Vec<&str> = c[0].members.iter().map(|m| m.peer.as_str()).collect();
        assert_eq!(peers, ["127.0.0.1:6000", "127.0.0.1:7012", "127.0.0.1:7013"]);
        let clients: Vec<&str> = c[0].members.iter().map(|m| m.client.as_str()).collect();
        assert_eq!(
            clients,
            [
                "tcp://127.0.0.1:5000",
                "tcp://127.0.0.1:8012",
                "tcp://127.0.0.1:8013"
            ]
        );
    }

    #[test]
    fn without_proxies_every_node_lists_the_same_members() {
        let (_, c) = configs(5, false);
        assert!(c.iter().all(|cfg| cfg.members == c[0].members));
        assert_eq!(c[4].members[4].peer, "127.0.0.1:6004");
        assert_eq!(c[4].members[0].client, "tcp://127.0.0.1:5000");
        assert_eq!(c[4].node_id, 5);
    }

    #[test]
    fn extra_settings_go_in_their_tables() {
        let cfg = NodeConfig {
            node_id: 1,
            listen: "tcp://127.0.0.1:1".into(),
            data_dir: PathBuf::from("/tmp/we\"ird\\dir"),
            peer_listen: "127.0.0.1:2".into(),
            write_timeout_ms: 500,
            members: vec![],
            settings: vec!["unsafe_no_fsync = true".into()],
            cluster_settings: vec!["heartbeat_ms = 50".into()],
        };
        let text = cfg.to_toml();
        assert!(text.contains("data_dir = \"/tmp/we\\\"ird\\\\dir\"\n"), "{text}");
        let settings = text.find("unsafe_no_fsync").unwrap();
        let cluster = text.find("[cluster]").unwrap();
        let heartbeat = text.find("heartbeat_ms").unwrap();
        let members = text.find("[cluster.members]").unwrap();
        assert!(
            settings < cluster && cluster < heartbeat && heartbeat < members,
            "{text}"
        );
        assert!(text.contains("write_timeout_ms = 500\n"));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("plain"), "\"plain\"");
        assert_eq!(toml_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    /// A cluster of `n` nodes' links, without processes.
    fn links_only(n: u64) -> Cluster {
        let mut links = BTreeMap::new();
        for i in 1..=n {
            for j in (1..=n).filter(|&j| j != i) {
                let to = || LinkProxy::start(SocketAddr::from(([127, 0, 0, 1], 9)));
                links.insert(
                    (i, j),
                    Link {
                        peer: to(),
                        client: Some(to()),
                    },
                );
            }
        }
        Cluster {
            nodes: Vec::new(),
            links,
            zmq: zmq::Context::new(),
        }
    }

    /// The links in `state`, both proxies of each.
    fn links_in(c: &Cluster, state: LinkState) -> Vec<(u64, u64)> {
        c.links
            .iter()
            .filter(|(_, l)| l.peer.state() == state)
            .inspect(|(_, l)| assert_eq!(l.client.as_ref().unwrap().state(), l.peer.state()))
            .map(|(&k, _)| k)
            .collect()
    }

    #[test]
    fn link_faults_hit_the_links_they_name() {
        use crate::proxy::LinkState::{Blackholed, Cut};
        let c = links_only(3);
        c.cut(1, 2);
        assert_eq!(links_in(&c, Cut), [(1, 2)]);
        c.disconnect(2, 3);
        assert_eq!(links_in(&c, Cut), [(1, 2), (2, 3), (3, 2)]);
        c.heal(1, 2);
        assert_eq!(links_in(&c, Cut), [(2, 3), (3, 2)]);
        c.heal_all();
        assert!(links_in(&c, Cut).is_empty());
        c.isolate(1);
        assert_eq!(links_in(&c, Cut), [(1, 2), (1, 3), (2, 1), (3, 1)]);
        c.heal_all();
        let c = links_only(5);
        c.partition_blackhole(&[1, 2]);
        let crossing: Vec<(u64, u64)> = c
            .links
            .keys()
            .copied()
            .filter(|&(i, j)| (i <= 2) != (j <= 2))
            .collect();
        assert_eq!(crossing.len(), 12);
        assert_eq!(links_in(&c, Blackholed), crossing);
        c.blackhole(3, 4);
        assert!(links_in(&c, Blackholed).contains(&(3, 4)));
        assert!(!links_in(&c, Blackholed).contains(&(4, 3)));
        assert_eq!(c.relay_proxy(1, 3).unwrap().state(), Blackholed);
        assert_eq!(c.proxy(3, 1).state(), Blackholed);
    }

    fn stat(role: &str, leader: Option<u64>, term: u64) -> Option<Value> {
        let leader = leader.map(|id| json!({"id": id, "client": format!("tcp://127.0.0.1:{}", 5000 + id)}));
        Some(json!({
            "revision": 7,
            "cluster": {"node": 0, "role": role, "leader": leader, "term": term,
                        "commit_index": 3, "applied_index": 3}
        }))
    }

    #[test]
    fn a_leader_is_trusted_only_with_a_quorum_that_agrees() {
        let s = vec![
            (1, stat("follower", Some(2), 5)),
            (2, stat("leader", Some(2), 5)),
            (3, stat("follower", Some(2), 5)),
        ];
        assert_eq!(agreed_leader(&s, 3), Some(2));
        // One node down: the other two still agree.
        assert_eq!(agreed_leader(&s[1..], 3), Some(2));
        // The leader alone says so.
        assert_eq!(agreed_leader(&s[1..2], 3), None);
        // A deposed leader in an old term, the majority elsewhere.
        let s = vec![
            (1, stat("leader", Some(1), 4)),
            (2, stat("leader", Some(2), 5)),
            (3, stat("follower", Some(2), 5)),
        ];
        assert_eq!(agreed_leader(&s, 3), Some(2));
        // Followers that name a leader which does not (yet) say so.
        let s = vec![
            (1, stat("follower", Some(2), 5)),
            (2, stat("candidate", None, 6)),
            (3, stat("follower", Some(2), 5)),
        ];
        assert_eq!(agreed_leader(&s, 3), None);
        // No answers, or answers without a cluster.
        let s = vec![
            (1, None),
            (2, Some(json!({"revision": 1}))),
            (3, stat("follower", None, 1)),
        ];
        assert_eq!(agreed_leader(&s, 3), None);
        // Agreement in a term other than the leader's does not count.
        let s = vec![
            (1, stat("follower", Some(2), 4)),
            (2, stat("leader", Some(2), 5)),
            (3, stat("follower", Some(2), 4)),
        ];
        assert_eq!(agreed_leader(&s, 3), None);
        // Five nodes, two down: all three live must agree (a quorum of five).
        let s = vec![
            (1, stat("leader", Some(1), 3)),
            (2, stat("follower", Some(1), 3)),
            (3, None),
        ];
        assert_eq!(agreed_leader(&s, 5), None);
    }

    #[test]
    fn converged_means_every_live_node_at_one_revision() {
        let at =
            |rev: u64, applied: u64| Some(json!({"revision": rev, "cluster": {"applied_index": applied}}));
        assert!(converged(&[(1, at(3, 9)), (2, at(3, 9)), (3, at(3, 9))]));
        assert!(!converged(&[(1, at(3, 9)), (2, at(3, 8))]));
        assert!(!converged(&[(1, at(3, 9)), (2, at(2, 9))]));
        assert!(!converged(&[(1, at(3, 9)), (2, None)]));
        assert!(!converged(&[]));
        // A single node (no cluster key) converges with itself.
        assert!(converged(&[(1, Some(json!({"revision": 4})))]));
    }

    #[test]
    fn answers_are_classified_for_the_checker() {
        use pycom_client::Error;
        let timeout: pycom_client::Result<()> = Err(Error::Timeout {
            endpoint: "tcp://x".into(),
            timeout_ms: 1,
        });
        assert_eq!(classify_write(&Ok(()), false), Some(RegistryOutput::Ok));
        assert_eq!(
            classify_write::<()>(&Err(Error::AccessDenied("not owner".into())), false),
            Some(RegistryOutput::Refused)
        );
        assert_eq!(
            classify_write::<()>(&Err(Error::ServiceNotFound("gone".into())), true),
            Some(RegistryOutput::NotFound)
        );
        assert_eq!(
            classify_write::<()>(&Err(Error::ServiceNotFound("?".into())), false),
            None
        );
        assert_eq!(
            classify_write::<()>(&Err(Error::Unavailable("unknown".into())), false),
            None
        );
        assert_eq!(classify_write(&timeout, true), None);
        let info = ServiceInfo {
            service: "/s".into(),
            address: "tcp://a".into(),
            interfaces: vec!["i".into()],
            metadata: Default::default(),
            state: None,
        };
        assert_eq!(
            classify_read(&Ok(info.clone()), "/s"),
            Some(RegistryOutput::Read(Some("tcp://a".into())))
        );
        assert_eq!(classify_read(&Ok(info), "/other"), None);
        assert_eq!(
            classify_read(&Err(Error::ServiceNotFound("no".into())), "/s"),
            Some(RegistryOutput::Read(None))
        );
        assert_eq!(
            classify_read(&Err(Error::Unavailable("later".into())), "/s"),
            None
        );
    }

    #[test]
    fn the_history_records_from_many_threads() {
        let h = History::new();
        let threads: Vec<_> = (0..4u64)
            .map(|c| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let key = format!("/k{}", i % 5);
                        let p = h.invoke(c, &key, RegistryInput::Read);
                        p.returned(RegistryOutput::Read(None));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.len(), 100);
        assert!(h.ops().iter().all(|op| op.ret() >= op.call));
        assert_eq!(h.check(), Ok(()));
        // Unfinished calls count as unknown outcomes.
        let p = h.invoke(9, "/k0", RegistryInput::Register { address: "a".into() });
        drop(p);
        h.invoke(9, "/k1", RegistryInput::Register { address: "b".into() })
            .unknown();
        assert_eq!(h.ops().iter().filter(|op| op.output().is_none()).count(), 2);
        assert_eq!(h.check(), Ok(()));
        // A register seen, then a read missing it: caught.
        h.invoke(1, "/k2", RegistryInput::Register { address: "c".into() })
            .returned(RegistryOutput::Ok);
        h.invoke(2, "/k2", RegistryInput::Read)
            .returned(RegistryOutput::Read(None));
        let err = h.check().unwrap_err();
        assert!(err.to_string().contains("key '/k2'"), "{err}");
    }
}
