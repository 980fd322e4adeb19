//! Every setting of pycomd, in one struct, loaded in layers.
//!
//! Lowest to highest: built-in defaults, the config file (`--config FILE`,
//! else `/etc/pycomd/pycomd.toml` when it exists), `PYCOMD_*` environment
//! variables, command-line flags. `etc/pycomd.toml` documents each setting.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file read when `--config` is not given, if it exists.
pub const SYSTEM_CONFIG: &str = "/etc/pycomd/pycomd.toml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// ZeroMQ endpoint for requests (ROUTER).
    pub listen: String,
    /// Where the registry is kept (sled).
    pub data_dir: PathBuf,
    /// Log filter when RUST_LOG is not set: a level or tracing directives.
    pub log_level: String,
    pub log_format: LogFormat,
    /// Largest request (all frames together) that gets an answer.
    pub max_message_bytes: usize,
    /// Most records the registry holds; registers beyond it get code 7.
    pub max_records: usize,
    pub ttl_min_ms: u64,
    pub ttl_max_ms: u64,
    /// How often a lease-less record's address is probed.
    pub probe_interval_ms: u64,
    /// How long a probe waits for its reply.
    pub probe_timeout_ms: u64,
    /// Consecutive unanswered probes after which the record is dropped.
    pub probe_failures: u32,
    /// Messages queued per peer, each way, before pycomd drops (outgoing) or
    /// stops reading (incoming): what bounds memory against slow peers.
    pub high_water_mark: i32,
    /// Connections waiting to be accepted (ZMQ_BACKLOG): bursts of new
    /// clients beyond it are refused by the kernel.
    pub listen_backlog: i32,
    /// Largest reply pycomd builds (a whole `list_services`); larger ones get
    /// code 4 naming the way out (a filter, or pages).
    pub max_reply_bytes: usize,
    /// Bytes of replies sent but not yet taken by their peers, across all
    /// peers; past it big reads get code 7.
    pub max_pending_reply_bytes: usize,
    /// Largest record (service, address, interfaces, metadata) accepted.
    pub max_record_bytes: usize,
    /// Bytes all records together may take; registers beyond get code 7.
    pub max_registry_bytes: usize,
    /// Log bytes written between snapshots (more once the state is larger).
    pub snapshot_log_bytes: u64,
    /// Size at which a log segment is closed and a new one started.
    pub log_segment_bytes: u64,
    /// Acknowledge writes without fdatasync. Loses acknowledged changes on
    /// power loss: for tests and throw-away setups only.
    pub unsafe_no_fsync: bool,
    /// Registry changes kept for `changes` (a watcher catching up); older
    /// ones answer `compacted` (list again).
    pub changes_retained: usize,
    /// The same bound in bytes (records' sizes, as `max_record_bytes`
    /// counts them).
    pub changes_retained_bytes: usize,
    /// Where workflow definitions are (one JSON file each); empty: the
    /// `workflows.d` directory next to the config file, if both exist.
    pub workflows_dir: String,
    /// Where each workflow's endpoint binds (one port each).
    pub workflow_listen: String,
    /// Runs running at once; starts beyond it get code 7.
    pub max_running_runs: usize,
    /// Ended runs kept for `result` and `list_runs`, by count and by age.
    pub workflow_runs_retained: usize,
    pub workflow_runs_retained_days: u64,
    /// What one run may hold (its args, results and history), in bytes.
    pub workflow_run_bytes: usize,
    /// What all ended runs together may hold; past it the oldest go.
    pub workflow_history_bytes: usize,
    /// Threads making workflows' calls: calls in flight at once.
    pub workflow_calls: usize,
    /// The HTTP endpoint for operators (`/metrics`, `/health`, `/ready`):
    /// `host:port`. Unset: `127.0.0.1:2015`, and a failure to bind it is a
    /// warning (a second pycomd on the host); a configured address that
    /// cannot be bound stops pycomd; empty: off.
    #[serde(default)]
    pub http_listen: Option<String>,
    /// The pub-sub forwarder (`[pubsub]`).
    pub pubsub: PubsubSettings,
    /// Access control (`[auth]`): off by default.
    pub auth: AuthSettings,
    /// Encryption of the request endpoint (`[security]`): off by default.
    pub security: SecuritySettings,
    /// Membership of a replicated cluster (`[cluster]`); none: a single
    /// node, as without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSettings>,
}

