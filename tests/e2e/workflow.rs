//! Workflows (PROTOCOL.md 8) through the real pycomd: definitions from a
//! workflows directory, runs called like any component, retries,
//! compensation, parallel steps, resume after kill -9, cancel and
//! redrive, pycomctl, and PyCOM peers on both sides of a workflow.

use pycom_client::service::{Interface, RunningService, Service};
use pycom_client::workflow::CallInfo;
use pycom_client::{Context, Error, Fault};
use pycom_e2e::{bin, free_port, pycomctl, stderr, stdout, wait_until, Daemon};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A pycomd hosting the definitions `defs` (file name, JSON).
fn daemon(defs: &[(&str, Value)]) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_defs(dir.path(), defs);
    let path = dir.path().display().to_string();
    let d = Daemon::with(&[("PYCOMD_WORKFLOWS_DIR", path.as_str())], &[]);
    (d, dir)
}

fn write_defs(dir: &Path, defs: &[(&str, Value)]) {
    for (name, def) in defs {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(def).unwrap()).unwrap();
    }
}

fn ctx(d: &Daemon) -> Context {
    let ctx = Context::new(&d.endpoint).unwrap();
    ctx.set_default_timeout(Duration::from_secs(20));
    ctx
}

/// Every call a test service got: (method, args, the workflow extension).
type Calls = Arc<Mutex<Vec<(String, Value, Option<CallInfo>)>>>;

