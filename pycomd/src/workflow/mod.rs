//! Workflows: chains of calls to services, hosted by pycomd as services
//! of their own (PROTOCOL.md 8).
//!
//! Each workflow ([`definition`]) gets a ROUTER endpoint, polled by the
//! server thread, and a record under its service path; each task is a
//! method. A call starts a run and is answered when the run ends.
//!
//! A run is state like any other ([`crate::registry::runs`]): its start,
//! each step's scheduling and each step's outcome are commands in the log,
//! durable before the next step is called. The [`Engine`] decides (what to
//! schedule, whether to retry, compensate or end) and proposes; it acts
//! only on what the log hands back applied, so after a crash it picks up
//! exactly where the disk says: in-flight steps are called again with the
//! same idempotency key, or, marked `"idempotent": false`, end the run
//! `interrupted`. Calls go out on the [`calls`] pool; one proposal per run
//! is in the log at a time, so decisions never race each other.

pub mod admin;
pub mod calls;
pub mod decide;
pub mod definition;
mod endpoint;
pub mod template;

pub use decide::{call_at, fault_of};
pub use endpoint::{introspection, Hosted};

use crate::registry::runs::{self, At, Finish, Run, RunCommand, RunState, Schedule, StepOutcome};
use crate::registry::{Record, Registry};
use decide::{first_calls, render_args, step_done};
use definition::{Definition, Task};
use endpoint::{bind, chosen_run_id};
use pycom_client::proto::{self, Code, Fault, Request};
use pycom_client::router;
use serde_json::{json, Value};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Requests read from one workflow endpoint per turn.
const BATCH: usize = 64;
/// Callers one run answers when it ends (joining by `run_id`): each holds
/// a request's envelope until then.
const MAX_WAITERS_PER_RUN: usize = 1024;
/// How often retention is looked at.
const SWEEP: Duration = Duration::from_secs(60);
/// A proposal the log refused is tried again after this long.
const REPROPOSE: Duration = Duration::from_millis(500);

/// What the engine is bounded by (settings).
#[derive(Debug, Clone)]
pub struct Limits {
    /// A `run_as` token is renewed when less than this is left of it.
    pub run_as_renew_ms: u64,
    pub max_running: usize,
    pub retained: usize,
    pub retained_ms: u64,
    pub run_bytes: usize,
    pub history_bytes: usize,
    pub max_message_bytes: usize,
}

/// Who waits for a run's end on a workflow endpoint.
struct Waiter {
    endpoint: usize,
    envelope: Vec<zmq::Message>,
}

/// Counters for `stat`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub started: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub calls: u64,
    pub retries: u64,
    pub refused: u64,
}

pub struct Engine {
    pub hosted: Vec<Hosted>,
    /// Where the definitions are read from (again at SIGHUP).
    dir: std::path::PathBuf,
    required: bool,
    zmq: zmq::Context,
    pool: calls::Pool,
    limits: Limits,
    waiters: HashMap<Arc<str>, Vec<Waiter>>,
    /// Tokens runs' calls carry (kept in memory only: tokens are never
    /// written to disk).
    tokens: HashMap<Arc<str>, String>,
    /// The caller's attachments, for the first step.
    attachments_in: HashMap<Arc<str>, Arc<Vec<Vec<u8>>>>,
    /// The last step's attachments, for the caller.
    attachments_out: HashMap<Arc<str>, Vec<Vec<u8>>>,
    /// Attempts handed to the pool (or waiting for their time).
    dispatched: HashSet<(Arc<str>, At, u32)>,
    timers: BinaryHeap<Timer>,
    /// Runs with a proposal in the log: their next decision waits.
    pending: HashSet<Arc<str>>,
    queued: HashMap<Arc<str>, VecDeque<calls::Called>>,
    /// Proposals the log refused, to try again, soonest first: each waits
    /// the same [`REPROPOSE`] from when it was refused, so pushing keeps
    /// the order.
    retry: VecDeque<(Instant, RunCommand)>,
    /// Attempts that failed before a call was made (no provider, bad
    /// args), decided on the server's next turn like a call's result.
    ready: Vec<calls::Called>,
    next_sweep: Instant,
    turn: usize,
    /// Access control is on: `run_as` principals log in.
    auth_on: bool,
    run_as: HashMap<String, RunAs>,
    /// When the `run_as` logins are looked at next: the server turns far
    /// more often than a token needs renewing.
    logins_check: LoginCheck,
    /// `run_as` logins failed in a row: each waits twice as long as the
    /// one before (a user missing from the users file would otherwise be
    /// asked for, and warned about, on every turn of the server).
    login_failures: u32,
    /// Calls waiting for their `run_as` principal's login (named last).
    awaiting: Vec<(Arc<str>, At, u32, String)>,
    pub stats: Stats,
}

/// When [`Engine::logins_due`] can next find a login to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LoginCheck {
    /// Something changed (a login made or failed, a reload): on the next turn.
    Now,
    /// When the soonest token is to be renewed (unix ms, as tokens expire).
    AtMs(u64),
    /// Not before something changes: every principal has a login on its
    /// way, or access control is off.
    OnChange,
}

/// An attempt waiting for its backoff to end.
type Timer = Reverse<(Instant, Arc<str>, At, u32)>;
/// Access control's answer for a task's caller: its principal, if any.
pub type Check<'a> = dyn FnMut(Option<&str>) -> Result<Option<String>, Fault> + 'a;

/// What the server is to do for the engine.
pub enum Step {
    Propose(Box<RunCommand>),
    /// Log `principal` in (a definition's `run_as`): its calls wait for
    /// the login to be durable ([`Engine::logged_in`]).
    Login(String),
}

/// A `run_as` principal's tokens: pycomd logs it in itself, like a user,
/// and again when less than half the token's life is left; calls carry
/// the current one while the next one's login is on its way.
#[derive(Default)]
struct RunAs {
    /// (token, expires_ms), durable.
    current: Option<(String, u64)>,
    /// (token, sha256, expires_ms), its login not yet durable.
    next: Option<(String, String, u64)>,
}

