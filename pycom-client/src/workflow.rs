//! Workflows' shared parts (PROTOCOL.md section 8): the names on the wire,
//! the extension a workflow's calls carry, and `org.pycom.workflow.admin`,
//! pycomd's interface for starting and following runs.
//!
//! A workflow is an ordinary component located by its service path
//! ([`Context::workflow`](crate::Context::workflow)): each task is a
//! method, and a call answers when the run ends with the task's result.

use crate::interface;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The interface every workflow's record lists (beside its own, if its
/// definition names one).
pub const INTERFACE: &str = "org.pycom.workflow";
/// pycomd's interface for runs: start, result, list, show, cancel, redrive.
pub const ADMIN_INTERFACE: &str = "org.pycom.workflow.admin";
/// The request extension of a workflow's calls: `{run_id, step, attempt,
/// idempotency_key}`. A caller of a task may set `run_id` in it to name
/// the run itself: a second call with the same id joins that run instead
/// of starting another.
pub const EXTENSION: &str = "org.pycom.workflow";
/// Longest run id a caller may choose.
pub const MAX_RUN_ID_BYTES: usize = 128;

/// The states of a run, as `result`, `list_runs` and `show_run` name them.
pub const STATES: &[&str] = &["running", "succeeded", "failed", "cancelled", "interrupted"];

/// Whether `id` may name a run: 1 to [`MAX_RUN_ID_BYTES`] bytes of
/// letters, digits, `-`, `_`, `.` and `:`.
pub fn check_run_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_RUN_ID_BYTES {
        return Err(format!(
            "a run id has 1 to {MAX_RUN_ID_BYTES} bytes, not {}",
            id.len()
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "a run id is made of letters, digits, '-', '_', '.' and ':', not {c:?}"
        ));
    }
    Ok(())
}

/// What the extension of a workflow's call says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    /// The run making the call.
    pub run_id: String,
    /// The step's name in its task.
    pub step: String,
    /// 1 for the first try of the step.
    pub attempt: u32,
    /// The same for every try of the step, in this run and after a restart
    /// of pycomd: a provider that remembers it can do the work once.
    pub idempotency_key: String,
}

/// One workflow as `list_workflows` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowInfo {
    /// Its service path.
    pub workflow: String,
    /// The interface its tasks are methods of.
    pub interface: String,
    /// Where it answers.
    pub address: String,
    /// What the definition says of it.
    #[serde(default)]
    pub docstring: String,
    /// Its tasks, by name.
    pub tasks: Vec<TaskInfo>,
}

/// One task of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// The task's name: the method to call.
    pub name: String,
    /// What the definition says of it.
    #[serde(default)]
    pub docstring: String,
    /// How many steps it has (a parallel list counts once).
    pub steps: usize,
}

/// A run in a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// The workflow's service path.
    pub workflow: String,
    /// The task it runs.
    pub task: String,
    /// One of [`STATES`].
    pub state: String,
    /// Unix ms.
    pub started_ms: u64,
    /// Unix ms, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Why it did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPage {
    /// This page's runs.
    pub runs: Vec<RunSummary>,
    /// Pass it as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `start`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// The run's id.
    pub run_id: String,
}

interface! {
    /// pycomd's workflow runs: start them, wait for them, look at them.
    pub mod admin = "org.pycom.workflow.admin" {
        /// The workflows pycomd hosts, with their tasks.
        fn list_workflows() -> Vec<WorkflowInfo> => [workflows];
        /// Start a run of `task` of `workflow` (its service path) with
        /// `args`; answers at once with the run's id. `run_id` names the run
        /// (a run of that id already there is answered instead).
        fn start(workflow: String, task: String; args: Value, run_id: String) -> Started => [run_id];
        /// `{state: "running"}` until the run ends, then `{state, result}`
        /// or `{state, error, code}`.
        fn result(run_id: String) -> Value => [state, result, error, code];
        /// Runs, newest first, `limit` (default 100, at most 1000) at a time
        /// after the run `after`; only those of `workflow` or in `state`.
        fn list_runs(; workflow: String, state: String, after: String, limit: usize) -> RunPage => [runs, next];
        /// A run with every step, attempt, duration and error.
        fn show_run(run_id: String) -> Value => [run];
        /// Stop a running run: no step is started after it; calls in flight
        /// are not waited for. Compensations do not run.
        fn cancel(run_id: String) -> Value => [state];
        /// Run a failed or interrupted run again from the step that failed
        /// (its completed steps are not called again).
        fn redrive(run_id: String) -> Value => [state];
    }
}
