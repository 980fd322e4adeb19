//! The server thread: the ROUTER socket, the registry, the lease table.
//!
//! One loop, one `zmq::poll` on the request socket and the mailbox:
//! requests are decoded and handed to the nameserver's handlers; a
//! handler's write goes to the log, and its reply waits until the log hands
//! the command back durable, when it is applied and answered. Leases that
//! run out are proposed as `Expire`, probe verdicts as `ProbeFailed`: the
//! state changes in one place only, [`Server::commit`]. Nothing here blocks
//! on a peer or a disk.
//!
//! It shares the wire with pycom-client's service hosting (`router::recv`,
//! `Outbox`) but not the loop: a hosted service hands each request to a
//! worker pool and answers when the handler returns, while pycomd answers
//! reads inline from state it alone owns and holds write replies until the
//! log hands them back, in log order. One loop for both would need a
//! handler that can defer its reply, which services do not need.

use crate::auth;
use crate::cluster;
use crate::config::{Overrides, Settings};
use crate::leases::Leases;
use crate::log::snapshot::Snapshot;
use crate::log::{Committed, Log, LogId, Proposal, Refused, ReplyTo};
use crate::logging::LogControl;
use crate::mailbox::{Event, Mailbox, Signal};
use crate::metrics::{self, Label};
use crate::nameserver::{self, Context, Plan, Stats};
use crate::notify;
use crate::prober::ProbeCmd;
use crate::pubsub;
use crate::registry::{Applied, ChangeKind, Command, Record, Registry};
use crate::workflow;
use pycom_client::nameserver::INTERFACE;
use pycom_client::proto::{self, Fault};
use pycom_client::router::{self, Incoming, Outbox};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Requests handled before the loop looks at events and leases again.
const BATCH: usize = 256;
/// Replies of a batch sent before it ends, once this many requests are
/// served (a multiple of `CHUNK`). Sending after every chunk costs more in
/// wake-ups and small sends than the overlap gains (BENCHMARKS.md, "Taken
/// off in a fourth session").
const SEND_AFTER: usize = BATCH / 2;
// `serve_batch` counts served requests a whole chunk at a time.
const _: () = assert!(SEND_AFTER.is_multiple_of(CHUNK));
/// A batch ends after this long even if requests are waiting.
const BATCH_TIME: Duration = Duration::from_millis(2);
/// Requests of a batch received and decoded together, their look-ups
/// warmed together (see `serve_batch`). A chunk is handled whole: a batch
/// that runs over `BATCH_TIME` ends at most this many requests later.
const CHUNK: usize = 16;
/// Longest wait in one poll, so a clock jump cannot delay expiry for long.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// A turn of the loop that took longer than this was a stall (the process
/// was stopped, the machine swapped): renewals sent meanwhile wait unread,
/// so leases start a fresh full term before anything is expired (etcd
/// #12528).
const STALL: Duration = Duration::from_secs(1);
/// How long a follower waits for the leader to answer a relayed login.
const LOGIN_RELAY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often expired tokens are looked for.
const TOKEN_SWEEP: Duration = Duration::from_secs(60);
/// How long the request socket stays open after the last replies of a
/// stop: a client's libzmq (with ZMQ_IMMEDIATE, as pycom-client sets)
/// discards a reply it has received but not yet handed to the application
/// when the connection drops, so pycomd does not hang up at once.
const GOODBYE: Duration = Duration::from_millis(250);

pub struct Server {
    pub router: zmq::Socket,
    pub mailbox: Mailbox,
    pub registry: Registry,
    pub leases: Leases,
    pub log: Box<dyn Log>,
    pub prober: Sender<ProbeCmd>,
    pub settings: Settings,
    pub overrides: Overrides,
    pub log_control: LogControl,
    pub stats: Stats,
    /// Replies of the batch being handled, sent half-way through it
    /// (`SEND_AFTER`) and when it ends.
    pub outbox: Outbox,
    /// Buffers for reply bodies, given back once sent.
    pub bodies: router::BodyPool,
    /// The vectors a chunk of requests is handled in (kept for their
    /// allocations, see [`Chunk`]).
    pub chunk: Chunk,
    /// When dropped replies were last logged.
    pub drops_logged: Option<Instant>,
    /// Big replies: the last one, and the bytes not yet taken by peers.
    pub replies: nameserver::Replies,
    /// The newest log entry the registry includes.
    pub applied: LogId,
    /// The pub-sub forwarder, if it runs.
    pub pubsub: pubsub::Started,
    /// Where registry changes are published (when pub-sub runs).
    pub events: Option<pubsub::Events>,
    /// Addresses whose last probes went unanswered, and how many in a row.
    pub probe_failures: crate::registry::Map<String, u32>,
    /// This node's part in a cluster, if it is in one.
    pub cluster: Option<cluster::Node>,
    /// Cluster changes asked and not yet done: who asked.
    pub admin_pending: std::collections::HashMap<u64, (Vec<zmq::Message>, Label)>,
    pub next_admin: u64,
    /// Access control, when it is on.
    pub auth: Option<auth::methods::Auth>,
    /// When expired tokens are next looked for.
    pub next_token_sweep: Instant,
    /// A single node's registry being made this cluster's.
    pub import: Option<cluster::import::Import>,
    /// The workflow engine, when pycomd hosts workflows.
    pub workflow: Option<workflow::Engine>,
    /// Counters for `/metrics` only the server thread writes.
    pub metrics: metrics::Tally,
    /// The request being handled, as labels (`None` between requests): its
    /// reply, if made at once, is counted when `handle` returns; a reply
    /// made later is counted where it is made.
    pub handling: Option<Label>,
    /// The HTTP endpoint, for `stat`.
    pub http: crate::http::Started,
    /// A backup being taken by `pycomctl snapshot save`.
    pub backup: crate::backup::Backups,
}

/// A request decoded, with a locate's args read (`serve_batch`).
type Decoded<'a> = (
    Result<proto::CallRef<'a>, router::Refused>,
    Option<nameserver::Located<'a>>,
);

/// The vectors a chunk of requests is handled in, kept from one chunk to
/// the next. Made afresh, the decoded chunk (16 requests, about 2 KB) was
/// a large allocation for glibc, which empties its fast bins into the
/// heap before each one: 1 % of pycomd's time under pipelined `locate`s
/// went to that (`malloc_consolidate`).
#[derive(Default)]
pub struct Chunk {
    incoming: Vec<Incoming>,
    envelopes: Vec<Vec<zmq::Message>>,
    /// Always empty between chunks: it borrows from `incoming` while in use.
    decoded: Vec<Decoded<'static>>,
}

/// `v`, emptied, as a vector of requests borrowed for another lifetime,
/// in the same allocation (the standard library collects in place when
/// the element types have one layout, as here).
// `.filter`, as the lint suggests, cannot change the lifetime: the point here.
#[allow(clippy::unnecessary_filter_map)]
fn relend<'b>(mut v: Vec<Decoded<'_>>) -> Vec<Decoded<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// How the server stopped.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Writes that could not be made durable after the stop began.
    pub unwritten: u64,
}

enum Flow {
    Serve,
    /// A stop signal came: no more requests; waiting for the log to drain.
    Draining {
        unwritten: u64,
    },
    Stopped(Stopped),
}

