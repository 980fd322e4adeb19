//! Access control on the client side, against a stand-in for pycomd (a
//! service answering `org.pycom.nameserver` and `org.pycom.authenticator`
//! as PROTOCOL.md 7 says pycomd does): the token a context carries on
//! every call, logging in and out, and guarded methods checking tokens
//! with "pycomd".

use pycom_client::auth::Caller;
use pycom_client::service::{Auth, Interface, Method, Reply, RunningService, Service};
use pycom_client::{Code, Context, Error, Fault};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the stand-in saw: the token of each call, `validate`s, `logout`s.
#[derive(Default)]
struct Seen {
    tokens: Mutex<Vec<Option<String>>>,
    validations: AtomicUsize,
    logouts: Mutex<Vec<String>>,
}

impl Seen {
    fn last_token(&self) -> Option<String> {
        self.tokens.lock().unwrap().last().cloned().flatten()
    }
}

/// pycomd as far as access control goes: alice (billing) and bob (no
/// roles, and no grant for com.test.guarded.hello); token "auth-off" is
/// answered as pycomd with access control off answers.
fn fake_pycomd(seen: Arc<Seen>, provider: String) -> RunningService {
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let nameserver = Interface::new("org.pycom.nameserver")
        .handle("stat", move |req| {
            s1.tokens.lock().unwrap().push(req.token().map(str::to_string));
            Ok(json!({"version": "fake"}).into())
        })
        .handle("locate", move |req| {
            let interface: String = req.arg("interface")?;
            Ok(json!({"service": "/test/echo", "address": provider, "interfaces": [interface]}).into())
        });
    let authenticator = Interface::new("org.pycom.authenticator")
        .handle("authenticate", |req| {
            let user: String = req.arg("user")?;
            let credentials: String = req.arg("credentials")?;
            match (user.as_str(), credentials.as_str()) {
                ("alice", "s3cret") => {
                    Ok(json!({"token": "tok-alice", "expires_ms": 4_000_000_000_000u64}).into())
                }
                ("bob", "pw") => Ok(json!({"token": "tok-bob", "expires_ms": 4_000_000_000_000u64}).into()),
                _ => Err(Fault::denied("wrong user name or password")),
            }
        })
        .handle("validate", move |req| {
            s2.validations.fetch_add(1, Ordering::SeqCst);
            let token: String = req.arg("token")?;
            let interface: Option<String> = req.opt_arg("interface")?;
            let method: Option<String> = req.opt_arg("method")?;
            let mut answer = match token.as_str() {
                "tok-alice" => json!({"name": "alice", "roles": ["billing"]}),
                "tok-bob" => json!({"name": "bob", "roles": []}),
                "auth-off" => return Err(Fault::not_found("access control is off on this pycomd")),
                _ => return Err(Fault::denied("the token is unknown or expired")),
            };
            if let Some(interface) = interface {
                let allowed = !(token == "tok-bob" && method.as_deref() == Some("hello"));
                answer["allowed"] = json!(allowed && interface.starts_with("com.test."));
            }
            Ok(answer.into())
        })
        .handle("logout", move |req| {
            s3.logouts.lock().unwrap().push(req.arg("token")?);
            Ok(json!({}).into())
        })
        .handle("check", |req| {
            Ok(json!({"user": req.opt_arg::<String>("user")?}).into())
        });
    let ctx = Context::new("tcp://127.0.0.1:1").unwrap();
    Service::builder("/org/pycom/nameserver")
        .context(ctx)
        .without_registration()
        .interface(nameserver)
        .interface(authenticator)
        .start()
        .expect("the stand-in starts")
}

/// A service answering with the token each call carried.
fn token_echo(ctx: &Context) -> RunningService {
    Service::builder("/test/echo")
        .context(ctx.clone())
        .without_registration()
        .interface(Interface::new("com.test.echo").handle("token", |req| Ok(json!(req.token()).into())))
        .start()
        .expect("echo starts")
}

