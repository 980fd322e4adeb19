//! What `/metrics` reports: the server thread's counters ([`Tally`], plain
//! fields it alone writes, so the request path pays no atomic or lock), a
//! copy of them and of everything else `stat` knows taken on the server
//! thread when scraped ([`Numbers`], asked for through the mailbox), and
//! their encoding in the Prometheus text format by `prometheus-client`
//! ([`encode`]) on the HTTP thread.
//!
//! Labels are bounded: an interface or method pycomd does not serve is
//! counted as `other`, so no client can create series.

use crate::cluster;
use crate::health;
use crate::log::LogStats;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::time::Duration;

/// The interfaces pycomd serves, in label order; anything else is `other`.
const INTERFACES: [&str; 6] = [
    pycom_client::nameserver::INTERFACE,
    pycom_client::pubsub::wire::INTERFACE,
    pycom_client::auth::INTERFACE,
    cluster::INTERFACE,
    crate::backup::INTERFACE,
    pycom_client::workflow::ADMIN_INTERFACE,
];
/// Each interface's methods, in the order of [`INTERFACES`].
const METHODS: [&[&str]; 6] = [
    &[
        "stat",
        "introspect",
        "register",
        "renew",
        "unregister",
        "locate",
        "list_services",
        "changes",
    ],
    &["stat", "introspect", "topics"],
    &["authenticate", "validate", "logout", "check", "introspect"],
    &["status", "introspect", "add", "remove", "transfer_leader"],
    &["snapshot", "snapshot_chunk"],
    &[
        "list_workflows",
        "start",
        "result",
        "list_runs",
        "show_run",
        "cancel",
        "redrive",
        "introspect",
    ],
];
const OTHER: &str = "other";
/// Methods of one interface, `other` included.
const METHOD_SLOTS: usize = 9;
/// Reply codes 0 to 7, then another number, `fail` (not a call at all) and
/// `relayed` (a follower's write, answered by the leader, which counts it).
const CODES: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "other", "fail", "relayed"];
const SLOTS: usize = (INTERFACES.len() + 1) * METHOD_SLOTS * CODES.len();

/// Which interface and method a request was for, as labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    interface: u8,
    method: u8,
}

impl Label {
    /// A request that named no interface pycomd serves (or none at all).
    pub const OTHER: Label = Label {
        interface: INTERFACES.len() as u8,
        method: (METHOD_SLOTS - 1) as u8,
    };
    pub const LOCATE: Label = Label {
        interface: 0,
        method: 5,
    };
    pub const REGISTER: Label = Label {
        interface: 0,
        method: 2,
    };
    pub const AUTHENTICATE: Label = Label {
        interface: 2,
        method: 0,
    };

    pub fn of(interface: &str, method: &str) -> Label {
        let Some(i) = INTERFACES.iter().position(|known| *known == interface) else {
            return Label::OTHER;
        };
        let m = METHODS[i]
            .iter()
            .position(|known| *known == method)
            .unwrap_or(METHOD_SLOTS - 1);
        Label {
            interface: i as u8,
            method: m as u8,
        }
    }

    fn names(self) -> (&'static str, &'static str) {
        let i = self.interface as usize;
        let interface = INTERFACES.get(i).copied().unwrap_or(OTHER);
        let method = METHODS
            .get(i)
            .and_then(|m| m.get(self.method as usize))
            .copied()
            .unwrap_or(OTHER);
        (interface, method)
    }
}

/// A reply's code, as the `code` label counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Number(i64),
    Fail,
    Relayed,
}

impl Code {
    fn slot(self) -> usize {
        match self {
            Code::Number(n @ 0..=7) => n as usize,
            Code::Number(_) => 8,
            Code::Fail => 9,
            Code::Relayed => 10,
        }
    }