impl Server {
    pub fn run(mut self) -> Stopped {
        let mut flow = Flow::Serve;
        let mut answered_while_stopping = 0u64;
        let mut last_turn = Instant::now();
        loop {
            let now = Instant::now();
            self.notice_stall(last_turn, now, Duration::ZERO);
            self.expire(now);
            self.expire_tokens(now);
            self.import_step(now);
            if let Some(engine) = &mut self.workflow {
                let steps = engine.due(&self.registry, now);
                self.workflow_steps(steps);
            }
            self.backup.expire(now);
            if let Some(node) = &mut self.cluster {
                node.relay.expire(now, &mut self.outbox);
                for reply in self.log.overdue(now) {
                    self.stats.faults += 1;
                    self.metrics.count(reply.label, metrics::Code::Number(7));
                    let fault = cluster::Outcome::Unknown.fault(format_args!(
                        "the write was not committed within write_timeout_ms = {}",
                        self.log.write_timeout().map_or(0, |t| t.as_millis())
                    ));
                    let body =
                        cluster::outcome_fault(&fault, cluster::Outcome::Unknown, node.leader_elsewhere());
                    self.outbox.push(reply.envelope, proto::STATUS_OK, body);
                }
            }
            let relay_due = self.cluster.as_ref().and_then(|n| n.relay.next_deadline());
            let workflow_due = self.workflow.as_ref().and_then(|e| e.next_wakeup());
            let wait = self
                .leases
                .next_wakeup()
                .into_iter()
                .chain(relay_due)
                .chain(workflow_due)
                .min()
                .map_or(MAX_WAIT, |d| d.saturating_duration_since(now).min(MAX_WAIT));
            // A cluster's writes time out: look at them often enough.
            let wait = match self.cluster {
                Some(_) => wait.min(Duration::from_millis(100)),
                None => wait,
            };
            // Round up: waking a millisecond early would spin until the deadline.
            let wait_ms = i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(500);
            let serving = matches!(flow, Flow::Serve);
            let stalled;
            let (mail, requests, relayed, workflows) = {
                let mut items = vec![self.mailbox.as_poll_item()];
                if serving {
                    items.push(self.router.as_poll_item(zmq::POLLIN));
                }
                let relaying = match self.cluster.as_ref().and_then(|n| n.relay.as_poll_item()) {
                    Some(item) => {
                        items.push(item);
                        true
                    }
                    None => false,
                };
                let hosted_at = items.len();
                if serving {
                    if let Some(engine) = &self.workflow {
                        items.extend(engine.hosted.iter().map(|h| h.socket.as_poll_item(zmq::POLLIN)));
                    }
                }
                let polled = zmq::poll(&mut items, wait_ms);
                stalled = Instant::now().duration_since(now) > wait + STALL;
                match polled {
                    Ok(_) => {}
                    // A signal arrived; its event is read on the next turn.
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => {
                        error!("poll failed: {e}");
                        continue;
                    }
                }
                let relay_at = if serving { 2 } else { 1 };
                let workflows: Vec<usize> = items[hosted_at..]
                    .iter()
                    .enumerate()
                    .filter(|(_, item)| item.is_readable())
                    .map(|(i, _)| i)
                    .collect();
                (
                    items[0].is_readable(),
                    serving && items[1].is_readable(),
                    relaying && items.get(relay_at).is_some_and(|i| i.is_readable()),
                    workflows,
                )
            };
            // Before anything waiting is read: renewals sent during a stall
            // must find their leases still there.
            let polled_at = Instant::now();
            if stalled {
                self.notice_stall(now, polled_at, wait);
            }
            last_turn = polled_at;
            if mail {
                flow = self.read_mail(flow);
            }
            if relayed {
                if let Some(node) = &mut self.cluster {
                    node.relay.take_replies(&mut self.outbox);
                }
            }
            if requests && matches!(flow, Flow::Serve) {
                self.serve_batch();
            }
            if matches!(flow, Flow::Serve) {
                for i in workflows {
                    self.serve_workflow(i);
                }
            }
            let answered = self.send_replies();
            if !serving {
                answered_while_stopping += answered;
            }
            if let Flow::Stopped(stopped) = flow {
                if answered_while_stopping > 0 {
                    std::thread::sleep(GOODBYE);
                }
                // pycomd is exiting: freeing a million records one by one
                // would only delay it by a second.
                std::mem::forget(self.registry);
                std::mem::forget(self.leases);
                if let pubsub::Started::Running(forwarder) = self.pubsub {
                    forwarder.stop();
                }
                return stopped;
            }
        }
    }

    /// Send the replies waiting in the outbox; how many went out. A reply
    /// libzmq refuses (its peer gone or not reading) is counted and logged.
    fn send_replies(&mut self) -> u64 {
        let queued = self.outbox.len() as u64;
        let dropped = self.outbox.flush(&mut self.router);
        if dropped > 0 {
            self.stats.dropped_replies += dropped;
            // One line a second at most, however hard a peer floods.
            if self
                .drops_logged
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            {
                self.drops_logged = Some(Instant::now());
                warn!(
                    total = self.stats.dropped_replies,
                    "replies dropped: their peers are gone or not reading (high_water_mark = {})",
                    self.settings.high_water_mark
                );
            }
        }
        queued - dropped
    }

    fn serve_batch(&mut self) {
        // One clock reading for the requests of a batch; another after each
        // chunk, to end the batch early when a big read took long, so that
        // the replies waiting in it go out and other peers get their turn.
        //
        // The reading after a chunk is the start of the next, and each
        // locate of a chunk is timed from the chunk's start to its end: from
        // before its request was read to after its reply was queued, with
        // no clock reading of its own (one per request was about 2 % of the
        // server thread's samples in a profile, BENCHMARKS.md).
        //
        // Requests are taken a chunk at a time, decoded, and what the
        // chunk's look-ups will read is read first, one after another: on a
        // registry bigger than the CPU's caches their misses then overlap
        // instead of each request waiting for its own.
        let now = Instant::now();
        let mut before = now;
        let Chunk {
            mut incoming,
            mut envelopes,
            mut decoded,
        } = std::mem::take(&mut self.chunk);
        let mut served = 0;
        while served < BATCH {
            incoming.clear();
            while incoming.len() < CHUNK.min(BATCH - served) {
                match self.outbox.recv(&self.router, self.settings.max_message_bytes) {
                    Ok(Some(request)) => incoming.push(request),
                    Ok(None) => break,
                    Err(e) => {
                        error!("receive failed: {e}");
                        break;
                    }
                }
            }
            if incoming.is_empty() {
                break;
            }
            served += incoming.len();
            let drained = incoming.len() < CHUNK;
            envelopes.extend(incoming.iter_mut().map(|i| std::mem::take(&mut i.envelope)));
            let mut requests = relend(std::mem::take(&mut decoded));
            requests.extend(incoming.iter().map(|i| {
                let request = router::decode(&i.parts, i.oversize, self.settings.max_message_bytes);
                // Every locate's args read first, then the look-ups back to back.
                let located = match &request {
                    Ok(call) if call.interface == INTERFACE && call.method == "locate" => {
                        nameserver::Located::of(call.args)
                    }
                    _ => None,
                };
                (request, located)
            }));
            self.registry.warm(
                requests
                    .iter()
                    .filter_map(|(_, located)| located.map(|l| l.interface)),
            );
            let mut locates = 0;
            for ((envelope, (request, located)), incoming) in
                envelopes.drain(..).zip(requests.drain(..)).zip(&incoming)
            {
                let queued = self.outbox.len();
                self.handling = Some(Label::OTHER);
                self.handle(envelope, &incoming.parts, request, located, incoming.frames, now);
                let label = self.handling.take().unwrap_or(Label::OTHER);
                if self.outbox.len() > queued {
                    if let Some((status, body)) = self.outbox.last() {
                        self.metrics.count(label, metrics::Code::of_reply(status, body));
                    }
                    locates += u64::from(label == Label::LOCATE);
                }
            }
            let after = Instant::now();
            self.metrics
                .locate
                .observe_many(after.duration_since(before), locates);
            before = after;
            decoded = relend(requests);
            if drained || before.duration_since(now) > BATCH_TIME {
                break;
            }
            // Half a batch's replies go out while the rest is served: the
            // clients that get them send again meanwhile, instead of every
            // client waiting on the whole batch with a core idle.
            if served == SEND_AFTER {
                self.send_replies();
                // The next chunk's locates are not charged for the send.
                before = Instant::now();
            }
        }
        incoming.clear();
        self.chunk = Chunk {
            incoming,
            envelopes,
            decoded,
        };
    }