#[test]
fn every_call_through_a_context_carries_its_token() {
    let seen = Arc::new(Seen::default());
    // The echo service's address is needed by the stand-in's locate: bind
    // it first with a context of its own.
    let idle = Context::new("tcp://127.0.0.1:1").unwrap();
    let echo = token_echo(&idle);
    let pycomd = fake_pycomd(seen.clone(), echo.endpoint().to_string());
    let ctx = Context::new(pycomd.endpoint()).unwrap();

    let mut located = ctx.locate("com.test.echo").unwrap();
    assert_eq!(located.invoke("token", json!(null)).unwrap(), Value::Null);
    ctx.nameserver().stat().unwrap();
    assert_eq!(seen.last_token(), None);
    assert!(matches!(ctx.whoami(), Err(Error::AccessDenied(m)) if m.contains("not logged in")));

    let wrong = ctx.login("alice", "S3CRET").unwrap_err();
    assert_eq!(wrong.code(), Some(Code::AccessDenied));
    assert_eq!(wrong.to_string(), "access denied: wrong user name or password");
    assert_eq!(ctx.token(), None);

    let login = ctx.login("alice", "s3cret").unwrap();
    assert_eq!(login.token, "tok-alice");
    assert_eq!(login.expires_ms, 4_000_000_000_000);
    assert_eq!(
        login.caller,
        Caller {
            name: "alice".into(),
            roles: vec!["billing".into()]
        }
    );
    assert!(
        !format!("{login:?}").contains("tok-alice"),
        "Debug hides the token"
    );
    // From now on: the component made before, nameserver calls, new
    // components, plain connections, clones.
    assert_eq!(located.invoke("token", json!(null)).unwrap(), json!("tok-alice"));
    ctx.nameserver().stat().unwrap();
    assert_eq!(seen.last_token().as_deref(), Some("tok-alice"));
    let mut direct = ctx.connect(echo.endpoint(), "com.test.echo").unwrap();
    assert_eq!(direct.invoke("token", json!(null)).unwrap(), json!("tok-alice"));
    let mut conn = ctx.connection(echo.endpoint()).unwrap();
    assert_eq!(
        conn.invoke("com.test.echo", "token", json!(null)).unwrap(),
        json!("tok-alice")
    );
    assert_eq!(ctx.clone().token().as_deref(), Some("tok-alice"));
    assert_eq!(ctx.whoami().unwrap().name, "alice");

    // A component's own token is its own.
    direct.set_token(Some("own"));
    assert_eq!(direct.invoke("token", json!(null)).unwrap(), json!("own"));
    assert_eq!(located.invoke("token", json!(null)).unwrap(), json!("tok-alice"));
    assert_eq!(ctx.token().as_deref(), Some("tok-alice"));

    ctx.logout().unwrap();
    assert_eq!(*seen.logouts.lock().unwrap(), vec!["tok-alice".to_string()]);
    assert_eq!(ctx.token(), None);
    assert_eq!(located.invoke("token", json!(null)).unwrap(), Value::Null);
    ctx.logout().unwrap();
    assert_eq!(seen.logouts.lock().unwrap().len(), 1, "nothing to end twice");

    let ctx = ctx.with_token("given");
    assert_eq!(located.invoke("token", json!(null)).unwrap(), json!("given"));
    ctx.clear_token();
    assert_eq!(located.invoke("token", json!(null)).unwrap(), Value::Null);
    assert_eq!(ctx.check(Some("bob")).unwrap(), json!({"user": "bob"}));
}

#[test]
fn pycom_token_in_the_environment_is_carried() {
    // The only test here that reads the environment.
    std::env::set_var("PYCOM_TOKEN", "from-env");
    std::env::set_var("PYCOM_NAMESERVER", "tcp://127.0.0.1:1");
    let ctx = Context::from_env().unwrap();
    std::env::remove_var("PYCOM_TOKEN");
    std::env::remove_var("PYCOM_NAMESERVER");
    assert_eq!(ctx.token().as_deref(), Some("from-env"));
}

/// A guarded service checking its callers with the stand-in, and how often
/// its handlers ran.
fn guarded(ctx: &Context, runs: Arc<AtomicUsize>) -> RunningService {
    let (r1, r2) = (runs.clone(), runs);
    let iface = Interface::new("com.test.guarded")
        .auth(Auth::required())
        .method(Method::new("hello", move |req| {
            r1.fetch_add(1, Ordering::SeqCst);
            let caller = req.caller().expect("a guarded method has a caller");
            Ok(json!({"name": caller.name, "roles": caller.roles}).into())
        }))
        .method(
            Method::new("refund", move |req| {
                r2.fetch_add(1, Ordering::SeqCst);
                Reply::json(&req.caller().map(|c| c.name.clone()))
            })
            .auth(Auth::roles(["billing"])),
        )
        .method(
            Method::new("ping", |req| Ok(json!(req.caller().is_none())).map(Reply::new)).auth(Auth::public()),
        );
    Service::builder("/test/guarded")
        .context(ctx.clone())
        .without_registration()
        .interface(iface)
        .interface(
            Interface::new("com.test.open").handle("hi", |req| Ok(json!(req.caller().is_none()).into())),
        )
        .start()
        .expect("guarded starts")
}

