//! pycomd, the pycom daemon: a nameserver that PyCOM peers and pycom
//! clients use to find each other, keeping every registration durable.
//!
//! Requests flow one way: the ROUTER socket ([`server`]) decodes them; a
//! handler ([`nameserver`]) answers a read at once or turns a write into a
//! [`registry::Command`]; the command goes through the [`log`] (a real
//! fdatasync, shared by every write waiting: group commit) and only then is
//! applied by the registry's pure state machine ([`registry::State::apply`])
//! and answered. What the change did ([`registry::Change`]) moves the lease
//! table ([`leases`]) and the [`prober`]. Nothing is visible before it is
//! durable, and a write that cannot be made durable changes nothing.
//!
//! Threads, each owning its ZeroMQ sockets: the server (requests, state),
//! the log writer and its snapshot compactor, the prober, and signals; the
//! others reach the server through its typed [`mailbox`].
//!
//! [`run`] is the whole daemon; `main.rs` only parses flags and sets up logs.

pub mod auth;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod health;
pub mod http;
pub mod leases;
pub mod limits;
pub mod log;
pub mod logging;
pub mod mailbox;
pub mod metrics;
pub mod nameserver;
pub mod notify;
pub mod prober;
pub mod pubsub;
pub mod registry;
pub mod security;
pub mod server;
pub mod signals;
pub mod workflow;

use config::{Overrides, Settings};
use log::local::{LocalLog, LocalSettings};
use log::recovery::{self, Options};
use pycom_client::nameserver::{INTERFACE, SERVICE};
use registry::{Record, Registry};
use std::time::{Duration, Instant};
use tracing::info;

/// How long replies still queued at exit may take to leave.
const EXIT_LINGER_MS: i32 = 2000;

/// What `run` needs besides the settings.
pub struct Launch {
    pub overrides: Overrides,
    pub log_control: logging::LogControl,
    /// Repair a damaged data dir (keeping a copy) instead of refusing to start.
    pub recover: bool,
}

/// Why pycomd stopped other than cleanly.
#[derive(Debug)]
pub enum Failure {
    /// It could not start: the message says why.
    Start(String),
    /// It stopped, but some writes in flight could not be made durable.
    Unwritten(u64),
}

