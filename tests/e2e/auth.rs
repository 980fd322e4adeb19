//! Access control in pycomd (PROTOCOL.md 7): the authenticator, tokens,
//! grants and ownership, against the real binary. Each rule has a test
//! that fails when the rule is removed.

use pycom_client::proto::{Code, Fault, Request};
use pycom_e2e::auth::{call, login, validate, AuthSetup};
use pycom_e2e::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// alice (billing), bob (other), root (admin), and their grants.
struct Setup(AuthSetup);

const GRANTS: &str = r#"
[auth.roles]
billing = ["alice"]
other = ["bob"]
admin = ["root"]

[[auth.grant]]
role = "billing"
register = ["/com/billing/", "!/com/billing/secret/"]
call = ["com.billing.*"]

[[auth.grant]]
role = "other"
register = ["/com/billing/", "/com/other/"]

[[auth.grant]]
role = "anonymous"
register = ["/legacy/"]
"#;

impl Setup {
    fn new(extra: &str) -> Setup {
        Setup(AuthSetup::new(
            &[("alice", "alice-pw"), ("bob", "bob-pw"), ("root", "root-pw")],
            &format!("{extra}\n{GRANTS}"),
        ))
    }

    fn users(&self) -> PathBuf {
        self.0.users()
    }

    fn config(&self) -> PathBuf {
        self.0.config()
    }

    fn start(&self) -> Daemon {
        self.0.start()
    }
}

fn ns(d: &Daemon, token: Option<&str>, method: &str, args: Value) -> Result<Value, Fault> {
    call(d, token, "org.pycom.nameserver", method, args)
}

fn register(service: &str, address: &str) -> Value {
    json!({"service": service, "address": address, "interface": "com.example.x", "ttl_ms": 60_000})
}

fn denied<T: std::fmt::Debug>(result: Result<T, Fault>) -> String {
    match result {
        Err(f) if f.code == Code::AccessDenied => f.message,
        other => panic!("expected code 5, got {other:?}"),
    }
}

#[test]
fn tokens_validate_and_carry_who_and_what_they_may_call() {
    let s = Setup::new("");
    let d = s.start();
    let located = ns(
        &d,
        None,
        "locate",
        json!({"interface": "org.pycom.authenticator"}),
    )
    .expect("locate");
    assert_eq!(located["address"], d.endpoint.as_str());
    let token = login(&d, "alice", "alice-pw").expect("login");
    assert!(token.len() >= 43, "at least 32 random bytes: {token}");
    let v = validate(
        &d,
        json!({"token": token, "interface": "com.billing.invoices", "method": "pay"}),
    )
    .expect("validate");
    assert_eq!(v, json!({"name": "alice", "roles": ["billing"], "allowed": true}));
    let v = validate(&d, json!({"token": token, "interface": "com.other.x"})).expect("validate");
    assert_eq!(v["allowed"], false);
    // PyCOM 0.6 validates with the token alone.
    let v = validate(&d, json!({"token": token})).expect("validate");
    assert_eq!(v, json!({"name": "alice", "roles": ["billing"]}));
    // The object form of the extension is accepted too.
    let mut request = Request::new("org.pycom.nameserver", "stat", Value::Null);
    request
        .extensions
        .insert("org.pycom.auth".into(), json!({"token": token}));
    assert!(d
        .connection(5000)
        .call(&request, &[])
        .expect("reply")
        .response
        .result
        .is_ok());
    // pycomd's log never shows a token.
    assert!(!d.log().contains(&token), "the token is in the log");
}

#[test]
fn wrong_password_and_unknown_user_read_the_same_and_are_slowed() {
    let s = Setup::new("");
    let d = s.start();
    let wrong = denied(login(&d, "alice", "nope"));
    let unknown = denied(login(&d, "mallory", "nope"));
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, "authenticate: wrong user name or password");
    // Two more failures for alice: the third holds the name back.
    for _ in 0..2 {
        denied(login(&d, "alice", "nope"));
    }
    let started = Instant::now();
    let held = denied(login(&d, "alice", "alice-pw"));
    assert!(held.contains("retry in 1 s"), "{held}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, not delayed"
    );
    // The hold passes, and the right password works again.
    assert!(wait_until(Duration::from_secs(5), || login(
        &d, "alice", "alice-pw"
    )
    .is_ok()));
    // Unknown names are held back the same way.
    for _ in 0..2 {
        denied(login(&d, "mallory", "nope"));
    }
    assert!(denied(login(&d, "mallory", "nope")).contains("retry in"));
    let stat = ns(&d, None, "stat", Value::Null).expect("stat");
    assert!(stat["auth"]["login_failures"].as_u64() >= Some(6), "{stat}");
    assert!(stat["auth"]["logins_throttled"].as_u64() >= Some(2), "{stat}");
}