    /// The code of a reply as pycomd encodes it: a `FAIL` status, or a body
    /// beginning `{"code":N` (`proto::encode_response` writes it first).
    pub fn of_reply(status: &[u8], body: &[u8]) -> Code {
        if status == pycom_client::proto::STATUS_FAIL {
            return Code::Fail;
        }
        let digits = body
            .strip_prefix(b"{\"code\":")
            .map(|rest| {
                let negative = rest.first() == Some(&b'-');
                let rest = if negative { &rest[1..] } else { rest };
                let n = rest
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .take(6)
                    .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
                if negative {
                    -n
                } else {
                    n
                }
            })
            .unwrap_or(-1);
        Code::Number(digits)
    }
}

/// Upper bounds of the latency histograms, in seconds: 10 µs (a locate
/// alone; a chunk of them takes longer, see `Tally::locate`) to 10 s (a
/// write waiting for a slow disk or a cluster's commit).
pub const BUCKETS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The same bounds in nanoseconds, for observing without floats.
const BUCKETS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Which bucket `took` falls in (the last: above every bound).
pub fn bucket_of(took: Duration) -> usize {
    let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    BUCKETS_NS
        .iter()
        .position(|b| ns <= *b)
        .unwrap_or(BUCKETS_NS.len())
}

/// A latency histogram kept by one thread: plain counts per bucket.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Per bucket (not cumulative), and one above the last bound.
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum_ns: u64,
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        self.observe_many(took, 1);
    }

    /// `n` observations that each took `took`.
    pub fn observe_many(&mut self, took: Duration, n: u64) {
        if n == 0 {
            return;
        }
        self.counts[bucket_of(took)] += n;
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns = self.sum_ns.saturating_add(ns.saturating_mul(n));
    }
}

/// The server thread's own counters for `/metrics`.
#[derive(Debug, Clone)]
pub struct Tally {
    requests: Box<[u64; SLOTS]>,
    /// From reading a locate to its reply being queued: the time of the
    /// chunk of requests it came in (`Server::serve_batch`).
    pub locate: Histogram,
    /// From receiving a register to its reply being queued (made durable,
    /// applied).
    pub register: Histogram,
    /// Leases that ran out (their expiry applied).
    pub lease_expiries: u64,
    /// Probed records dropped after unanswered probes.
    pub probe_drops: u64,
    /// Records with a lease, kept as changes apply (the rest are probed).
    pub leased: usize,
    /// What the last scrape cost the server thread (copying these numbers).
    pub scrape_ns: u64,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            requests: Box::new([0; SLOTS]),
            locate: Histogram::default(),
            register: Histogram::default(),
            lease_expiries: 0,
            probe_drops: 0,
            leased: 0,
            scrape_ns: 0,
        }
    }
}

impl Tally {
    /// Follow one applied change: expiries, probe drops, leased records.
    pub fn follow(&mut self, change: &crate::registry::Change) {
        use crate::registry::ChangeKind;
        let leased = |r: &crate::registry::Record| usize::from(r.ttl_ms.is_some());
        match change.kind {
            ChangeKind::Registered => self.leased += leased(&change.record),
            ChangeKind::Updated => {
                self.leased += leased(&change.record);
                let before = change.previous.as_deref().map_or(0, leased);
                self.leased = self.leased.saturating_sub(before);
            }
            ChangeKind::Unregistered | ChangeKind::Expired | ChangeKind::Dropped => {
                self.leased = self.leased.saturating_sub(leased(&change.record));
                match change.kind {
                    ChangeKind::Expired => self.lease_expiries += 1,
                    ChangeKind::Dropped => self.probe_drops += 1,
                    _ => {}
                }
            }
        }
    }

    pub fn count(&mut self, label: Label, code: Code) {
        let slot =
            (label.interface as usize * METHOD_SLOTS + label.method as usize) * CODES.len() + code.slot();
        if let Some(n) = self.requests.get_mut(slot) {
            *n += 1;
        }
    }

    /// Every (interface, method, code) counted at least once.
    fn requests(&self) -> impl Iterator<Item = (&'static str, &'static str, &'static str, u64)> + '_ {
        self.requests
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(slot, n)| {
                let code = CODES[slot % CODES.len()];
                let rest = slot / CODES.len();
                let label = Label {
                    interface: (rest / METHOD_SLOTS) as u8,
                    method: (rest % METHOD_SLOTS) as u8,
                };
                let (interface, method) = label.names();
                (interface, method, code, *n)
            })
    }
}