/// Run pycomd until SIGTERM or SIGINT.
pub fn run(settings: Settings, launch: Launch) -> Result<(), Failure> {
    limits::raise_nofile();
    let started = Instant::now();
    // Before the data dir is touched: a build without CURVE refuses here.
    security::check(&settings).map_err(Failure::Start)?;
    let sync = !settings.unsafe_no_fsync;
    if !sync {
        tracing::warn!("unsafe_no_fsync is set: writes are acknowledged before they are durable, and a power cut loses them");
    }
    // A single node's log is verified before anything else; a cluster
    // member's is Raft's, opened once the mailbox exists.
    let opened = match &settings.cluster {
        None => Some(
            recovery::open(
                &settings.data_dir,
                &Options {
                    segment_bytes: settings.log_segment_bytes,
                    sync,
                    recover: launch.recover,
                },
            )
            .map_err(Failure::Start)?,
        ),
        Some(_) => None,
    };

    // With the data dir locked (a single node's log is open).
    let curve = security::server_keys(&settings).map_err(Failure::Start)?;
    let ctx = zmq::Context::new();
    let router = bind_router(&ctx, &settings, curve.as_ref()).map_err(Failure::Start)?;
    let address = router
        .get_last_endpoint()
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| settings.listen.clone());
    let mailbox = mailbox::Mailbox::new(&ctx).map_err(Failure::Start)?;
    let poster = || mailbox.poster().map_err(Failure::Start);

    let me = Record {
        service: SERVICE.into(),
        address: address.clone(),
        interfaces: vec![INTERFACE.to_string()],
        metadata: [("version".to_string(), env!("CARGO_PKG_VERSION").to_string())].into(),
        ttl_ms: None,
        revision: 0,
        owner: None,
    };
    let policy = match settings.auth.enabled {
        true => Some(auth::Policy::load(&settings.auth).map_err(Failure::Start)?),
        false => None,
    };
    // Logins as the forwarder's ZAP handler sees them (filled once the
    // state is recovered, before pycomd serves).
    let auth_view = policy.as_ref().map(auth::view::View::new);
    let pubsub = pubsub::start(&settings, auth_view.clone()).map_err(Failure::Start)?;
    let events = match pubsub.running() {
        Some(running) => Some(running.events().map_err(Failure::Start)?),
        None => None,
    };
    let mut own = vec![me];
    own.extend(pubsub.running().map(|p| p.record(&address)));
    let engine =
        workflow::start(&settings, &launch.overrides, &ctx, mailbox.posters()).map_err(Failure::Start)?;
    own.extend(
        engine
            .iter()
            .flat_map(|e| e.hosted.iter().map(workflow::Hosted::record)),
    );
    if policy.is_some() {
        own.push(Record {
            service: pycom_client::auth::SERVICE.into(),
            address: address.clone(),
            interfaces: vec![pycom_client::auth::INTERFACE.to_string()],
            metadata: Default::default(),
            ttl_ms: None,
            revision: 0,
            owner: None,
        });
    }
    let mut import = None;
    let (state, last, log, node, _lock): (_, _, Box<dyn log::Log>, _, _) = match (opened, &settings.cluster) {
        (Some(recovery::Opened { state, files }), _) => {
            let last = files.last;
            let log = LocalLog::start(
                files,
                LocalSettings {
                    data_dir: settings.data_dir.clone(),
                    sync,
                    snapshot_log_bytes: settings.snapshot_log_bytes,
                },
                poster()?,
            )
            .map_err(Failure::Start)?;
            (state, last, Box::new(log), None, None)
        }
        (None, Some(cluster)) => {
            let started = start_cluster(&settings, cluster, &ctx, poster()?, sync).map_err(Failure::Start)?;
            import = started.import;
            (
                started.state,
                started.last,
                started.log,
                Some(started.node),
                Some(started.lock),
            )
        }
        (None, None) => return Err(Failure::Start("no log to run on".into())),
    };

    let probe_settings = prober::ProbeSettings {
        interval: Duration::from_millis(settings.probe_interval_ms),
        timeout: Duration::from_millis(settings.probe_timeout_ms),
        failures: settings.probe_failures,
    };
    let (probe_tx, probe_thread) = prober::spawn(ctx.clone(), probe_settings, poster()?);
    // Every lease starts a full term: its owner may have renewed while
    // pycomd was down. Built beside the index, on the other core.
    let indexing = Instant::now();
    let (mut registry, leases) = Registry::new_alongside(state, own, |state| {
        leases::Leases::start(state.leased(), Instant::now())
    });
    let index_ms = indexing.elapsed().as_millis() as u64;
    registry.set_history_limits(settings.changes_retained, settings.changes_retained_bytes);
    let (signal_handle, signal_thread) = signals::spawn(poster()?).map_err(Failure::Start)?;

    let auth = match (policy, auth_view) {
        (Some(policy), Some(view)) => {
            view.sync(registry.state().tokens());
            Some(
                start_auth(policy, view, &settings.listen, curve.is_some(), &mailbox)
                    .map_err(Failure::Start)?,
            )
        }
        _ => None,
    };
    let records = registry.state().len();
    let mut engine = engine;
    if let Some(e) = &mut engine {
        e.set_auth(auth.is_some());
    }
    let http = http::start(&settings, || mailbox.poster()).map_err(Failure::Start)?;
    if matches!(http, http::Started::Running(_)) {
        health::spawn_write_probe(settings.data_dir.clone()).map_err(Failure::Start)?;
    }
    let mut tally = metrics::Tally::default();
    tally.leased = registry.state().leased().count();
    let mut server = server::Server {
        router,
        mailbox,
        registry,
        leases,
        log,
        prober: probe_tx,
        settings,
        overrides: launch.overrides,
        log_control: launch.log_control,
        stats: nameserver::Stats::default(),
        outbox: Default::default(),
        bodies: Default::default(),
        chunk: Default::default(),
        drops_logged: None,
        replies: Default::default(),
        applied: last,
        pubsub,
        events,
        probe_failures: Default::default(),
        cluster: node,
        admin_pending: Default::default(),
        next_admin: 0,
        auth,
        next_token_sweep: Instant::now(),
        import,
        workflow: engine,
        metrics: tally,
        handling: None,
        http,
        backup: Default::default(),
    };
    server.probe_all();
    server.resume_workflows();

    info!(
        endpoint = %address,
        data_dir = %server.settings.data_dir.display(),
        records,
        log_index = last.index,
        index_ms,
        startup_ms = started.elapsed().as_millis() as u64,
        "pycomd {} serving",
        env!("CARGO_PKG_VERSION")
    );
    notify::ready();
    let stopped = server.run();

    signal_handle.close();
    let _ = signal_thread.join();
    let _ = probe_thread.join();
    // Dropping the last context waits (up to the linger) for queued replies.
    drop(ctx);
    if stopped.unwritten > 0 {
        tracing::error!(
            unwritten = stopped.unwritten,
            "stopped, but writes in flight could not be made durable (answered code 7)"
        );
        return Err(Failure::Unwritten(stopped.unwritten));
    }
    info!("every acknowledged write is durable; pycomd stopped");
    Ok(())
}

