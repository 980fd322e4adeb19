//! `org.pycom.workflow.admin` on pycomd's request endpoint (PROTOCOL.md
//! 8): reads answered from the state, `start`, `cancel` and `redrive` as
//! run commands through the log.

use super::{Engine, Step};
use crate::registry::runs::{Run, RunState, StepOutcome};
use crate::registry::Registry;
use pycom_client::proto::{self, Code, Fault};
use pycom_client::workflow::{RunPage, RunSummary, TaskInfo, WorkflowInfo};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Runs in one page of `list_runs`, by default and at most.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

/// What a method asks of the server.
pub enum Plan {
    Reply(Result<Value, Fault>),
    /// Propose; answer with `body` once it is applied.
    Write(Step),
    /// A start: answer `{run_id}` once applied.
    Started(std::sync::Arc<str>, Option<Step>),
}

fn args<'a, T: Deserialize<'a>>(method: &str, raw: Option<&'a RawValue>) -> Result<T, Fault> {
    let text = raw.map_or("{}", RawValue::get);
    let text = if text.trim() == "null" { "{}" } else { text };
    serde_json::from_str(text).map_err(|e| Fault::bad_request(format!("{method}: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunId {
    run_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    workflow: String,
    task: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    run_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListRuns {
    workflow: Option<String>,
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// One admin request. `caller` names who asks (for `cancel`); `token` is
/// the token the run's calls carry.
pub fn dispatch(
    engine: Option<&mut Engine>,
    registry: &Registry,
    method: &str,
    raw: Option<&RawValue>,
    caller: &str,
    token: Option<String>,
    principal: Option<String>,
) -> Plan {
    let Some(engine) = engine else {
        return Plan::Reply(Err(Fault::not_found(format!(
            "{}: this pycomd hosts no workflows (no definitions in workflows_dir)",
            pycom_client::workflow::ADMIN_INTERFACE
        ))));
    };
    let runs = registry.state().runs();
    let find = |id: &str| -> Result<&Run, Fault> {
        runs.get(id).ok_or_else(|| {
            Fault::not_found(format!(
                "no run {id} (it never existed, or it ended and was forgotten)"
            ))
        })
    };
    match method {
        "introspect" => Plan::Reply(Ok(pycom_client::service::introspection_of(
            pycom_client::workflow::admin::NAME,
            pycom_client::workflow::admin::DOC,
            pycom_client::workflow::admin::METHODS,
        ))),
        "list_workflows" => {
            let list: Vec<WorkflowInfo> = engine
                .hosted
                .iter()
                .map(|h| WorkflowInfo {
                    workflow: h.def.service.clone(),
                    interface: h.def.interface.clone(),
                    address: h.address.clone(),
                    docstring: h.def.docstring.clone(),
                    tasks: h
                        .def
                        .tasks
                        .iter()
                        .map(|(name, t)| TaskInfo {
                            name: name.clone(),
                            docstring: t.docstring.clone(),
                            steps: t.steps.len(),
                        })
                        .collect(),
                })
                .collect();
            Plan::Reply(serde_json::to_value(list).map_err(|e| Fault::bad_request(e.to_string())))
        }
        "start" => {
            let a: Start = match args(method, raw) {
                Ok(a) => a,
                Err(f) => return Plan::Reply(Err(f)),
            };
            if let Some(id) = &a.run_id {
                if let Err(e) = pycom_client::workflow::check_run_id(id) {
                    return Plan::Reply(Err(Fault::bad_request(format!("start: {e}"))));
                }
            }
            let Some(def) = engine.definition(&a.workflow) else {
                return Plan::Reply(Err(Fault::not_found(format!(
                    "start: no workflow {}; pycomd hosts: {}",
                    a.workflow,
                    engine.hosted.iter().map(|h| h.def.service.as_str()).collect::<Vec<_>>().join(", ")
                ))));
            };
            let Some(task) = def.tasks.get(&a.task).cloned() else {
                return Plan::Reply(Err(Fault::new(
                    Code::MethodNotFound,
                    format!(
                        "start: workflow {} has no task '{}'; its tasks: {}",
                        a.workflow,
                        a.task,
                        def.tasks.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )));
            };
            match engine.start(registry, a.workflow, a.task, task, a.args, a.run_id, token, principal, Vec::new()) {
                Ok((id, step)) => Plan::Started(id, step),
                Err(f) => Plan::Reply(Err(f)),
            }
        }
        "result" => {
            let a: RunId = match args(method, raw) {
                Ok(a) => a,
                Err(f) => return Plan::Reply(Err(f)),
            };
            Plan::Reply(find(&a.run_id).map(result))
        }
        "show_run" => {
            let a: RunId = match args(method, raw) {
                Ok(a) => a,
                Err(f) => return Plan::Reply(Err(f)),
            };
            Plan::Reply(find(&a.run_id).map(|r| json!({"run": show(r)})))
        }
        "list_runs" => {
            let a: ListRuns = match args(method, raw) {
                Ok(a) => a,
                Err(f) => return Plan::Reply(Err(f)),
            };
            Plan::Reply(list(registry, a))
        }
        "cancel" => {
            let a: RunId = match args(method, raw) {
                Ok(a) => a,
                Err(f) => return Plan::Reply(Err(f)),
            };
            match find(&a.run_id) {
                Ok(run) if run.state == RunState::Running => {
                    let run = run.clone();
                    Plan::Write(engine.cancel(&run, caller))
                }
                Ok(run) => Plan::Reply(Err(Fault::bad_request(format!(
                    "run {} is {} already: only a running run can be cancelled",
                    run.id,
                    run.state.name()
                )))),
                Err(f) => Plan::Reply(Err(f)),
            }
        }
        "redrive" => {
            let a: RunId = match args(method, raw) {
                Ok(a) => a,
                Err(f) => return Plan::Reply(Err(f)),
            };
            match find(&a.run_id) {
                Ok(run) => {
                    let run = run.clone();
                    match engine.redrive(&run) {
                        Ok(step) => Plan::Write(step),
                        Err(f) => Plan::Reply(Err(f)),
                    }
                }
                Err(f) => Plan::Reply(Err(f)),
            }
        }
        other => Plan::Reply(Err(Fault::new(
            Code::MethodNotFound,
            format!(
                "{} has no method '{other}'; its methods: list_workflows, start, result, list_runs, show_run, cancel, redrive",
                pycom_client::workflow::ADMIN_INTERFACE
            ),
        ))),
    }
}

/// `result`'s answer.
pub fn result(run: &Run) -> Value {
    match (&run.state, &run.finish) {
        (RunState::Running, _) => json!({"state": "running"}),
        (RunState::Succeeded, Some(f)) => json!({"state": "succeeded", "result": f.result}),
        (state, _) => {
            let fault = super::fault_of(run);
            json!({"state": state.name(), "error": fault.message, "code": fault.code.as_number()})
        }
    }
}

fn summary(run: &Run) -> RunSummary {
    RunSummary {
        run_id: run.id.to_string(),
        workflow: run.workflow.clone(),
        task: run.task_name.clone(),
        state: run.state.name().to_string(),
        started_ms: run.started_ms,
        ended_ms: run.ended_ms,
        error: run.finish.as_ref().and_then(|f| f.error.clone()),
    }
}

/// `show_run`: the run with every attempt.
pub fn show(run: &Run) -> Value {
    let attempts: Vec<Value> = run
        .attempts
        .iter()
        .map(|a| {
            let call = super::call_at(&run.task, a.at);
            let mut v = json!({
                "step": call.map(|c| c.name.clone()),
                "position": a.at.step + 1,
                "attempt": a.attempt,
                "compensation": a.at.compensate,
                "interface": call.map(|c| c.interface.clone()),
                "method": call.map(|c| c.method.clone()),
                "scheduled_ms": a.scheduled_ms,
            });
            if a.not_before_ms > a.scheduled_ms {
                v["not_before_ms"] = json!(a.not_before_ms);
            }
            if let Some(end) = a.ended_ms {
                v["ended_ms"] = json!(end);
                v["duration_ms"] = json!(end.saturating_sub(a.not_before_ms.max(a.scheduled_ms)));
            }
            match &a.outcome {
                None => {
                    v["outcome"] = json!(if run.state == RunState::Running {
                        "in flight"
                    } else {
                        "abandoned"
                    })
                }
                Some(StepOutcome::Ok(_)) => v["outcome"] = json!("ok"),
                Some(StepOutcome::Err { code, message }) => {
                    v["outcome"] = json!("error");
                    v["code"] = json!(code);
                    v["error"] = json!(message);
                }
            }
            v
        })
        .collect();
    let mut v = serde_json::to_value(summary(run)).unwrap_or_else(|_| json!({}));
    v["args"] = run.input.clone();
    v["attempts"] = Value::Array(attempts);
    v["redrives"] = json!(run.redrives);
    if let Some(p) = &run.principal {
        v["principal"] = json!(p);
    }
    match &run.finish {
        Some(f) if f.state == RunState::Succeeded => v["result"] = f.result.clone().unwrap_or(Value::Null),
        Some(_) => {
            let fault = super::fault_of(run);
            v["code"] = json!(fault.code.as_number());
        }
        None => {}
    }
    v
}

fn list(registry: &Registry, a: ListRuns) -> Result<Value, Fault> {
    let runs = registry.state().runs();
    let limit = a.limit.unwrap_or(PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Fault::bad_request(format!(
            "list_runs: limit is 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    let state = match a.state.as_deref() {
        None => None,
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            Fault::bad_request(format!(
                "list_runs: state '{s}' is none of {}",
                pycom_client::workflow::STATES.join(", ")
            ))
        })?),
    };
    let keep =
        |r: &&Run| a.workflow.as_ref().is_none_or(|w| &r.workflow == w) && state.is_none_or(|s| r.state == s);
    let mut page: Vec<RunSummary> = Vec::new();
    let mut more = false;
    let iter: Box<dyn Iterator<Item = &Run>> = match &a.after {
        None => Box::new(runs.newest_first()),
        Some(after) => match runs.get(after) {
            Some(run) => Box::new(runs.older_than(run)),
            None => {
                return Err(Fault::bad_request(format!(
                    "list_runs: after names no run ({after})"
                )))
            }
        },
    };
    for run in iter.filter(keep) {
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(summary(run));
    }
    let next = more.then(|| page.last().map(|r| r.run_id.clone())).flatten();
    serde_json::to_value(RunPage { runs: page, next }).map_err(|e| Fault::bad_request(e.to_string()))
}

/// The body answering an applied admin write.
pub fn written(command: &crate::registry::runs::RunCommand, result: &Result<(), Fault>) -> Vec<u8> {
    use crate::registry::runs::RunCommand;
    let value = match (command, result) {
        (_, Err(fault)) => return proto::encode_fault(fault, None),
        (RunCommand::Start { run_id, .. }, Ok(())) => json!({"run_id": run_id}),
        (RunCommand::End { finish, .. }, Ok(())) => json!({"state": finish.state.name()}),
        (RunCommand::Redrive { .. }, Ok(())) => json!({"state": "running"}),
        _ => json!({}),
    };
    proto::encode_response(Ok(&value), None)
}
