//! Workflow runs as state: what each run started with, every attempt of
//! every step scheduled and how it ended, and how the run ended.
//!
//! The engine (`crate::workflow`) decides; the commands carry its decision
//! (what to schedule next, how the run ends) and [`Runs::apply`] records
//! it, refusing what no longer fits (a step's end for a run that was
//! cancelled meanwhile). An attempt scheduled and not ended is in flight:
//! after a restart the engine calls it again, or ends the run
//! `interrupted` when the step is not idempotent.

use crate::workflow::definition::Task;
use pycom_client::proto::{Code, Fault};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

impl RunState {
    pub fn name(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<RunState> {
        Some(match s {
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            "interrupted" => RunState::Interrupted,
            _ => return None,
        })
    }
}

/// Which call of a task: its step, its branch (0 unless parallel), and
/// whether it is the step's compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct At {
    pub step: u16,
    #[serde(default)]
    pub branch: u16,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compensate: bool,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Ok(Value),
    Err { code: i64, message: String },
}

/// A call scheduled: not before `not_before_ms` (a retry's backoff).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub at: At,
    pub attempt: u32,
    pub not_before_ms: u64,
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a run failed, kept while its compensations run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub at: At,
    pub code: i64,
    pub error: String,
}

/// One try of one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: At,
    pub attempt: u32,
    pub scheduled_ms: u64,
    pub not_before_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StepOutcome>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: Arc<str>,
    pub workflow: String,
    pub task_name: String,
    pub task: Arc<Task>,
    pub input: Value,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    pub state: RunState,
    /// Who started it (access control on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    pub attempts: Vec<Attempt>,
    /// Results of calls that succeeded, by call name.
    #[serde(default)]
    pub results: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<Finish>,
    /// Times it was run again from its failed step.
    #[serde(default)]
    pub redrives: u32,
    /// Attachments its caller sent (kept in memory only, for the first
    /// step: a restart loses them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attachments: u32,
    /// Its size as `workflow_run_bytes` counts it.
    #[serde(skip)]
    pub bytes: usize,
}

impl Run {
    /// Attempts scheduled and not ended.
    pub fn in_flight(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().filter(|a| a.outcome.is_none())
    }

    /// The newest attempt of a call.
    pub fn last_attempt(&self, at: At) -> Option<&Attempt> {
        self.attempts.iter().rev().find(|a| a.at == at)
    }

    fn measure(&mut self) {
        self.bytes = json_len(&self.input)
            + self.results.values().map(json_len).sum::<usize>()
            + self.attempts.len() * 96
            + self
                .attempts
                .iter()
                .map(|a| match &a.outcome {
                    Some(StepOutcome::Err { message, .. }) => message.len(),
                    _ => 0,
                })
                .sum::<usize>();
    }
}

/// The size of `v` as JSON.
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// Changes to runs (inside [`crate::registry::Command`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunCommand {
    Start {
        run_id: String,
        workflow: String,
        task_name: String,
        task: Arc<Task>,
        input: Value,
        at_ms: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        principal: Option<String>,
        schedule: Vec<Schedule>,
        /// `max_running_runs` when proposed.
        max_running: usize,
        #[serde(default, skip_serializing_if = "is_zero")]
        attachments: u32,
    },
    StepEnd {
        run_id: String,
        at: At,
        attempt: u32,
        at_ms: u64,
        outcome: StepOutcome,
        schedule: Vec<Schedule>,
        /// The run failed here: compensations (in `schedule`) run next.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<Failure>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        finish: Option<Finish>,
    },
    /// Cancelled, or interrupted at a restart.
    End {
        run_id: String,
        at_ms: u64,
        finish: Finish,
    },
    Redrive {
        run_id: String,
        at_ms: u64,
        schedule: Vec<Schedule>,
        max_running: usize,
    },
    /// Ended runs that ended before `before_ms`, or beyond the newest
    /// `keep` ended, or while ended runs hold more than `max_bytes`, are
    /// forgotten (oldest first).
    Forget {
        before_ms: u64,
        keep: usize,
        max_bytes: usize,
    },
}

impl RunCommand {
    pub fn run_id(&self) -> Option<&str> {
        match self {
            RunCommand::Start { run_id, .. }
            | RunCommand::StepEnd { run_id, .. }
            | RunCommand::End { run_id, .. }
            | RunCommand::Redrive { run_id, .. } => Some(run_id),
            RunCommand::Forget { .. } => None,
        }
    }
}