/// `[cluster]`: this node's place in a replicated registry (PROTOCOL.md 9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// This node's id: an integer never reused for another node.
    pub node_id: u64,
    /// Where this node takes Raft traffic from the others: `host:port`.
    pub peer_listen: String,
    /// The initial members (this node among them): nodes started with the
    /// same members form the cluster with no further command.
    pub members: std::collections::BTreeMap<String, Member>,
    /// A write not committed within this long answers code 7.
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// This node joins a running cluster (`pycomctl cluster add` makes it a
    /// member) instead of forming one with `members`.
    #[serde(default)]
    pub join: bool,
    /// Leader heartbeats; elections start after 4 to 8 of them missed.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
}

/// One member of the cluster: how peers and clients reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Its Raft endpoint, `host:port`.
    pub peer: String,
    /// Its request endpoint, `tcp://host:port`.
    pub client: String,
}

fn default_write_timeout_ms() -> u64 {
    2_000
}

fn default_heartbeat_ms() -> u64 {
    100
}

impl ClusterSettings {
    /// The longest election timeout (Raft elects after 4 to 8 missed
    /// heartbeats).
    pub fn election_timeout_max_ms(&self) -> u64 {
        self.heartbeat_ms * 8
    }

    /// The shortest lease a cluster takes: three election timeouts.
    pub fn min_lease_ms(&self) -> u64 {
        3 * self.election_timeout_max_ms()
    }

    /// The members by id, checked: ids are integers, this node is one.
    pub fn member_ids(&self) -> Result<std::collections::BTreeMap<u64, Member>, String> {
        let mut members = std::collections::BTreeMap::new();
        for (id, member) in &self.members {
            let id: u64 = id
                .parse()
                .map_err(|_| format!("cluster.members: '{id}' is not a node id (an integer)"))?;
            if !member.client.contains("://") {
                return Err(format!(
                    "cluster.members.{id}.client = '{}' is not a ZeroMQ endpoint (expected e.g. tcp://127.0.0.1:2012)",
                    member.client
                ));
            }
            if member.peer.parse::<std::net::SocketAddr>().is_err() && !member.peer.contains(':') {
                return Err(format!(
                    "cluster.members.{id}.peer = '{}' is not host:port",
                    member.peer
                ));
            }
            members.insert(id, member.clone());
        }
        if !members.contains_key(&self.node_id) {
            return Err(format!(
                "cluster.node_id = {} is not one of cluster.members ({})",
                self.node_id,
                members.keys().map(u64::to_string).collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(members)
    }
}

/// `[pubsub]`: the forwarder (PROTOCOL.md 5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PubsubSettings {
    pub enabled: bool,
    /// Where publishers connect. Unset: `tcp://127.0.0.1:2013`, and a
    /// failure to bind it is a warning (a second pycomd on the host); a
    /// configured endpoint that cannot be bound stops pycomd.
    pub xsub: Option<String>,
    /// Where subscribers connect; unset: `tcp://127.0.0.1:2014`, as `xsub`.
    pub xpub: Option<String>,
    /// Topics whose last publication is kept for late subscribers.
    pub lvc_max_topics: usize,
    /// Bytes those publications may take together.
    pub lvc_max_bytes: usize,
    /// Messages queued per publisher and per subscriber: a slow subscriber
    /// loses messages past it (and sees gaps), nobody else waits.
    pub high_water_mark: i32,
}

impl Default for PubsubSettings {
    fn default() -> PubsubSettings {
        PubsubSettings {
            enabled: true,
            xsub: None,
            xpub: None,
            lvc_max_topics: 10_000,
            lvc_max_bytes: 64 * 1024 * 1024,
            high_water_mark: 10_000,
        }
    }
}

/// `[auth]`: users, tokens and grants (PROTOCOL.md 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// Off (the default): everything works as without access control.
    pub enabled: bool,
    /// The users and their password hashes (htpasswd: `name:hash`,
    /// argon2id or bcrypt). Relative paths are from pycomd's working dir.
    pub users_file: String,
    /// How long a token lasts, in seconds.
    pub token_ttl: u64,
    /// What callers without a token may do besides registering under the
    /// `anonymous` role's grants: `read` (the nameserver's reads),
    /// `subscribe`.
    pub anonymous: Vec<String>,
    /// Most tokens held at once; logins beyond get code 7.
    pub max_tokens: usize,
    /// Most tokens one user holds; a login beyond drops that user's oldest.
    pub max_tokens_per_user: usize,
    /// Role name -> its users. `admin` may do everything.
    #[serde(default)]
    pub roles: std::collections::BTreeMap<String, Vec<String>>,
    /// What each role may do (`[[auth.grant]]`).
    #[serde(default)]
    pub grant: Vec<Grant>,
}

/// One `[[auth.grant]]`: what `role` may do. Deny by default; among the
/// `register` prefixes that match a name, the longest decides, and one
/// written `!/prefix/` denies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub role: String,
    /// Service-path prefixes the role may register, renew and unregister.
    #[serde(default)]
    pub register: Vec<String>,
    /// Interface patterns (`com.example.*`, `com.example.>`) the role may
    /// call, as `validate` answers guarded services.
    #[serde(default)]
    pub call: Vec<String>,
    /// Topic patterns the role may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic patterns the role may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            enabled: false,
            users_file: String::new(),
            token_ttl: 8 * 3600,
            anonymous: vec!["read".to_string()],
            max_tokens: 100_000,
            max_tokens_per_user: 100,
            roles: Default::default(),
            grant: Vec::new(),
        }
    }
}

