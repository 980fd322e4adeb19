//! What a run does next: pure functions of the run (as the log has it)
//! and a call's outcome. The engine proposes what they decide; nothing
//! here does I/O or reads a clock (the time and the jitter are given).

use super::definition::{self, Call, Task};
use super::template;
use crate::registry::runs::{self, At, Failure, Finish, Run, RunState, Schedule, StepOutcome};
use pycom_client::proto::{Code, Fault};
use serde_json::Value;
use tracing::{debug, warn};

/// A call's outcome as it is to be recorded, and what follows it.
pub struct Decision {
    /// The outcome (a result the run may not hold becomes a failure).
    pub outcome: StepOutcome,
    pub schedule: Vec<Schedule>,
    /// The run failed here: `schedule` holds its first compensation.
    pub failure: Option<Failure>,
    pub finish: Option<Finish>,
}

/// What follows `outcome` of attempt `attempt` of the call at `at`: a
/// retry (after `jitter(ceiling)` ms), the next step, a compensation, or
/// the run's end. `None`: the attempt is no longer in flight (the run
/// ended or was redriven meanwhile): nothing to record.
pub fn next(
    run: &Run,
    at: At,
    attempt: u32,
    outcome: StepOutcome,
    run_bytes: usize,
    now_ms: u64,
    jitter: &dyn Fn(u64) -> u64,
) -> Option<Decision> {
    if run.state != RunState::Running || !run.in_flight().any(|a| a.at == at && a.attempt == attempt) {
        return None;
    }
    let call = call_at(&run.task, at)?;
    let n = run.task.steps.len();
    // A result the run may not hold is the step's failure.
    let outcome = match outcome {
        StepOutcome::Ok(v) if run.bytes + runs::json_len(&v) > run_bytes => StepOutcome::Err {
            code: Code::BadRequest.as_number(),
            message: format!(
                "its result would make the run hold more than workflow_run_bytes = {}",
                run_bytes
            ),
        },
        other => other,
    };
    let mut schedule = Vec::new();
    let mut failure = None;
    let mut finish = None;
    match &outcome {
        StepOutcome::Err { code, message } => {
            let retryable = matches!(
                Code::from_number(*code),
                Some(Code::ServiceNotFound | Code::Unavailable)
            );
            if retryable && attempt < call.retry.max_attempts {
                let ceiling = call.retry.ceiling_ms(attempt);
                let wait = jitter(ceiling);
                debug!(run = %run.id, step = %call.name, attempt, wait_ms = wait, "retrying a step: {message}");
                schedule.push(Schedule {
                    at,
                    attempt: attempt + 1,
                    not_before_ms: now_ms + wait,
                });
            } else if at.compensate {
                warn!(run = %run.id, step = %call.name, "a compensation failed: {message}");
                (schedule, finish) = next_compensation(run, at, now_ms, Some(&call.name));
            } else if others_in_flight(run, at) {
                // The parallel step fails once its other branches end.
            } else {
                let error = format!(
                    "step '{}' ({} of {n}), attempt {attempt}: {message}",
                    call.name,
                    at.step + 1
                );
                (schedule, failure, finish) = fail(run, at, *code, error, now_ms);
            }
        }
        StepOutcome::Ok(_) if at.compensate => {
            (schedule, finish) = next_compensation(run, at, now_ms, None);
        }
        StepOutcome::Ok(value) => {
            let step = &run.task.steps[at.step as usize];
            let branches = step.calls().len() as u16;
            let last = |b: u16| run.last_attempt(At { branch: b, ..at });
            let all_ok = (0..branches).all(|b| {
                b == at.branch || last(b).is_some_and(|a| matches!(a.outcome, Some(StepOutcome::Ok(_))))
            });
            let any_in_flight =
                (0..branches).any(|b| b != at.branch && last(b).is_some_and(|a| a.outcome.is_none()));
            if all_ok {
                if (at.step as usize) + 1 < n {
                    schedule = first_calls(&run.task, at.step + 1, now_ms);
                } else {
                    let extra = Some((call.name.as_str(), value));
                    let result = match &run.task.result {
                        None => step_result(run, at.step as usize, extra).unwrap_or(Value::Null),
                        Some(template) => {
                            let prev = step_result(run, at.step as usize, extra).unwrap_or(Value::Null);
                            let lookup = |name: &str| named_result(run, name, extra);
                            match template::render(
                                template,
                                &template::Scope {
                                    input: &run.input,
                                    prev: &prev,
                                    steps: &lookup,
                                },
                            ) {
                                Ok(v) => v,
                                Err(e) => {
                                    let error = format!("the task's result: {e}");
                                    let (s, f, fin) =
                                        fail(run, at, Code::BadRequest.as_number(), error, now_ms);
                                    return Some(Decision {
                                        outcome,
                                        schedule: s,
                                        failure: f,
                                        finish: fin,
                                    });
                                }
                            }
                        }
                    };
                    finish = Some(Finish {
                        state: RunState::Succeeded,
                        result: Some(result),
                        code: None,
                        error: None,
                    });
                }
            } else if !any_in_flight {
                // Another branch failed; this was the last to end.
                let failed = (0..branches).find_map(|b| {
                    let a = last(b)?;
                    match &a.outcome {
                        Some(StepOutcome::Err { code, message }) => {
                            Some((b, a.attempt, *code, message.clone()))
                        }
                        _ => None,
                    }
                });
                if let Some((b, tried, code, message)) = failed {
                    let failed_at = At { branch: b, ..at };
                    let name = call_at(&run.task, failed_at)
                        .map(|c| c.name.clone())
                        .unwrap_or_default();
                    let error = format!(
                        "step '{name}' ({} of {n}), attempt {tried}: {message}",
                        at.step + 1
                    );
                    // This call's own result counts as completed: it is compensated too.
                    let mut with_this = run.clone();
                    with_this.results.insert(call.name.clone(), value.clone());
                    (schedule, failure, finish) = fail(&with_this, failed_at, code, error, now_ms);
                }
            }
        }
    }
    Some(Decision {
        outcome,
        schedule,
        failure,
        finish,
    })
}

