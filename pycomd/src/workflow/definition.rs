//! Workflow definitions: one JSON file per workflow in `workflows_dir`,
//! the seed's shape extended (PROTOCOL.md 8), read and checked whole at
//! start and at SIGHUP. A definition that does not parse or refers to
//! nothing sensible is refused with its file, task, step and problem named.
//!
//! ```json
//! {"service": "/demo/workflow/1",
//!  "tasks": {"task1": [{"interface": "demo.interface.1"},
//!                      {"interface": "demo.interface.2", "retry": {"max_attempts": 5}},
//!                      {"parallel": [{"interface": "a"}, {"interface": "b"}]}]}}
//! ```
//!
//! A task is a list of steps, or `{"docstring", "steps", "result"}`. What is
//! kept ([`Task`]) has every default filled in: it is written into each
//! run's start, so a run goes on with the definition it started with even
//! if the file changes.

use super::template;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A definition file bigger than this is refused unread.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Steps in a task, parallel branches in a step.
pub const MAX_STEPS: usize = 100;
pub const MAX_PARALLEL: usize = 32;
/// Definition files in the directory.
pub const MAX_WORKFLOWS: usize = 1000;
const MAX_ATTEMPTS: u32 = 100;
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Defaults of PROTOCOL.md 8.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_ATTEMPTS: u32 = 3;
const DEFAULT_INITIAL_MS: u64 = 100;
const DEFAULT_BACKOFF: f64 = 2.0;
const DEFAULT_MAX_MS: u64 = 10_000;

/// One workflow, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The file it came from, for messages.
    pub file: PathBuf,
    /// Its service path: where it is registered.
    pub service: String,
    /// The interface its tasks are methods of (besides `org.pycom.workflow`).
    pub interface: String,
    pub docstring: String,
    /// The principal its calls are made as under access control, instead
    /// of the caller's token.
    pub run_as: Option<String>,
    pub tasks: BTreeMap<String, Arc<Task>>,
}

/// A task with every default filled in: what a run follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub docstring: String,
    pub steps: Vec<Step>,
    /// The task's result (a template); `None`: the last step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

/// One position in a task: a call, or calls made at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Call(Call),
    Parallel { name: String, branches: Vec<Call> },
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Call(c) => &c.name,
            Step::Parallel { name, .. } => name,
        }
    }

    /// The calls it makes: one, or its branches.
    pub fn calls(&self) -> &[Call] {
        match self {
            Step::Call(c) => std::slice::from_ref(c),
            Step::Parallel { branches, .. } => branches,
        }
    }
}

/// One call of a step (or of a parallel branch, or a compensation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    pub name: String,
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub method: String,
    /// A template; `None`: the previous step's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    pub timeout_ms: u64,
    pub retry: Retry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<Box<Call>>,
    /// Whether calling it twice is harmless: after a crash a step in
    /// flight is called again only if so.
    pub idempotent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    pub initial_ms: u64,
    pub backoff: f64,
    pub max_ms: u64,
}

impl Retry {
    /// The longest wait before try `attempt + 1` (full jitter picks a
    /// random wait up to it).
    pub fn ceiling_ms(&self, attempt: u32) -> u64 {
        let exp = self.backoff.powi(attempt.saturating_sub(1).min(64) as i32);
        let ms = (self.initial_ms as f64 * exp).min(self.max_ms as f64);
        ms.max(0.0) as u64
    }
}

