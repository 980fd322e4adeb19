//! pycomctl against a real pycomd: output and exit codes.

use pycom_e2e::{bin, free_port, pycomctl as ctl, stdout, Daemon, EchoService};
use std::process::Command;

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
    assert_eq!(v["services"], pycom_e2e::OWN_RECORDS);
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

#[test]
fn call_sends_and_saves_attachments() {
    use pycom_client::service::{Interface, Method, Reply, Service};
    use pycom_client::{Binary, Code, Context, Fault};
    let d = Daemon::start();
    let mirror = Interface::new("ctl.files").method(Method::new("mirror", |req| {
        let mut reply = Reply::new(serde_json::json!(req.attachments.len()));
        for a in &req.attachments {
            let bytes = a.bytes().map_err(|e| Fault::new(Code::Unknown, e.to_string()))?;
            reply = reply.attach(Binary::from_bytes(bytes.into_owned()));
        }
        Ok(reply)
    }));
    let _svc = Service::builder("/ctl/files")
        .context(Context::new(&d.endpoint).unwrap())
        .interface(mirror)
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (one, two) = (dir.path().join("one.bin"), dir.path().join("two.txt"));
    std::fs::write(&one, (0..=255u8).collect::<Vec<_>>()).unwrap();
    std::fs::write(&two, "second").unwrap();
    let out_dir = dir.path().join("out");
    let o = ctl(
        &d,
        &[
            "call",
            "ctl.files",
            "mirror",
            "--attach",
            one.to_str().unwrap(),
            "--attach",
            two.to_str().unwrap(),
            "--save-attachments",
            out_dir.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).trim(), "2");
    assert_eq!(
        std::fs::read(out_dir.join("attachment-0")).unwrap(),
        std::fs::read(&one).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("attachment-1")).unwrap(),
        "second"
    );
    let o = ctl(&d, &["call", "ctl.files", "mirror", "--attach", "/no/such/file"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/file"));
}