/// A call of the run failed for good at `at`: compensate the calls that
/// completed, newest first, or end the run failed.
pub fn fail(
    run: &Run,
    at: At,
    code: i64,
    error: String,
    now_ms: u64,
) -> (Vec<Schedule>, Option<Failure>, Option<Finish>) {
    let failure = Failure { at, code, error };
    match compensations(run).first() {
        Some(&first) => (
            vec![Schedule {
                at: first,
                attempt: 1,
                not_before_ms: now_ms,
            }],
            Some(failure),
            None,
        ),
        None => (
            Vec::new(),
            None,
            Some(Finish {
                state: RunState::Failed,
                result: None,
                code: Some(failure.code),
                error: Some(failure.error),
            }),
        ),
    }
}

/// The compensations a failure runs: for every completed call that has
/// one, newest first.
fn compensations(run: &Run) -> Vec<At> {
    let mut out = Vec::new();
    for (s, step) in run.task.steps.iter().enumerate().rev() {
        for (b, call) in step.calls().iter().enumerate().rev() {
            if call.compensate.is_some() && run.results.contains_key(&call.name) {
                out.push(At {
                    step: s as u16,
                    branch: b as u16,
                    compensate: true,
                });
            }
        }
    }
    out
}

/// After compensation `at` ended: the next one, or the run's end (failed,
/// with the failure that started the compensations).
fn next_compensation(
    run: &Run,
    at: At,
    now_ms: u64,
    failed: Option<&str>,
) -> (Vec<Schedule>, Option<Finish>) {
    let all = compensations(run);
    let next = all.iter().skip_while(|c| **c != at).nth(1);
    if let Some(&next) = next {
        return (
            vec![Schedule {
                at: next,
                attempt: 1,
                not_before_ms: now_ms,
            }],
            None,
        );
    }
    let mut errors: Vec<String> = run
        .attempts
        .iter()
        .filter(|a| a.at.compensate)
        .filter_map(|a| match (&a.outcome, call_at(&run.task, a.at)) {
            (Some(StepOutcome::Err { .. }), Some(c))
                if run.last_attempt(a.at).map(|l| l.attempt) == Some(a.attempt) =>
            {
                Some(c.name.clone())
            }
            _ => None,
        })
        .collect();
    if let Some(name) = failed {
        errors.push(name.to_string());
    }
    let failure = run.failure.clone();
    let mut error = failure.as_ref().map(|f| f.error.clone()).unwrap_or_default();
    match errors.is_empty() {
        true => error.push_str(" (completed steps compensated)"),
        false => error.push_str(&format!(" (compensation failed: {})", errors.join(", "))),
    }
    (
        Vec::new(),
        Some(Finish {
            state: RunState::Failed,
            result: None,
            code: Some(failure.map_or(Code::Unknown.as_number(), |f| f.code)),
            error: Some(error),
        }),
    )
}