    /// One request of a batch: `envelope` its routing frames, `parts` the
    /// frames after them (kept for a relay), `request` what they decoded
    /// to, `located` a locate's args already read.
    fn handle(
        &mut self,
        envelope: Vec<zmq::Message>,
        parts: &[zmq::Message],
        request: Result<proto::CallRef<'_>, router::Refused>,
        located: Option<nameserver::Located<'_>>,
        frames: usize,
        now: Instant,
    ) {
        self.stats.requests += 1;
        let request = match request {
            Ok(request) => request,
            Err(router::Refused::Fail(message)) => {
                self.stats.failed += 1;
                debug!("FAIL: {message}");
                self.outbox
                    .push(envelope, proto::STATUS_FAIL, message.into_bytes());
                return;
            }
            Err(router::Refused::Fault(fault)) => return self.reply_fault(envelope, &fault),
        };
        let label = Label::of(&request.interface, &request.method);
        self.handling = Some(label);
        if parts.len() > 2 || frames > envelope.len() + parts.len() {
            let fault = Fault::bad_request(format!(
                "{INTERFACE} takes no attachments; the request had {} frame(s) after its body",
                frames - envelope.len() - 2
            ));
            return self.reply_fault(envelope, &fault);
        }
        let relay = cluster::relayed(&request.interface, &request.method)
            && self.cluster.as_ref().is_some_and(|n| !n.status.is_leader());
        if relay {
            let method = request.method.to_string();
            // The frames stay with the batch they came in: the leader gets
            // a copy (a follower's writes only).
            let parts = parts.iter().map(|part| zmq::Message::from(&part[..])).collect();
            return self.relay(envelope, parts, &method, now);
        }
        let caller = match auth::caller(self.auth.as_mut(), self.registry.state(), request.extensions) {
            Ok(caller) => caller,
            // A bad token may still log in again.
            Err(_) if request.interface == pycom_client::auth::INTERFACE => auth::Caller::Anonymous,
            Err(fault) => {
                if let Some(a) = &mut self.auth {
                    a.stats.bad_tokens += 1;
                }
                return self.reply_fault(envelope, &fault);
            }
        };
        if request.interface == pycom_client::auth::INTERFACE {
            let token = pycom_client::auth::token_in_raw(request.extensions)
                .ok()
                .flatten();
            let step = auth::methods::dispatch(
                self.auth.as_mut(),
                self.registry.state(),
                &caller,
                token.as_deref(),
                &request.method,
                request.args,
                now,
            );
            return self.auth_step(envelope, step);
        }
        if let Err(fault) = self.may_read(&caller, &request.interface, &request.method) {
            return self.reply_fault(envelope, &fault);
        }
        if request.interface == cluster::INTERFACE {
            return self.cluster_request(envelope, &request.method, request.args);
        }
        if request.interface == pycom_client::workflow::ADMIN_INTERFACE {
            let token = pycom_client::auth::token_in_raw(request.extensions)
                .ok()
                .flatten();
            return self.workflow_admin(envelope, &caller, token, &request.method, request.args);
        }
        if request.interface == crate::backup::INTERFACE {
            return self.backup_request(envelope, &caller, &request.method, request.args, now);
        }
        if request.interface == pycom_client::pubsub::wire::INTERFACE {
            let body = match &self.pubsub {
                pubsub::Started::Running(forwarder) => {
                    pubsub::methods::dispatch(forwarder, &request.method, request.args)
                }
                pubsub::Started::Off(why) => {
                    self.stats.faults += 1;
                    let fault = Fault::not_found(format!("{}: {why}", request.interface));
                    proto::encode_fault(&fault, None)
                }
            };
            return self.outbox.push(envelope, proto::STATUS_OK, body);
        }
        if request.interface != INTERFACE {
            let fault = Fault::not_found(format!(
                "pycomd serves only {INTERFACE}, {}, {}, {} and {}, not '{}': locate the service through it and call it directly",
                pycom_client::pubsub::wire::INTERFACE,
                pycom_client::auth::INTERFACE,
                cluster::INTERFACE,
                pycom_client::workflow::ADMIN_INTERFACE,
                request.interface
            ));
            return self.reply_fault(envelope, &fault);
        }
        let mut ctx = Context {
            registry: &self.registry,
            leases: &mut self.leases,
            settings: &self.settings,
            stats: &self.stats,
            log_stats: &|| self.log.stats(),
            now,
            replies: &mut self.replies,
            pubsub: &self.pubsub,
            http: &self.http,
            probe_failures: &self.probe_failures,
            cluster: self.cluster.as_ref().map(|n| &n.status),
            workflows: self.workflow.as_ref().map(|e| (e.hosted.len(), &e.stats)),
            caller: &caller,
            policy: self.auth.as_ref().map(|a| &a.policy),
            auth_stats: self.auth.as_ref().map(|a| &a.stats),
            bodies: &mut self.bodies,
        };
        let plan = nameserver::dispatch(&mut ctx, &request.method, request.args, located);
        debug!(method = %request.method, "request");
        match plan {
            Plan::Read(Ok(body)) => self.outbox.push(envelope, proto::STATUS_OK, body),
            Plan::Read(Err(fault)) if fault.code == pycom_client::Code::AccessDenied => {
                if let Some(a) = &mut self.auth {
                    a.stats.denied_writes += 1;
                }
                self.reply_fault(envelope, &fault)
            }
            Plan::Read(Err(fault)) => self.reply_fault(envelope, &fault),
            Plan::Write(command) => self.propose(command, Some(ReplyTo::to(envelope, label, now))),
            Plan::Body { body, fault } => {
                if fault {
                    self.stats.faults += 1;
                }
                self.outbox.push_body(envelope, proto::STATUS_OK, body);
            }
            Plan::Recycled(body) => self.outbox.push_recycled(envelope, proto::STATUS_OK, body),
        }
    }