/// `[security]`: ZeroMQ CURVE on the request endpoint (README, "Access
/// control"). Needs a pycomd built against a libzmq with CURVE
/// (`etc/system-libzmq.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Encrypt and authenticate the request endpoint with CURVE: the server
    /// key pair is kept in `<data_dir>/curve/`; clients need its public key.
    pub curve: bool,
}

/// Settings a SIGHUP applies to the running pycomd; every other setting
/// takes effect on restart.
pub const LIVE: &[&str] = &[
    "log_level",
    "max_message_bytes",
    "ttl_min_ms",
    "ttl_max_ms",
    "max_reply_bytes",
    "max_pending_reply_bytes",
    "max_record_bytes",
    "max_registry_bytes",
    "auth",
];

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            listen: pycom_client::nameserver::DEFAULT_ENDPOINT.to_string(),
            data_dir: default_data_dir(),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            max_message_bytes: 1024 * 1024,
            max_records: 1_000_000,
            ttl_min_ms: 1_000,
            ttl_max_ms: 3_600_000,
            probe_interval_ms: 5_000,
            probe_timeout_ms: 2_000,
            probe_failures: 3,
            high_water_mark: 1_000,
            listen_backlog: 4096,
            max_reply_bytes: 4 * 1024 * 1024,
            max_pending_reply_bytes: 256 * 1024 * 1024,
            max_record_bytes: 16 * 1024,
            max_registry_bytes: 512 * 1024 * 1024,
            snapshot_log_bytes: 64 * 1024 * 1024,
            log_segment_bytes: 32 * 1024 * 1024,
            unsafe_no_fsync: false,
            changes_retained: 100_000,
            changes_retained_bytes: 64 * 1024 * 1024,
            workflows_dir: String::new(),
            workflow_listen: "tcp://127.0.0.1:*".to_string(),
            max_running_runs: 1000,
            workflow_runs_retained: 10_000,
            workflow_runs_retained_days: 7,
            workflow_run_bytes: 4 * 1024 * 1024,
            workflow_history_bytes: 512 * 1024 * 1024,
            workflow_calls: 32,
            http_listen: None,
            pubsub: PubsubSettings::default(),
            auth: AuthSettings::default(),
            security: SecuritySettings::default(),
            cluster: None,
        }
    }
}