/// Access control's threads, and what the operator should know at start;
/// `encrypted`: the request endpoint has CURVE on.
fn start_auth(
    policy: auth::Policy,
    view: std::sync::Arc<auth::view::View>,
    listen: &str,
    encrypted: bool,
    mailbox: &mailbox::Mailbox,
) -> Result<auth::methods::Auth, String> {
    let throttle = auth::throttle::Shared::new(auth::THROTTLED_NAMES);
    let hasher = auth::hasher::Hasher::start(|| mailbox.poster(), &throttle)?;
    if !encrypted {
        if let Some(why) = config::exposed(listen) {
            tracing::warn!(
                endpoint = listen,
                "access control is on over {why} without encryption: passwords and tokens travel in cleartext; turn on [security] curve (README), or keep pycomd on a trusted network or behind a WireGuard or SSH tunnel"
            );
        }
    }
    for line in policy.warnings() {
        tracing::warn!("access control: {line}");
    }
    info!(
        users = policy.users.len(),
        users_file = %policy.users_file,
        hashing_threads = hasher.threads,
        "access control on"
    );
    Ok(auth::methods::Auth {
        policy,
        view,
        hasher,
        throttle,
        principals: Default::default(),
        stats: Default::default(),
    })
}

/// A cluster member's start: its Raft log and state machine in
/// `data_dir/raft`, and the server's part of the cluster.
struct ClusterStart {
    /// A single node's registry to propose again as this cluster's.
    import: Option<cluster::import::Import>,
    state: registry::State,
    last: log::LogId,
    log: Box<dyn log::Log>,
    node: cluster::Node,
    lock: std::fs::File,
}