    /// Whether `caller` may make this request at all: the reads follow
    /// `auth.anonymous` for callers without a token; cluster changes are
    /// the admin's. Writes are checked by their handlers, per name.
    fn may_read(&mut self, caller: &auth::Caller, interface: &str, method: &str) -> Result<(), Fault> {
        let Some(a) = &mut self.auth else {
            return Ok(());
        };
        if interface == cluster::INTERFACE
            && method != "status"
            && method != "introspect"
            && !caller.is_admin()
        {
            a.stats.denied_admin += 1;
            return Err(Fault::denied(format!(
                "{} may not {method} cluster members: only the admin role may",
                caller.name()
            )));
        }
        let write = interface == INTERFACE && matches!(method, "register" | "unregister" | "renew");
        if matches!(caller, auth::Caller::Anonymous) && !a.policy.anonymous_read && !write {
            a.stats.denied_reads += 1;
            return Err(Fault::denied(format!(
                "an anonymous caller may not call {interface}.{method}: log in (auth.anonymous does not include 'read')"
            )));
        }
        Ok(())
    }

    /// Carry out what an authenticator method asked for.
    fn auth_step(&mut self, envelope: Vec<zmq::Message>, step: auth::methods::Step) {
        use auth::methods::Step;
        match step {
            Step::Reply(Ok(body)) => self.outbox.push(envelope, proto::STATUS_OK, body),
            Step::Reply(Err(fault)) => self.reply_fault(envelope, &fault),
            Step::Write(command) => {
                let label = self.handling.unwrap_or(Label::OTHER);
                self.propose(command, Some(ReplyTo::to(envelope, label, Instant::now())))
            }
            Step::Verify { user, password } => {
                let Some(a) = &mut self.auth else {
                    return;
                };
                let job = auth::hasher::Job {
                    envelope,
                    user,
                    password,
                    users: a.policy.users.clone(),
                };
                if let Err(job) = a.hasher.submit(job) {
                    warn!(
                        "a login was refused: {} logins already wait for a password check",
                        auth::hasher::QUEUE
                    );
                    let fault = Fault::unavailable(format!(
                        "authenticate: {} logins already wait for a password check (the login queue's limit): retry",
                        auth::hasher::QUEUE
                    ));
                    self.reply_fault(job.envelope, &fault);
                }
            }
        }
    }

    /// A password checked: write the login, or count the failure.
    fn verified(&mut self, verdict: auth::hasher::Verdict) {
        let Some(a) = &mut self.auth else {
            return;
        };
        use auth::hasher::Outcome;
        // A user removed by a reload while its login waited fails as wrong.
        let roles = match verdict.outcome {
            Outcome::Ok => a.policy.roles_of(&verdict.user).ok_or(None),
            Outcome::Wrong(held) => Err(held),
            Outcome::Held(wait) => {
                a.stats.logins_throttled += 1;
                return self.answer_login(verdict.envelope, &auth::throttle::held_fault(wait));
            }
        };
        let roles = match roles {
            Ok(roles) => roles,
            Err(held) => {
                a.stats.login_failures += 1;
                info!(user = ?verdict.user, held_s = held.map(|d| d.as_secs()), "a login failed");
                let fault = Fault::denied("authenticate: wrong user name or password");
                return self.answer_login(verdict.envelope, &fault);
            }
        };
        a.stats.logins += 1;
        let token = match pycom_client::auth::new_token() {
            Ok(token) => token,
            Err(e) => {
                return self.answer_login(
                    verdict.envelope,
                    &Fault::unavailable(format!("authenticate: {e}")),
                )
            }
        };
        let digest = auth::digest(&token);
        info!(user = %verdict.user, token = %auth::fingerprint(&digest), "login");
        let command = Command::Login {
            token_sha256: auth::hex(&digest),
            name: verdict.user,
            roles,
            expires_ms: auth::unix_ms().saturating_add(a.policy.token_ttl.as_millis() as u64),
            keep: a.policy.max_tokens_per_user,
        };
        let reply = ReplyTo {
            token: Some(token),
            ..ReplyTo::to(verdict.envelope, Label::AUTHENTICATE, Instant::now())
        };
        self.propose(command, Some(reply));
    }

    /// A login refused after its password check (or without one).
    fn answer_login(&mut self, envelope: Vec<zmq::Message>, fault: &Fault) {
        self.metrics
            .count(Label::AUTHENTICATE, metrics::Code::Number(fault.code.as_number()));
        self.reply_fault(envelope, fault);
    }

    /// The leader proposes what is left of a single node's registry.
    fn import_step(&mut self, now: Instant) {
        if self.import.is_none() || !self.keeps_leases() {
            return;
        }
        let Some(import) = &mut self.import else {
            return;
        };
        let Some(commands) = import.due(self.registry.state(), now) else {
            return;
        };
        if commands.is_empty() {
            match import.finish() {
                Ok(()) => {
                    info!(
                        imported = import.total,
                        "the single node's registry is this cluster's now"
                    );
                    self.import = None;
                }
                Err(e) => error!("cannot mark the single node's registry imported (trying again): {e}"),
            }
            return;
        }
        for command in commands {
            self.propose(command, None);
        }
    }

    /// What the workflow engine asked for: its proposals.
    fn workflow_steps(&mut self, steps: Vec<workflow::Step>) {
        for step in steps {
            match step {
                workflow::Step::Propose(command) => self.propose(Command::Run(command), None),
                workflow::Step::Login(principal) => self.run_as_login(principal),
            }
        }
    }

    /// A workflow's `run_as` principal is logged in by pycomd itself: a
    /// `Login` through the log like a user's, the token kept in memory.
    fn run_as_login(&mut self, principal: String) {
        let (Some(a), Some(engine)) = (&self.auth, &mut self.workflow) else {
            return;
        };
        let Some(roles) = a.policy.roles_of(&principal) else {
            engine.login_failed(&principal, "no such user in the users file");
            return;
        };
        let token = match pycom_client::auth::new_token() {
            Ok(token) => token,
            Err(e) => return engine.login_failed(&principal, &e),
        };
        let sha256 = auth::hex(&auth::digest(&token));
        let expires_ms = auth::unix_ms().saturating_add(a.policy.token_ttl.as_millis() as u64);
        info!(principal = %principal, "logging in a workflow's run_as principal");
        engine.minting(&principal, token, sha256.clone(), expires_ms);
        let command = Command::Login {
            token_sha256: sha256,
            name: principal,
            roles,
            expires_ms,
            keep: a.policy.max_tokens_per_user,
        };
        self.propose(command, None);
    }

    /// Requests waiting on workflow endpoint `i`: task calls start runs.
    fn serve_workflow(&mut self, i: usize) {
        let Some(engine) = &mut self.workflow else {
            return;
        };
        let auth = &mut self.auth;
        let state = self.registry.state();
        let interface = engine
            .hosted
            .get(i)
            .map(|h| h.def.interface.clone())
            .unwrap_or_default();
        let mut check = |token: Option<&str>| -> Result<Option<String>, Fault> {
            let caller = auth::caller_with(auth.as_mut(), state, token)?;
            let Some(a) = auth.as_mut() else {
                return Ok(None);
            };
            if matches!(caller, auth::Caller::Anonymous) && !a.policy.anonymous_read {
                a.stats.denied_reads += 1;
                return Err(Fault::denied(format!(
                    "an anonymous caller may not call workflow {interface}: log in"
                )));
            }
            if !a.policy.may_call(&caller, &interface) {
                a.stats.denied_reads += 1;
                return Err(Fault::denied(format!(
                    "{} may not call {interface}: no call grant covers it",
                    caller.name()
                )));
            }
            Ok(caller.owner().map(str::to_string))
        };
        let steps = engine.serve(i, &self.registry, &mut check);
        self.workflow_steps(steps);
    }

