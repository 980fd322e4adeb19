//! Wire compatibility: an unmodified PyCOM 0.3.2 service and client (the
//! Python package from PyPI) work with pycomd; so do PyCOM 0.4.2's proxy
//! client and PyCOM 0.6.0's service, client and proxy client.
//!
//! Needs `PYCOM_PYTHON`: a Python with `pycom==0.3.2 pyzmq six tornado`
//! installed, `PYCOM04_PYTHON` one with `pycom==0.4.2`, `PYCOM06_PYTHON` one
//! with `pycom==0.6.0` made importable on Python 3.11 by
//! `tests/interop/patch_pycom06.py`. `tests/run.sh` makes those venvs;
//! without them these tests fail (set `PYCOM_SKIP_INTEROP=1` to skip them
//! knowingly).

use pycom_client::service::{Auth, Interface, Method, Reply, Service};
use pycom_client::{Binary, Code, Context, Fault};
use pycom_e2e::auth::AuthSetup;
use pycom_e2e::fixtures::{calc, Calc};
use pycom_e2e::{free_port, wait_until, Daemon, Streamed};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> Option<String> {
    python_from("PYCOM_PYTHON", "pycom==0.3.2")
}

/// The interpreter named by `var`, or `None` when interop is skipped knowingly.
fn python_from(var: &str, package: &str) -> Option<String> {
    if std::env::var("PYCOM_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("PYCOM_SKIP_INTEROP=1: skipping a PyCOM interop test");
        return None;
    }
    let python = std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} must name a Python with {package} installed: run bash tests/run.sh")
    });
    Some(python)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name)
}

/// Run tests/interop/pycom_client.py against `service`; every check must hold.
fn run_pycom_client(python: &str, nameserver: &str, service: &str) {
    run_script(python, "pycom_client.py", &[nameserver, service]);
}

/// Run a script of tests/interop; it prints ALL OK when every check held.
fn run_script(python: &str, name: &str, args: &[&str]) {
    let out = Command::new(python)
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "{name} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pycom_0_3_2_service_and_client_work_with_pycomd() {
    let Some(python) = python() else { return };
    let d = Daemon::with(
        &[
            ("PYCOMD_PROBE_INTERVAL_MS", "200"),
            ("PYCOMD_PROBE_TIMEOUT_MS", "200"),
            ("PYCOMD_PROBE_FAILURES", "2"),
        ],
        &[],
    );
    let address = format!("tcp://127.0.0.1:{}", free_port());
    let service = "/com/example/pyservice";
    let child = Command::new(&python)
        .arg(script("pycom_service.py"))
        .args([&d.endpoint, &address, service])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the PyCOM service");
    let mut py_service = Killed(child);

    // It registers its two interfaces, one register call each.
    let mut ns = d.ns();
    let registered = wait_until(Duration::from_secs(20), || {
        ns.locate("com.example.calc", None)
            .map(|s| s.interfaces.len() == 2)
            .unwrap_or(false)
    });
    assert!(
        registered,
        "the PyCOM service did not register both interfaces; log:\n{}",
        d.log()
    );
    let info = ns.locate("com.example.echo", Some(service)).unwrap();
    assert_eq!(info.address, address);
    assert_eq!(info.interfaces, vec!["com.example.calc", "com.example.echo"]);

    // Probes keep it: several probe rounds later it is still there.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(
            ns.locate("com.example.calc", None).is_ok(),
            "a live PyCOM service must stay"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The PyCOM client locates (with and without a service name) and invokes.
    run_pycom_client(&python, &d.endpoint, service);

    // The Rust client locates and calls the Python service too.
    let ctx = Context::new(&d.endpoint).unwrap();
    let mut calc = ctx.locate_service("com.example.calc", service).unwrap();
    assert_eq!(calc.address(), address);
    assert_eq!(calc.invoke_as::<i64>("add", json!({"a": 1, "b": 2})).unwrap(), 3);
    assert_eq!(
        calc.invoke("nope", json!(null)).unwrap_err().code(),
        Some(Code::MethodNotFound)
    );
    let err = calc.invoke("fail", json!(null)).unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest));
    assert!(err.to_string().contains("fail was asked to fail"), "{err}");

    // Killed, it is dropped by the probes.
    let _ = py_service.0.kill();
    let _ = py_service.0.wait();
    let dropped = wait_until(Duration::from_secs(10), || {
        ns.locate("com.example.calc", None).is_err()
    });
    assert!(dropped, "a dead PyCOM service must be dropped; log:\n{}", d.log());
}

