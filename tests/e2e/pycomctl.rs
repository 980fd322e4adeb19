//! pycomctl against a real pycomd: output and exit codes.

use pycom_e2e::{bin, free_port, Daemon, EchoService};
use std::process::{Command, Output};

fn ctl(d: &Daemon, args: &[&str]) -> Output {
    Command::new(bin("pycomctl"))
        .env("PYCOM_NAMESERVER", &d.endpoint)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn register_list_locate_unregister() {
    let d = Daemon::start();
    let o = ctl(
        &d,
        &[
            "register",
            "/ctl/a",
            "tcp://127.0.0.1:7",
            "ctl.one",
            "ctl.two",
            "--ttl",
            "60000",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("lease of 60000 ms"));
    let o = ctl(&d, &["list-services", "--service", "/ctl"]);
    let out = stdout(&o);
    assert!(out.starts_with("SERVICE"), "{out}");
    assert!(out.contains("/ctl/a") && out.contains("ctl.one,ctl.two"), "{out}");
    assert!(!out.contains("/org/pycom/nameserver"), "filtered: {out}");
    let o = ctl(&d, &["--json", "locate", "ctl.two"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["address"], "tcp://127.0.0.1:7");
    let o = ctl(&d, &["--json", "locate", "ctl.one", "--all"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert!(ctl(&d, &["unregister", "/ctl/a", "tcp://127.0.0.1:7"])
        .status
        .success());
    let o = ctl(&d, &["locate", "ctl.one"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no live service provides interface 'ctl.one'"));
}

#[test]
fn stat_and_json() {
    let d = Daemon::start();
    let o = ctl(&d, &["stat"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("uptime_s"));
    let o = ctl(&d, &["--json", "stat"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["services"], 1);
}

#[test]
fn call_invokes_a_located_service() {
    let d = Daemon::start();
    let o = ctl(
        &d,
        &[
            "--json",
            "call",
            "org.pycom.nameserver",
            "locate",
            r#"{"interface": "org.pycom.nameserver"}"#,
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["service"], "/org/pycom/nameserver");
    // A service's own error code comes back as exit 1 with its message.
    let svc = EchoService::start();
    assert!(ctl(&d, &["register", "/echo", &svc.endpoint, "echo.i"])
        .status
        .success());
    let o = ctl(&d, &["call", "echo.i", "anything"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unsupported"));
    let o = ctl(&d, &["call", "echo.i", "m", "{not json"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn exit_codes_for_usage_remote_and_unreachable() {
    let d = Daemon::start();
    assert_eq!(ctl(&d, &["no-such-command"]).status.code(), Some(2));
    assert_eq!(ctl(&d, &["register", "/x"]).status.code(), Some(2));
    let o = ctl(&d, &["register", "/x", "not-an-endpoint", "i"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ZeroMQ endpoint"));
    let o = Command::new(bin("pycomctl"))
        .args([
            "--nameserver",
            &format!("tcp://127.0.0.1:{}", free_port()),
            "--timeout",
            "300",
            "stat",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no reply"));
}
