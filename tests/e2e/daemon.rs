//! The daemon as an operator sees it: systemd readiness, signals, config
//! layers, logs.

use pycom_e2e::{bin, free_port, wait_until, Daemon};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn tells_systemd_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut d = Daemon::with(&[("NOTIFY_SOCKET", sock_path.to_str().unwrap())], &[]);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("a notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    assert!(d.terminate().success());
    let n = sock.recv(&mut buf).expect("a stopping notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

#[test]
fn sighup_reloads_the_log_level_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pycomd.toml");
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    let d = Daemon::with(&[], &["--config", config.to_str().unwrap()]);
    d.ns().stat().unwrap();
    assert!(!d.log().contains("request"), "no per-request lines at info");
    std::fs::write(&config, "log_level = \"debug\"\nprobe_failures = 9\n").unwrap();
    d.signal("HUP");
    assert!(wait_until(Duration::from_secs(5), || d
        .log()
        .contains("reloaded configuration: log_level = debug")));
    assert!(d.log().contains("only applied on restart: probe_failures"));
    d.ns().stat().unwrap();
    assert!(wait_until(Duration::from_secs(5), || d
        .log()
        .contains("method=stat")));
}

#[test]
fn json_logs_one_line_per_registration_change() {
    let d = Daemon::with(&[("PYCOMD_LOG_FORMAT", "json")], &[]);
    d.ns()
        .register(&pycom_e2e::leased("/j", "tcp://127.0.0.1:1", &["j"], 60_000))
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || d
        .log()
        .contains("registered")));
    let line = d
        .log()
        .lines()
        .find(|l| l.contains("registered"))
        .unwrap()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(v["fields"]["service"], "/j");
}

#[test]
fn bad_configuration_is_refused_with_a_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "ttl_min_ms = 5000\nttl_max_ms = 10\n").unwrap();
    let out = Command::new(bin("pycomd"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ttl_min_ms = 5000 must be at least 1 and at most ttl_max_ms = 10"),
        "{err}"
    );
    let out = Command::new(bin("pycomd"))
        .args(["--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn environment_sets_listen_and_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let data = dir.path().join("envdata");
    let mut child = Command::new(bin("pycomd"))
        .env("PYCOMD_LISTEN", format!("tcp://127.0.0.1:{port}"))
        .env("PYCOMD_DATA_DIR", &data)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ctx = zmq::Context::new();
    let conn = pycom_client::Connection::open(&ctx, &format!("tcp://127.0.0.1:{port}")).unwrap();
    let mut ns = pycom_client::NameserverClient::new(conn);
    let up = wait_until(Duration::from_secs(10), || ns.stat().is_ok());
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "pycomd did not serve on PYCOMD_LISTEN");
    assert!(data.is_dir(), "PYCOMD_DATA_DIR was not used");
}

#[test]
fn systemd_unit_verifies() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/pycomd.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for needle in [
        "Type=notify",
        "StateDirectory=pycomd",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.contains(needle), "unit lacks {needle}");
    }
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: only the unit's text was checked");
        return;
    };
    if !out.status.success() {
        eprintln!("systemd-analyze does not run here: only the unit's text was checked");
        return;
    }
    // verify needs ExecStart to exist: point a copy at the built binary.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pycomd.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/pycomd", bin("pycomd").to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{stderr}");
    // Warnings about the unit itself (not the host) would mean a mistake.
    assert!(
        !stderr.contains("pycomd.service:"),
        "systemd-analyze complained:\n{stderr}"
    );
}