/// The same interfaces as tests/interop/pycom_service.py, hosted in Rust.
fn rust_twin_of_the_python_service() -> Vec<Interface> {
    let calc = Interface::new("com.example.calc")
        .handle("add", |req| {
            let (a, b): (i64, i64) = (req.arg("a")?, req.arg("b")?);
            Ok(json!(a + b).into())
        })
        .handle("fail", |_req| Err(Fault::bad_request("fail was asked to fail")));
    let echo = Interface::new("com.example.echo").handle("echo", |req| Ok(req.args.clone().into()));
    vec![calc, echo]
}

#[test]
fn pycom_0_3_2_client_calls_a_rust_hosted_service() {
    let Some(python) = python() else { return };
    let d = Daemon::start();
    let ctx = Context::new(&d.endpoint).unwrap();
    let service = "/com/example/rustservice";
    let mut builder = Service::builder(service).context(ctx);
    for iface in rust_twin_of_the_python_service() {
        builder = builder.interface(iface);
    }
    let _running = builder.start().unwrap();
    run_pycom_client(&python, &d.endpoint, service);
}

#[test]
fn pycom_0_4_2_proxy_client_reads_rust_introspection() {
    let Some(python) = python_from("PYCOM04_PYTHON", "pycom==0.4.2") else {
        return;
    };
    let d = Daemon::start();
    let ctx = Context::new(&d.endpoint).unwrap();
    let _running = Service::builder("/test/calc")
        .context(ctx)
        .interface(calc::interface(std::sync::Arc::new(Calc)))
        .start()
        .unwrap();
    run_script(&python, "pycom04_proxy.py", &[&d.endpoint]);
}

fn python06() -> Option<String> {
    python_from(
        "PYCOM06_PYTHON",
        "pycom==0.6.0 (patched by tests/interop/patch_pycom06.py)",
    )
}

/// A service with PyCOM 0.6's introspection extras: attachment names per
/// method and the interface's `data`. Mirrors `com.example.files06` of
/// tests/interop/pycom06_service.py.
fn files_interface() -> Interface {
    let upload = Method::new("upload", |req| {
        let blob = req
            .attachments
            .first()
            .ok_or_else(|| Fault::bad_request("upload: an attachment is required"))?
            .bytes()
            .map_err(|e| Fault::bad_request(format!("upload: {e}")))?
            .into_owned();
        let size = blob.len();
        let text = String::from_utf8(blob).map_err(|_| Fault::bad_request("upload: not UTF-8"))?;
        Ok(json!({"size": size, "text": text}).into())
    })
    .doc("Take a blob; return its size and its text.")
    .required(&["blob"])
    .results(&["size", "text"])
    .attachments(Some("blob"), None);
    let download = Method::new("download", |req| {
        let name: String = req.arg("name")?;
        let blob = Binary::from_bytes(format!("contents of {name}"));
        Ok(Reply::new(json!({ "name": name })).attach(blob))
    })
    .doc("Return a blob made from name.")
    .required(&["name"])
    .results(&["name", "blob"])
    .attachments(None, Some("blob"));
    Interface::new("test.files")
        .doc("Attachments, one each way.")
        .data(json!({"test.files.max_size": 1024}))
        .method(upload)
        .method(download)
}