    /// `org.pycom.workflow.admin`.
    fn workflow_admin(
        &mut self,
        envelope: Vec<zmq::Message>,
        caller: &auth::Caller,
        token: Option<String>,
        method: &str,
        args: Option<&serde_json::value::RawValue>,
    ) {
        let writes = matches!(method, "start" | "cancel" | "redrive");
        if writes && !matches!(caller, auth::Caller::Open) && !caller.is_admin() && method != "start" {
            if let Some(a) = &mut self.auth {
                a.stats.denied_admin += 1;
            }
            let fault = Fault::denied(format!(
                "{} may not {method} runs: only the admin role may",
                caller.name()
            ));
            return self.reply_fault(envelope, &fault);
        }
        let by = caller.name().to_string();
        let principal = caller.owner().map(str::to_string);
        let plan = workflow::admin::dispatch(
            self.workflow.as_mut(),
            &self.registry,
            method,
            args,
            &by,
            token,
            principal,
        );
        use workflow::admin::Plan;
        match plan {
            Plan::Reply(Ok(value)) => self.outbox.push(
                envelope,
                proto::STATUS_OK,
                proto::encode_response(Ok(&value), None),
            ),
            Plan::Reply(Err(fault)) => self.reply_fault(envelope, &fault),
            Plan::Write(step) | Plan::Started(_, Some(step)) => match step {
                workflow::Step::Propose(command) => {
                    let label = self.handling.unwrap_or(Label::OTHER);
                    let reply = ReplyTo::to(envelope, label, Instant::now());
                    self.propose(Command::Run(command), Some(reply))
                }
                other => self.workflow_steps(vec![other]),
            },
            Plan::Started(run_id, None) => self.outbox.push(
                envelope,
                proto::STATUS_OK,
                proto::encode_response(Ok(&serde_json::json!({"run_id": run_id})), None),
            ),
        }
    }

    /// After a restart: runs go on from what the log says.
    pub fn resume_workflows(&mut self) {
        if let Some(engine) = &mut self.workflow {
            let steps = engine.resume(&self.registry, Instant::now());
            self.workflow_steps(steps);
        }
    }

    /// Forget tokens that expired (where leases are kept: one node writes it).
    fn expire_tokens(&mut self, now: Instant) {
        if self.auth.is_none() || !self.keeps_leases() || now < self.next_token_sweep {
            return;
        }
        self.next_token_sweep = now + TOKEN_SWEEP;
        let now_ms = auth::unix_ms();
        if self
            .registry
            .state()
            .tokens()
            .next_expiry()
            .is_some_and(|t| t <= now_ms)
        {
            self.propose(Command::ExpireTokens { now_ms }, None);
        }
    }

    /// `org.pycom.cluster`: `status` at once; changes through the leader's
    /// Raft, answered when done.
    fn cluster_request(
        &mut self,
        envelope: Vec<zmq::Message>,
        method: &str,
        args: Option<&serde_json::value::RawValue>,
    ) {
        if method == "status" {
            let body = match &self.cluster {
                Some(node) => proto::encode_response(Ok(&node.status), None),
                None => proto::encode_fault(
                    &Fault::not_found("this pycomd is a single node, not a cluster member (no [cluster] in its configuration)"),
                    None,
                ),
            };
            return self.outbox.push(envelope, proto::STATUS_OK, body);
        }
        let asked = cluster::Admin::parse(method, args).and_then(|op| {
            self.next_admin += 1;
            self.log.admin(op, self.next_admin).map(|()| self.next_admin)
        });
        match asked {
            Ok(id) => {
                let label = self.handling.unwrap_or(Label::OTHER);
                self.admin_pending.insert(id, (envelope, label));
            }
            Err(fault) => self.reply_fault(envelope, &fault),
        }
    }

    /// A follower's write (or renew): to the leader, whose reply goes back
    /// to the client; code 7 (not applied) when there is no leader to ask.
    fn relay(&mut self, envelope: Vec<zmq::Message>, parts: Vec<zmq::Message>, method: &str, now: Instant) {
        let Some(node) = &mut self.cluster else {
            return;
        };
        // A login may wait behind others for a password check: it gets
        // longer than a write.
        let timeout = (method == "authenticate").then_some(LOGIN_RELAY_TIMEOUT);
        match node.relay.forward(envelope, parts, method, now, timeout) {
            // The leader answers and counts it; here it counts as relayed.
            Ok(()) => self
                .metrics
                .count(self.handling.unwrap_or(Label::OTHER), metrics::Code::Relayed),
            Err((envelope, fault)) => {
                self.stats.faults += 1;
                let body = cluster::outcome_fault(&fault, cluster::Outcome::NotApplied, node.relay.leader());
                self.outbox.push(envelope, proto::STATUS_OK, body);
            }
        }
    }

    /// Whether this node keeps the leases and probes: a single node, or
    /// a cluster's leader.
    fn keeps_leases(&self) -> bool {
        self.cluster.as_ref().is_none_or(|n| n.status.is_leader())
    }

    /// Hand a command to the log. If it cannot even be queued, it changes
    /// nothing: answer its fault (or, for an expiry, try again later).
    fn propose(&mut self, command: Command, reply: Option<ReplyTo>) {
        if let Err(refused) = self.log.propose(Proposal { command, reply }) {
            let Refused { proposal, fault } = *refused;
            self.not_written(proposal, &fault);
        }
    }

    fn not_written(&mut self, proposal: Proposal, fault: &Fault) {
        self.not_written_as(proposal, fault, None)
    }

    fn not_written_as(&mut self, proposal: Proposal, fault: &Fault, outcome: Option<cluster::Outcome>) {
        if let (Command::Run(run), Some(engine)) = (&proposal.command, &mut self.workflow) {
            engine.not_written((**run).clone(), fault);
        }
        match (&proposal.command, proposal.reply) {
            (_, Some(reply)) => {
                // Refused while its request is handled, it is counted as
                // the request's reply then.
                if self.handling.is_none() {
                    self.metrics
                        .count(reply.label, metrics::Code::Number(fault.code.as_number()));
                }
                self.not_written_reply(reply, fault, outcome)
            }
            (Command::Expire { service, .. }, None) => self.leases.retry(service, Instant::now()),
            (Command::ProbeFailed { service, revision }, None) => {
                // Probe it again: the verdict will come back.
                if let Some(record) = self.registry.state().get(service) {
                    let _ = self.prober.send(ProbeCmd::Watch {
                        service: service.clone(),
                        address: record.address.clone(),
                        revision: *revision,
                    });
                }
            }
            (Command::Login { name, .. }, None) if self.workflow.is_some() && self.import.is_none() => {
                if let Some(engine) = &mut self.workflow {
                    engine.login_failed(name, &fault.message);
                }
            }
            // Only an import proposes these without a client: it proposes
            // them again.
            (Command::Register { .. } | Command::Login { .. }, None) => debug!(
                command = proposal.command.name(),
                "an imported record was not written yet: {}", fault.message
            ),
            // The engine tries it again.
            (Command::Run(_), None) => {}
            (command, None) => warn!(
                command = command.name(),
                "a write was not made: {}", fault.message
            ),
        }
    }