impl Engine {
    pub fn new(
        hosted: Vec<Hosted>,
        pool: calls::Pool,
        limits: Limits,
        dir: std::path::PathBuf,
        required: bool,
        zmq: &zmq::Context,
    ) -> Engine {
        Engine {
            hosted,
            dir,
            required,
            zmq: zmq.clone(),
            pool,
            limits,
            waiters: HashMap::new(),
            tokens: HashMap::new(),
            attachments_in: HashMap::new(),
            attachments_out: HashMap::new(),
            dispatched: HashSet::new(),
            timers: BinaryHeap::new(),
            pending: HashSet::new(),
            queued: HashMap::new(),
            retry: VecDeque::new(),
            ready: Vec::new(),
            next_sweep: Instant::now() + SWEEP,
            turn: 0,
            auth_on: false,
            run_as: HashMap::new(),
            logins_check: LoginCheck::Now,
            login_failures: 0,
            awaiting: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// SIGHUP: read the definitions again. A directory that does not
    /// load keeps the running ones. Workflows added are bound, removed
    /// ones closed, changed ones replaced (running runs keep the task
    /// they started with). Returns the records to list and the services
    /// to stop listing, and a line for the log.
    pub fn reload(
        &mut self,
        settings: &crate::config::Settings,
    ) -> Result<(Vec<Record>, Vec<String>, String), String> {
        // Principals, or the renewal margin, may change (the users file too:
        // a login that failed may work now).
        self.logins_check = LoginCheck::Now;
        self.login_failures = 0;
        let mut defs = definition::load_dir(&self.dir, self.required)?;
        let old = self.waiters_services();
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        let mut kept = Vec::new();
        // Endpoints that stay keep their address: clients hold it.
        for h in std::mem::take(&mut self.hosted) {
            match defs.remove(&h.def.service) {
                Some(def) => {
                    if def != h.def {
                        changed.push(def.service.clone());
                    }
                    kept.push(Hosted { def, ..h });
                }
                None => removed.push(h.def.service.clone()),
            }
        }
        let mut added = Vec::new();
        for def in defs.into_values() {
            added.push(def.service.clone());
            kept.push(bind(&self.zmq, settings, def)?);
        }
        // Waiters hold endpoint indexes, which the new list changes.
        let order: Vec<String> = kept.iter().map(|h| h.def.service.clone()).collect();
        self.hosted = kept;
        self.rebind_waiters(&old, &order);
        self.limits = limits(settings);
        let records = self.hosted.iter().map(Hosted::record).collect();
        let line = format!(
            "workflows: {} added, {} changed, {} removed",
            if added.is_empty() {
                "none".into()
            } else {
                added.join(", ")
            },
            if changed.is_empty() {
                "none".into()
            } else {
                changed.join(", ")
            },
            if removed.is_empty() {
                "none".into()
            } else {
                removed.join(", ")
            }
        );
        Ok((records, removed, line))
    }

    /// The service of each endpoint index waiters refer to now.
    fn waiters_services(&self) -> Vec<String> {
        self.hosted.iter().map(|h| h.def.service.clone()).collect()
    }

    fn rebind_waiters(&mut self, old: &[String], new: &[String]) {
        for waiters in self.waiters.values_mut() {
            waiters.retain_mut(|w| {
                let service = old.get(w.endpoint);
                match service.and_then(|s| new.iter().position(|n| n == s)) {
                    Some(i) => {
                        w.endpoint = i;
                        true
                    }
                    None => false,
                }
            });
        }
    }

    /// Access control is on: `run_as` principals' calls carry tokens
    /// pycomd logs them in for.
    pub fn set_auth(&mut self, on: bool) {
        self.auth_on = on;
        self.logins_check = LoginCheck::Now;
        self.login_failures = 0;
    }

    /// A login is durable: if it was a `run_as` principal's, its token is
    /// the one calls carry from now on, and the calls waiting for it go.
    pub fn logged_in(&mut self, sha256: &str, registry: &Registry) {
        let Some((principal, r)) = self
            .run_as
            .iter_mut()
            .find(|(_, r)| r.next.as_ref().is_some_and(|n| n.1 == sha256))
        else {
            return;
        };
        if let Some((token, _, expires_ms)) = r.next.take() {
            r.current = Some((token, expires_ms));
        }
        self.logins_check = LoginCheck::Now;
        self.login_failures = 0;
        let principal = principal.clone();
        let (go, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting)
            .into_iter()
            .partition(|a| a.3 == principal);
        self.awaiting = wait;
        for (id, at, attempt, _) in go {
            if let Some(run) = registry
                .state()
                .runs()
                .get(&id)
                .filter(|r| r.state == RunState::Running)
            {
                self.call(&run.clone(), at, attempt, registry);
            }
        }
    }

    /// The login of `principal` (its token, the token's SHA-256) is on its way.
    pub fn minting(&mut self, principal: &str, token: String, sha256: String, expires_ms: u64) {
        self.run_as.entry(principal.to_string()).or_default().next = Some((token, sha256, expires_ms));
    }

    /// The login of `principal` could not be made: the calls waiting for
    /// it fail with code 5 (a later call asks again).
    pub fn login_failed(&mut self, principal: &str, why: &str) {
        self.login_failures = self.login_failures.saturating_add(1);
        let wait_ms = login_retry_ms(self.login_failures);
        warn!(
            principal,
            "a workflow's run_as login failed (trying again in {} s): {why}",
            wait_ms / 1000
        );
        if let Some(r) = self.run_as.get_mut(principal) {
            r.next = None;
        }
        self.logins_check = LoginCheck::AtMs(crate::auth::unix_ms().saturating_add(wait_ms));
        let (fail, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.awaiting)
            .into_iter()
            .partition(|a| a.3 == principal);
        self.awaiting = wait;
        for (id, at, attempt, _) in fail {
            self.ready.push(calls::Called {
                run_id: id,
                at,
                attempt,
                outcome: StepOutcome::Err {
                    code: Code::AccessDenied.as_number(),
                    message: format!("run_as {principal}: {why}"),
                },
                attachments: Vec::new(),
                took: Duration::ZERO,
            });
        }
    }

    /// `run_as` principals with no token, or less than half of one left,
    /// and no login on its way. Looks only when [`Engine::logins_check`]
    /// says one can be due, and sets when to look next.
    fn logins_due(&mut self) -> Vec<String> {
        let now_ms = match self.logins_check {
            LoginCheck::OnChange => return Vec::new(),
            LoginCheck::AtMs(at_ms) => match crate::auth::unix_ms() {
                now_ms if now_ms >= at_ms => now_ms,
                _ => return Vec::new(),
            },
            LoginCheck::Now => crate::auth::unix_ms(),
        };
        if !self.auth_on {
            self.logins_check = LoginCheck::OnChange;
            return Vec::new();
        }
        let renew_ms = self.limits.run_as_renew_ms;
        let mut soonest: Option<u64> = None;
        let mut due: Vec<String> = Vec::new();
        for principal in self.hosted.iter().filter_map(|h| h.def.run_as.as_ref()) {
            let renew_at_ms = match self.run_as.get(principal) {
                None => None,
                // Its login's end changes this: looked at again then.
                Some(r) if r.next.is_some() => continue,
                Some(r) => r
                    .current
                    .as_ref()
                    .map(|(_, expires_ms)| renew_at(*expires_ms, renew_ms)),
            };
            match renew_at_ms {
                Some(Some(at_ms)) if at_ms > now_ms => {
                    soonest = Some(soonest.map_or(at_ms, |s| s.min(at_ms)));
                }
                // No margin: a token held is never renewed.
                Some(None) => {}
                _ => due.push(principal.clone()),
            }
        }
        due.sort();
        due.dedup();
        // Those due have their logins made (or failed) meanwhile: the next
        // turn looks again, as it did before any was asked for.
        self.logins_check = match (due.is_empty(), soonest) {
            (false, _) => LoginCheck::Now,
            (true, Some(at_ms)) => LoginCheck::AtMs(at_ms),
            (true, None) => LoginCheck::OnChange,
        };
        due
    }

    pub fn definition(&self, service: &str) -> Option<&Definition> {
        self.hosted.iter().map(|h| &h.def).find(|d| d.service == service)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// When the engine next has something to do by itself.
    pub fn next_wakeup(&self) -> Option<Instant> {
        if !self.ready.is_empty() {
            return Some(Instant::now());
        }
        let timer = self.timers.peek().map(|Reverse((t, ..))| *t);
        let retry = self.retry.front().map(|(t, _)| *t);
        // A change (`LoginCheck::Now`) is looked at on the next turn, which
        // comes anyway: waking for it would spin while a login keeps failing.
        let login = match self.logins_check {
            LoginCheck::AtMs(at_ms) => {
                let wait = Duration::from_millis(at_ms.saturating_sub(crate::auth::unix_ms()));
                Some(Instant::now() + wait)
            }
            LoginCheck::Now | LoginCheck::OnChange => None,
        };
        [timer, retry, login, Some(self.next_sweep)]
            .into_iter()
            .flatten()
            .min()
    }

    /// After a restart: every running run goes on from what the log says.
    pub fn resume(&mut self, registry: &Registry, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        let runs: Vec<Run> = registry.state().runs().active().cloned().collect();
        for run in runs {
            let stuck = run.in_flight().find_map(|a| {
                let call = call_at(&run.task, a.at)?;
                if !call.idempotent && !a.at.compensate {
                    return Some(format!(
                        "step '{}' was in flight when pycomd stopped and is marked \"idempotent\": false, so it is not called again; redrive the run to call it",
                        call.name
                    ));
                }
                // The caller's attachments lived in memory only.
                (a.at.step == 0 && !a.at.compensate && run.attachments > 0).then(|| {
                    format!(
                        "step '{}' was in flight when pycomd stopped, and the {} attachment(s) its caller sent are not kept across a restart; start the run again",
                        call.name, run.attachments
                    )
                })
            });
            if let Some(why) = stuck {
                warn!(run = %run.id, "a run cannot go on after the restart: {why}");
                steps.push(self.propose(RunCommand::End {
                    run_id: run.id.to_string(),
                    at_ms: crate::auth::unix_ms(),
                    finish: Finish {
                        state: RunState::Interrupted,
                        result: None,
                        code: Some(Code::Unavailable.as_number()),
                        error: Some(why),
                    },
                }));
                continue;
            }
            info!(run = %run.id, workflow = %run.workflow, "resuming a run");
            self.dispatch_run(&run, registry, now);
        }
        steps
    }

    /// Requests on workflow endpoint `i`.
    pub fn serve(&mut self, i: usize, registry: &Registry, check: &mut Check) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..BATCH {
            let incoming = match router::recv(&self.hosted[i].socket, self.limits.max_message_bytes) {
                Ok(Some(incoming)) => incoming,
                Ok(None) => break,
                Err(e) => {
                    warn!("workflow {}: receive failed: {e}", self.hosted[i].def.service);
                    break;
                }
            };
            if let Some(step) = self.request(i, incoming, registry, check) {
                steps.push(step);
            }
        }
        steps
    }

    fn request(
        &mut self,
        i: usize,
        incoming: router::Incoming,
        registry: &Registry,
        check: &mut Check,
    ) -> Option<Step> {
        let router::Incoming {
            envelope,
            parts,
            oversize,
            ..
        } = incoming;
        let request = match router::decode(&parts, oversize, self.limits.max_message_bytes) {
            Ok(r) => r,
            Err(router::Refused::Fail(message)) => {
                router::send(
                    &self.hosted[i].socket,
                    &envelope,
                    proto::STATUS_FAIL,
                    message.as_bytes(),
                );
                return None;
            }
            Err(router::Refused::Fault(fault)) => {
                self.reply_fault(i, envelope, &fault);
                return None;
            }
        };
        let def = &self.hosted[i].def;
        if request.interface != def.interface && request.interface != pycom_client::workflow::INTERFACE {
            let fault = Fault::not_found(format!(
                "workflow {} serves {}, not '{}'",
                def.service, def.interface, request.interface
            ));
            self.reply_fault(i, envelope, &fault);
            return None;
        }
        if request.method == "introspect" {
            let body = proto::encode_response(Ok(&introspection(def)), None);
            router::send(&self.hosted[i].socket, &envelope, proto::STATUS_OK, &body);
            return None;
        }
        let Some(task) = def.tasks.get(&*request.method).cloned() else {
            let fault = Fault::new(
                Code::MethodNotFound,
                format!(
                    "workflow {} has no task '{}'; its tasks: {}",
                    def.service,
                    request.method,
                    def.tasks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
            self.reply_fault(i, envelope, &fault);
            return None;
        };
        let args: Value = match request.args {
            Some(raw) => match serde_json::from_str(raw.get()) {
                Ok(v) => v,
                Err(e) => {
                    self.reply_fault(i, envelope, &Fault::bad_request(format!("args: {e}")));
                    return None;
                }
            },
            None => Value::Null,
        };
        let chosen = match chosen_run_id(request.extensions) {
            Ok(id) => id,
            Err(e) => {
                self.reply_fault(i, envelope, &Fault::bad_request(e));
                return None;
            }
        };
        let token = pycom_client::auth::token_in_raw(request.extensions)
            .ok()
            .flatten();
        let principal = match check(token.as_deref()) {
            Ok(p) => p,
            Err(fault) => {
                self.reply_fault(i, envelope, &fault);
                return None;
            }
        };
        let (service, task_name) = (def.service.clone(), request.method.to_string());
        let attachments: Vec<Vec<u8>> = parts.iter().skip(2).map(|m| m.to_vec()).collect();
        let waiter = Waiter {
            endpoint: i,
            envelope,
        };
        match self.start(
            registry,
            service,
            task_name,
            task,
            args,
            chosen,
            token,
            principal,
            attachments,
        ) {
            Ok((run_id, step)) => {
                let waiting = self.waiters.get(&run_id).map_or(0, Vec::len);
                if waiting >= MAX_WAITERS_PER_RUN {
                    let fault = Fault::unavailable(format!(
                        "run {run_id} has {MAX_WAITERS_PER_RUN} callers waiting already: ask for its result (org.pycom.workflow.admin result) instead"
                    ));
                    warn!(run = %run_id, "a caller joining a run was refused: {MAX_WAITERS_PER_RUN} wait already");
                    self.reply_fault(waiter.endpoint, waiter.envelope, &fault);
                    return step;
                }
                self.waiters.entry(run_id.clone()).or_default().push(waiter);
                // A run that ended already answers at once.
                if let Some(run) = registry.state().runs().get(&run_id) {
                    if run.state != RunState::Running && !self.pending.contains(&run_id) {
                        self.answer(&run_id, run);
                    }
                }
                step
            }
            Err(fault) => {
                self.reply_fault(waiter.endpoint, waiter.envelope, &fault);
                None
            }
        }
    }

    /// Start a run (or join the one of that id). Returns its id and the
    /// proposal to make, if any.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &mut self,
        registry: &Registry,
        workflow: String,
        task_name: String,
        task: Arc<Task>,
        input: Value,
        chosen: Option<String>,
        token: Option<String>,
        principal: Option<String>,
        attachments: Vec<Vec<u8>>,
    ) -> Result<(Arc<str>, Option<Step>), Fault> {
        let runs = registry.state().runs();
        if let Some(id) = &chosen {
            if let Some(run) = runs.get(id) {
                if run.workflow != workflow || run.task_name != task_name {
                    return Err(Fault::bad_request(format!(
                        "run {id} is a run of {} task {}, not of {workflow} task {task_name}",
                        run.workflow, run.task_name
                    )));
                }
                return Ok((run.id.clone(), None));
            }
            // Its start is in the log but not durable yet: answering with its
            // id now would tell this caller of a run that a failed write
            // could still undo. Code 7: asked again, it joins the run.
            if self.pending.contains(id.as_str()) {
                return Err(Fault::unavailable(format!(
                    "run {id} is being started (its start is not durable yet): ask again"
                )));
            }
        }
        let starting = self.pending.iter().filter(|id| runs.get(id).is_none()).count();
        if runs.running() + starting >= self.limits.max_running {
            self.stats.refused += 1;
            warn!(
                max_running_runs = self.limits.max_running,
                "a run was refused: too many running"
            );
            return Err(Fault::unavailable(format!(
                "{} runs are running already (max_running_runs): retry when some have ended",
                self.limits.max_running
            )));
        }
        let input_bytes = runs::json_len(&input);
        if input_bytes > self.limits.run_bytes {
            return Err(Fault::bad_request(format!(
                "the task's args are {input_bytes} bytes, more than a run may hold (workflow_run_bytes = {})",
                self.limits.run_bytes
            )));
        }
        let run_id: Arc<str> = Arc::from(
            chosen
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
                .as_str(),
        );
        let now_ms = crate::auth::unix_ms();
        let schedule = first_calls(&task, 0, now_ms);
        if let Some(token) = token {
            self.tokens.insert(run_id.clone(), token);
        }
        let attachments_count = attachments.len() as u32;
        if !attachments.is_empty() {
            self.attachments_in.insert(run_id.clone(), Arc::new(attachments));
        }
        self.stats.started += 1;
        let command = RunCommand::Start {
            run_id: run_id.to_string(),
            workflow,
            task_name,
            task,
            input,
            at_ms: now_ms,
            principal,
            schedule,
            max_running: self.limits.max_running,
            attachments: attachments_count,
        };
        Ok((run_id, Some(self.propose(command))))
    }

    fn propose(&mut self, command: RunCommand) -> Step {
        if let Some(id) = command.run_id() {
            self.pending.insert(Arc::from(id));
        }
        Step::Propose(Box::new(command))
    }

    /// A run command is applied (`result`): call what it scheduled, answer
    /// who waits if it ended, and take the next decision queued meanwhile.
    pub fn applied(
        &mut self,
        command: &RunCommand,
        result: &Result<(), Fault>,
        registry: &Registry,
        now: Instant,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        let Some(id) = command.run_id() else {
            return steps;
        };
        let id: Arc<str> = Arc::from(id);
        self.pending.remove(&id);
        let run = registry.state().runs().get(&id);
        match (result, run) {
            (Err(fault), None) => {
                // A start refused when applied: nothing runs.
                self.forget(&id);
                for w in self.waiters.remove(&id).unwrap_or_default() {
                    self.reply_fault(w.endpoint, w.envelope, fault);
                }
            }
            (_, Some(run)) if run.state == RunState::Running => {
                self.dispatch_run(run, registry, now);
            }
            (_, Some(run)) => {
                if matches!(command, RunCommand::StepEnd { .. } | RunCommand::End { .. }) && result.is_ok() {
                    match run.state {
                        RunState::Succeeded => self.stats.succeeded += 1,
                        _ => self.stats.failed += 1,
                    }
                    info!(run = %run.id, workflow = %run.workflow, task = %run.task_name, state = run.state.name(), "run ended");
                }
                self.answer(&id, run);
                self.forget(&id);
            }
            (Ok(()), None) => {}
        }
        // The next result of this run, held while the proposal was out.
        if let Some(run) = registry.state().runs().get(&id) {
            while !self.pending.contains(&id) {
                let Some(called) = self.queued.get_mut(&id).and_then(VecDeque::pop_front) else {
                    break;
                };
                steps.extend(self.decide(run, called));
            }
        }
        if self.queued.get(&id).is_some_and(VecDeque::is_empty) {
            self.queued.remove(&id);
        }
        steps
    }

    /// The log could not take a proposal: try it again shortly (a start is
    /// answered with the fault instead).
    pub fn not_written(&mut self, command: RunCommand, fault: &Fault) {
        let Some(id) = command.run_id().map(Arc::<str>::from) else {
            return;
        };
        if matches!(command, RunCommand::Start { .. }) {
            self.pending.remove(&id);
            self.forget(&id);
            for w in self.waiters.remove(&id).unwrap_or_default() {
                self.reply_fault(w.endpoint, w.envelope, fault);
            }
            return;
        }
        warn!(run = %id, "a run's step could not be written (trying again): {}", fault.message);
        self.retry.push_back((Instant::now() + REPROPOSE, command));
    }

    /// A call came back.
    pub fn called(&mut self, called: calls::Called, registry: &Registry) -> Vec<Step> {
        self.stats.calls += 1;
        debug!(run = %called.run_id, step = called.at.step, attempt = called.attempt, took_us = called.took.as_micros() as u64, "step called");
        let id = called.run_id.clone();
        self.dispatched.remove(&(id.clone(), called.at, called.attempt));
        if self.pending.contains(&id) {
            self.queued.entry(id).or_default().push_back(called);
            return Vec::new();
        }
        match registry.state().runs().get(&id) {
            Some(run) => self.decide(run, called),
            None => Vec::new(),
        }
    }

    /// What follows a call's outcome: the `StepEnd` that records it with
    /// the decision (a retry, the next step, a compensation, the end).
    fn decide(&mut self, run: &Run, called: calls::Called) -> Vec<Step> {
        let jitter = |ceiling: u64| match ceiling {
            0 => 0,
            c => uuid::Uuid::new_v4().as_u64_pair().0 % (c + 1),
        };
        let now_ms = crate::auth::unix_ms();
        let Some(d) = decide::next(
            run,
            called.at,
            called.attempt,
            called.outcome,
            self.limits.run_bytes,
            now_ms,
            &jitter,
        ) else {
            return Vec::new();
        };
        self.end_step(run, called.at, called.attempt, d, called.attachments)
    }

    fn end_step(
        &mut self,
        run: &Run,
        at: At,
        attempt: u32,
        d: decide::Decision,
        attachments: Vec<Vec<u8>>,
    ) -> Vec<Step> {
        let decide::Decision {
            outcome,
            schedule,
            failure,
            finish,
        } = d;
        if finish.as_ref().is_some_and(|f| f.state == RunState::Succeeded) && !attachments.is_empty() {
            self.attachments_out.insert(run.id.clone(), attachments);
        }
        vec![self.propose(RunCommand::StepEnd {
            run_id: run.id.to_string(),
            at,
            attempt,
            at_ms: crate::auth::unix_ms(),
            outcome,
            schedule,
            failure,
            finish,
        })]
    }

    /// Timers: attempts whose backoff ended, proposals to try again, and
    /// retention.
    pub fn due(&mut self, registry: &Registry, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        for called in std::mem::take(&mut self.ready) {
            steps.extend(self.called(called, registry));
        }
        for principal in self.logins_due() {
            steps.push(Step::Login(principal));
        }
        while let Some(Reverse((t, ..))) = self.timers.peek() {
            if *t > now {
                break;
            }
            let Some(Reverse((_, id, at, attempt))) = self.timers.pop() else {
                break;
            };
            let Some(run) = registry.state().runs().get(&id) else {
                continue;
            };
            if run.state == RunState::Running {
                self.call(run, at, attempt, registry);
            }
        }
        while self.retry.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, command)) = self.retry.pop_front() else {
                break;
            };
            steps.push(self.propose(command));
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP;
            let runs = registry.state().runs();
            let before_ms = crate::auth::unix_ms().saturating_sub(self.limits.retained_ms);
            let over = runs.ended() > self.limits.retained
                || runs.ended_bytes() > self.limits.history_bytes
                || runs.oldest_end().is_some_and(|t| t < before_ms);
            if over {
                steps.push(Step::Propose(Box::new(RunCommand::Forget {
                    before_ms,
                    keep: self.limits.retained,
                    max_bytes: self.limits.history_bytes,
                })));
            }
        }
        steps
    }