/// The config file `load` reads for these overrides, if any.
pub fn config_path(overrides: &Overrides) -> Option<PathBuf> {
    match &overrides.config_file {
        Some(path) => Some(path.clone()),
        None => match std::env::var_os("PYCOMD_CONFIG").filter(|p| !p.is_empty()) {
            Some(path) => Some(PathBuf::from(path)),
            None => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.is_file()),
        },
    }
}

impl Settings {
    /// The workflows directory, and whether it must exist (set, not the
    /// default). `None`: no workflows.
    pub fn workflows_dir(&self, overrides: &Overrides) -> Option<(PathBuf, bool)> {
        if !self.workflows_dir.is_empty() {
            return Some((PathBuf::from(&self.workflows_dir), true));
        }
        let config = config_path(overrides)?;
        let dir = config.parent().unwrap_or(Path::new(".")).join("workflows.d");
        Some((dir, false))
    }
}

/// `$STATE_DIRECTORY` under systemd (its first entry), else `./pycomd-data`.
fn default_data_dir() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(dirs) if !dirs.is_empty() => {
            let dirs = dirs.to_string_lossy().into_owned();
            PathBuf::from(dirs.split(':').next().unwrap_or(&dirs))
        }
        _ => PathBuf::from("./pycomd-data"),
    }
}

/// Why `listen` is reachable from other hosts, if it is (a warning without
/// access control, or with it but without encryption).
pub fn exposed(listen: &str) -> Option<&'static str> {
    let (transport, rest) = listen.split_once("://")?;
    match transport {
        "ipc" | "inproc" => return None,
        "tcp" | "ws" | "wss" => {}
        _ => return Some("a network transport"),
    }
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    match host {
        "*" | "0.0.0.0" | "::" => Some("every network interface"),
        "localhost" | "lo" => None,
        _ => match host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_loopback() => None,
            Ok(_) => Some("an address other hosts can reach"),
            Err(_) => Some("an interface or host name other than loopback"),
        },
    }
}

/// Settings given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
}