    fn not_written_reply(&mut self, reply: ReplyTo, fault: &Fault, outcome: Option<cluster::Outcome>) {
        match outcome {
            Some(outcome) => {
                self.stats.faults += 1;
                let leader = self.cluster.as_ref().and_then(|n| n.leader_elsewhere());
                let body = cluster::outcome_fault(fault, outcome, leader);
                self.outbox.push(reply.envelope, proto::STATUS_OK, body);
            }
            None => self.reply_fault(reply.envelope, fault),
        }
    }

    fn reply_fault(&mut self, envelope: Vec<zmq::Message>, fault: &Fault) {
        self.stats.faults += 1;
        self.outbox
            .push(envelope, proto::STATUS_OK, proto::encode_fault(fault, None));
    }

    /// Leases that ran out: propose their expiry (reads already skip them).
    fn expire(&mut self, now: Instant) {
        if !self.keeps_leases() {
            return;
        }
        for (service, revision) in self.leases.due(now) {
            let service = service.to_string();
            self.propose(Command::Expire { service, revision }, None);
        }
    }

    fn read_mail(&mut self, mut flow: Flow) -> Flow {
        let events: Vec<Event> = self.mailbox.drain().collect();
        for event in events {
            match event {
                Event::Committed(entries) => {
                    for entry in entries {
                        self.commit(entry);
                    }
                }
                Event::NotDurable {
                    proposals,
                    error,
                    outcome,
                } => {
                    if let Flow::Draining { unwritten } = &mut flow {
                        *unwritten += proposals.len() as u64;
                    }
                    for proposal in proposals {
                        let fault = match outcome {
                            Some(cluster::Outcome::Unknown) => cluster::Outcome::Unknown
                                .fault(format_args!("{}: {error}", proposal.command.name())),
                            _ => Fault::unavailable(format!(
                                "{}: not written, nothing was changed: {error}",
                                proposal.command.name()
                            )),
                        };
                        self.not_written_as(proposal, &fault, outcome);
                    }
                }
                Event::Cluster(status) => self.follow_cluster(status),
                Event::Refused {
                    seq,
                    outcome,
                    leader,
                    why,
                } => {
                    if let Some(reply) = self.log.refused(seq) {
                        self.stats.faults += 1;
                        self.metrics.count(reply.label, metrics::Code::Number(7));
                        let fault = match outcome {
                            cluster::Outcome::NotApplied => {
                                outcome.fault(format_args!("the write was not applied: {why}"))
                            }
                            cluster::Outcome::Unknown => outcome.fault(&why),
                        };
                        let body = cluster::outcome_fault(&fault, outcome, leader.as_deref());
                        self.outbox.push(reply.envelope, proto::STATUS_OK, body);
                    }
                }
                Event::Applied(log_id) => self.applied = self.applied.max(log_id),
                Event::AdminDone { id, result } => {
                    if let Some((envelope, label)) = self.admin_pending.remove(&id) {
                        let code = match &result {
                            Ok(_) => 0,
                            Err(fault) => fault.code.as_number(),
                        };
                        self.metrics.count(label, metrics::Code::Number(code));
                        match result {
                            Ok(value) => self.outbox.push(
                                envelope,
                                proto::STATUS_OK,
                                proto::encode_response(Ok(&value), None),
                            ),
                            Err(fault) => self.reply_fault(envelope, &fault),
                        }
                    }
                }
                Event::SnapshotWanted(answer) => {
                    let snapshot = Snapshot::of(self.registry.state(), self.applied);
                    match snapshot.encode() {
                        Ok(bytes) => {
                            let _ = answer.send(bytes);
                        }
                        Err(e) => error!("cannot encode a snapshot for Raft: {e}"),
                    }
                }
                Event::InstallSnapshot { state, last, ack } => {
                    info!(
                        index = last.index,
                        records = state.len(),
                        "installing the leader's snapshot"
                    );
                    self.registry.replace_state(state);
                    self.metrics.leased = self.registry.state().leased().count();
                    self.applied = last;
                    if let Some(a) = &mut self.auth {
                        a.view.sync(self.registry.state().tokens());
                        a.principals.clear();
                    }
                    let _ = ack.send(());
                }
                Event::LogStopped { failed_batches } => {
                    let unwritten = match flow {
                        Flow::Draining { unwritten } => unwritten,
                        _ => 0,
                    };
                    if failed_batches > 0 {
                        warn!(failed_batches, "the log stopped after writes that failed");
                    }
                    flow = Flow::Stopped(Stopped { unwritten });
                }
                Event::Unreachable {
                    service,
                    address,
                    revision,
                } => {
                    debug!(%service, %address, "probes unanswered");
                    self.propose(Command::ProbeFailed { service, revision }, None);
                }
                Event::ProbeFailures { address, failures } => {
                    if failures == 0 {
                        self.probe_failures.remove(&address);
                    } else {
                        self.probe_failures.insert(address, failures);
                    }
                }
                Event::SnapshotDue { upto } => {
                    // Events come in the order posted: the entries up to
                    // `upto` were committed, and so applied, before this.
                    if self.applied >= upto {
                        let taking = Instant::now();
                        let snapshot = Snapshot::of(self.registry.state(), self.applied);
                        debug!(
                            ms = taking.elapsed().as_millis() as u64,
                            "state taken for a snapshot"
                        );
                        self.log.snapshot(snapshot);
                    }
                }
                Event::Verified(verdict) => self.verified(verdict),
                Event::WorkflowCalled(called) => {
                    if let Some(engine) = &mut self.workflow {
                        let steps = engine.called(*called, &self.registry);
                        self.workflow_steps(steps);
                    }
                }
                Event::Scrape(answer) => {
                    let started = Instant::now();
                    let numbers = Box::new(self.scrape());
                    self.metrics.scrape_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    let _ = answer.try_send(numbers);
                }
                Event::BackupEncoded { id, result } => self.backup_encoded(id, result),
                Event::Signal(Signal::Reload) => self.reload(),
                Event::Signal(Signal::Stop(name)) => {
                    if matches!(flow, Flow::Serve) {
                        info!(signal = name, "stopping: answering the writes in flight");
                        notify::stopping();
                        self.log.close();
                        flow = Flow::Draining { unwritten: 0 };
                    }
                }
            }
        }
        flow
    }