    /// Retention right after a run ends, when over a count or byte bound.
    pub fn over_retention(&mut self, registry: &Registry) -> Option<Step> {
        let runs = registry.state().runs();
        (runs.ended() > self.limits.retained || runs.ended_bytes() > self.limits.history_bytes).then_some(
            Step::Propose(Box::new(RunCommand::Forget {
                before_ms: 0,
                keep: self.limits.retained,
                max_bytes: self.limits.history_bytes,
            })),
        )
    }

    /// Cancel a running run.
    pub fn cancel(&mut self, run: &Run, by: &str) -> Step {
        self.propose(RunCommand::End {
            run_id: run.id.to_string(),
            at_ms: crate::auth::unix_ms(),
            finish: Finish {
                state: RunState::Cancelled,
                result: None,
                code: Some(Code::Unavailable.as_number()),
                error: Some(format!("cancelled by {by}")),
            },
        })
    }

    /// Redrive a failed or interrupted run from the step that failed.
    pub fn redrive(&mut self, run: &Run) -> Result<Step, Fault> {
        if !matches!(run.state, RunState::Failed | RunState::Interrupted) {
            return Err(Fault::bad_request(format!(
                "run {} is {}: only a failed or interrupted run can be redriven",
                run.id,
                run.state.name()
            )));
        }
        if run.attempts.iter().any(|a| a.at.compensate) {
            return Err(Fault::bad_request(format!(
                "run {}: its completed steps were compensated already; start a new run instead",
                run.id
            )));
        }
        // The first step not completed: where it stopped.
        let step = (0..run.task.steps.len())
            .find(|&s| !step_done(run, s as u16))
            .unwrap_or(run.task.steps.len().saturating_sub(1)) as u16;
        let now_ms = crate::auth::unix_ms();
        let schedule = run.task.steps[step as usize]
            .calls()
            .iter()
            .enumerate()
            .filter(|(_, c)| !run.results.contains_key(&c.name))
            .map(|(b, _)| {
                let at = At {
                    step,
                    branch: b as u16,
                    compensate: false,
                };
                let attempt = run.last_attempt(at).map_or(0, |a| a.attempt) + 1;
                Schedule {
                    at,
                    attempt,
                    not_before_ms: now_ms,
                }
            })
            .collect();
        Ok(self.propose(RunCommand::Redrive {
            run_id: run.id.to_string(),
            at_ms: now_ms,
            schedule,
            max_running: self.limits.max_running,
        }))
    }

