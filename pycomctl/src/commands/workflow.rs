//! workflows, runs, run show|start|cancel|redrive: pycomd's
//! `org.pycom.workflow.admin`.

use super::Failure;
use crate::output;
use crate::{Cli, RunCommand};
use pycom_client::Context;
use serde_json::Value;
use std::time::Duration;

/// How often `run start --wait` asks for the result.
const POLL: Duration = Duration::from_millis(100);

fn time(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| format!("{:.3}", ms as f64 / 1000.0))
}

pub fn list(cli: &Cli, ctx: &Context) -> Result<(), Failure> {
    let workflows = ctx.workflow_admin().list_workflows()?;
    if cli.json() {
        output::json(
            &serde_json::to_value(&workflows).map_err(|e| pycom_client::Error::Data(e.to_string()))?,
        )?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = workflows
        .iter()
        .flat_map(|w| {
            w.tasks.iter().map(move |t| {
                vec![
                    w.workflow.clone(),
                    t.name.clone(),
                    t.steps.to_string(),
                    w.address.clone(),
                    t.docstring.lines().next().unwrap_or("").to_string(),
                ]
            })
        })
        .collect();
    output::table(&["WORKFLOW", "TASK", "STEPS", "ADDRESS", "DOC"], &rows)?;
    Ok(())
}

pub fn runs(
    cli: &Cli,
    ctx: &Context,
    workflow: &Option<String>,
    state: &Option<String>,
    limit: usize,
) -> Result<(), Failure> {
    let page = ctx
        .workflow_admin()
        .list_runs(workflow.clone(), state.clone(), None, Some(limit))?;
    if cli.json() {
        output::json(&serde_json::to_value(&page).map_err(|e| pycom_client::Error::Data(e.to_string()))?)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = page
        .runs
        .iter()
        .map(|r| {
            vec![
                r.run_id.clone(),
                r.workflow.clone(),
                r.task.clone(),
                r.state.clone(),
                time(Some(r.started_ms)),
                time(r.ended_ms),
                r.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    output::table(
        &["RUN", "WORKFLOW", "TASK", "STATE", "STARTED", "ENDED", "ERROR"],
        &rows,
    )?;
    if page.next.is_some() {
        output::note(format_args!("(more runs: raise --limit or filter)"));
    }
    Ok(())
}

pub fn run(cli: &Cli, ctx: &Context, command: &RunCommand) -> Result<(), Failure> {
    let mut admin = ctx.workflow_admin();
    match command {
        RunCommand::Show { run_id } => {
            let shown = admin.show_run(run_id.clone())?;
            let run = shown.get("run").cloned().unwrap_or(Value::Null);
            if cli.json() {
                output::json(&run)?;
            } else {
                show(&run)?;
            }
        }
        RunCommand::Start {
            workflow,
            task,
            args,
            wait,
        } => {
            let args: Value = serde_json::from_str(args)
                .map_err(|e| Failure::Usage(format!("the args are not JSON: {e}")))?;
            let started = admin.start(workflow.clone(), task.clone(), Some(args), None)?;
            if !wait {
                output::line(&started.run_id)?;
                return Ok(());
            }
            loop {
                let result = admin.result(started.run_id.clone())?;
                if result.get("state").and_then(Value::as_str) != Some("running") {
                    output::json(&result)?;
                    if result.get("state").and_then(Value::as_str) != Some("succeeded") {
                        return Err(Failure::Client(pycom_client::Error::Remote(format!(
                            "run {} {}",
                            started.run_id,
                            result.get("state").and_then(Value::as_str).unwrap_or("ended")
                        ))));
                    }
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
        }
        RunCommand::Cancel { run_id } => {
            let done = admin.cancel(run_id.clone())?;
            output::line(format_args!(
                "{run_id}: {}",
                done.get("state").and_then(Value::as_str).unwrap_or("cancelled")
            ))?;
        }
        RunCommand::Redrive { run_id } => {
            let done = admin.redrive(run_id.clone())?;
            output::line(format_args!(
                "{run_id}: {}",
                done.get("state").and_then(Value::as_str).unwrap_or("running")
            ))?;
        }
    }
    Ok(())
}

/// A run for people: its header, then one line per attempt.
fn show(run: &Value) -> Result<(), Failure> {
    let s = |v: &Value, k: &str| {
        v.get(k)
            .map(|x| match x {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    output::line(format_args!("run       {}", s(run, "run_id")))?;
    output::line(format_args!(
        "workflow  {} task {}",
        s(run, "workflow"),
        s(run, "task")
    ))?;
    output::line(format_args!("state     {}", s(run, "state")))?;
    output::line(format_args!(
        "args      {}",
        run.get("args").unwrap_or(&Value::Null)
    ))?;
    if let Some(result) = run.get("result") {
        output::line(format_args!("result    {result}"))?;
    }
    if let Some(error) = run.get("error") {
        output::line(format_args!("error     {}", error.as_str().unwrap_or_default()))?;
    }
    let rows: Vec<Vec<String>> = run
        .get("attempts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|a| {
                    let step = match a.get("compensation").and_then(Value::as_bool) {
                        Some(true) => format!("{} (undo)", s(a, "step")),
                        _ => s(a, "step"),
                    };
                    vec![
                        s(a, "position"),
                        step,
                        s(a, "attempt"),
                        format!("{}.{}", s(a, "interface"), s(a, "method")),
                        s(a, "outcome"),
                        a.get("duration_ms")
                            .map(|d| format!("{d} ms"))
                            .unwrap_or_default(),
                        s(a, "error"),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    output::table(&["#", "STEP", "TRY", "CALL", "OUTCOME", "TOOK", "ERROR"], &rows)?;
    Ok(())
}