/// Everything one scrape reports, copied on the server thread.
#[derive(Debug)]
pub struct Numbers {
    pub tally: Tally,
    pub uptime_s: u64,
    /// Records in the registry (pycomd's own not included).
    pub records: usize,
    pub revision: u64,
    /// Leases this node keeps (a single node, a cluster's leader).
    pub leases: usize,
    pub dropped_replies: u64,
    pub pending_reply_bytes: usize,
    pub log: LogStats,
    pub pubsub: Option<crate::pubsub::methods::PubsubStat>,
    pub auth: Option<crate::auth::methods::AuthStats>,
    pub cluster: Option<cluster::Status>,
    /// Workflow runs by state (state, runs), filled by the workflow engine
    /// when it runs (`Server::scrape`); empty until then.
    pub workflow_runs: Vec<(String, u64)>,
    /// Whether the store took its last write (or write probe), and, in a
    /// cluster, a leader is known: `/ready`.
    pub ready: Result<(), String>,
}

/// The process's own figures, read from /proc on the HTTP thread.
#[derive(Debug, Default)]
pub struct Process {
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
}

impl Process {
    pub fn read() -> Process {
        let page = 4096u64;
        let resident_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
            .map(|pages| pages * page);
        let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
        Process {
            resident_bytes,
            open_fds,
        }
    }
}