/// Whether another branch of `at`'s step is still in flight.
fn others_in_flight(run: &Run, at: At) -> bool {
    run.in_flight()
        .any(|a| a.at.step == at.step && !a.at.compensate && a.at.branch != at.branch)
}

/// The call at `at` of `task`.
pub fn call_at(task: &Task, at: At) -> Option<&Call> {
    let call = task
        .steps
        .get(at.step as usize)?
        .calls()
        .get(at.branch as usize)?;
    match at.compensate {
        true => call.compensate.as_deref(),
        false => Some(call),
    }
}

pub fn first_calls(task: &Task, step: u16, now_ms: u64) -> Vec<Schedule> {
    task.steps
        .get(step as usize)
        .map(|s| {
            (0..s.calls().len())
                .map(|b| Schedule {
                    at: At {
                        step,
                        branch: b as u16,
                        compensate: false,
                    },
                    attempt: 1,
                    not_before_ms: now_ms,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether every call of step `s` succeeded.
pub fn step_done(run: &Run, s: u16) -> bool {
    run.task
        .steps
        .get(s as usize)
        .is_some_and(|step| step.calls().iter().all(|c| run.results.contains_key(&c.name)))
}

/// The result of step `s`: its call's, or the list of its branches'.
pub fn step_result(run: &Run, s: usize, extra: Option<(&str, &Value)>) -> Option<Value> {
    let step = run.task.steps.get(s)?;
    let get = |name: &str| match extra {
        Some((n, v)) if n == name => Some(v.clone()),
        _ => run.results.get(name).cloned(),
    };
    match step {
        definition::Step::Call(c) => get(&c.name),
        definition::Step::Parallel { branches, .. } => branches
            .iter()
            .map(|c| get(&c.name))
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
    }
}

/// What `$steps.<name>` is: a call's result, or a parallel step's list.
pub fn named_result(run: &Run, name: &str, extra: Option<(&str, &Value)>) -> Option<Value> {
    if let Some((n, v)) = extra {
        if n == name {
            return Some(v.clone());
        }
    }
    if let Some(v) = run.results.get(name) {
        return Some(v.clone());
    }
    let s = run.task.steps.iter().position(|s| s.name() == name)?;
    step_result(run, s, extra)
}

pub fn render_args(run: &Run, at: At, call: &Call) -> Result<Value, String> {
    let s = at.step as usize;
    let prev = match at.compensate {
        // A compensation's $prev: the result of the call it undoes.
        true => call_at(
            &run.task,
            At {
                compensate: false,
                ..at
            },
        )
        .and_then(|c| run.results.get(&c.name).cloned())
        .unwrap_or(Value::Null),
        false if s == 0 => run.input.clone(),
        false => step_result(run, s - 1, None).unwrap_or(Value::Null),
    };
    let Some(args) = &call.args else {
        return Ok(prev);
    };
    let lookup = |name: &str| named_result(run, name, None);
    template::render(
        args,
        &template::Scope {
            input: &run.input,
            prev: &prev,
            steps: &lookup,
        },
    )
}

/// The fault a run that did not succeed answers with.
pub fn fault_of(run: &Run) -> Fault {
    let finish = run.finish.as_ref();
    let code = finish
        .and_then(|f| f.code)
        .and_then(Code::from_number)
        .unwrap_or(Code::Unknown);
    let code = if code == Code::Ok { Code::Unknown } else { code };
    let error = finish
        .and_then(|f| f.error.clone())
        .unwrap_or_else(|| format!("run {} {}", run.id, run.state.name()));
    Fault::new(code, format!("workflow {} run {}: {error}", run.workflow, run.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::runs::{RunCommand, Runs};
    use serde_json::json;
    use std::sync::Arc;

    /// A run of `task` started, its first step in flight.
    fn started(def: &str) -> (Runs, Arc<Task>) {
        let d = definition::parse(def, std::path::Path::new("t.json")).unwrap();
        let task = d.tasks["t"].clone();
        let mut runs = Runs::default();
        runs.apply(&RunCommand::Start {
            run_id: "r".into(),
            workflow: "/w".into(),
            task_name: "t".into(),
            task: task.clone(),
            input: json!({"x": 1}),
            at_ms: 0,
            principal: None,
            schedule: first_calls(&task, 0, 0),
            max_running: 10,
            attachments: 0,
        })
        .unwrap();
        (runs, task)
    }

    fn at(step: u16, compensate: bool) -> At {
        At {
            step,
            branch: 0,
            compensate,
        }
    }

    fn record(runs: &mut Runs, at: At, attempt: u32, d: &Decision) {
        runs.apply(&RunCommand::StepEnd {
            run_id: "r".into(),
            at,
            attempt,
            at_ms: 1,
            outcome: d.outcome.clone(),
            schedule: d.schedule.clone(),
            failure: d.failure.clone(),
            finish: d.finish.clone(),
        })
        .unwrap();
    }

    const NO_JITTER: &dyn Fn(u64) -> u64 = &|ceiling| ceiling;

    fn err(code: Code) -> StepOutcome {
        StepOutcome::Err {
            code: code.as_number(),
            message: "no".into(),
        }
    }

    #[test]
    fn code_7_is_retried_after_its_backoff_and_code_4_is_not() {
        let (runs, _) = started(
            r#"{"service": "/w", "tasks": {"t": [{"interface": "a", "retry": {"initial_ms": 100}}]}}"#,
        );
        let run = runs.get("r").unwrap();
        // Attempt `attempt` of the first step ended with `code`, at 1000 ms.
        let decide = |attempt, code| next(run, at(0, false), attempt, err(code), 1 << 20, 1000, NO_JITTER);
        let d = decide(1, Code::Unavailable).unwrap();
        assert_eq!(d.schedule.len(), 1);
        assert_eq!((d.schedule[0].attempt, d.schedule[0].not_before_ms), (2, 1100));
        let d = decide(1, Code::BadRequest).unwrap();
        assert!(d.schedule.is_empty());
        assert_eq!(d.finish.unwrap().state, RunState::Failed);
        // An attempt not in flight (the run moved on) decides nothing.
        let d = decide(3, Code::Unavailable);
        assert!(d.is_none(), "attempt 3 is not in flight");
    }

    /// Decide `outcome` of attempt 1 at `at`, and record it.
    fn step(runs: &mut Runs, at: At, outcome: StepOutcome) -> Decision {
        let run = runs.get("r").unwrap().clone();
        let d = next(&run, at, 1, outcome, 1 << 20, 1, NO_JITTER).unwrap();
        record(runs, at, 1, &d);
        d
    }

    #[test]
    fn a_failure_compensates_the_completed_steps_newest_first() {
        let (mut runs, _) = started(
            r#"{"service": "/w", "tasks": {"t": [
                {"interface": "a", "compensate": {"method": "undo_a"}},
                {"interface": "b", "compensate": {"method": "undo_b"}},
                {"interface": "c"}]}}"#,
        );
        for s in 0..2 {
            let d = step(&mut runs, at(s, false), StepOutcome::Ok(json!(s)));
            assert_eq!(d.schedule[0].at, at(s + 1, false));
        }
        let d = step(&mut runs, at(2, false), err(Code::BadRequest));
        assert_eq!(d.schedule[0].at, at(1, true), "step 2's undo first");
        let error = &d.failure.as_ref().map(|f| f.error.clone()).unwrap_or_default();
        assert!(error.contains("step 'step3' (3 of 3), attempt 1"), "{error}");
        let d = step(&mut runs, at(1, true), StepOutcome::Ok(json!(null)));
        assert_eq!(d.schedule[0].at, at(0, true));
        let d = step(&mut runs, at(0, true), StepOutcome::Ok(json!(null)));
        let finish = d.finish.unwrap();
        assert_eq!((finish.state, finish.code), (RunState::Failed, Some(4)));
        assert!(finish.error.unwrap().ends_with("(completed steps compensated)"));
    }

    #[test]
    fn a_result_the_run_may_not_hold_fails_its_step() {
        let (runs, _) = started(r#"{"service": "/w", "tasks": {"t": [{"interface": "a"}]}}"#);
        let run = runs.get("r").unwrap();
        let big = StepOutcome::Ok(json!("x".repeat(2000)));
        let d = next(run, at(0, false), 1, big, 1024, 1, NO_JITTER).unwrap();
        assert!(matches!(d.outcome, StepOutcome::Err { code: 4, .. }));
        assert_eq!(d.finish.unwrap().state, RunState::Failed);
    }
}