#[test]
fn guarded_methods_check_tokens_with_pycomd_before_their_handler_runs() {
    let seen = Arc::new(Seen::default());
    let pycomd = fake_pycomd(seen.clone(), String::new());
    let service_ctx = Context::new(pycomd.endpoint()).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let svc = guarded(&service_ctx, runs.clone());
    let ctx = Context::new(pycomd.endpoint()).unwrap();
    let mut c = ctx.connect(svc.endpoint(), "com.test.guarded").unwrap();

    // No token: PyCOM 0.6's answer, and the handler never runs.
    for method in ["hello", "refund", "introspect"] {
        match c.invoke(method, json!(null)) {
            Err(Error::AccessDenied(m)) => assert_eq!(m, "Authentication required", "{method}"),
            other => panic!("{method}: {other:?}"),
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        seen.validations.load(Ordering::SeqCst),
        0,
        "nothing to ask pycomd"
    );
    assert_eq!(c.invoke("ping", json!(null)).unwrap(), json!(true), "public");
    let mut open = ctx.connect(svc.endpoint(), "com.test.open").unwrap();
    assert_eq!(open.invoke("hi", json!(null)).unwrap(), json!(true));

    // alice: logged in, with the role.
    ctx.login("alice", "s3cret").unwrap();
    let before = seen.validations.load(Ordering::SeqCst);
    for _ in 0..5 {
        let hello = c.invoke("hello", json!(null)).unwrap();
        assert_eq!(hello, json!({"name": "alice", "roles": ["billing"]}));
    }
    assert_eq!(
        seen.validations.load(Ordering::SeqCst),
        before + 1,
        "pycomd's answer is kept"
    );
    assert_eq!(c.invoke("refund", json!(null)).unwrap(), json!("alice"));
    assert_eq!(
        c.invoke("ping", json!(null)).unwrap(),
        json!(true),
        "public: no caller"
    );
    assert!(c.invoke("introspect", json!(null)).is_ok());

    // bob: logged in, no grant for hello, no role for refund.
    ctx.login("bob", "pw").unwrap();
    let runs_before = runs.load(Ordering::SeqCst);
    let no_grant = c.invoke("hello", json!(null)).unwrap_err();
    assert_eq!(
        no_grant.to_string(),
        "access denied: bob may not call com.test.guarded.hello"
    );
    let no_role = c.invoke("refund", json!(null)).unwrap_err();
    assert_eq!(
        no_role.to_string(),
        "access denied: bob may not call com.test.guarded.refund: it needs the role billing"
    );
    assert_eq!(runs.load(Ordering::SeqCst), runs_before);

    // Tokens pycomd does not know, and pycomd without access control.
    c.set_token(Some("made-up"));
    let unknown = c.invoke("hello", json!(null)).unwrap_err();
    assert_eq!(
        unknown.to_string(),
        "access denied: the token is unknown or expired"
    );
    let validations = seen.validations.load(Ordering::SeqCst);
    assert!(c.invoke("hello", json!(null)).is_err());
    assert_eq!(
        seen.validations.load(Ordering::SeqCst),
        validations,
        "a refusal is kept a moment too"
    );
    c.set_token(Some("auth-off"));
    let off = c.invoke("hello", json!(null)).unwrap_err();
    assert_eq!(off.code(), Some(Code::AccessDenied));
    assert!(off.to_string().contains("access control is off"), "{off}");
    // A token that is not a string is a bad request.
    let mut conn = pycom_client::Connection::open(ctx.zmq(), svc.endpoint()).unwrap();
    let mut request = pycom_client::proto::Request::new("com.test.guarded", "hello", Value::Null);
    request.extensions.insert("org.pycom.auth".into(), json!(42));
    let reply = conn.call(&request, &[]).unwrap();
    assert_eq!(reply.response.result.unwrap_err().code, Code::BadRequest);
    assert_eq!(runs.load(Ordering::SeqCst), runs_before);
}

#[test]
fn a_service_with_a_guard_it_cannot_keep_does_not_start() {
    let ctx = Context::new("tcp://127.0.0.1:1").unwrap();
    ctx.set_default_timeout(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "").unwrap();
    let start = |ifaces: Vec<Interface>| {
        let mut builder = Service::builder("/test/bad")
            .context(ctx.clone())
            .without_registration();
        for iface in ifaces {
            builder = builder.interface(iface);
        }
        builder.start().map(|_| ()).unwrap_err().to_string()
    };
    let noop = |name: &str| Method::new(name, |_| Ok(Value::Null.into()));

    let two = start(vec![
        Interface::new("a")
            .auth(Auth::password_file(&users))
            .method(noop("m")),
        Interface::new("b")
            .auth(Auth::password_file(dir.path().join("other")))
            .method(noop("m")),
    ]);
    assert!(two.contains("2 password files"), "{two}");
    let roles = start(vec![Interface::new("a")
        .auth(Auth::password_file(&users))
        .method(noop("m").auth(Auth::roles(["ops"])))]);
    assert!(roles.contains("hold no roles"), "{roles}");
    let missing = start(vec![Interface::new("a")
        .auth(Auth::password_file(dir.path().join("nope")))
        .method(noop("m"))]);
    assert!(
        missing.contains("cannot read the users file") && missing.contains("nope"),
        "{missing}"
    );
    std::fs::write(&users, "alice:plaintext\n").unwrap();
    let malformed = start(vec![Interface::new("a")
        .auth(Auth::password_file(&users))
        .method(noop("m"))]);
    assert!(malformed.contains(":1: user alice"), "{malformed}");
}
