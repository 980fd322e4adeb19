//! Wire compatibility: an unmodified PyCOM 0.3.2 service and client (the
//! Python package from PyPI) work with pycomd.
//!
//! Needs `PYCOM_PYTHON`: a Python with `pycom==0.3.2 pyzmq six tornado`
//! installed. `tests/run.sh` makes that venv; without it these tests fail
//! (set `PYCOM_SKIP_INTEROP=1` to skip them knowingly).

use pycom_client::proto::Request;
use pycom_client::Code;
use pycom_e2e::{free_port, wait_until, Daemon};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> Option<String> {
    if std::env::var("PYCOM_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("PYCOM_SKIP_INTEROP=1: skipping the PyCOM 0.3.2 interop test");
        return None;
    }
    let python = std::env::var("PYCOM_PYTHON")
        .expect("PYCOM_PYTHON must name a Python with pycom==0.3.2 installed: run bash tests/run.sh");
    Some(python)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name)
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
    let out = Command::new(&python)
        .arg(script("pycom_client.py"))
        .args([&d.endpoint, service])
        .output()
        .expect("run the PyCOM client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "PyCOM client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The Rust client calls the Python service directly too.
    let ctx = zmq::Context::new();
    let mut conn = pycom_client::Connection::open(&ctx, &address).unwrap();
    assert_eq!(
        conn.invoke("com.example.calc", "add", json!({"a": 1, "b": 2}))
            .unwrap(),
        json!(3)
    );
    let reply = conn
        .call(&Request::new("com.example.calc", "nope", json!(null)), &[])
        .unwrap();
    assert_eq!(reply.response.result.unwrap_err().code, Code::MethodNotFound);

    // Killed, it is dropped by the probes.
    let _ = py_service.0.kill();
    let _ = py_service.0.wait();
    let dropped = wait_until(Duration::from_secs(10), || {
        ns.locate("com.example.calc", None).is_err()
    });
    assert!(dropped, "a dead PyCOM service must be dropped; log:\n{}", d.log());
}