    /// Send what the endpoints have queued: replies go out as they are made.
    fn reply_fault(&self, endpoint: usize, envelope: Vec<zmq::Message>, fault: &Fault) {
        if let Some(h) = self.hosted.get(endpoint) {
            router::send(
                &h.socket,
                &envelope,
                proto::STATUS_OK,
                &proto::encode_fault(fault, None),
            );
        }
    }

    /// Answer whoever waits for `run`, which ended.
    fn answer(&mut self, id: &Arc<str>, run: &Run) {
        let waiters = self.waiters.remove(id).unwrap_or_default();
        let attachments = self.attachments_out.remove(id).unwrap_or_default();
        for w in waiters {
            let Some(h) = self.hosted.get(w.endpoint) else {
                continue;
            };
            let finish = run.finish.as_ref();
            match finish {
                Some(Finish {
                    state: RunState::Succeeded,
                    result,
                    ..
                }) => {
                    let body = proto::encode_response(Ok(result.as_ref().unwrap_or(&Value::Null)), None);
                    let frames = w
                        .envelope
                        .iter()
                        .map(|f| &f[..])
                        .chain([proto::STATUS_OK, &body[..]])
                        .chain(attachments.iter().map(Vec::as_slice));
                    if let Err(e) = h.socket.send_multipart(frames, zmq::DONTWAIT) {
                        debug!("a run's reply was dropped: {e}");
                    }
                }
                _ => {
                    let fault = fault_of(run);
                    router::send(
                        &h.socket,
                        &w.envelope,
                        proto::STATUS_OK,
                        &proto::encode_fault(&fault, None),
                    );
                }
            }
        }
    }