impl Settings {
    /// Load all layers. Errors read like sentences and name the file, key
    /// or environment variable.
    ///
    /// The config file is `--config`, else `$PYCOMD_CONFIG`, else
    /// [`SYSTEM_CONFIG`] if it exists. Every other `PYCOMD_*` variable must
    /// be a setting (`PYCOMD_MAX_RECORDS` for `max_records`).
    pub fn load(overrides: &Overrides) -> Result<Settings, String> {
        let defaults =
            config::Config::try_from(&Settings::default()).map_err(|e| format!("built-in defaults: {e}"))?;
        let mut builder = config::Config::builder().add_source(defaults);
        match &overrides.config_file {
            Some(path) => {
                if !path.is_file() {
                    return Err(format!("config file {} does not exist", path.display()));
                }
                builder = builder.add_source(config_file(path)?);
            }
            None => match std::env::var_os("PYCOMD_CONFIG").filter(|p| !p.is_empty()) {
                Some(path) => {
                    let path = PathBuf::from(path);
                    if !path.is_file() {
                        return Err(format!(
                            "PYCOMD_CONFIG={}: the config file {} does not exist",
                            path.display(),
                            path.display()
                        ));
                    }
                    builder = builder
                        .add_source(config_file(&path).map_err(|e| format!("{e} (named by PYCOMD_CONFIG)"))?);
                }
                None if Path::new(SYSTEM_CONFIG).is_file() => {
                    builder = builder.add_source(config_file(Path::new(SYSTEM_CONFIG))?);
                }
                None => {}
            },
        }
        let environment = environment_settings()?;
        for (name, key, _, value) in &environment {
            builder = builder
                .set_override(key.as_str(), config_value(value))
                .map_err(|e| format!("environment variable {name}: {e}"))?;
        }
        let builder = builder
            .set_override_option("listen", overrides.listen.clone())
            .and_then(|b| {
                b.set_override_option(
                    "data_dir",
                    overrides.data_dir.as_ref().map(|d| d.display().to_string()),
                )
            })
            .and_then(|b| b.set_override_option("log_level", overrides.log_level.clone()))
            .and_then(|b| b.set_override_option("log_format", overrides.log_format.clone()))
            .map_err(|e| format!("command-line flags: {e}"))?;
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| format!("invalid configuration: {e}"))?;
        settings
            .validate()
            .map_err(|e| name_environment_variables(e, &environment))?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        if !self.listen.contains("://") {
            return Err(format!(
                "listen = '{}' is not a ZeroMQ endpoint (expected e.g. tcp://127.0.0.1:2012)",
                self.listen
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err(format!(
                "max_message_bytes = {} is below the minimum of 1024",
                self.max_message_bytes
            ));
        }
        if self.ttl_min_ms == 0 || self.ttl_min_ms > self.ttl_max_ms {
            return Err(format!(
                "ttl_min_ms = {} must be at least 1 and at most ttl_max_ms = {}",
                self.ttl_min_ms, self.ttl_max_ms
            ));
        }
        if self.probe_interval_ms == 0 || self.probe_timeout_ms == 0 || self.probe_failures == 0 {
            return Err(
                "probe_interval_ms, probe_timeout_ms and probe_failures must all be at least 1".into(),
            );
        }
        if self.high_water_mark <= 0 {
            return Err(format!(
                "high_water_mark = {} must be at least 1",
                self.high_water_mark
            ));
        }
        if self.max_records == 0 {
            return Err("max_records must be at least 1".into());
        }
        if self.max_running_runs == 0 || self.workflow_calls == 0 || self.workflow_calls > 1024 {
            return Err(format!(
                "max_running_runs = {} must be at least 1, workflow_calls = {} 1 to 1024",
                self.max_running_runs, self.workflow_calls
            ));
        }
        if self.workflow_run_bytes < 1024 {
            return Err(format!(
                "workflow_run_bytes = {} is below the minimum of 1024",
                self.workflow_run_bytes
            ));
        }
        if self.listen_backlog <= 0 {
            return Err(format!(
                "listen_backlog = {} must be at least 1",
                self.listen_backlog
            ));
        }
        for (name, value, least) in [
            ("max_reply_bytes", self.max_reply_bytes, 1024),
            ("max_pending_reply_bytes", self.max_pending_reply_bytes, 1024),
            ("max_record_bytes", self.max_record_bytes, 256),
            ("max_registry_bytes", self.max_registry_bytes, 4096),
        ] {
            if value < least {
                return Err(format!("{name} = {value} is below the minimum of {least}"));
            }
        }
        if self.pubsub.high_water_mark <= 0 {
            return Err(format!(
                "pubsub.high_water_mark = {} must be at least 1",
                self.pubsub.high_water_mark
            ));
        }
        for (name, endpoint) in [
            ("pubsub.xsub", &self.pubsub.xsub),
            ("pubsub.xpub", &self.pubsub.xpub),
        ] {
            if let Some(endpoint) = endpoint.as_deref().filter(|e| !e.contains("://")) {
                return Err(format!(
                    "{name} = '{endpoint}' is not a ZeroMQ endpoint (expected e.g. tcp://127.0.0.1:2013)"
                ));
            }
        }
        if let Some(address) = self.http_listen.as_deref().filter(|a| !a.is_empty()) {
            let port = address.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(format!(
                    "http_listen = '{address}' is not host:port (expected e.g. 127.0.0.1:2015, or \"\" for off)"
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            cluster.member_ids()?;
            if cluster.heartbeat_ms == 0 || cluster.write_timeout_ms == 0 {
                return Err("cluster.heartbeat_ms and cluster.write_timeout_ms must be at least 1".into());
            }
        }
        if self.log_segment_bytes < 4096 || self.snapshot_log_bytes < 4096 {
            return Err("log_segment_bytes and snapshot_log_bytes must be at least 4096".into());
        }
        Ok(())
    }

    /// ZMQ_MAXMSGSIZE for sockets facing the network: a hard cap well above
    /// `max_message_bytes`, so libzmq drops a peer that sends a larger
    /// frame before allocating it.
    pub fn frame_hard_cap(&self) -> i64 {
        self.max_message_bytes.saturating_mul(16).min(i64::MAX as usize) as i64
    }

    /// The running settings after a reload to `new`: the [`LIVE`] ones
    /// taken from `new`, the rest kept. Returns them with the names of the
    /// settings applied and of those changed that need a restart.
    pub fn reload(&self, new: &Settings) -> Result<(Settings, Vec<String>, Vec<String>), String> {
        let as_map = |s: &Settings| match serde_json::to_value(s) {
            Ok(serde_json::Value::Object(map)) => Ok(map),
            _ => Err("settings do not serialize to an object".to_string()),
        };
        let (mut running, new) = (as_map(self)?, as_map(new)?);
        let (mut applied, mut restart) = (Vec::new(), Vec::new());
        for (name, value) in new {
            if running.get(&name) == Some(&value) {
                continue;
            }
            if LIVE.contains(&name.as_str()) {
                match &value {
                    // Its own line says what changed (users, roles, grants).
                    _ if name == "auth" => {}
                    serde_json::Value::String(v) => applied.push(format!("{name} = {v}")),
                    other => applied.push(format!("{name} = {other}")),
                }
                running.insert(name, value);
            } else {
                restart.push(name);
            }
        }
        let settings = serde_json::from_value(serde_json::Value::Object(running))
            .map_err(|e| format!("reloaded settings do not fit: {e}"))?;
        Ok((settings, applied, restart))
    }
}

/// The `PYCOMD_*` environment variables (but `PYCOMD_CONFIG`, the config
/// file) as settings: (variable, setting, value as given, value). A table's
/// setting takes a double underscore: `PYCOMD_PUBSUB__XSUB` is `pubsub.xsub`.
/// Each is checked on its own, so that an error names the variable: one
/// that is no setting, or a value the setting cannot take.
#[allow(clippy::type_complexity)]
fn environment_settings() -> Result<Vec<(String, String, String, serde_json::Value)>, String> {
    let defaults = match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err("built-in defaults do not serialize to a table".into()),
    };
    let mut vars: Vec<(String, std::ffi::OsString)> = std::env::vars_os()
        .map(|(name, value)| (name.to_string_lossy().into_owned(), value))
        .filter(|(name, _)| name.starts_with("PYCOMD_") && name != "PYCOMD_CONFIG")
        .collect();
    vars.sort();
    let mut found = Vec::new();
    for (name, value) in vars {
        let path: Vec<String> = name["PYCOMD_".len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let Some(default) = setting_at(&defaults, &path) else {
            return Err(format!(
                "environment variable {name} is not a pycomd setting; the settings are: {} (and PYCOMD_CONFIG, the config file)",
                variable_names(&defaults, "PYCOMD_").join(", ")
            ));
        };
        let Some(raw) = value.to_str() else {
            return Err(format!(
                "environment variable {name}: the value is not valid UTF-8"
            ));
        };
        let parsed = env_value(raw, default).map_err(|why| format!("{name}={raw}: {why}"))?;
        // The value alone, in the defaults: does the setting take it?
        let mut alone = serde_json::Value::Object(defaults.clone());
        if let Some(slot) = path.iter().try_fold(&mut alone, |v, key| v.get_mut(key)) {
            *slot = parsed.clone();
        }
        serde_json::from_value::<Settings>(alone).map_err(|e| format!("{name}={raw}: {e}"))?;
        found.push((name, path.join("."), raw.to_string(), parsed));
    }
    Ok(found)
}

/// The default of the setting at `path` (a table's key, then its own).
fn setting_at<'a>(
    defaults: &'a serde_json::Map<String, serde_json::Value>,
    path: &[String],
) -> Option<&'a serde_json::Value> {
    let (first, rest) = path.split_first()?;
    match (defaults.get(first)?, rest.is_empty()) {
        (serde_json::Value::Object(table), false) => setting_at(table, rest),
        (value, true) => Some(value),
        _ => None,
    }
}

/// Every setting's environment variable, tables' settings included.
fn variable_names(defaults: &serde_json::Map<String, serde_json::Value>, prefix: &str) -> Vec<String> {
    defaults
        .iter()
        .flat_map(|(key, value)| {
            let name = format!("{prefix}{}", key.to_ascii_uppercase());
            match value {
                serde_json::Value::Object(table) => variable_names(table, &format!("{name}__")),
                _ => vec![name],
            }
        })
        .collect()
}

/// An environment variable's text as a value of the setting's type (that of
/// its default).
fn env_value(raw: &str, default: &serde_json::Value) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let text = raw.trim();
    let boolean = || match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(Value::Bool(true)),
        "false" | "0" | "no" | "off" => Some(Value::Bool(false)),
        _ => None,
    };
    let number = || {
        text.parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .ok()
    };
    match default {
        Value::Bool(_) => boolean().ok_or_else(|| "expected true or false".to_string()),
        Value::Number(n) if n.is_f64() => text
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| "expected a number".to_string()),
        Value::Number(_) => number().ok_or_else(|| "expected a whole number".to_string()),
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Array(_) | Value::Object(_) => {
            serde_json::from_str(text).map_err(|e| format!("expected a JSON value: {e}"))
        }
        // An optional setting: whatever the text looks like.
        Value::Null => Ok(boolean()
            .filter(|_| !text.chars().all(|c| c.is_ascii_digit()))
            .or_else(number)
            .or_else(|| text.parse::<f64>().ok().map(Value::from))
            .unwrap_or_else(|| Value::String(raw.to_string()))),
    }
}