/// Every run pycomd remembers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Runs {
    /// Shared, so that a snapshot takes the runs without copying their
    /// step histories; a change copies a run only while a snapshot holds it.
    runs: BTreeMap<Arc<str>, Arc<Run>>,
    /// Runs by start, for listing newest first.
    order: BTreeSet<(u64, Arc<str>)>,
    /// Ended runs by end, for retention.
    ended: BTreeSet<(u64, Arc<str>)>,
    running: usize,
    /// Ended runs' bytes added up.
    ended_bytes: usize,
}

impl Runs {
    pub fn from_parts(runs: Vec<Run>) -> Runs {
        let mut out = Runs::default();
        for mut run in runs {
            run.measure();
            out.insert(run);
        }
        out
    }

    fn insert(&mut self, run: Run) {
        let run = Arc::new(run);
        self.order.insert((run.started_ms, run.id.clone()));
        match run.ended_ms {
            Some(ended) if run.state != RunState::Running => {
                self.ended.insert((ended, run.id.clone()));
                self.ended_bytes += run.bytes;
            }
            _ => self.running += 1,
        }
        self.runs.insert(run.id.clone(), run);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Run>> {
        let run = self.runs.remove(id)?;
        self.order.remove(&(run.started_ms, run.id.clone()));
        match run.ended_ms {
            Some(ended) if run.state != RunState::Running => {
                self.ended.remove(&(ended, run.id.clone()));
                self.ended_bytes -= run.bytes;
            }
            _ => self.running -= 1,
        }
        Some(run)
    }

    pub fn get(&self, id: &str) -> Option<&Run> {
        self.runs.get(id).map(|r| &**r)
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    pub fn running(&self) -> usize {
        self.running
    }

    pub fn ended(&self) -> usize {
        self.ended.len()
    }

    pub fn ended_bytes(&self) -> usize {
        self.ended_bytes
    }

    /// The oldest end of an ended run, if any.
    pub fn oldest_end(&self) -> Option<u64> {
        self.ended.first().map(|(t, _)| *t)
    }

    /// Every run, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Run> {
        self.order.iter().rev().filter_map(|(_, id)| self.get(id))
    }

    /// Runs started before `run_id`'s start (the page after it).
    pub fn older_than<'a>(&'a self, run: &Run) -> impl Iterator<Item = &'a Run> + 'a {
        let key = (run.started_ms, run.id.clone());
        self.order.range(..key).rev().filter_map(|(_, id)| self.get(id))
    }

    /// How many runs are in each state, every state named (zeros too).
    pub fn by_state(&self) -> Vec<(String, u64)> {
        let mut counts: BTreeMap<RunState, u64> = [
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
            RunState::Interrupted,
        ]
        .into_iter()
        .map(|s| (s, 0))
        .collect();
        for run in self.runs.values() {
            *counts.entry(run.state).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(s, n)| (s.name().to_string(), n))
            .collect()
    }

    /// Runs still running.
    pub fn active(&self) -> impl Iterator<Item = &Run> {
        self.runs
            .values()
            .map(|r| &**r)
            .filter(|r| r.state == RunState::Running)
    }

    /// The runs as shared handles.
    pub fn shared(&self) -> impl Iterator<Item = &Arc<Run>> {
        self.runs.values()
    }

