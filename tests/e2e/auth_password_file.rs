//! A service that checks a password file of its own
//! (`Auth::password_file`, the seed's standalone form), registered with a
//! real pycomd whose access control is off: the users file made with
//! `pycomctl auth passwd`, clients logging in at the service with
//! `Component::login`, guarded methods refusing calls without a valid
//! token before their handler runs, and pycomctl carrying `PYCOM_TOKEN`.

use pycom_client::service::{Auth, Interface, Method, Service};
use pycom_client::{Code, Context, Error};
use pycom_e2e::{bin, stderr, stdout, Daemon};
use serde_json::{json, Value};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `pycomctl auth passwd USER --password-stdin`: one users-file line.
fn users_line(user: &str, password: &str) -> String {
    let mut child = Command::new(bin("pycomctl"))
        .args(["auth", "passwd", user, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pycomctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write the password");
    let o = child.wait_with_output().expect("pycomctl ends");
    assert!(o.status.success(), "{o:?}");
    let line = stdout(&o).trim().to_string();
    assert!(line.starts_with(&format!("{user}:$argon2id$")), "{line}");
    line
}

/// pycomctl against `d`, with a config dir of its own (no token file of
/// whoever runs the tests) and `token` in PYCOM_TOKEN.
fn ctl(d: &Daemon, config: &Path, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(bin("pycomctl"));
    cmd.env("PYCOM_NAMESERVER", &d.endpoint)
        .env("XDG_CONFIG_HOME", config)
        .env_remove("PYCOM_TOKEN")
        .args(args);
    if let Some(token) = token {
        cmd.env("PYCOM_TOKEN", token);
    }
    cmd.output().expect("run pycomctl")
}

#[test]
fn a_service_checks_its_own_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        format!(
            "# made with pycomctl auth passwd\n{}\n{}\n",
            users_line("alice", "s3cret pass"),
            users_line("bob", "hunter2")
        ),
    )
    .unwrap();

    let d = Daemon::start();
    let ctx = Context::new(&d.endpoint).unwrap();
    ctx.set_default_timeout(Duration::from_secs(5));
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let vault = Interface::new("com.test.vault")
        .auth(Auth::password_file(&users))
        .method(Method::new("open", move |req| {
            counted.fetch_add(1, Ordering::SeqCst);
            let caller = req.caller().expect("a guarded method has a caller");
            Ok(json!({"name": caller.name, "roles": caller.roles}).into())
        }))
        .method(Method::new("ping", |_| Ok(json!("pong").into())).auth(Auth::public()));
    let svc = Service::builder("/test/vault")
        .context(ctx.clone())
        .interface(vault)
        .start()
        .expect("the service starts with its users file");

    // Registered with its own interface only: `locate
    // org.pycom.authenticator` never sends a client to it.
    let info = ctx.nameserver().locate("com.test.vault", None).unwrap();
    assert_eq!(info.interfaces, vec!["com.test.vault".to_string()]);
    if let Ok(found) = ctx.nameserver().locate_all("org.pycom.authenticator", None) {
        assert!(found.iter().all(|f| f.address != svc.endpoint()), "{found:?}");
    }

    // No token: PyCOM 0.6's answer, the handler not run; public stays open.
    let mut vault = ctx.locate("com.test.vault").unwrap();
    match vault.invoke("open", Value::Null) {
        Err(Error::AccessDenied(m)) => assert_eq!(m, "Authentication required"),
        other => panic!("{other:?}"),
    }
    assert_eq!(vault.invoke("ping", Value::Null).unwrap(), json!("pong"));
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    // A wrong password and an unknown user: code 5, the same words.
    let wrong = vault.login("alice", "S3cret pass").unwrap_err();
    let nobody = vault.login("mallory", "s3cret pass").unwrap_err();
    assert_eq!(wrong.code(), Some(Code::AccessDenied), "{wrong}");
    assert_eq!(wrong.to_string(), nobody.to_string());
    assert_eq!(vault.token(), None);

    // Logged in at the service: the component carries the token.
    let login = vault.login("alice", "s3cret pass").unwrap();
    assert_eq!(login.caller.name, "alice");
    assert!(login.caller.roles.is_empty());
    assert_eq!(login.token.len(), 43);
    let eight_hours = 8 * 3600 * 1000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        login.expires_ms.abs_diff(now_ms + eight_hours) < 60_000,
        "{login:?}"
    );
    assert_eq!(
        vault.invoke("open", Value::Null).unwrap(),
        json!({"name": "alice", "roles": []})
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Only that component: the context (and pycomd's calls) carry none.
    assert_eq!(ctx.token(), None);
    let mut other = ctx.locate("com.test.vault").unwrap();
    assert_eq!(
        other.invoke("open", Value::Null).unwrap_err().to_string(),
        "access denied: Authentication required"
    );
    other.set_token(Some(&login.token));
    assert_eq!(other.invoke("open", Value::Null).unwrap()["name"], "alice");

    // pycomctl carries PYCOM_TOKEN; without a token it says how to get one.
    let config = dir.path().join("config");
    let o = ctl(
        &d,
        &config,
        Some(&login.token),
        &["call", "com.test.vault", "open"],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["name"],
        "alice"
    );
    let o = ctl(&d, &config, None, &["call", "com.test.vault", "open"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = stderr(&o);
    assert!(err.contains("access denied: Authentication required"), "{err}");
    assert!(err.contains("pycomctl login"), "{err}");

    // The authenticator it serves: authenticate, validate, logout (check is pycomd's).
    let mut authenticator = ctx.connect(svc.endpoint(), "org.pycom.authenticator").unwrap();
    let intro = authenticator.invoke("introspect", Value::Null).unwrap();
    let methods = intro["methods"].as_object().unwrap();
    for method in ["authenticate", "validate", "logout"] {
        assert!(methods.contains_key(method), "{intro}");
    }
    assert!(!methods.contains_key("check"), "{intro}");
    let v = authenticator
        .invoke(
            "validate",
            json!({"token": login.token, "interface": "com.test.vault"}),
        )
        .unwrap();
    assert_eq!(v, json!({"name": "alice", "roles": [], "allowed": true}));

    // Logging out ends the token for everyone who holds it.
    vault.logout().unwrap();
    assert_eq!(vault.token(), None);
    assert_eq!(
        vault.invoke("open", Value::Null).unwrap_err().to_string(),
        "access denied: Authentication required"
    );
    let ended = other.invoke("open", Value::Null).unwrap_err();
    assert_eq!(ended.code(), Some(Code::AccessDenied));
    assert!(ended.to_string().contains("unknown or expired"), "{ended}");
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // bob's file line works as well.
    vault.login("bob", "hunter2").unwrap();
    assert_eq!(vault.invoke("open", Value::Null).unwrap()["name"], "bob");
    svc.stop();
}