/// A JSON value as a value of the `config` crate.
fn config_value(value: &serde_json::Value) -> config::Value {
    use serde_json::Value;
    match value {
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into(),
            (None, Some(u)) => u.into(),
            _ => n.as_f64().unwrap_or_default().into(),
        },
        Value::String(s) => s.clone().into(),
        Value::Null => config::Value::new(None, config::ValueKind::Nil),
        Value::Array(items) => items.iter().map(config_value).collect::<Vec<_>>().into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), config_value(v)))
            .collect::<config::Map<String, config::Value>>()
            .into(),
    }
}

/// A validation error, with the environment variables behind the settings
/// it names.
#[allow(clippy::type_complexity)]
fn name_environment_variables(
    error: String,
    environment: &[(String, String, String, serde_json::Value)],
) -> String {
    let names_setting = |key: &str| {
        error.match_indices(key).any(|(at, _)| {
            let before = error[..at].chars().next_back();
            let after = error[at + key.len()..].chars().next();
            let part_of_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            !part_of_word(before) && !part_of_word(after)
        })
    };
    let from: Vec<String> = environment
        .iter()
        .filter(|(_, key, _, _)| names_setting(key))
        .map(|(name, _, raw, _)| format!("{name}={raw}"))
        .collect();
    if from.is_empty() {
        error
    } else {
        format!("{error} (set by the environment: {})", from.join(", "))
    }
}