    /// Apply one durable command, answer it, and let everything that
    /// depends on the state follow the change.
    fn commit(&mut self, entry: Committed) {
        let Committed {
            log_id,
            command,
            reply,
            request,
        } = entry;
        let reply = reply.or_else(|| {
            request.and_then(|(origin, boot, seq)| self.log.claim(origin, boot, seq, log_id.index))
        });
        let (result, changes) = self.registry.apply(&command);
        self.applied = log_id;
        if let (Some(a), Ok(applied)) = (&mut self.auth, &result) {
            if a.view.apply(&command, applied) {
                a.principals.clear();
            }
        }
        if let (Command::Login { token_sha256, .. }, Some(engine)) = (&command, &mut self.workflow) {
            engine.logged_in(token_sha256, &self.registry);
        }
        let now = Instant::now();
        for change in &changes {
            let record = &change.record;
            self.metrics.follow(change);
            let what = match change.kind {
                ChangeKind::Registered => "registered",
                ChangeKind::Updated => "updated",
                ChangeKind::Unregistered => "unregistered",
                ChangeKind::Expired => "lease expired",
                ChangeKind::Dropped => "dropped: probes unanswered",
            };
            info!(
                service = %record.service,
                address = %record.address,
                interfaces = ?record.interfaces,
                revision = change.revision,
                "{what}"
            );
            if let Some(events) = &mut self.events {
                events.publish(change);
            }
            if change.removes() {
                self.probe_failures.remove(&record.address);
                self.leases.revoke(&record.service);
                let _ = self.prober.send(ProbeCmd::Unwatch {
                    service: record.service.to_string(),
                });
            }
        }
        if let Ok(Applied::Registered(record)) = &result {
            // Only a record that was probed before has probes to stop.
            let was_probed = changes
                .iter()
                .any(|c| c.previous.as_ref().is_some_and(|p| p.ttl_ms.is_none()));
            self.watch(record, now, was_probed);
        }
        if let Err(fault) = &result {
            debug!(
                index = log_id.index,
                command = command.name(),
                "refused when applied: {}",
                fault.message
            );
        }
        if let (Command::Run(run), Some(engine)) = (&command, &mut self.workflow) {
            let run_result = result.as_ref().map(|_| ()).map_err(Clone::clone);
            let mut steps = engine.applied(run, &run_result, &self.registry, now);
            if matches!(
                **run,
                crate::registry::runs::RunCommand::StepEnd { .. }
                    | crate::registry::runs::RunCommand::End { .. }
            ) {
                steps.extend(engine.over_retention(&self.registry));
            }
            if let Some(reply) = reply {
                if result.is_err() {
                    self.stats.faults += 1;
                }
                let code = run_result.as_ref().map_or_else(|f| f.code.as_number(), |()| 0);
                self.metrics.count(reply.label, metrics::Code::Number(code));
                let body = workflow::admin::written(run, &run_result);
                self.outbox.push(reply.envelope, proto::STATUS_OK, body);
            }
            self.workflow_steps(steps);
            return;
        }
        if let Some(reply) = reply {
            if result.is_err() {
                self.stats.faults += 1;
            }
            let code = match &result {
                Ok(_) => 0,
                Err(fault) => fault.code.as_number(),
            };
            self.metrics.count(reply.label, metrics::Code::Number(code));
            if reply.label == Label::REGISTER {
                self.metrics.register.observe(reply.received.elapsed());
            }
            let body = match (&result, &reply.token) {
                (Ok(Applied::LoggedIn { expires_ms, .. }), Some(token)) => proto::encode_response(
                    Ok(&serde_json::json!({"token": token, "expires_ms": expires_ms})),
                    None,
                ),
                _ => nameserver::written(&result),
            };
            self.outbox.push(reply.envelope, proto::STATUS_OK, body);
        }
    }

    /// The cluster's view changed: relay to the new leader; on becoming
    /// leader, keep every lease from a fresh full term (renewals sent to
    /// the old leader were not logged) and probe; on losing it, stop.
    fn follow_cluster(&mut self, status: cluster::Status) {
        let Some(node) = &mut self.cluster else {
            return;
        };
        let was_leader = node.status.is_leader();
        if node.status.leader != status.leader
            || node.status.role != status.role
            || node.status.cut_off != status.cut_off
        {
            info!(
                role = ?status.role,
                leader = ?status.leader.as_ref().map(|l| l.id),
                term = status.term,
                cut_off = status.cut_off,
                "cluster"
            );
        }
        node.status = status;
        let leader = node.leader_elsewhere().map(str::to_string);
        node.relay.follow(leader.as_deref(), &mut self.outbox);
        let is_leader = node.status.is_leader();
        if is_leader && !was_leader {
            self.renew_all(Instant::now());
            self.probe_all();
        } else if was_leader && !is_leader {
            let _ = self.prober.send(ProbeCmd::UnwatchAll);
        }
    }

    /// A turn from `since` to `now` that took more than `expected` by over
    /// [`STALL`]: give every lease a fresh term.
    fn notice_stall(&mut self, since: Instant, now: Instant, expected: Duration) {
        let took = now.duration_since(since);
        if took > expected + STALL {
            warn!(
                stalled_ms = took.saturating_sub(expected).as_millis() as u64,
                "pycomd stalled: every lease starts a fresh term before any expires"
            );
            self.renew_all(now);
        }
    }

    /// Every lease a fresh full term from `now` (on becoming leader, after
    /// a stall): renewals sent meanwhile were not seen here.
    fn renew_all(&mut self, now: Instant) {
        self.leases = Leases::start(self.registry.state().leased(), now);
    }

    /// How a record is kept alive, the one place that decides: with a
    /// lease (a full term from `now`), or, without one, by probes. Only
    /// where leases are kept (a single node, a cluster's leader).
    fn watch(&mut self, record: &Record, now: Instant, was_probed: bool) {
        if !self.keeps_leases() {
            return;
        }
        match record.ttl_ms {
            Some(ttl) => {
                self.leases.grant(&record.service, record.revision, ttl, now);
                if was_probed {
                    let _ = self.prober.send(ProbeCmd::Unwatch {
                        service: record.service.to_string(),
                    });
                }
            }
            None => {
                self.leases.revoke(&record.service);
                let _ = self.prober.send(ProbeCmd::Watch {
                    service: record.service.to_string(),
                    address: record.address.clone(),
                    revision: record.revision,
                });
            }
        }
    }

    /// At start (and on becoming a cluster's leader): every lease-less
    /// record is probed again.
    pub fn probe_all(&mut self) {
        if !self.keeps_leases() {
            return;
        }
        for record in self.registry.state().records().filter(|r| r.ttl_ms.is_none()) {
            let _ = self.prober.send(ProbeCmd::Watch {
                service: record.service.to_string(),
                address: record.address.clone(),
                revision: record.revision,
            });
        }
    }

    /// SIGHUP's part for access control: the users file is read again
    /// even if the configuration did not change (that is how users are
    /// added). A policy that does not load keeps the running one.
    fn reload_auth(&mut self, new: &mut Settings, restart: &mut Vec<String>) {
        if new.auth.enabled != self.auth.is_some() {
            restart.push("auth.enabled".into());
            new.auth = self.settings.auth.clone();
            return;
        }
        let Some(a) = &mut self.auth else {
            return;
        };
        match auth::Policy::load(&new.auth) {
            Ok(policy) => {
                let changed = policy.diff(&a.policy);
                for line in policy.warnings() {
                    warn!("access control: {line}");
                }
                a.view.set_policy(&policy);
                a.principals.clear();
                a.policy = policy;
                if changed.is_empty() {
                    info!("reloaded access control: users and grants unchanged");
                } else {
                    info!("reloaded access control: {}", changed.join("; "));
                }
            }
            Err(e) => {
                error!("reload of access control failed, keeping the running users and grants: {e}");
                new.auth = self.settings.auth.clone();
            }
        }
    }

    /// SIGHUP's part for workflows: the definitions are read again; a
    /// directory that does not load keeps the running ones.
    fn reload_workflows(&mut self, settings: &Settings) {
        let Some(engine) = &mut self.workflow else {
            return;
        };
        match engine.reload(settings) {
            Ok((records, removed, line)) => {
                for service in removed {
                    self.registry.remove_own(&service);
                }
                for record in records {
                    self.registry.add_own(record);
                }
                info!("reloaded {line}");
            }
            Err(e) => error!("reload of workflow definitions failed, keeping the running ones: {e}"),
        }
    }