    fn forget(&mut self, id: &Arc<str>) {
        self.tokens.remove(id);
        self.attachments_in.remove(id);
        self.queued.remove(id);
        self.dispatched.retain(|(r, ..)| r != id);
    }

    /// Call every in-flight attempt of `run` not called yet (now, or when
    /// its backoff ends).
    fn dispatch_run(&mut self, run: &Run, registry: &Registry, now: Instant) {
        let now_ms = crate::auth::unix_ms();
        let todo: Vec<(At, u32, u64)> = run
            .in_flight()
            .filter(|a| !self.dispatched.contains(&(run.id.clone(), a.at, a.attempt)))
            .map(|a| (a.at, a.attempt, a.not_before_ms))
            .collect();
        for (at, attempt, not_before_ms) in todo {
            self.dispatched.insert((run.id.clone(), at, attempt));
            if not_before_ms > now_ms {
                let wait = Duration::from_millis(not_before_ms - now_ms);
                self.timers
                    .push(Reverse((now + wait, run.id.clone(), at, attempt)));
            } else {
                self.call(run, at, attempt, registry);
            }
        }
    }

    /// Hand one attempt to the pool: a provider located now, the args
    /// rendered from the run's results.
    fn call(&mut self, run: &Run, at: At, attempt: u32, registry: &Registry) {
        let Some(call) = call_at(&run.task, at) else {
            return;
        };
        let name = call.name.clone();
        let outcome_now = |message: String, code: Code| calls::Called {
            run_id: run.id.clone(),
            at,
            attempt,
            outcome: StepOutcome::Err {
                code: code.as_number(),
                message,
            },
            attachments: Vec::new(),
            took: Duration::ZERO,
        };
        let run_as = match self.auth_on {
            true => self.definition(&run.workflow).and_then(|d| d.run_as.clone()),
            false => None,
        };
        let token = match &run_as {
            Some(principal) => match self.run_as.get(principal).and_then(|r| r.current.as_ref()) {
                Some((token, _)) => Some(token.clone()),
                // Its login is on its way (logins_due asks for it).
                None => {
                    self.awaiting
                        .push((run.id.clone(), at, attempt, principal.clone()));
                    return;
                }
            },
            None => self.tokens.get(&run.id).cloned(),
        };
        if run_as.is_none() && run.principal.is_some() && token.is_none() {
            let done = outcome_now(
                format!(
                    "the token run {} was started with is gone: pycomd restarted since, and tokens are never written to disk; start the run again",
                    run.id
                ),
                Code::AccessDenied,
            );
            self.pool_result_now(done);
            return;
        }
        let args = match render_args(run, at, call) {
            Ok(args) => args,
            Err(e) => {
                let done = outcome_now(format!("args: {e}"), Code::BadRequest);
                self.pool_result_now(done);
                return;
            }
        };
        let providers = registry.providers(&call.interface, call.service.as_deref(), |_| true);
        if providers.is_empty() {
            let where_ = call
                .service
                .as_deref()
                .map(|s| format!(" at {s}"))
                .unwrap_or_default();
            let done = outcome_now(
                format!("no live provider of {}{where_}", call.interface),
                Code::ServiceNotFound,
            );
            self.pool_result_now(done);
            return;
        }
        self.turn = self.turn.wrapping_add(1);
        let address = providers[self.turn % providers.len()].address.clone();
        let key = match run.redrives {
            0 => format!("{}/{}", run.id, name),
            n => format!("{}/{}/r{n}", run.id, name),
        };
        let mut request = Request::new(call.interface.clone(), call.method.clone(), args);
        request.extensions.insert(
            pycom_client::workflow::EXTENSION.into(),
            json!(pycom_client::workflow::CallInfo {
                run_id: run.id.to_string(),
                step: name,
                attempt,
                idempotency_key: key,
            }),
        );
        let attachments = match at.step == 0 && !at.compensate {
            true => self.attachments_in.get(&run.id).cloned().unwrap_or_default(),
            false => Arc::default(),
        };
        if attempt > 1 {
            self.stats.retries += 1;
        }
        self.pool.submit(calls::Job {
            run_id: run.id.clone(),
            at,
            attempt,
            address,
            request,
            token,
            attachments,
            timeout: Duration::from_millis(call.timeout_ms),
        });
    }