fn start_cluster(
    settings: &Settings,
    cluster: &config::ClusterSettings,
    ctx: &zmq::Context,
    poster: mailbox::Poster,
    sync: bool,
) -> Result<ClusterStart, String> {
    let members = cluster.member_ids()?;
    let dir = log::raft::raft_dir(&settings.data_dir);
    let import = single_node_registry(settings, &members, &dir, sync)?;
    let lock = recovery::lock_data_dir(&settings.data_dir)?;
    let store = log::raft::store::LogStore::open(&dir, sync)?;
    let poster = std::sync::Arc::new(std::sync::Mutex::new(poster));
    let (sm, opened) = log::raft::sm::StateMachine::open(&dir, poster.clone())?;
    let last = opened.applied.as_ref().map(log::raft::log_id).unwrap_or_default();
    let raft = log::raft::RaftLog::start(cluster, members.clone(), store, sm, poster)?;
    let status = cluster::Status {
        node: cluster.node_id,
        role: cluster::Role::Follower,
        leader: None,
        term: 0,
        members: members.into_iter().map(|(id, m)| (id, m.client)).collect(),
        commit_index: 0,
        applied_index: last.index,
        cut_off: false,
    };
    let relay = cluster::relay::Relay::new(
        ctx.clone(),
        Duration::from_millis(cluster.write_timeout_ms),
        settings.high_water_mark,
    );
    Ok(ClusterStart {
        import,
        state: opened.state,
        last,
        log: Box::new(raft),
        node: cluster::Node { status, relay },
        lock,
    })
}

/// The registry of a single node in this data dir, when this node starts
/// a one-member cluster on it and has not imported it yet (the upgrade
/// path, README "Clusters"). Refused with more members: one node makes the
/// cluster, the others join it.
fn single_node_registry(
    settings: &Settings,
    members: &std::collections::BTreeMap<u64, config::Member>,
    raft_dir: &std::path::Path,
    sync: bool,
) -> Result<Option<cluster::import::Import>, String> {
    let single = recovery::log_dir(&settings.data_dir);
    let marker = cluster::import::marker(raft_dir);
    if !std::fs::read_dir(&single).is_ok_and(|mut d| d.next().is_some()) || marker.exists() {
        return Ok(None);
    }
    if members.len() != 1 {
        return Err(format!(
            "the data dir {} holds a single-node registry ({}); to make it a cluster's, start this node alone first ([cluster] members = only node {}), then add the others with `pycomctl cluster add` (README, \"Clusters\"); or start this member from an empty data dir",
            settings.data_dir.display(),
            single.display(),
            members.keys().next().map_or(0, |id| *id)
        ));
    }
    let opened = recovery::open(
        &settings.data_dir,
        &recovery::Options {
            segment_bytes: settings.log_segment_bytes,
            sync,
            recover: false,
        },
    )?;
    let import = cluster::import::Import::new(&opened.state, marker, auth::unix_ms());
    info!(
        records = opened.state.len(),
        logins = opened.state.tokens().len(),
        "this data dir holds a single node's registry: it becomes this one-member cluster's (proposed again through the cluster's log once this node leads)"
    );
    // The single node's files stay as they are (its lock is let go here).
    drop(opened);
    Ok(Some(import))
}

fn bind_router(
    ctx: &zmq::Context,
    settings: &Settings,
    curve: Option<&security::ServerKeys>,
) -> Result<zmq::Socket, String> {
    let fail = |what: &str, e: zmq::Error| format!("cannot {what} the request socket: {e}");
    let router = ctx.socket(zmq::ROUTER).map_err(|e| fail("create", e))?;
    router
        .set_rcvhwm(settings.high_water_mark)
        .map_err(|e| fail("configure", e))?;
    router
        .set_sndhwm(settings.high_water_mark)
        .map_err(|e| fail("configure", e))?;
    router
        .set_linger(EXIT_LINGER_MS)
        .map_err(|e| fail("configure", e))?;
    router
        .set_backlog(settings.listen_backlog)
        .map_err(|e| fail("configure", e))?;
    // Between max_message_bytes and the hard cap the peer gets a code-4
    // reply naming the limit.
    router
        .set_maxmsgsize(settings.frame_hard_cap())
        .map_err(|e| fail("configure", e))?;
    if let Some(keys) = curve {
        keys.apply(&router)
            .map_err(|e| format!("cannot turn on CURVE on the request socket: {e}"))?;
    }
    router
        .bind(&settings.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    Ok(router)
}