/// The config file as a source, its TOML checked first so that a mistake
/// is reported with the file's path as given and the line.
fn config_file(path: &Path) -> Result<config::File<config::FileSourceString, config::FileFormat>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
    let source = config::File::from_str(&text, config::FileFormat::Toml);
    config::Config::builder()
        .add_source(source.clone())
        .build()
        .map_err(|e| format!("the config file {} is not valid TOML: {e}", path.display()))?;
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn file_then_flags_in_order() {
        let dir = std::env::temp_dir().join(format!("pycomd-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pycomd.toml");
        std::fs::write(&file, "listen = \"tcp://127.0.0.1:3000\"\nprobe_failures = 7\n").unwrap();
        let mut o = Overrides {
            config_file: Some(file.clone()),
            ..Overrides::default()
        };
        let s = Settings::load(&o).unwrap();
        assert_eq!(s.listen, "tcp://127.0.0.1:3000");
        assert_eq!(s.probe_failures, 7);
        o.listen = Some("tcp://127.0.0.1:4000".into());
        assert_eq!(Settings::load(&o).unwrap().listen, "tcp://127.0.0.1:4000");
        std::fs::write(&file, "lissten = \"x\"\n").unwrap();
        let err = Settings::load(&o).unwrap_err();
        assert!(err.contains("lissten"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