// The file's shapes: every field optional, nothing unknown accepted.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefinition {
    service: String,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    docstring: String,
    #[serde(default)]
    run_as: Option<String>,
    tasks: BTreeMap<String, RawTask>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTask {
    Steps(Vec<Value>),
    Full(RawTaskFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskFull {
    #[serde(default)]
    docstring: String,
    steps: Vec<Value>,
    #[serde(default)]
    result: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCall {
    #[serde(default)]
    name: Option<String>,
    interface: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    retry: Option<RawRetry>,
    #[serde(default)]
    compensate: Option<RawCompensate>,
    #[serde(default)]
    idempotent: Option<bool>,
    /// Accepted for the author's notes; not shown anywhere.
    #[serde(default, rename = "docstring")]
    _docstring: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParallel {
    #[serde(default)]
    name: Option<String>,
    parallel: Vec<Value>,
    /// Accepted for the author's notes; not shown anywhere.
    #[serde(default, rename = "docstring")]
    _docstring: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    initial_ms: Option<u64>,
    backoff: Option<f64>,
    max_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompensate {
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    service: Option<String>,
    method: String,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    retry: Option<RawRetry>,
}

/// Every definition in `dir`, by service path. `Ok(empty)` when `dir` is
/// missing and `required` is false (the default directory).
pub fn load_dir(dir: &Path, required: bool) -> Result<BTreeMap<String, Definition>, String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(BTreeMap::new()),
        Err(e) => return Err(format!("workflows_dir {}: {e}", dir.display())),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("workflows_dir {}: {e}", dir.display()))?;
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "json") {
            files.push(path);
        }
    }
    if files.len() > MAX_WORKFLOWS {
        return Err(format!(
            "workflows_dir {}: {} definitions, more than the {MAX_WORKFLOWS} pycomd hosts",
            dir.display(),
            files.len()
        ));
    }
    files.sort();
    let mut out: BTreeMap<String, Definition> = BTreeMap::new();
    for file in files {
        let def = load_file(&file)?;
        if let Some(other) = out.get(&def.service) {
            return Err(format!(
                "{}: service {} is already the workflow of {}",
                file.display(),
                def.service,
                other.file.display()
            ));
        }
        out.insert(def.service.clone(), def);
    }
    Ok(out)
}

/// One definition file, checked.
pub fn load_file(file: &Path) -> Result<Definition, String> {
    let at = file.display();
    let size = std::fs::metadata(file).map_err(|e| format!("{at}: {e}"))?.len();
    if size > MAX_FILE_BYTES {
        return Err(format!(
            "{at}: {size} bytes, more than a definition may have ({MAX_FILE_BYTES})"
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{at}: {e}"))?;
    parse(&text, file).map_err(|e| format!("{at}: {e}"))
}

/// A definition from its text; errors name the task and step.
pub fn parse(text: &str, file: &Path) -> Result<Definition, String> {
    let raw: RawDefinition =
        serde_json::from_str(text).map_err(|e| format!("not a workflow definition: {e}"))?;
    if !raw.service.starts_with('/') || raw.service.len() > 256 || raw.service.contains(char::is_whitespace) {
        return Err(format!(
            "service {:?} is not a service path (like /demo/workflow/1)",
            raw.service
        ));
    }
    if raw.service.starts_with(crate::registry::RESERVED_PREFIX) {
        return Err(format!(
            "service {}: names under {} are pycomd's own",
            raw.service,
            crate::registry::RESERVED_PREFIX
        ));
    }
    let interface = raw
        .interface
        .unwrap_or_else(|| pycom_client::workflow::INTERFACE.to_string());
    check_name("interface", &interface)?;
    if raw.tasks.is_empty() {
        return Err("it has no tasks".into());
    }
    let mut tasks = BTreeMap::new();
    for (name, raw_task) in raw.tasks {
        check_name("task name", &name).map_err(|e| format!("task {name:?}: {e}"))?;
        if name == "introspect" {
            return Err("task \"introspect\": that method is every workflow's own".into());
        }
        let task = task(&name, raw_task).map_err(|e| format!("task '{name}', {e}"))?;
        tasks.insert(name, Arc::new(task));
    }
    Ok(Definition {
        file: file.to_path_buf(),
        service: raw.service,
        interface,
        docstring: raw.docstring,
        run_as: raw.run_as,
        tasks,
    })
}

fn task(name: &str, raw: RawTask) -> Result<Task, String> {
    let (docstring, steps, result) = match raw {
        RawTask::Steps(steps) => (String::new(), steps, None),
        RawTask::Full(full) => (full.docstring, full.steps, full.result),
    };
    if steps.is_empty() {
        return Err("it has no steps".into());
    }
    if steps.len() > MAX_STEPS {
        return Err(format!("{} steps, more than {MAX_STEPS}", steps.len()));
    }
    let mut out = Vec::with_capacity(steps.len());
    let mut names: BTreeSet<String> = BTreeSet::new();
    for (i, raw) in steps.into_iter().enumerate() {
        let at = format!("step {}", i + 1);
        let step = step(name, i, raw, &names).map_err(|e| format!("{at}: {e}"))?;
        for n in std::iter::once(step.name()).chain(match &step {
            Step::Parallel { branches, .. } => branches.iter().map(|c| c.name.as_str()).collect(),
            Step::Call(_) => Vec::new(),
        }) {
            if !names.insert(n.to_string()) {
                return Err(format!("{at}: the name '{n}' is taken by an earlier step"));
            }
        }
        out.push(step);
    }
    if let Some(result) = &result {
        template::check(result, &names).map_err(|e| format!("result: {e}"))?;
    }
    Ok(Task {
        docstring,
        steps: out,
        result,
    })
}

fn step(task: &str, index: usize, raw: Value, earlier: &BTreeSet<String>) -> Result<Step, String> {
    if raw.get("parallel").is_some() {
        let raw: RawParallel = serde_json::from_value(raw).map_err(|e| e.to_string())?;
        let name = raw.name.unwrap_or_else(|| format!("step{}", index + 1));
        check_name("name", &name)?;
        if raw.parallel.is_empty() || raw.parallel.len() > MAX_PARALLEL {
            return Err(format!(
                "a parallel step has 1 to {MAX_PARALLEL} branches, not {}",
                raw.parallel.len()
            ));
        }
        let mut branches = Vec::new();
        for (j, b) in raw.parallel.into_iter().enumerate() {
            let default = format!("{name}_{}", j + 1);
            let b: RawCall = serde_json::from_value(b).map_err(|e| format!("branch {}: {e}", j + 1))?;
            let call = call(task, b, default, earlier).map_err(|e| format!("branch {}: {e}", j + 1))?;
            branches.push(call);
        }
        return Ok(Step::Parallel { name, branches });
    }
    let raw: RawCall = serde_json::from_value(raw).map_err(|e| e.to_string())?;
    let default = format!("step{}", index + 1);
    Ok(Step::Call(call(task, raw, default, earlier)?))
}

fn call(task: &str, raw: RawCall, default_name: String, earlier: &BTreeSet<String>) -> Result<Call, String> {
    let name = raw.name.unwrap_or(default_name);
    check_name("name", &name)?;
    check_name("interface", &raw.interface).map_err(|e| format!("'{name}': {e}"))?;
    let method = raw.method.unwrap_or_else(|| task.to_string());
    check_name("method", &method).map_err(|e| format!("'{name}': {e}"))?;
    if let Some(service) = &raw.service {
        if !service.starts_with('/') {
            return Err(format!("'{name}': service {service:?} is not a service path"));
        }
    }
    if let Some(args) = &raw.args {
        template::check(args, earlier).map_err(|e| format!("'{name}' args: {e}"))?;
    }
    let timeout_ms = timeout(raw.timeout_ms).map_err(|e| format!("'{name}': {e}"))?;
    let retry_policy = retry(raw.retry.unwrap_or_default()).map_err(|e| format!("'{name}' retry: {e}"))?;
    let compensate = match raw.compensate {
        None => None,
        Some(c) => {
            let interface = c.interface.unwrap_or_else(|| raw.interface.clone());
            check_name("interface", &interface).map_err(|e| format!("'{name}' compensate: {e}"))?;
            check_name("method", &c.method).map_err(|e| format!("'{name}' compensate: {e}"))?;
            let mut known = earlier.clone();
            known.insert(name.clone());
            if let Some(args) = &c.args {
                template::check(args, &known).map_err(|e| format!("'{name}' compensate args: {e}"))?;
            }
            Some(Box::new(Call {
                name: format!("{name}.compensate"),
                interface,
                service: c.service,
                method: c.method,
                args: c.args,
                timeout_ms: timeout(c.timeout_ms).map_err(|e| format!("'{name}' compensate: {e}"))?,
                retry: retry(c.retry.unwrap_or_default())
                    .map_err(|e| format!("'{name}' compensate retry: {e}"))?,
                compensate: None,
                idempotent: true,
            }))
        }
    };
    Ok(Call {
        name,
        interface: raw.interface,
        service: raw.service,
        method,
        args: raw.args,
        timeout_ms,
        retry: retry_policy,
        compensate,
        idempotent: raw.idempotent.unwrap_or(true),
    })
}

fn timeout(ms: Option<u64>) -> Result<u64, String> {
    let ms = ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if ms == 0 || ms > MAX_TIMEOUT_MS {
        return Err(format!("timeout_ms is 1 to {MAX_TIMEOUT_MS}, not {ms}"));
    }
    Ok(ms)
}

fn retry(raw: RawRetry) -> Result<Retry, String> {
    let r = Retry {
        max_attempts: raw.max_attempts.unwrap_or(DEFAULT_ATTEMPTS),
        initial_ms: raw.initial_ms.unwrap_or(DEFAULT_INITIAL_MS),
        backoff: raw.backoff.unwrap_or(DEFAULT_BACKOFF),
        max_ms: raw.max_ms.unwrap_or(DEFAULT_MAX_MS),
    };
    if r.max_attempts == 0 || r.max_attempts > MAX_ATTEMPTS {
        return Err(format!(
            "max_attempts is 1 to {MAX_ATTEMPTS} (tries in all), not {}",
            r.max_attempts
        ));
    }
    if !(1.0..=10.0).contains(&r.backoff) {
        return Err(format!("backoff is 1.0 to 10.0, not {}", r.backoff));
    }
    if r.max_ms > MAX_TIMEOUT_MS || r.initial_ms > r.max_ms {
        return Err(format!(
            "initial_ms ({}) is at most max_ms ({}), which is at most {MAX_TIMEOUT_MS}",
            r.initial_ms, r.max_ms
        ));
    }
    Ok(r)
}

/// Names of interfaces, methods, tasks and steps: what PyCOM accepts, and
/// nothing that would need quoting in a template path.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    let ok = ok && (what == "interface" || !name.contains('.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a name (1 to 128 letters, digits, '_' or '-'{})",
            if what == "interface" { ", '.'" } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Definition, String> {
        parse(text, Path::new("t.json"))
    }

    #[test]
    fn the_seed_shape_gets_every_default() {
        let d = parse_str(
            r#"{"service": "/demo/workflow/1", "tasks": {"task1": [
                {"interface": "demo.interface.1"}, {"interface": "demo.interface.2"}]}}"#,
        )
        .unwrap();
        let task = &d.tasks["task1"];
        let Step::Call(first) = &task.steps[0] else {
            panic!("a call")
        };
        assert_eq!(first.name, "step1");
        assert_eq!(first.method, "task1");
        assert_eq!(first.timeout_ms, 30_000);
        assert_eq!(first.retry.max_attempts, 3);
        assert_eq!(d.interface, "org.pycom.workflow");
    }

    #[test]
    fn errors_name_the_task_the_step_and_the_problem() {
        let e = parse_str(
            r#"{"service": "/w", "tasks": {"t": [
                {"interface": "a", "name": "charge"},
                {"interface": "b", "args": {"r": "$steps.ship.id"}}]}}"#,
        )
        .unwrap_err();
        assert!(e.contains("task 't', step 2: 'step2' args"), "{e}");
        assert!(e.contains("ship"), "{e}");
        let e = parse_str(
            r#"{"service": "/w", "tasks": {"t": [{"interface": "a", "retry": {"max_attempts": 0}}]}}"#,
        )
        .unwrap_err();
        assert!(e.contains("step 1: 'step1' retry: max_attempts"), "{e}");
        let e = parse_str(r#"{"service": "/w", "tasks": {"t": [{"interfce": "a"}]}}"#).unwrap_err();
        assert!(e.contains("step 1") && e.contains("interfce"), "{e}");
    }

    #[test]
    fn backoff_grows_to_its_ceiling() {
        let r = Retry {
            max_attempts: 5,
            initial_ms: 100,
            backoff: 2.0,
            max_ms: 300,
        };
        assert_eq!(
            [r.ceiling_ms(1), r.ceiling_ms(2), r.ceiling_ms(3)],
            [100, 200, 300]
        );
    }
}