    /// An attempt that failed before any call: decided on the next turn,
    /// like a call's result.
    fn pool_result_now(&mut self, called: calls::Called) {
        self.ready.push(called);
    }
}

/// The engine for the definitions in the workflows directory, their
/// endpoints bound; `None` when there are none.
pub fn start(
    settings: &crate::config::Settings,
    overrides: &crate::config::Overrides,
    zmq: &zmq::Context,
    posters: crate::mailbox::Posters,
) -> Result<Option<Engine>, String> {
    let Some((dir, required)) = settings.workflows_dir(overrides) else {
        return Ok(None);
    };
    let defs = definition::load_dir(&dir, required)?;
    if defs.is_empty() && settings.cluster.is_some() {
        return Ok(None);
    }
    if settings.cluster.is_some() {
        return Err(format!(
            "{} workflow definition(s) in {}, but a cluster member hosts no workflows yet: move them to a single pycomd, or set workflows_dir to an empty directory",
            defs.len(),
            dir.display()
        ));
    }
    let mut hosted = Vec::with_capacity(defs.len());
    for def in defs.into_values() {
        hosted.push(bind(zmq, settings, def)?);
    }
    let pool = calls::Pool::new(zmq, posters, settings.workflow_calls);
    for h in &hosted {
        info!(
            workflow = %h.def.service,
            address = %h.address,
            tasks = ?h.def.tasks.keys().collect::<Vec<_>>(),
            file = %h.def.file.display(),
            "hosting a workflow"
        );
    }
    Ok(Some(Engine::new(
        hosted,
        pool,
        limits(settings),
        dir,
        required,
        zmq,
    )))
}