/// Guesses sent all at once are not all checked: once the name is held,
/// the logins still queued for it are refused without a hash.
#[test]
fn guesses_sent_at_once_are_not_all_hashed() {
    let s = Setup::new("");
    let d = s.start();
    let guesses = 20;
    let barrier = std::sync::Barrier::new(guesses);
    let answers: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..guesses)
            .map(|i| {
                let (d, barrier) = (&d, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    denied(login(d, "bob", &format!("guess-{i}")))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a guess")).collect()
    });
    let held = answers.iter().filter(|a| a.contains("retry in")).count();
    let stat = ns(&d, None, "stat", Value::Null).expect("stat");
    let failures = stat["auth"]["login_failures"].as_u64().unwrap_or(0);
    assert!(
        failures < 10,
        "{failures} of {guesses} guesses were hashed: {stat}"
    );
    assert_eq!(held as u64 + failures, guesses as u64, "{answers:?}");
    // bob's own password waits out the hold.
    assert!(wait_until(Duration::from_secs(5), || login(&d, "bob", "bob-pw").is_ok()));
}

#[test]
fn huge_credentials_are_code_4_at_once() {
    let s = Setup::new("");
    let d = s.start();
    let started = Instant::now();
    let big = "x".repeat(1_000_000);
    match call(
        &d,
        None,
        "org.pycom.authenticator",
        "authenticate",
        json!({"user": "alice", "credentials": big}),
    ) {
        Err(f) => {
            assert_eq!(f.code, Code::BadRequest, "{f}");
            assert!(f.message.contains("exceeds the limit of 1024 bytes"), "{f}");
        }
        Ok(v) => panic!("a 1 MB password was taken: {v}"),
    }
    let token = "t".repeat(10_000);
    let f = ns(&d, Some(&token), "stat", Value::Null).expect_err("a 10 KB token");
    assert_eq!(f.code, Code::BadRequest, "{f}");
    assert!(f.message.contains("10000 bytes exceeds the limit"), "{f}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn grants_decide_who_registers_what_and_owners_keep_their_names() {
    let s = Setup::new("");
    let d = s.start();
    let alice = login(&d, "alice", "alice-pw").expect("alice");
    let bob = login(&d, "bob", "bob-pw").expect("bob");
    let root = login(&d, "root", "root-pw").expect("root");

    // Outside a grant, and under a denied prefix.
    let m = denied(ns(
        &d,
        Some(&alice),
        "register",
        register("/com/other/x", "tcp://a:1"),
    ));
    assert!(m.starts_with("alice may not register /com/other/x"), "{m}");
    let m = denied(ns(
        &d,
        Some(&alice),
        "register",
        register("/com/billing/secret/x", "tcp://a:1"),
    ));
    assert!(m.contains("!/com/billing/secret/ denies it"), "{m}");
    // Anonymous callers register only under the anonymous role's grants.
    ns(&d, None, "register", register("/legacy/svc", "tcp://l:1")).expect("legacy register");
    let m = denied(ns(&d, None, "register", register("/com/billing/y", "tcp://l:1")));
    assert!(
        m.starts_with("an anonymous caller may not register /com/billing/y"),
        "{m}"
    );

    // alice owns her name from any address: a restarted service keeps it.
    ns(
        &d,
        Some(&alice),
        "register",
        register("/com/billing/invoice", "tcp://a:1"),
    )
    .expect("register");
    ns(
        &d,
        Some(&alice),
        "register",
        register("/com/billing/invoice", "tcp://a:2"),
    )
    .expect("same owner, new address");
    // bob may register under /com/billing/ but not take alice's name,
    // renew or unregister it, even quoting its address.
    let m = denied(ns(
        &d,
        Some(&bob),
        "register",
        register("/com/billing/invoice", "tcp://a:2"),
    ));
    assert!(m.contains("owned by alice"), "{m}");
    let id = json!({"service": "/com/billing/invoice", "address": "tcp://a:2"});
    denied(ns(&d, Some(&bob), "renew", id.clone()));
    denied(ns(&d, Some(&bob), "unregister", id.clone()));
    // Nor may a caller without a token.
    denied(ns(&d, None, "renew", id.clone()));
    denied(ns(&d, None, "unregister", id.clone()));
    ns(&d, Some(&alice), "renew", id.clone()).expect("the owner renews");

    // The admin may unregister anyone's record, but not take pycomd's names.
    ns(
        &d,
        Some(&root),
        "unregister",
        json!({"service": "/com/billing/invoice", "address": "tcp://x:9"}),
    )
    .expect("admin override");
    let m = denied(ns(
        &d,
        Some(&root),
        "register",
        register("/org/pycom/nameserver", "tcp://x:9"),
    ));
    assert!(m.contains("pycomd's own"), "{m}");
    // Cluster changes are the admin's.
    denied(call(
        &d,
        Some(&alice),
        "org.pycom.cluster",
        "transfer_leader",
        json!({"to": 1}),
    ));

    let stat = ns(&d, None, "stat", Value::Null).expect("stat");
    assert!(stat["auth"]["denied_writes"].as_u64() >= Some(7), "{stat}");
}

#[test]
fn anonymous_reads_follow_the_setting() {
    let open = Setup::new("");
    let d = open.start();
    ns(&d, None, "locate", json!({"interface": "org.pycom.nameserver"})).expect("anonymous read allowed");

    let closed = Setup::new("anonymous = []");
    let d = closed.start();
    let m = denied(ns(&d, None, "list_services", Value::Null));
    assert!(
        m.starts_with("an anonymous caller may not call org.pycom.nameserver.list_services"),
        "{m}"
    );
    denied(ns(
        &d,
        None,
        "locate",
        json!({"interface": "org.pycom.nameserver"}),
    ));
    let bob = login(&d, "bob", "bob-pw").expect("login works without read");
    ns(&d, Some(&bob), "list_services", Value::Null).expect("a user reads");
    let stat = ns(&d, Some(&bob), "stat", Value::Null).expect("stat");
    assert!(stat["auth"]["denied_reads"].as_u64() >= Some(2), "{stat}");
}

#[test]
fn logout_ends_a_token_and_tokens_survive_a_restart() {
    let s = Setup::new("");
    let mut d = s.start();
    let a = login(&d, "alice", "alice-pw").expect("login");
    let b = login(&d, "alice", "alice-pw").expect("login");
    ns(&d, Some(&a), "stat", Value::Null).expect("valid");
    call(&d, Some(&a), "org.pycom.authenticator", "logout", Value::Null).expect("logout with its own token");
    let m = denied(ns(&d, Some(&a), "stat", Value::Null));
    assert!(m.contains("is not valid"), "{m}");
    // kill -9: the login was durable before it was answered.
    d.kill9();
    d.spawn();
    ns(&d, Some(&b), "stat", Value::Null).expect("the token survived the restart");
    denied(ns(&d, Some(&a), "stat", Value::Null));
}

#[test]
fn an_expired_token_is_refused() {
    let s = Setup::new("token_ttl = 1");
    let d = s.start();
    let token = login(&d, "alice", "alice-pw").expect("login");
    assert!(wait_until(Duration::from_secs(10), || ns(
        &d,
        Some(&token),
        "stat",
        Value::Null
    )
    .is_err_and(|f| f.message.contains("expired"))));
    let f = validate(&d, json!({"token": token})).expect_err("expired");
    assert_eq!(f.code, Code::AccessDenied);
}

#[test]
fn the_real_argon2id_cost_logs_in_and_sighup_reloads_users() {
    let s = Setup::new("");
    // The users file `pycomctl auth passwd` writes: argon2id at 64 MiB.
    let hash = pycom_client::auth::hash_password("carol-pw").expect("hash");
    let mut d = s.start();
    denied(login(&d, "carol", "carol-pw"));
    let mut users = std::fs::read_to_string(s.users()).expect("users");
    users.push_str(&format!("carol:{hash}\n"));
    std::fs::write(s.users(), users).expect("users");
    d.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || d.log().contains("users added: carol")),
        "{}",
        d.log()
    );
    let token = login(&d, "carol", "carol-pw").expect("carol logs in after the reload");
    let v = validate(&d, json!({"token": token})).expect("validate");
    assert_eq!(v["name"], "carol");
    // A broken users file on reload keeps the running policy.
    std::fs::write(s.users(), "dave:$1$md5$nope\n").expect("users");
    d.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || d
            .log()
            .contains("keeping the running")),
        "{}",
        d.log()
    );
    login(&d, "alice", "alice-pw").expect("the old users still log in");
    d.terminate();
}

#[test]
fn unknown_hash_schemes_and_bad_grants_stop_the_start() {
    let s = Setup::new("");
    std::fs::write(
        s.users(),
        format!("alice:{}\nbob:{{SHA}}abc=\n", bcrypt::hash("x", 4).expect("hash")),
    )
    .expect("users");
    let exited = start_to_exit(&s.config());
    assert!(!exited.status.success());
    assert!(
        exited
            .stderr
            .contains(&format!("{}:2: user bob: the hash scheme", s.users().display())),
        "{}",
        exited.stderr
    );
    let s = Setup::new("");
    let config =
        std::fs::read_to_string(s.config()).expect("config") + "\n[[auth.grant]]\nrole = \"ghost\"\n";
    std::fs::write(s.config(), config).expect("config");
    let exited = start_to_exit(&s.config());
    assert!(
        exited
            .stderr
            .contains("auth.grant[3] (role 'ghost'): no such role"),
        "{}",
        exited.stderr
    );
}

fn start_to_exit(config: &Path) -> Exited {
    let dir = tempfile::tempdir().expect("temp dir");
    run_to_exit(
        pycomd_command()
            .arg("--listen")
            .arg(format!("tcp://127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--config")
            .arg(config),
        Duration::from_secs(20),
    )
}