    /// Apply one command; a refusal changes nothing.
    pub fn apply(&mut self, command: &RunCommand) -> Result<(), Fault> {
        match command {
            RunCommand::Start {
                run_id,
                workflow,
                task_name,
                task,
                input,
                at_ms,
                principal,
                schedule,
                max_running,
                attachments,
            } => {
                if self.runs.contains_key(run_id.as_str()) {
                    return Err(Fault::bad_request(format!("run {run_id} exists already")));
                }
                if self.running >= *max_running {
                    return Err(too_many(*max_running));
                }
                let mut run = Run {
                    id: Arc::from(run_id.as_str()),
                    workflow: workflow.clone(),
                    task_name: task_name.clone(),
                    task: task.clone(),
                    input: input.clone(),
                    started_ms: *at_ms,
                    ended_ms: None,
                    state: RunState::Running,
                    principal: principal.clone(),
                    attempts: Vec::new(),
                    results: BTreeMap::new(),
                    failure: None,
                    finish: None,
                    redrives: 0,
                    attachments: *attachments,
                    bytes: 0,
                };
                scheduled(&mut run, schedule, *at_ms);
                run.measure();
                self.insert(run);
                Ok(())
            }
            RunCommand::StepEnd {
                run_id,
                at,
                attempt,
                at_ms,
                outcome,
                schedule,
                failure,
                finish,
            } => {
                let run = self.running_run(run_id)?;
                let Some(slot) = run
                    .attempts
                    .iter()
                    .rposition(|a| a.at == *at && a.attempt == *attempt && a.outcome.is_none())
                else {
                    return Err(Fault::bad_request(format!(
                        "run {run_id}: attempt {attempt} of that step is not in flight"
                    )));
                };
                let mut run = self.take(run_id)?;
                let a = &mut run.attempts[slot];
                a.ended_ms = Some(*at_ms);
                a.outcome = Some(outcome.clone());
                if let StepOutcome::Ok(value) = outcome {
                    if !at.compensate {
                        if let Some(name) = call_name(&run.task, *at) {
                            run.results.insert(name, value.clone());
                        }
                    }
                }
                if failure.is_some() {
                    run.failure = failure.clone();
                }
                scheduled(&mut run, schedule, *at_ms);
                if let Some(finish) = finish {
                    end(&mut run, finish, *at_ms);
                }
                run.measure();
                self.insert(run);
                Ok(())
            }
            RunCommand::End {
                run_id,
                at_ms,
                finish,
            } => {
                self.running_run(run_id)?;
                let mut run = self.take(run_id)?;
                end(&mut run, finish, *at_ms);
                self.insert(run);
                Ok(())
            }
            RunCommand::Redrive {
                run_id,
                at_ms,
                schedule,
                max_running,
            } => {
                let run = self.get(run_id).ok_or_else(|| unknown(run_id))?;
                if !matches!(run.state, RunState::Failed | RunState::Interrupted) {
                    return Err(Fault::bad_request(format!(
                        "run {run_id} is {}: only a failed or interrupted run can be redriven",
                        run.state.name()
                    )));
                }
                if self.running >= *max_running {
                    return Err(too_many(*max_running));
                }
                let mut run = self.take(run_id)?;
                // What was in flight when it stopped is abandoned.
                for a in run.attempts.iter_mut().filter(|a| a.outcome.is_none()) {
                    a.ended_ms = Some(*at_ms);
                    a.outcome = Some(StepOutcome::Err {
                        code: Code::Unavailable.as_number(),
                        message: "abandoned: the run was redriven".into(),
                    });
                }
                run.state = RunState::Running;
                run.ended_ms = None;
                run.finish = None;
                run.failure = None;
                run.redrives += 1;
                scheduled(&mut run, schedule, *at_ms);
                run.measure();
                self.insert(run);
                Ok(())
            }
            RunCommand::Forget {
                before_ms,
                keep,
                max_bytes,
            } => {
                while let Some((ended, id)) = self.ended.first().cloned() {
                    let over =
                        ended < *before_ms || self.ended.len() > *keep || self.ended_bytes > *max_bytes;
                    if !over {
                        break;
                    }
                    self.remove(&id);
                }
                Ok(())
            }
        }
    }

    /// Take a run out to change it: copied only if a snapshot shares it.
    fn take(&mut self, run_id: &str) -> Result<Run, Fault> {
        let run = self.remove(run_id).ok_or_else(|| unknown(run_id))?;
        Ok(Arc::unwrap_or_clone(run))
    }