/// `numbers` and `process` in the OpenMetrics text format (what
/// `prometheus-client` writes; Prometheus scrapes it as such).
pub fn encode(numbers: Numbers, process: Process) -> Result<String, std::fmt::Error> {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Scrape { numbers, process }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[derive(Debug)]
struct Scrape {
    numbers: Numbers,
    process: Process,
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One counter family with one label.
fn counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One series of a histogram: its labels, per-bucket counts ([`BUCKETS`],
/// then above them) and sum in nanoseconds.
type Series<'a> = (&'a [(&'a str, &'a str)], &'a [u64], u64);

/// One histogram family.
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[Series],
) -> Result<(), std::fmt::Error> {
    let mut metric = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, counts, sum_ns) in series {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        let sum = *sum_ns as f64 / 1e9;
        if labels.is_empty() {
            metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        } else {
            let mut family = metric.encode_family(labels)?;
            family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)?;
        }
    }
    Ok(())
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let n = &self.numbers;
        let e = &mut e;
        {
            let mut family = e.encode_descriptor(
                "pycom_requests",
                "Requests answered, by interface, method and reply code (other: not one pycomd serves; fail: not a call; relayed: a follower's write answered by the leader)",
                None,
                MetricType::Counter,
            )?;
            for (interface, method, code, count) in n.tally.requests() {
                let labels = [("interface", interface), ("method", method), ("code", code)];
                ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
            }
        }
        histogram(
            e,
            "pycom_request_duration_seconds",
            "Time from a request's arrival to its reply (a register's includes making it durable; a locate's is the time of the chunk of up to 16 requests it was read and answered in, an upper bound)",
            &[
                (
                    &[("method", "locate")],
                    &n.tally.locate.counts,
                    n.tally.locate.sum_ns,
                ),
                (
                    &[("method", "register")],
                    &n.tally.register.counts,
                    n.tally.register.sum_ns,
                ),
            ],
        )?;
        {
            let mut family = e.encode_descriptor(
                "pycom_records",
                "Records in the registry by how they are kept alive (pycomd's own not included)",
                None,
                MetricType::Gauge,
            )?;
            let leased = n.tally.leased.min(n.records);
            for (kind, count) in [("leased", leased), ("probed", n.records - leased)] {
                let labels = [("kind", kind)];
                ConstGauge::new(count as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(e, "pycom_revision", "The registry's revision", n.revision as i64)?;
        gauge(
            e,
            "pycom_leases",
            "Leases this node keeps (a single node, or a cluster's leader)",
            n.leases as i64,
        )?;
        counter(
            e,
            "pycom_lease_expiries",
            "Leases that ran out, their records removed",
            n.tally.lease_expiries,
        )?;
        let probes = health::PROBES.read();
        counters(
            e,
            "pycom_probes",
            "Probes of lease-less records by outcome",
            "outcome",
            [("answered", probes.answered), ("missed", probes.missed)],
        )?;
        counter(
            e,
            "pycom_probe_drops",
            "Probed records dropped after probe_failures unanswered probes in a row",
            n.tally.probe_drops,
        )?;
        let store = health::STORE.read();
        counter(
            e,
            "pycom_store_writes",
            "Entries made durable in the log",
            n.log.writes,
        )?;
        counter(
            e,
            "pycom_store_syncs",
            "fdatasync calls that made log entries durable (group commit: fewer than writes)",
            store.syncs,
        )?;
        histogram(
            e,
            "pycom_store_sync_duration_seconds",
            "Time to write and fdatasync one batch of log entries",
            &[(&[], &store.counts, store.sum_ns)],
        )?;
        counter(
            e,
            "pycom_store_errors",
            "Log writes that failed (disk full, I/O error): their requests were answered code 7",
            store.errors,
        )?;
        counter(
            e,
            "pycom_store_snapshots",
            "Snapshots written since start",
            n.log.snapshots,
        )?;
        counter(
            e,
            "pycom_dropped_replies",
            "Replies dropped: their peer was gone or not reading (high_water_mark)",
            n.dropped_replies,
        )?;
        gauge(
            e,
            "pycom_pending_reply_bytes",
            "Bytes of big replies not yet taken by their peers",
            n.pending_reply_bytes as i64,
        )?;
        if let Some(p) = &n.pubsub {
            counter(
                e,
                "pycom_pubsub_messages",
                "Publications received by the forwarder",
                p.messages_in,
            )?;
            counter(
                e,
                "pycom_pubsub_bytes",
                "Bytes of publications received",
                p.bytes_in,
            )?;
            counters(
                e,
                "pycom_pubsub_dropped",
                "Publications (or registry events) not forwarded, by reason",
                "reason",
                [
                    ("reserved", p.dropped_reserved),
                    ("oversize", p.dropped_oversize),
                    ("malformed", p.dropped_malformed),
                    ("upstream", p.dropped_upstream),
                    ("denied", p.dropped_denied),
                    ("events", p.events_dropped),
                ],
            )?;
            gauge(
                e,
                "pycom_pubsub_subscriptions",
                "Subscriptions held by subscribers",
                p.subscriptions,
            )?;
            gauge(
                e,
                "pycom_pubsub_lvc_topics",
                "Topics in the last-value cache",
                p.topics_cached as i64,
            )?;
            gauge(
                e,
                "pycom_pubsub_lvc_bytes",
                "Bytes in the last-value cache",
                p.cache_bytes as i64,
            )?;
            counter(
                e,
                "pycom_pubsub_lvc_evicted",
                "Topics evicted from the last-value cache",
                p.cache_evicted,
            )?;
        }
        {
            let mut family = e.encode_descriptor(
                "pycom_workflow_runs",
                "Workflow runs by state",
                None,
                MetricType::Gauge,
            )?;
            for (state, runs) in &n.workflow_runs {
                let labels = [("state", state.as_str())];
                ConstGauge::new(*runs as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(a) = &n.auth {
            counters(
                e,
                "pycom_auth",
                "Access control outcomes",
                "outcome",
                [
                    ("login", a.logins),
                    ("login_failed", a.login_failures),
                    ("login_throttled", a.logins_throttled),
                    ("bad_token", a.bad_tokens),
                    ("denied_read", a.denied_reads),
                    ("denied_write", a.denied_writes),
                    ("denied_admin", a.denied_admin),
                ],
            )?;
        }
        if let Some(c) = &n.cluster {
            gauge(
                e,
                "pycom_raft_term",
                "The Raft term this node is in",
                c.term as i64,
            )?;
            gauge(
                e,
                "pycom_raft_leader",
                "The leader's node id as this node knows it (0: none known)",
                c.leader.as_ref().map_or(0, |l| l.id as i64),
            )?;
            gauge(
                e,
                "pycom_raft_is_leader",
                "1 when this node leads and a majority heard it lately",
                i64::from(c.is_leader()),
            )?;
            gauge(
                e,
                "pycom_raft_commit_index",
                "The newest log index known committed",
                c.commit_index as i64,
            )?;
            gauge(
                e,
                "pycom_raft_applied_index",
                "The newest log index applied to this node's registry",
                c.applied_index as i64,
            )?;
            gauge(
                e,
                "pycom_raft_apply_lag",
                "Committed entries not yet applied here",
                c.commit_index.saturating_sub(c.applied_index) as i64,
            )?;
            gauge(
                e,
                "pycom_raft_cut_off",
                "1 when this node has not heard from a leader (or a leader from a majority) for an election timeout",
                i64::from(c.cut_off),
            )?;
            gauge(
                e,
                "pycom_raft_members",
                "Voters and learners",
                c.members.len() as i64,
            )?;
        }
        gauge(
            e,
            "pycom_ready",
            "1 when /ready answers 200: the store takes writes and, in a cluster, a leader is known",
            i64::from(n.ready.is_ok()),
        )?;
        gauge(
            e,
            "pycom_uptime_seconds",
            "Seconds since pycomd started",
            n.uptime_s as i64,
        )?;
        {
            let metric = ConstGauge::new(n.tally.scrape_ns as f64 / 1e9);
            metric.encode(e.encode_descriptor(
                "pycom_scrape_server_seconds",
                "Time the server thread spent on the previous scrape (copying its numbers): what serving metrics costs requests",
                None,
                metric.metric_type(),
            )?)?;
        }
        {
            let mut info = e.encode_descriptor("pycom_build", "pycomd's version", None, MetricType::Info)?;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            info.encode_info(&labels)?;
        }
        if let Some(bytes) = self.process.resident_bytes {
            gauge(
                e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                bytes as i64,
            )?;
        }
        if let Some(fds) = self.process.open_fds {
            gauge(e, "process_open_fds", "Open file descriptors", fds as i64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_unknown_interfaces_and_methods_are_other() {
        assert_eq!(Label::of("com.example.x", "anything"), Label::OTHER);
        assert_eq!(Label::of("org.pycom.nameserver", "locate"), Label::LOCATE);
        assert_eq!(
            Label::of("org.pycom.nameserver", "evil").names(),
            ("org.pycom.nameserver", "other")
        );
    }

    #[test]
    fn reply_codes_are_read_from_the_body() {
        assert_eq!(
            Code::of_reply(b"OK", b"{\"code\":0,\"result\":1}"),
            Code::Number(0)
        );
        assert_eq!(
            Code::of_reply(b"OK", b"{\"code\":7,\"error\":\"x\"}"),
            Code::Number(7)
        );
        assert_eq!(Code::of_reply(b"FAIL", b""), Code::Fail);
        assert_eq!(Code::of_reply(b"OK", b"garbage"), Code::Number(-1));
    }

    #[test]
    fn a_chunk_of_locates_is_observed_as_many_at_the_chunk_s_time() {
        let mut h = Histogram::default();
        h.observe_many(Duration::from_micros(20), 16);
        h.observe_many(Duration::from_secs(1), 0);
        h.observe(Duration::from_micros(5));
        assert_eq!(h.counts[bucket_of(Duration::from_micros(20))], 16);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts.iter().sum::<u64>(), 17);
        assert_eq!(h.sum_ns, 16 * 20_000 + 5_000);
    }

    #[test]
    fn every_slot_is_in_range() {
        let mut t = Tally::default();
        t.count(Label::OTHER, Code::Relayed);
        t.count(Label::of("org.pycom.admin", "snapshot"), Code::Number(99));
        assert_eq!(t.requests().count(), 2);
        assert_eq!(bucket_of(Duration::from_secs(100)), BUCKETS.len());
        assert_eq!(bucket_of(Duration::from_nanos(1)), 0);
    }
}