    /// SIGHUP: re-read the configuration and apply what can change live.
    fn reload(&mut self) {
        let reloaded = Settings::load(&self.overrides).and_then(|new| self.settings.reload(&new));
        let (mut new, applied, mut restart) = match reloaded {
            Ok(r) => r,
            Err(e) => {
                error!("reload failed, keeping the running configuration: {e}");
                return;
            }
        };
        if new.log_level != self.settings.log_level {
            if let Err(e) = self.log_control.set_level(&new.log_level) {
                error!("reload: {e}");
            }
        }
        if let Some(forwarder) = self.pubsub.running() {
            forwarder
                .shared
                .max_message_bytes
                .store(new.max_message_bytes, std::sync::atomic::Ordering::Relaxed);
        }
        self.reload_auth(&mut new, &mut restart);
        self.reload_workflows(&new);
        self.settings = new;
        if applied.is_empty() {
            info!("reloaded configuration: nothing that can change live has changed");
        } else {
            info!("reloaded configuration: {}", applied.join("; "));
        }
        if !restart.is_empty() {
            warn!("changed but only applied on restart: {}", restart.join(", "));
        }
    }
}

impl Server {
    /// Everything `/metrics`, `/health` and `/ready` report, copied now.
    fn scrape(&self) -> metrics::Numbers {
        let leader = match &self.cluster {
            Some(node) if node.status.cut_off => Err(
                "this cluster member has not heard from a majority or a leader for longer than an election timeout"
                    .to_string(),
            ),
            Some(node) if node.status.leader.is_none() => {
                Err("this cluster member knows no leader (an election is under way, or it is cut off)".to_string())
            }
            _ => Ok(()),
        };
        metrics::Numbers {
            tally: self.metrics.clone(),
            uptime_s: self.stats.started.elapsed().as_secs(),
            records: self.registry.state().len(),
            revision: self.registry.state().revision(),
            leases: self.leases.len(),
            dropped_replies: self.stats.dropped_replies,
            pending_reply_bytes: self.replies.pending_bytes(),
            log: self.log.stats(),
            pubsub: self.pubsub.running().map(|p| p.stat()),
            auth: self.auth.as_ref().map(|a| a.stats.clone()),
            cluster: self.cluster.as_ref().map(|n| n.status.clone()),
            workflow_runs: match &self.workflow {
                Some(_) => self.registry.state().runs().by_state(),
                None => Vec::new(),
            },
            ready: crate::health::STORE.ready().and(leader),
        }
    }
}

impl Server {
    /// `org.pycom.admin`: `snapshot` (a backup, answered once encoded) and
    /// `snapshot_chunk` (a piece of it). Only the admin may, with access
    /// control on: a backup holds every record and login.
    fn backup_request(
        &mut self,
        envelope: Vec<zmq::Message>,
        caller: &auth::Caller,
        method: &str,
        args: Option<&serde_json::value::RawValue>,
        now: Instant,
    ) {
        if let Some(a) = &mut self.auth {
            if !caller.is_admin() {
                a.stats.denied_admin += 1;
                let fault = Fault::denied(format!(
                    "{} may not call {}.{method}: only the admin role may take backups",
                    caller.name(),
                    crate::backup::INTERFACE
                ));
                return self.reply_fault(envelope, &fault);
            }
        }
        let chunk_bytes = crate::backup::chunk_bytes(self.settings.max_reply_bytes);
        match method {
            "snapshot" => {
                if self.backup.encoding() {
                    let fault = Fault::unavailable(
                        "snapshot: another backup is being taken now: retry once it is answered",
                    );
                    return self.reply_fault(envelope, &fault);
                }
                let poster = match self.mailbox.poster() {
                    Ok(poster) => poster,
                    Err(e) => {
                        return self.reply_fault(envelope, &Fault::unavailable(format!("snapshot: {e}")))
                    }
                };
                // The state as of the last applied entry: consistent, and
                // taken in a blink (the records are shared, not copied).
                let snapshot = Snapshot::of(self.registry.state(), self.applied);
                let label = self.handling.unwrap_or(Label::OTHER);
                let id = self.backup.begin(envelope, label);
                info!(
                    revision = snapshot.revision,
                    index = snapshot.last.index,
                    records = snapshot.records.len(),
                    "taking a backup"
                );
                let spawned = std::thread::Builder::new()
                    .name("pycomd-backup".into())
                    .spawn(move || {
                        let result = crate::backup::encode(&snapshot);
                        drop(snapshot);
                        poster.post(Event::BackupEncoded { id, result });
                    });
                if let Err(e) = spawned {
                    self.backup_encoded(id, Err(format!("cannot start the backup's thread: {e}")));
                }
            }
            "snapshot_chunk" => {
                let args: Result<crate::backup::ChunkArgs, Fault> = args
                    .ok_or_else(|| Fault::bad_request("snapshot_chunk: args {id, offset} are required"))
                    .and_then(|raw| {
                        serde_json::from_str(raw.get())
                            .map_err(|e| Fault::bad_request(format!("snapshot_chunk: {e}")))
                    });
                let body = match args.and_then(|a| self.backup.chunk(a.id, a.offset, chunk_bytes, now)) {
                    Ok(chunk) => proto::encode_response(Ok(&chunk), None),
                    Err(fault) => {
                        self.stats.faults += 1;
                        proto::encode_fault(&fault, None)
                    }
                };
                self.outbox.push(envelope, proto::STATUS_OK, body);
            }
            other => {
                let fault = Fault::new(
                    pycom_client::Code::MethodNotFound,
                    format!("interface {} has no method '{other}'", crate::backup::INTERFACE),
                );
                self.reply_fault(envelope, &fault);
            }
        }
    }

    /// A backup's snapshot is encoded: answer whoever asked for it.
    fn backup_encoded(&mut self, id: u64, result: Result<crate::backup::Encoded, String>) {
        let chunk_bytes = crate::backup::chunk_bytes(self.settings.max_reply_bytes);
        let Some((envelope, label, answer)) = self.backup.finish(id, result, chunk_bytes, Instant::now())
        else {
            return;
        };
        match answer {
            Ok(taken) => {
                info!(
                    revision = taken.revision,
                    bytes = taken.bytes,
                    sha256 = %taken.sha256,
                    "backup taken"
                );
                if self.handling.is_none() {
                    self.metrics.count(label, metrics::Code::Number(0));
                }
                self.outbox.push(
                    envelope,
                    proto::STATUS_OK,
                    proto::encode_response(Ok(&taken), None),
                );
            }
            Err(fault) => {
                error!("a backup failed: {}", fault.message);
                if self.handling.is_none() {
                    self.metrics
                        .count(label, metrics::Code::Number(fault.code.as_number()));
                }
                self.reply_fault(envelope, &fault);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_of_decoded_requests_is_relent_in_the_same_allocation() {
        let parts = [&b"CALL"[..], br#"{"interface": "x.y", "method": "m"}"#];
        let mut decoded: Vec<Decoded<'static>> = Vec::with_capacity(CHUNK);
        let allocation = decoded.as_ptr() as usize;
        for _ in 0..2 {
            let mut requests = relend(std::mem::take(&mut decoded));
            assert_eq!(requests.as_ptr() as usize, allocation);
            let call = proto::decode_call(Some(parts[0]), Some(parts[1]));
            requests.push((call.map_err(|_| router::Refused::Fail("bad".into())), None));
            assert!(requests[0].0.is_ok());
            decoded = relend(requests);
            assert!(decoded.is_empty());
            assert!(decoded.capacity() >= CHUNK);
        }
    }
}