#[test]
fn pycom_0_6_0_service_client_and_proxy_work_with_pycomd() {
    let Some(python) = python06() else { return };
    let d = Daemon::with(
        &[
            ("PYCOMD_PROBE_INTERVAL_MS", "200"),
            ("PYCOMD_PROBE_TIMEOUT_MS", "200"),
            ("PYCOMD_PROBE_FAILURES", "2"),
        ],
        &[],
    );
    let address = format!("tcp://127.0.0.1:{}", free_port());
    let service = "/com/example/py06service";
    let service_log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(&python)
        .arg(script("pycom06_service.py"))
        .args([&d.endpoint, &address, service])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(service_log.reopen().unwrap())
        .spawn()
        .expect("start the PyCOM 0.6 service");
    let mut py_service = Killed(child);
    let logs = || {
        let service = std::fs::read_to_string(service_log.path()).unwrap_or_default();
        format!("pycomd log:\n{}\nservice log:\n{service}", d.log())
    };

    // 0.6 registers both interfaces in one call (`interfaces`), unleased.
    let mut ns = d.ns();
    let registered = wait_until(Duration::from_secs(20), || {
        ns.locate("com.example.calc06", None)
            .map(|s| s.interfaces.len() == 2)
            .unwrap_or(false)
    });
    assert!(registered, "the PyCOM 0.6 service did not register; {}", logs());
    let info = ns.locate("com.example.files06", Some(service)).unwrap();
    assert_eq!(info.address, address);
    assert_eq!(info.interfaces, vec!["com.example.calc06", "com.example.files06"]);

    // Probes keep it (it has no lease and renews only every 30 s).
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(
            ns.locate("com.example.calc06", None).is_ok(),
            "a live PyCOM 0.6 service must stay; {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // PyCOM 0.6's client and proxy client call it through pycomd.
    run_script(&python, "pycom06_client.py", &[&d.endpoint, service]);

    // The Rust client calls it too, and reads its 0.6 introspection.
    let ctx = Context::new(&d.endpoint).unwrap();
    let mut calc = ctx.locate_service("com.example.calc06", service).unwrap();
    assert_eq!(
        calc.invoke("add", json!({"a": 1, "b": 2})).unwrap(),
        json!({"total": 3})
    );
    let intro = calc.invoke("introspect", json!(null)).unwrap();
    assert_eq!(intro["data"], json!({"com.example.calc06.flavour": "python"}));
    assert_eq!(
        intro["methods"]["introspect"]["results"],
        json!(["name", "methods", "docstring", "data"])
    );
    let mut files = ctx.locate("com.example.files06").unwrap();
    let out = files.call("download", json!({"name": "r"}), &[]).unwrap();
    assert_eq!(out.result, json!({"name": "r"}));
    assert_eq!(out.attachments.len(), 1);
    assert_eq!(&*out.attachments[0].bytes().unwrap(), b"contents of r");
    let out = files
        .call("upload", json!({}), &[Binary::from_bytes("abc")])
        .unwrap();
    assert_eq!(out.result, json!({"size": 3, "text": "abc"}));

    // 0.6 never unregisters: killed, it is dropped by the probes.
    let _ = py_service.0.kill();
    let _ = py_service.0.wait();
    let dropped = wait_until(Duration::from_secs(10), || {
        ns.locate("com.example.calc06", None).is_err()
    });
    assert!(dropped, "a dead PyCOM 0.6 service must be dropped; {}", logs());
}

#[test]
fn pycom_0_6_0_proxy_client_reads_pycomd_and_rust_introspection() {
    let Some(python) = python06() else { return };
    let d = Daemon::start();
    let ctx = Context::new(&d.endpoint).unwrap();
    let _calc = Service::builder("/test/calc")
        .context(ctx.clone())
        .interface(calc::interface(std::sync::Arc::new(Calc)))
        .start()
        .unwrap();
    let _files = Service::builder("/test/files")
        .context(ctx)
        .interface(files_interface())
        .start()
        .unwrap();
    run_script(&python, "pycom06_proxy.py", &[&d.endpoint]);
}

/// Pub-sub from any language: a pyzmq-only publisher and subscriber
/// (tests/interop/pyzmq_pubsub.py) following PROTOCOL.md 5 through pycomd.
#[test]
fn a_pyzmq_publisher_and_subscriber_work_through_pycomd() {
    let Some(python) = python() else { return };
    let d = Daemon::start();
    run_script(&python, "pyzmq_pubsub.py", &[&d.endpoint, "roundtrip"]);
}

/// A pyzmq-only subscriber (pyzmq_pubsub.py subscribe) receives what a
/// pycom-client Publisher publishes: topic, header (src, seq from 1, ts)
/// and body as PROTOCOL.md 5 says, in order, none missing.
#[test]
fn a_pyzmq_subscriber_receives_a_rust_publishers_messages() {
    let Some(python) = python() else { return };
    let d = Daemon::start();
    let count = 500u64;
    let topic = "interop.rs2py";
    let ctx = Context::new(&d.endpoint).unwrap();
    let mut publisher = ctx.publisher(topic).unwrap();
    let mut py = Streamed::spawn(Command::new(&python).arg(script("pyzmq_pubsub.py")).args([
        d.endpoint.as_str(),
        "subscribe",
        topic,
        &count.to_string(),
    ]));
    py.wait_stdout("READY", Duration::from_secs(20));
    for n in 1..=count {
        assert_eq!(publisher.publish(&n).unwrap(), n);
    }
    let status = py.wait_exit(Duration::from_secs(30));
    assert!(
        status.success() && py.out.iter().any(|l| l == "ALL OK"),
        "the Python subscriber failed ({status}); {}",
        py.output()
    );
}

/// A pycom-client Subscriber receives a pyzmq-only publisher's messages
/// (pyzmq_pubsub.py publish) in order, with no gap.
#[test]
fn a_rust_subscriber_receives_a_pyzmq_publishers_messages() {
    let Some(python) = python() else { return };
    let d = Daemon::start();
    let count = 500u64;
    let topic = "interop.py2rs";
    let ctx = Context::new(&d.endpoint).unwrap();
    let mut sub = ctx
        .subscriber()
        .pattern("interop.>")
        .gaps(pycom_client::GapPolicy::Error)
        .connect()
        .unwrap();
    let mut py = Streamed::spawn(Command::new(&python).arg(script("pyzmq_pubsub.py")).args([
        d.endpoint.as_str(),
        "publish",
        topic,
        &count.to_string(),
    ]));
    let mut src = None;
    for n in 1..=count {
        let m = match sub.recv_timeout(Duration::from_secs(10)) {
            Ok(Some(m)) => m,
            Ok(None) => panic!("message {n} of {count} did not come; {}", py.output()),
            Err(e) => panic!("message {n} of {count}: {e}; {}", py.output()),
        };
        assert_eq!((m.topic.as_str(), m.seq, m.replay), (topic, n, false));
        assert_eq!(m.value::<u64>().unwrap(), n);
        assert!(m.ts > 0 && m.attachments.is_empty());
        assert_eq!(src.get_or_insert_with(|| m.src.clone()), &m.src, "one publisher");
    }
    let stats = sub.stats().total;
    assert_eq!(
        (stats.received, stats.gaps, stats.missed, stats.duplicates),
        (count, 0, 0, 0)
    );
    let status = py.wait_exit(Duration::from_secs(30));
    assert!(
        status.success() && py.out.iter().any(|l| l == "ALL OK"),
        "the Python publisher failed ({status}); {}",
        py.output()
    );
    assert!(
        sub.recv_timeout(Duration::from_millis(200)).unwrap().is_none(),
        "nothing more than it published"
    );
}

/// PyCOM 0.6 logs in at pycomd (`Context.authenticate`), and a 0.6 service
/// with `authentication="required"` checks callers' tokens with pycomd's
/// `validate`: allowed with one, "Authentication required" without, and a
/// wrong password refused. The 0.6 service registers without a token, under
/// the anonymous role's grant (the migration path).
#[test]
fn pycom_0_6_0_logs_in_at_pycomd_and_its_guarded_service_checks_tokens() {
    let Some(python) = python06() else { return };
    let setup = AuthSetup::new(
        &[("alice", "alice-pw")],
        "[auth.roles]\nops = [\"alice\"]\n\n[[auth.grant]]\nrole = \"ops\"\ncall = [\"com.example.>\"]\n\n[[auth.grant]]\nrole = \"anonymous\"\nregister = [\"/com/example/\"]\n",
    );
    let d = setup.start();
    // A pycom-client service that requires authentication, with the
    // caller's name in its answer.
    let whoami = Method::new("whoami", |req| {
        let name = req.caller().map(|c| c.name.clone());
        Ok(json!({ "name": name }).into())
    });
    let guarded = Interface::new("com.example.secure.rust")
        .auth(Auth::required())
        .method(whoami);
    let _rust = Service::builder("/com/example/secure-rust")
        .context(Context::new(&d.endpoint).unwrap())
        .interface(guarded)
        .start()
        .unwrap();
    let address = format!("tcp://127.0.0.1:{}", free_port());
    let service_log = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(&python)
        .arg(script("pycom06_auth.py"))
        .args(["service", &d.endpoint, &address, "/com/example/secure06"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(service_log.reopen().unwrap())
        .spawn()
        .expect("start the PyCOM 0.6 service");
    let _service = Killed(child);
    let registered = wait_until(Duration::from_secs(20), || {
        d.ns().locate("com.example.secure06", None).is_ok()
    });
    assert!(
        registered,
        "the guarded PyCOM 0.6 service did not register; pycomd log:\n{}\nservice log:\n{}",
        d.log(),
        std::fs::read_to_string(service_log.path()).unwrap_or_default()
    );
    run_script(
        &python,
        "pycom06_auth.py",
        &["client", &d.endpoint, "alice", "alice-pw"],
    );
}