/// How long the `n`-th failed `run_as` login in a row waits before logins
/// are looked at again: 1 s, doubling, at most a minute.
fn login_retry_ms(n: u32) -> u64 {
    1_000u64
        .saturating_mul(1 << n.saturating_sub(1).min(6))
        .min(60_000)
}

/// When a token expiring at `expires_ms` is due for renewal: the first ms
/// less than `renew_ms` is left of it; `None` if never (no margin).
fn renew_at(expires_ms: u64, renew_ms: u64) -> Option<u64> {
    (renew_ms > 0).then(|| expires_ms.checked_sub(renew_ms).map_or(0, |at| at + 1))
}

fn limits(settings: &crate::config::Settings) -> Limits {
    Limits {
        run_as_renew_ms: settings.auth.token_ttl.saturating_mul(1000) / 2,
        max_running: settings.max_running_runs,
        retained: settings.workflow_runs_retained,
        retained_ms: settings
            .workflow_runs_retained_days
            .saturating_mul(24 * 3600 * 1000),
        run_bytes: settings.workflow_run_bytes,
        history_bytes: settings.workflow_history_bytes,
        max_message_bytes: settings.max_message_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::State;

    /// An engine hosting one workflow per `run_as` principal, access
    /// control on, renewing tokens with `renew_ms` left.
    fn engine(principals: &[&str], renew_ms: u64) -> Engine {
        let zmq = zmq::Context::new();
        let hosted = principals
            .iter()
            .map(|p| {
                let text = format!(
                    r#"{{"service": "/w/{p}", "run_as": "{p}", "tasks": {{"t": [{{"interface": "a"}}]}}}}"#
                );
                Hosted {
                    def: definition::parse(&text, std::path::Path::new("w.json")).unwrap(),
                    socket: zmq.socket(zmq::ROUTER).unwrap(),
                    address: String::new(),
                }
            })
            .collect();
        let posters = crate::mailbox::Mailbox::new(&zmq).unwrap().posters();
        let mut limits = limits(&crate::config::Settings::default());
        limits.run_as_renew_ms = renew_ms;
        let mut e = Engine::new(
            hosted,
            calls::Pool::new(&zmq, posters, 1),
            limits,
            "".into(),
            false,
            &zmq,
        );
        e.set_auth(true);
        e
    }

    #[test]
    fn renewal_starts_when_less_than_the_margin_is_left() {
        for (expires_ms, renew_ms) in [(100, 30), (10, 30), (30, 30), (u64::MAX, 5), (0, 1)] {
            for now_ms in [0, 9, 10, 11, 69, 70, 71, 99, 100, 101, u64::MAX - 5, u64::MAX] {
                let due = expires_ms.saturating_sub(now_ms) < renew_ms;
                let at = renew_at(expires_ms, renew_ms).unwrap();
                assert_eq!(
                    now_ms >= at,
                    due,
                    "expires {expires_ms}, renew {renew_ms}, now {now_ms}"
                );
            }
        }
        assert_eq!(renew_at(100, 0), None, "no margin: never renewed");
    }

    #[test]
    fn logins_are_looked_at_only_when_one_can_be_due() {
        let registry = Registry::new(State::default(), Vec::new());
        let mut e = engine(&["b", "a", "a"], 1_000);
        // Never logged in: both at once, then not again while on their way.
        assert_eq!(e.logins_due(), ["a", "b"]);
        let now_ms = crate::auth::unix_ms();
        e.minting("a", "ta".into(), "sa".into(), now_ms + 60_000);
        e.minting("b", "tb".into(), "sb".into(), now_ms + 30_000);
        assert!(e.logins_due().is_empty());
        assert_eq!(e.logins_check, LoginCheck::OnChange);
        // Logged in: looked at again when the sooner one needs renewing,
        // and the server wakes for it.
        e.logged_in("sa", &registry);
        e.logged_in("sb", &registry);
        assert!(e.logins_due().is_empty());
        assert_eq!(e.logins_check, LoginCheck::AtMs(now_ms + 29_001));
        let wake = e.next_wakeup().unwrap();
        assert!(wake <= Instant::now() + Duration::from_secs(30) && wake > Instant::now());
        // A failed renewal leaves the current token in use until its time.
        e.minting("a", "ta2".into(), "sa2".into(), now_ms + 90_000);
        e.login_failed("a", "no such user");
        assert!(e.logins_due().is_empty());
        let LoginCheck::AtMs(retry_ms) = e.logins_check else {
            panic!("no retry time after a failed login: {:?}", e.logins_check);
        };
        assert!(retry_ms >= now_ms + 1_000 && retry_ms < now_ms + 29_001);
        e.logins_check = LoginCheck::AtMs(0); // the wait is over
        assert!(e.logins_due().is_empty());
        assert_eq!(e.logins_check, LoginCheck::AtMs(now_ms + 29_001));
        // A token whose renewal time has come.
        e.minting("a", "ta3".into(), "sa3".into(), now_ms + 500);
        e.logged_in("sa3", &registry);
        assert_eq!(e.logins_due(), ["a"]);
        // A failed first login is asked for again once its wait is over,
        // each wait twice the one before (not on every turn: a missing user
        // would flood the log).
        let mut c = engine(&["c"], 1_000);
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert_eq!(c.logins_due(), ["c"]);
            let before_ms = crate::auth::unix_ms();
            c.login_failed("c", "no such user");
            assert!(c.logins_due().is_empty(), "asked again at once");
            let LoginCheck::AtMs(retry_ms) = c.logins_check else {
                panic!("no retry time after a failed login: {:?}", c.logins_check);
            };
            waits.push((retry_ms - before_ms + 500) / 1000);
            c.logins_check = LoginCheck::AtMs(0); // the wait is over
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        // A reload (the users file may be fixed) asks at once.
        c.login_failed("c", "no such user");
        c.set_auth(true);
        assert_eq!(c.logins_due(), ["c"]);
        // Off: nothing to look at until it is on again.
        e.set_auth(false);
        assert!(e.logins_due().is_empty());
        assert_eq!(e.logins_check, LoginCheck::OnChange);
    }

    #[test]
    fn a_run_being_started_is_not_joined_before_its_start_is_durable() {
        let registry = Registry::new(State::default(), Vec::new());
        let mut e = engine(&["a"], 1_000);
        let def = &e.hosted[0].def;
        let (workflow, task) = (def.service.clone(), def.tasks["t"].clone());
        let start = |e: &mut Engine| {
            e.start(
                &registry,
                workflow.clone(),
                "t".into(),
                task.clone(),
                serde_json::json!({}),
                Some("r1".into()),
                None,
                None,
                Vec::new(),
            )
        };
        let (id, step) = start(&mut e).expect("the first start is taken");
        assert_eq!(&*id, "r1");
        assert!(
            matches!(step, Some(Step::Propose(_))),
            "the first start is proposed"
        );
        // Its proposal is in the log, not applied: a second caller naming
        // the same run is told to ask again, not handed the id.
        let Err(fault) = start(&mut e) else {
            panic!("a start not yet durable was joined");
        };
        assert_eq!(fault.code, Code::Unavailable, "{}", fault.message);
        assert!(fault.message.contains("not durable yet"), "{}", fault.message);
    }

    #[test]
    fn a_refused_proposal_is_proposed_again_once_its_wait_is_over() {
        let registry = Registry::new(State::default(), Vec::new());
        let mut e = engine(&[], 1_000);
        let end = |id: &str| RunCommand::End {
            run_id: id.into(),
            at_ms: 1,
            finish: Finish {
                state: RunState::Cancelled,
                result: None,
                code: None,
                error: None,
            },
        };
        let fault = Fault::unavailable("full");
        e.not_written(end("r1"), &fault);
        e.not_written(end("r2"), &fault);
        let now = Instant::now();
        assert!(e.due(&registry, now).is_empty());
        let wake = e.next_wakeup().unwrap();
        assert!(wake > now && wake <= Instant::now() + REPROPOSE);
        let proposed: Vec<String> = e
            .due(&registry, Instant::now() + REPROPOSE)
            .into_iter()
            .filter_map(|s| match s {
                Step::Propose(c) => c.run_id().map(str::to_string),
                Step::Login(_) => None,
            })
            .collect();
        assert_eq!(proposed, ["r1", "r2"]);
        assert!(e.retry.is_empty());
    }
}