fn info(req: &pycom_client::service::Request) -> Option<CallInfo> {
    req.extensions
        .get(pycom_client::workflow::EXTENSION)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// A service of `interface` whose methods answer with `answer(method,
/// args, call number of that method)`; every call is recorded.
fn service(
    ctx: &Context,
    path: &str,
    interface: &str,
    methods: &[&str],
    answer: impl Fn(&str, &Value, u32) -> Result<Value, Fault> + Send + Sync + 'static,
) -> (RunningService, Calls) {
    let calls: Calls = Arc::default();
    let answer = Arc::new(answer);
    let mut iface = Interface::new(interface);
    for m in methods {
        let (calls, answer, name) = (calls.clone(), answer.clone(), m.to_string());
        iface = iface.handle(m, move |req| {
            let n = {
                let mut c = calls.lock().unwrap();
                c.push((name.clone(), req.args.clone(), info(req)));
                c.iter().filter(|(m, ..)| *m == name).count() as u32
            };
            answer(&name, &req.args, n).map(Into::into)
        });
    }
    let running = Service::builder(path)
        .context(ctx.clone())
        .interface(iface)
        .start()
        .unwrap();
    (running, calls)
}

fn count(calls: &Calls, method: &str) -> usize {
    calls.lock().unwrap().iter().filter(|(m, ..)| m == method).count()
}

fn result_of(ctx: &Context, run_id: &str) -> Value {
    ctx.workflow_admin().result(run_id.into()).unwrap()
}

/// Wait until the run is no longer running; its `result` answer.
fn finished(ctx: &Context, run_id: &str) -> Value {
    let mut last = Value::Null;
    let done = wait_until(Duration::from_secs(30), || {
        last = result_of(ctx, run_id);
        last["state"] != "running"
    });
    assert!(done, "run {run_id} did not end: {last}");
    last
}

// ---------------------------------------------------------------------

/// The seed's chain: three services, one of them PyCOM 0.3.2, each
/// result the next step's args; the calls carry the workflow extension;
/// a PyCOM 0.4.2 proxy calls the workflow like any component.
#[test]
fn the_seeds_three_step_chain_runs_end_to_end_with_pycom_peers() {
    let python = std::env::var("PYCOM_PYTHON")
        .ok()
        .filter(|_| std::env::var("PYCOM_SKIP_INTEROP").as_deref() != Ok("1"));
    let middle = match python.is_some() {
        true => json!({"interface": "com.example.echo", "method": "echo"}),
        false => json!({"interface": "demo.interface.2", "method": "echo"}),
    };
    let (d, _dir) = daemon(&[(
        "demo.json",
        json!({"service": "/demo/workflow/1", "interface": "demo.workflow",
               "docstring": "The seed's example.",
               "tasks": {"task1": {"docstring": "Add one, echo, times ten.",
                                   "steps": [{"interface": "demo.interface.1"}, middle,
                                             {"interface": "demo.interface.3"}]}}}),
    )]);
    let ctx = ctx(&d);
    let (_one, one) = service(&ctx, "/demo/one", "demo.interface.1", &["task1"], |_, args, _| {
        Ok(json!({"n": args["n"].as_i64().unwrap_or(0) + 1}))
    });
    let (_three, three) = service(
        &ctx,
        "/demo/three",
        "demo.interface.3",
        &["task1"],
        |_, args, _| Ok(json!({"n": args["n"].as_i64().unwrap_or(0) * 10})),
    );
    let mut _rust_middle = None;
    let _py = match &python {
        Some(python) => {
            let address = format!("tcp://127.0.0.1:{}", free_port());
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/pycom_service.py");
            let child = Command::new(python)
                .arg(script)
                .args([&d.endpoint, &address, "/demo/two"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .expect("start the PyCOM 0.3.2 service");
            let killed = Killed(Some(child));
            let mut ns = d.ns();
            assert!(
                wait_until(Duration::from_secs(20), || ns
                    .locate("com.example.echo", None)
                    .is_ok()),
                "the PyCOM service did not register"
            );
            killed
        }
        None => {
            let (svc, _) = service(&ctx, "/demo/two", "demo.interface.2", &["echo"], |_, args, _| {
                Ok(args.clone())
            });
            eprintln!("PYCOM_PYTHON not set: the middle step is a Rust service");
            _rust_middle = Some(svc);
            Killed(None)
        }
    };

    let mut wf = ctx.workflow("/demo/workflow/1").unwrap();
    assert_eq!(wf.invoke("task1", json!({"n": 4})).unwrap(), json!({"n": 50}));
    assert_eq!(wf.invoke("task1", json!({"n": 0})).unwrap(), json!({"n": 10}));

    // The calls carried the run, the step, the attempt and a key.
    let calls = one.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    let first = calls[0].2.clone().expect("the workflow extension");
    assert_eq!((first.step.as_str(), first.attempt), ("step1", 1));
    assert_eq!(first.idempotency_key, format!("{}/step1", first.run_id));
    let last = three.lock().unwrap()[0].2.clone().unwrap();
    assert_eq!(last.run_id, first.run_id);
    assert_eq!(last.step, "step3");

    // Introspection lists the task with its docstring; unknown tasks say
    // which there are.
    let intro = wf.invoke("introspect", json!({})).unwrap();
    assert_eq!(intro["name"], "demo.workflow");
    assert_eq!(
        intro["methods"]["task1"]["docstring"],
        "Add one, echo, times ten."
    );
    match wf.invoke("task9", json!({})) {
        Err(Error::MethodNotFound(m)) => assert!(m.contains("its tasks: task1"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The run is there, with its three steps.
    let shown = ctx.workflow_admin().show_run(first.run_id.clone()).unwrap();
    assert_eq!(shown["run"]["state"], "succeeded");
    assert_eq!(shown["run"]["attempts"].as_array().unwrap().len(), 3);

    if let Ok(python04) = std::env::var("PYCOM04_PYTHON") {
        if python.is_some() {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/pycom04_workflow.py");
            let out = Command::new(python04)
                .arg(script)
                .arg(&d.endpoint)
                .output()
                .unwrap();
            assert!(
                out.status.success() && stdout(&out).contains("ALL OK"),
                "PyCOM 0.4.2 proxy on a workflow:\n{}\n{}",
                stdout(&out),
                stderr(&out)
            );
        }
    }
}

/// Retries on code 7 until it answers; none on code 4; a step that does
/// not answer within its timeout_ms fails after its attempts.
#[test]
fn retries_follow_the_codes_and_timeouts_end_a_step() {
    let (d, _dir) = daemon(&[(
        "r.json",
        json!({"service": "/t/retry", "tasks": {
            "flaky": [{"interface": "t.r", "retry": {"max_attempts": 3, "initial_ms": 10}}],
            "bad": [{"interface": "t.r", "retry": {"max_attempts": 3, "initial_ms": 10}}],
            "slow": [{"interface": "t.r", "timeout_ms": 300, "retry": {"max_attempts": 2, "initial_ms": 10}}]}}),
    )]);
    let ctx = ctx(&d);
    let (_svc, calls) = service(
        &ctx,
        "/t/r",
        "t.r",
        &["flaky", "bad", "slow"],
        |m, _, n| match m {
            "flaky" if n <= 2 => Err(Fault::unavailable("busy, try again")),
            "flaky" => Ok(json!("third time")),
            "bad" => Err(Fault::bad_request("bad is never right")),
            _ => {
                std::thread::sleep(Duration::from_millis(800));
                Ok(json!("late"))
            }
        },
    );
    let mut wf = ctx.workflow("/t/retry").unwrap();
    assert_eq!(wf.invoke("flaky", json!({})).unwrap(), json!("third time"));
    assert_eq!(count(&calls, "flaky"), 3);
    let keys: Vec<(u32, String)> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, i)| i.clone().unwrap())
        .map(|i| (i.attempt, i.idempotency_key))
        .collect();
    assert_eq!(keys.iter().map(|k| k.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        keys.iter().all(|k| k.1 == keys[0].1),
        "one key for every try: {keys:?}"
    );

    match wf.invoke("bad", json!({})) {
        Err(Error::BadRequest(m)) => {
            assert!(
                m.contains("step 'step1' (1 of 1), attempt 1: bad is never right"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&calls, "bad"), 1, "code 4 is never retried");

    match wf.invoke("slow", json!({})) {
        Err(Error::Unavailable(m)) => {
            assert!(m.contains("attempt 2") && m.contains("timeout_ms = 300"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert!(wait_until(Duration::from_secs(5), || count(&calls, "slow") == 2));
}

/// A failure compensates the completed steps newest first, then answers
/// with the failing step's code; parallel steps gather their results in
/// order, and a template picks from them.
#[test]
fn compensation_runs_in_reverse_and_parallel_steps_gather() {
    let (d, _dir) = daemon(&[(
        "s.json",
        json!({"service": "/t/saga", "tasks": {
            "order": [
                {"name": "reserve", "interface": "t.s", "method": "reserve",
                 "compensate": {"method": "release", "args": {"id": "$prev.id"}}},
                {"name": "charge", "interface": "t.s", "method": "charge", "args": {"order": "$input.order"},
                 "compensate": {"method": "refund", "args": {"receipt": "$steps.charge.receipt"}}},
                {"name": "ship", "interface": "t.s", "method": "ship"}],
            "fanout": {"steps": [
                {"name": "both", "parallel": [{"interface": "t.s", "method": "left"},
                                              {"interface": "t.s", "method": "right"}]},
                {"interface": "t.s", "method": "join"}],
                "result": {"joined": "$prev", "left": "$steps.both.0", "input": "$input"}}}}),
    )]);
    let ctx = ctx(&d);
    let (_svc, calls) = service(
        &ctx,
        "/t/s",
        "t.s",
        &[
            "reserve", "charge", "ship", "release", "refund", "left", "right", "join",
        ],
        |m, args, _| match m {
            "reserve" => Ok(json!({"id": 7})),
            "charge" => Ok(json!({"receipt": format!("r-{}", args["order"])})),
            "ship" => Err(Fault::bad_request("no courier")),
            "left" => Ok(json!("L")),
            "right" => {
                std::thread::sleep(Duration::from_millis(50));
                Ok(json!("R"))
            }
            "join" => Ok(json!(format!("{}+{}", args[0], args[1]))),
            _ => Ok(json!("done")),
        },
    );
    let mut wf = ctx.workflow("/t/saga").unwrap();
    match wf.invoke("order", json!({"order": "o1"})) {
        Err(Error::BadRequest(m)) => {
            assert!(m.contains("step 'ship' (3 of 3), attempt 1: no courier"), "{m}");
            assert!(m.contains("compensated"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let order: Vec<(String, Value)> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|(m, a, _)| (m.clone(), a.clone()))
        .collect();
    assert_eq!(
        order,
        vec![
            ("reserve".into(), json!({"order": "o1"})),
            ("charge".into(), json!({"order": "o1"})),
            ("ship".into(), json!({"receipt": "r-\"o1\""})),
            ("refund".into(), json!({"receipt": "r-\"o1\""})),
            ("release".into(), json!({"id": 7})),
        ]
    );
    calls.lock().unwrap().clear();
    let got = wf.invoke("fanout", json!({"k": 1})).unwrap();
    assert_eq!(
        got,
        json!({"joined": "\"L\"+\"R\"", "left": "L", "input": {"k": 1}})
    );
    assert_eq!(count(&calls, "left") + count(&calls, "right"), 2);
}

/// kill -9 while a step is in flight: after the restart the completed
/// step is not called again, the one in flight is, with the same key; a
/// step marked "idempotent": false ends its run interrupted instead, and
/// a redrive calls it.
#[test]
fn runs_resume_after_kill9_and_non_idempotent_steps_are_interrupted() {
    let (mut d, _dir) = daemon(&[(
        "k.json",
        json!({"service": "/t/crash", "tasks": {
            "again": [{"interface": "t.k", "method": "first"}, {"interface": "t.k", "method": "gate"}],
            "once": [{"interface": "t.k", "method": "first"},
                     {"interface": "t.k", "method": "gate", "idempotent": false}]}}),
    )]);
    let ctx = ctx(&d);
    let open = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicU32::new(0));
    let (o, e) = (open.clone(), entered.clone());
    let (_svc, calls) = service(&ctx, "/t/k", "t.k", &["first", "gate"], move |m, args, _| {
        if m == "gate" {
            e.fetch_add(1, Ordering::SeqCst);
            while !o.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(json!({"after": m, "args": args}))
    });
    let admin = |ctx: &Context| ctx.workflow_admin();
    let started = admin(&ctx)
        .start(
            "/t/crash".into(),
            "again".into(),
            Some(json!({"x": 1})),
            Some("run-again-1".into()),
        )
        .unwrap();
    assert_eq!(started.run_id, "run-again-1");
    assert!(wait_until(Duration::from_secs(10), || entered
        .load(Ordering::SeqCst)
        == 1));
    d.kill9();
    d.spawn();
    // Resumed: the gate is called again, the first step is not.
    assert!(
        wait_until(Duration::from_secs(20), || entered.load(Ordering::SeqCst) == 2),
        "the step in flight was not called again; log:\n{}",
        d.log()
    );
    open.store(true, Ordering::SeqCst);
    let done = finished(&ctx, "run-again-1");
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(count(&calls, "first"), 1, "a completed step was called again");
    let gates: Vec<CallInfo> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(m, ..)| m == "gate")
        .filter_map(|(_, _, i)| i.clone())
        .collect();
    assert_eq!(gates.len(), 2);
    assert_eq!(gates[0].idempotency_key, gates[1].idempotency_key);

    // Not idempotent: interrupted, and a redrive calls it.
    open.store(false, Ordering::SeqCst);
    calls.lock().unwrap().clear();
    entered.store(0, Ordering::SeqCst);
    admin(&ctx)
        .start("/t/crash".into(), "once".into(), None, Some("run-once-1".into()))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || entered
        .load(Ordering::SeqCst)
        == 1));
    d.kill9();
    d.spawn();
    let done = finished(&ctx, "run-once-1");
    assert_eq!(done["state"], "interrupted", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("\"idempotent\": false"),
        "{done}"
    );
    assert_eq!(
        entered.load(Ordering::SeqCst),
        1,
        "a non-idempotent step was called again"
    );
    open.store(true, Ordering::SeqCst);
    let redriven = admin(&ctx).redrive("run-once-1".into()).unwrap();
    assert_eq!(redriven["state"], "running");
    assert_eq!(finished(&ctx, "run-once-1")["state"], "succeeded");
    assert_eq!(count(&calls, "first"), 1, "redrive starts at the failed step");
}

/// cancel stops a running run; pycomctl lists workflows and runs, shows,
/// starts, cancels and redrives.
#[test]
fn cancel_redrive_and_pycomctl() {
    let (d, _dir) = daemon(&[(
        "c.json",
        json!({"service": "/t/ctl", "tasks": {
            "wait": [{"interface": "t.c", "method": "gate"}],
            "maybe": [{"interface": "t.c", "method": "maybe"}]}}),
    )]);
    let ctx = ctx(&d);
    let open = Arc::new(AtomicBool::new(false));
    let fixed = Arc::new(AtomicBool::new(false));
    let (o, f) = (open.clone(), fixed.clone());
    let (_svc, calls) = service(&ctx, "/t/c", "t.c", &["gate", "maybe"], move |m, _, _| {
        if m == "gate" {
            while !o.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            return Ok(json!("opened"));
        }
        match f.load(Ordering::SeqCst) {
            true => Ok(json!("fixed")),
            false => Err(Fault::bad_request("not yet")),
        }
    });
    let out = pycomctl(&d, &["run", "start", "/t/ctl", "wait", "{}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run_id = stdout(&out).trim().to_string();
    assert!(!run_id.is_empty());
    assert!(wait_until(Duration::from_secs(10), || count(&calls, "gate") == 1));
    let out = pycomctl(&d, &["run", "cancel", &run_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(result_of(&ctx, &run_id)["state"], "cancelled");
    open.store(true, Ordering::SeqCst);

    let out = pycomctl(&d, &["run", "start", "/t/ctl", "maybe", "{\"a\": 1}"]);
    let failed_id = stdout(&out).trim().to_string();
    assert_eq!(finished(&ctx, &failed_id)["state"], "failed");
    fixed.store(true, Ordering::SeqCst);
    let out = pycomctl(&d, &["run", "redrive", &failed_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(finished(&ctx, &failed_id)["state"], "succeeded");

    let out = pycomctl(&d, &["workflows"]);
    assert!(
        stdout(&out).contains("/t/ctl") && stdout(&out).contains("maybe"),
        "{}",
        stdout(&out)
    );
    let out = pycomctl(&d, &["runs", "--state", "cancelled"]);
    assert!(
        stdout(&out).contains(&run_id) && !stdout(&out).contains(&failed_id),
        "{}",
        stdout(&out)
    );
    let out = pycomctl(&d, &["run", "show", &failed_id]);
    let text = stdout(&out);
    assert!(text.contains("not yet") && text.contains("succeeded"), "{text}");
    let out = pycomctl(&d, &["run", "show", "no-such-run"]);
    assert!(
        !out.status.success() && stderr(&out).contains("no run no-such-run"),
        "{}",
        stderr(&out)
    );
}

/// A definition that refers to nothing sensible stops the start, naming
/// the file, the task, the step and the problem.
#[test]
fn a_bad_definition_is_refused_naming_file_task_and_step() {
    let dir = tempfile::tempdir().unwrap();
    write_defs(
        dir.path(),
        &[(
            "bad.json",
            json!({"service": "/t/bad", "tasks": {"t1": [
                {"name": "charge", "interface": "a.b"},
                {"interface": "a.c", "args": {"r": "$steps.ship.id"}}]}}),
        )],
    );
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(bin("pycomd"))
        .env("PYCOMD_WORKFLOWS_DIR", dir.path())
        .env("PYCOMD_LISTEN", format!("tcp://127.0.0.1:{}", free_port()))
        .env("PYCOMD_DATA_DIR", data.path())
        .env("PYCOMD_PUBSUB__ENABLED", "false")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad.json") && err.contains("task 't1', step 2") && err.contains("$steps.ship.id"),
        "{err}"
    );
    // A directory named but missing is an error too.
    let out = Command::new(bin("pycomd"))
        .env("PYCOMD_WORKFLOWS_DIR", dir.path().join("missing"))
        .env("PYCOMD_LISTEN", format!("tcp://127.0.0.1:{}", free_port()))
        .env("PYCOMD_DATA_DIR", data.path())
        .env("PYCOMD_PUBSUB__ENABLED", "false")
        .output()
        .unwrap();
    assert!(
        !out.status.success() && stderr(&out).contains("missing"),
        "{}",
        stderr(&out)
    );
}

/// A child process killed when the test ends.
struct Killed(Option<std::process::Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The caller's attachments reach the first step; the last step's come
/// back with the result.
#[test]
fn attachments_pass_through_a_workflow() {
    let (d, _dir) = daemon(&[(
        "a.json",
        json!({"service": "/t/files", "tasks": {"files": [
            {"interface": "t.f", "method": "first"}, {"interface": "t.f", "method": "last"}]}}),
    )]);
    let ctx = ctx(&d);
    let iface = Interface::new("t.f")
        .handle("first", |req| {
            let texts: Vec<String> = req
                .attachments
                .iter()
                .map(|a| String::from_utf8_lossy(&a.bytes().unwrap()).into_owned())
                .collect();
            Ok(json!({ "got": texts }).into())
        })
        .handle("last", |req| {
            Ok(pycom_client::service::Reply::new(req.args.clone())
                .attach(pycom_client::Binary::from_bytes(b"from the last step".to_vec())))
        });
    let _svc = Service::builder("/t/f")
        .context(ctx.clone())
        .interface(iface)
        .start()
        .unwrap();
    let mut wf = ctx.workflow("/t/files").unwrap();
    let out = wf
        .call(
            "files",
            json!({}),
            &[
                pycom_client::Binary::from_bytes(b"one".to_vec()),
                pycom_client::Binary::from_bytes(b"two".to_vec()),
            ],
        )
        .unwrap();
    assert_eq!(out.result, json!({"got": ["one", "two"]}));
    assert_eq!(out.attachments.len(), 1);
    assert_eq!(&out.attachments[0].bytes().unwrap()[..], b"from the last step");
}

/// Past max_running_runs a start answers code 7 naming the limit; a
/// SIGHUP adds a workflow, and a definition that does not load keeps the
/// running ones.
#[test]
fn running_runs_are_bounded_and_sighup_reloads_definitions() {
    let dir = tempfile::tempdir().unwrap();
    write_defs(
        dir.path(),
        &[(
            "w.json",
            json!({"service": "/t/w", "tasks": {"wait": [{"interface": "t.w", "method": "gate"}]}}),
        )],
    );
    let path = dir.path().display().to_string();
    let d = Daemon::with(
        &[
            ("PYCOMD_WORKFLOWS_DIR", path.as_str()),
            ("PYCOMD_MAX_RUNNING_RUNS", "1"),
        ],
        &[],
    );
    let ctx = ctx(&d);
    let open = Arc::new(AtomicBool::new(false));
    let o = open.clone();
    let (_svc, calls) = service(&ctx, "/t/wsvc", "t.w", &["gate", "quick"], move |m, _, _| {
        while m == "gate" && !o.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(json!(m))
    });
    let mut admin = ctx.workflow_admin();
    let first = admin.start("/t/w".into(), "wait".into(), None, None).unwrap();
    assert!(wait_until(Duration::from_secs(10), || count(&calls, "gate") == 1));
    match admin.start("/t/w".into(), "wait".into(), None, None) {
        Err(Error::Unavailable(m)) => assert!(m.contains("max_running_runs"), "{m}"),
        other => panic!("{other:?}"),
    }
    open.store(true, Ordering::SeqCst);
    assert_eq!(finished(&ctx, &first.run_id)["state"], "succeeded");

    // SIGHUP: a new workflow is hosted.
    write_defs(
        dir.path(),
        &[(
            "n.json",
            json!({"service": "/t/new", "tasks": {"quick": [{"interface": "t.w"}]}}),
        )],
    );
    d.signal("HUP");
    let mut found = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            found = ctx.workflow("/t/new").ok();
            found.is_some()
        }),
        "the new workflow was not hosted after SIGHUP; log:\n{}",
        d.log()
    );
    assert_eq!(found.unwrap().invoke("quick", json!({})).unwrap(), json!("quick"));
    // A broken file: the running definitions stay.
    std::fs::write(dir.path().join("broken.json"), b"{\"service\": ").unwrap();
    d.signal("HUP");
    assert!(wait_until(Duration::from_secs(10), || d.log().contains(
        "reload of workflow definitions failed, keeping the running ones"
    )));
    assert_eq!(
        ctx.workflow("/t/new")
            .unwrap()
            .invoke("quick", json!({}))
            .unwrap(),
        json!("quick")
    );
}

/// Under access control a run's calls carry its starter's token, or the
/// token pycomd logs the definition's `run_as` principal in for; a caller
/// without a call grant for the workflow is refused.
#[test]
fn under_access_control_steps_carry_the_starters_token_or_run_as() {
    let setup = pycom_e2e::auth::AuthSetup::new(
        &[("alice", "alice-pw"), ("wfbot", "bot-pw"), ("root", "root-pw")],
        r#"
[auth.roles]
billing = ["alice"]
bots = ["wfbot"]
admin = ["root"]

[[auth.grant]]
role = "billing"
call = ["org.pycom.workflow", "t.*"]

[[auth.grant]]
role = "bots"
call = ["t.*"]
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    write_defs(
        dir.path(),
        &[
            (
                "who.json",
                json!({"service": "/t/who", "tasks": {"who": [{"interface": "t.guard"}]}}),
            ),
            (
                "bot.json",
                json!({"service": "/t/bot", "run_as": "wfbot", "tasks": {"who": [{"interface": "t.guard"}]}}),
            ),
        ],
    );
    let path = dir.path().display().to_string();
    let d = setup.start_with(&[("PYCOMD_WORKFLOWS_DIR", path.as_str())]);
    let root = ctx(&d);
    root.login("root", "root-pw").unwrap();
    let guarded = Interface::new("t.guard")
        .auth(pycom_client::service::Auth::required())
        .handle(
            "who",
            |req| Ok(json!(req.caller().map(|c| c.name.clone())).into()),
        );
    let _svc = Service::builder("/t/guarded")
        .context(root.clone())
        .interface(guarded)
        .start()
        .unwrap();

    let alice = ctx(&d);
    alice.login("alice", "alice-pw").unwrap();
    assert_eq!(
        alice
            .workflow("/t/who")
            .unwrap()
            .invoke("who", json!({}))
            .unwrap(),
        json!("alice")
    );
    assert_eq!(
        alice
            .workflow("/t/bot")
            .unwrap()
            .invoke("who", json!({}))
            .unwrap(),
        json!("wfbot"),
        "log:\n{}",
        d.log()
    );
    let shown = alice.workflow_admin().list_runs(None, None, None, None).unwrap();
    assert_eq!(shown.runs.len(), 2);

    let anonymous = ctx(&d);
    match anonymous.workflow("/t/who").unwrap().invoke("who", json!({})) {
        Err(Error::AccessDenied(m)) => assert!(m.contains("may not call"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// Hostile bytes on a workflow's endpoint: each gets a reply naming the
/// problem (FAIL for what is not a call), and the workflow keeps serving.
#[test]
fn a_workflow_endpoint_answers_hostile_bytes() {
    let (d, _dir) = daemon(&[(
        "h.json",
        json!({"service": "/t/hostile", "tasks": {"t": [{"interface": "t.h", "method": "m"}]}}),
    )]);
    let ctx = ctx(&d);
    let (_svc, _) = service(&ctx, "/t/h", "t.h", &["m"], |_, _, _| Ok(json!("ok")));
    let address = ctx
        .nameserver()
        .locate(pycom_client::workflow::INTERFACE, Some("/t/hostile"))
        .unwrap()
        .address;
    let raw = |frames: &[&[u8]]| -> (Vec<u8>, String) {
        let z = zmq::Context::new();
        let s = z.socket(zmq::DEALER).unwrap();
        s.set_linger(0).unwrap();
        s.connect(&address).unwrap();
        let mut all: Vec<&[u8]> = vec![b""];
        all.extend_from_slice(frames);
        s.send_multipart(all, 0).unwrap();
        assert!(s.poll(zmq::POLLIN, 5000).unwrap() > 0, "no reply");
        let parts = s.recv_multipart(0).unwrap();
        (parts[1].clone(), String::from_utf8_lossy(&parts[2]).into_owned())
    };
    let (status, _) = raw(&[b"NOPE", b"{}"]);
    assert_eq!(status, b"FAIL");
    let (_, body) = raw(&[b"CALL", b"{not json"]);
    assert!(
        body.contains("\"code\":4") || body.contains("\"code\": 4"),
        "{body}"
    );
    let deep = format!(
        "{{\"version\": \"1.0\", \"interface\": \"org.pycom.workflow\", \"method\": \"t\", \"args\": {}{}}}",
        "[".repeat(300),
        "]".repeat(300)
    );
    let (_, body) = raw(&[b"CALL", deep.as_bytes()]);
    assert!(
        body.contains("\"code\":4") || body.contains("\"code\": 4"),
        "{body}"
    );
    let bad_id = br#"{"version": "1.0", "interface": "org.pycom.workflow", "method": "t", "args": {}, "extensions": {"org.pycom.workflow": {"run_id": 7}}}"#;
    let (_, body) = raw(&[b"CALL", bad_id]);
    assert!(body.contains("run_id is a string"), "{body}");
    let bad_chars = br#"{"version": "1.0", "interface": "org.pycom.workflow", "method": "t", "args": {}, "extensions": {"org.pycom.workflow": {"run_id": "a b"}}}"#;
    let (_, body) = raw(&[b"CALL", bad_chars]);
    assert!(body.contains("a run id is made of"), "{body}");
    let other = br#"{"version": "1.0", "interface": "x.y", "method": "t", "args": {}}"#;
    let (_, body) = raw(&[b"CALL", other]);
    assert!(body.contains("serves org.pycom.workflow, not 'x.y'"), "{body}");
    // Still serving.
    assert_eq!(
        ctx.workflow("/t/hostile")
            .unwrap()
            .invoke("t", json!({}))
            .unwrap(),
        json!("ok")
    );
}