    fn running_run(&self, run_id: &str) -> Result<&Run, Fault> {
        let run = self.get(run_id).ok_or_else(|| unknown(run_id))?;
        if run.state != RunState::Running {
            return Err(Fault::bad_request(format!(
                "run {run_id} is {} already",
                run.state.name()
            )));
        }
        Ok(run)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn scheduled(run: &mut Run, schedule: &[Schedule], at_ms: u64) {
    for s in schedule {
        run.attempts.push(Attempt {
            at: s.at,
            attempt: s.attempt,
            scheduled_ms: at_ms,
            not_before_ms: s.not_before_ms,
            ended_ms: None,
            outcome: None,
        });
    }
}

fn end(run: &mut Run, finish: &Finish, at_ms: u64) {
    run.state = finish.state;
    run.ended_ms = Some(at_ms);
    run.finish = Some(finish.clone());
}

/// The name of the call at `at` in `task`.
pub fn call_name(task: &Task, at: At) -> Option<String> {
    let step = task.steps.get(at.step as usize)?;
    let call = step.calls().get(at.branch as usize)?;
    Some(match at.compensate {
        true => call.compensate.as_ref()?.name.clone(),
        false => call.name.clone(),
    })
}

fn unknown(run_id: &str) -> Fault {
    Fault::not_found(format!(
        "no run {run_id} (it never existed, or it ended and was forgotten)"
    ))
}

fn too_many(max: usize) -> Fault {
    Fault::unavailable(format!(
        "{max} runs are running already (max_running_runs): retry when some have ended"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::definition::parse;
    use serde_json::json;

    fn task() -> Arc<Task> {
        let def = parse(
            r#"{"service": "/w", "tasks": {"t": [{"interface": "a"}, {"interface": "b"}]}}"#,
            std::path::Path::new("w.json"),
        )
        .unwrap();
        def.tasks["t"].clone()
    }

    fn at(step: u16) -> At {
        At {
            step,
            branch: 0,
            compensate: false,
        }
    }

    fn start(id: &str, max_running: usize) -> RunCommand {
        RunCommand::Start {
            run_id: id.into(),
            workflow: "/w".into(),
            task_name: "t".into(),
            task: task(),
            input: json!({"x": 1}),
            at_ms: 10,
            principal: None,
            schedule: vec![Schedule {
                at: at(0),
                attempt: 1,
                not_before_ms: 10,
            }],
            max_running,
            attachments: 0,
        }
    }

    fn end_step(
        id: &str,
        step: u16,
        attempt: u32,
        schedule: Vec<Schedule>,
        finish: Option<Finish>,
    ) -> RunCommand {
        RunCommand::StepEnd {
            run_id: id.into(),
            at: at(step),
            attempt,
            at_ms: 20,
            outcome: StepOutcome::Ok(json!(step)),
            schedule,
            failure: None,
            finish,
        }
    }

    #[test]
    fn a_run_records_its_steps_and_refuses_what_does_not_fit() {
        let mut runs = Runs::default();
        runs.apply(&start("r1", 1)).unwrap();
        assert_eq!(runs.apply(&start("r2", 1)).unwrap_err().code, Code::Unavailable);
        assert_eq!(runs.apply(&start("r1", 5)).unwrap_err().code, Code::BadRequest);
        // Only an attempt in flight can end.
        assert!(runs.apply(&end_step("r1", 1, 1, vec![], None)).is_err());
        let next = Schedule {
            at: at(1),
            attempt: 1,
            not_before_ms: 20,
        };
        runs.apply(&end_step("r1", 0, 1, vec![next], None)).unwrap();
        let run = runs.get("r1").unwrap();
        assert_eq!(run.results["step1"], json!(0));
        assert_eq!(run.in_flight().map(|a| a.at.step).collect::<Vec<_>>(), [1]);
        let done = Finish {
            state: RunState::Succeeded,
            result: Some(json!(1)),
            code: None,
            error: None,
        };
        runs.apply(&end_step("r1", 1, 1, vec![], Some(done))).unwrap();
        assert_eq!((runs.running(), runs.ended()), (0, 1));
        // Ended: nothing more is recorded.
        assert!(runs.apply(&end_step("r1", 1, 1, vec![], None)).is_err());
    }

    #[test]
    fn a_snapshot_shares_the_runs_and_a_later_change_leaves_them_alone() {
        use crate::log::snapshot::Snapshot;
        use crate::log::LogId;
        use crate::registry::{Command, State};

        let mut state = State::default();
        state.apply(&Command::Run(Box::new(start("r1", 1)))).0.unwrap();
        let last = LogId {
            term: 1,
            node: 1,
            index: 1,
        };
        let snapshot = Snapshot::of(&state, last);
        let held = state.runs().shared().next().unwrap();
        assert!(
            Arc::ptr_eq(&snapshot.runs[0], held),
            "the snapshot copied the run"
        );
        // The step's end copies the run the snapshot holds, not changes it.
        state
            .apply(&Command::Run(Box::new(end_step("r1", 0, 1, vec![], None))))
            .0
            .unwrap();
        assert_eq!(snapshot.runs[0].in_flight().count(), 1);
        assert_eq!(state.runs().get("r1").unwrap().in_flight().count(), 0);
        // Written and read back, the shared runs are the runs.
        let taken = Snapshot::of(&state, last);
        let bytes = crate::log::snapshot::file_bytes(&taken.encode().unwrap());
        let (read, _) = crate::log::snapshot::verify(&bytes).unwrap().into_state();
        assert_eq!(read.runs(), state.runs());
    }

    #[test]
    fn forget_drops_the_oldest_ended_runs() {
        let mut runs = Runs::default();
        for i in 0..5u64 {
            let id = format!("r{i}");
            runs.apply(&start(&id, 100)).unwrap();
            let finish = Finish {
                state: RunState::Cancelled,
                result: None,
                code: Some(7),
                error: None,
            };
            runs.apply(&RunCommand::End {
                run_id: id,
                at_ms: 100 + i,
                finish,
            })
            .unwrap();
        }
        runs.apply(&RunCommand::Forget {
            before_ms: 101,
            keep: 3,
            max_bytes: usize::MAX,
        })
        .unwrap();
        let kept: Vec<&str> = runs.newest_first().map(|r| &*r.id).collect();
        assert_eq!(kept.len(), 3);
        assert!(runs.get("r0").is_none() && runs.get("r1").is_none() && runs.get("r4").is_some());
    }
}
