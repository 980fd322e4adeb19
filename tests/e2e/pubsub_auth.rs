//! Pub-sub with access control on (README "Access control", PROTOCOL.md
//! 5 and 7): the forwarder authenticates its connections (ZeroMQ PLAIN,
//! the token as password, checked by its ZAP handler), forwards only the
//! publications its publisher's `publish` grants cover, and applies only
//! the subscriptions its subscriber's `subscribe` grants cover whole.

use pycom_client::{Context, Publisher, Start, Subscriber};
use pycom_e2e::auth::{login, AuthSetup};
use pycom_e2e::{leased, wait_until, Daemon};
use serde_json::Value;
use std::time::Duration;

/// How long one publication may take to arrive before a test fails.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long a publication that must not arrive is waited for.
const SILENCE: Duration = Duration::from_millis(700);

/// alice may publish `demo.>`; bob may subscribe to `demo.a.>`; carol has
/// a role without grants; root is admin.
const GRANTS: &str = r#"
[auth.roles]
writer = ["alice"]
reader = ["bob"]
nothing = ["carol"]
admin = ["root"]

[[auth.grant]]
role = "writer"
publish = ["demo.>"]

[[auth.grant]]
role = "reader"
subscribe = ["demo.a.>", "demo.exact"]
"#;

fn daemon(anonymous: &str) -> (AuthSetup, Daemon) {
    let setup = AuthSetup::new(
        &[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("carol", "carol-pw"),
            ("root", "root-pw"),
        ],
        &format!("anonymous = {anonymous}\n{GRANTS}"),
    );
    let d = setup.start();
    (setup, d)
}

/// A context on `d`, logged in as `user` (its password is `<user>-pw`), or
/// anonymous.
fn context(d: &Daemon, user: Option<&str>) -> Context {
    let ctx = Context::new(&d.endpoint).expect("context");
    ctx.set_default_timeout(Duration::from_secs(5));
    if let Some(user) = user {
        let token = login(d, user, &format!("{user}-pw")).expect("login");
        ctx.set_token(token);
    }
    ctx
}

fn stat(d: &Daemon) -> Value {
    d.connection(2000)
        .invoke("org.pycom.pubsub", "stat", Value::Null)
        .expect("pub-sub stat")
}

/// The topics that arrive before the one on `fence` (which must come).
fn until_fence(sub: &mut Subscriber, fence: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        match sub.recv_timeout(ARRIVAL) {
            Ok(Some(m)) if m.topic == fence => return got,
            Ok(Some(m)) => got.push(m.topic.clone()),
            Ok(None) => panic!("the fence {fence} did not arrive (got {got:?})"),
            Err(e) => panic!("waiting for the fence {fence}: {e}"),
        }
    }
}

/// Nothing arrives for a while.
fn silent(sub: &mut Subscriber, what: &str) {
    match sub.recv_timeout(SILENCE) {
        Ok(None) => {}
        Ok(Some(m)) => panic!("{what}: {} arrived", m.topic),
        Err(e) => panic!("{what}: {e}"),
    }
}

#[test]
fn the_forwarder_record_says_peers_authenticate() {
    let (_setup, d) = daemon(r#"["read"]"#);
    let info = context(&d, None)
        .nameserver()
        .locate("org.pycom.pubsub", Some("/org/pycom/pubsub"))
        .expect("locate the forwarder");
    assert_eq!(
        info.metadata.get("auth").map(String::as_str),
        Some("plain"),
        "{info:?}"
    );
    assert_eq!(stat(&d)["authenticated"], true);
    // A subscribe grant without a trailing '>' is called out, once at
    // start: it allows no subscription.
    assert!(
        d.log()
            .contains("subscribe grant 'demo.exact' allows no subscription"),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("not enforced"), "{}", d.log());
}

#[test]
fn only_publications_a_publish_grant_covers_are_forwarded() {
    let (_setup, d) = daemon(r#"["read"]"#);
    let root = context(&d, Some("root"));
    let mut sub = root.subscribe("demo.>").expect("admin subscribes to anything");
    let mut alice = context(&d, Some("alice")).publisher("demo.alice").expect("alice");
    let mut carol = context(&d, Some("carol")).publisher("demo.carol").expect("carol");
    let mut anonymous = context(&d, None).publisher("demo.anonymous").expect("anonymous");
    carol.publish(&1).expect("publish");
    anonymous.publish(&1).expect("publish");
    assert!(
        wait_until(ARRIVAL, || stat(&d)["dropped_denied"] == 2),
        "carol's and the anonymous publication are dropped and counted: {}",
        stat(&d)
    );
    alice.publish(&1).expect("publish");
    alice.publish_to("demo.fence", &0).expect("publish");
    assert_eq!(until_fence(&mut sub, "demo.fence"), ["demo.alice"]);
    // Admin may publish anything (but org.pycom., which is pycomd's).
    let mut root_pub = root.publisher("other.topic").expect("root");
    let mut everything = root.subscribe(">").expect("subscribe");
    root_pub.publish(&1).expect("publish");
    root_pub.publish_to("demo.fence", &0).expect("publish");
    assert_eq!(until_fence(&mut everything, "demo.fence"), ["other.topic"]);
    let s = stat(&d);
    assert_eq!(s["dropped_denied"], 2, "{s}");
    // One line a second at most: whichever came first.
    let log = d.log();
    assert!(
        log.contains("from carol was dropped") || log.contains("from an anonymous publisher was dropped"),
        "{log}"
    );
}

#[test]
fn a_subscriber_gets_only_what_its_subscribe_grants_cover() {
    let (_setup, d) = daemon(r#"["read"]"#);
    let root = context(&d, Some("root"));
    let mut publisher = root.publisher("demo.b.cached").expect("publisher");
    publisher.publish(&"b").expect("publish");
    publisher.publish_to("demo.a.cached", &"a").expect("publish");
    let bob = context(&d, Some("bob"));
    // Within the grant: the replay of demo.a.cached, never demo.b.cached.
    let mut within = Subscriber::builder(&bob)
        .pattern("demo.a.>")
        .start(Start::Last)
        .connect()
        .expect("bob subscribes to demo.a.>");
    let mut exact = bob.subscribe("demo.a.x").expect("bob subscribes to demo.a.x");
    // Wider than the grant (prefix "demo."): not applied at all.
    let mut wider = bob.subscribe("demo.>").expect("subscribe returns");
    // A grant without '>' allows no subscription (prefix "demo.exact" would
    // let demo.exact.more and demo.exactly through).
    let mut exact_grant = bob.subscribe("demo.exact").expect("subscribe returns");
    assert!(
        wait_until(ARRIVAL, || stat(&d)["subscriptions_denied"] == 2),
        "{}",
        stat(&d)
    );
    publisher.publish_to("demo.b.x", &1).expect("publish");
    publisher.publish_to("demo.exact", &1).expect("publish");
    publisher.publish_to("demo.a.x", &1).expect("publish");
    publisher.publish_to("demo.a.fence", &0).expect("publish");
    assert_eq!(
        until_fence(&mut within, "demo.a.fence"),
        ["demo.a.cached", "demo.a.x"]
    );
    let m = exact
        .recv_timeout(ARRIVAL)
        .expect("recv")
        .expect("demo.a.x arrives");
    assert_eq!(m.topic, "demo.a.x");
    silent(&mut wider, "bob's subscription to demo.> is not applied");
    silent(&mut exact_grant, "a subscribe grant without '>' allows nothing");
    // carol has no subscribe grant; anonymous has no 'subscribe' here.
    let mut carol = context(&d, Some("carol"))
        .subscribe("demo.>")
        .expect("subscribe returns");
    let mut anonymous = context(&d, None).subscribe("demo.>").expect("subscribe returns");
    publisher.publish_to("demo.a.y", &1).expect("publish");
    silent(&mut carol, "carol may not subscribe");
    silent(
        &mut anonymous,
        "anonymous may not subscribe without auth.anonymous 'subscribe'",
    );
    // Registry events are reads: whoever may read may watch them.
    let mut events = context(&d, None)
        .subscribe("org.pycom.nameserver.events.>")
        .expect("subscribe");
    root.nameserver()
        .register(&leased("/demo/svc", "tcp://127.0.0.1:1", &["demo.svc"], 60_000))
        .expect("admin registers");
    let m = events
        .recv_timeout(ARRIVAL)
        .expect("recv")
        .expect("the registry event");
    assert_eq!(m.topic, "org.pycom.nameserver.events.registered");
}

#[test]
fn anonymous_subscribers_follow_auth_anonymous() {
    let (_setup, d) = daemon(r#"["read", "subscribe"]"#);
    let mut sub = context(&d, None).subscribe("demo.>").expect("subscribe");
    let mut publisher = context(&d, Some("alice")).publisher("demo.x").expect("publisher");
    publisher.publish(&1).expect("publish");
    let m = sub.recv_timeout(ARRIVAL).expect("recv").expect("demo.x arrives");
    assert_eq!(m.topic, "demo.x");
    assert_eq!(stat(&d)["subscriptions_denied"], 0);
}

#[test]
fn a_bad_or_ended_token_is_refused_at_the_handshake() {
    let (_setup, d) = daemon(r#"["read", "subscribe"]"#);
    // With a bad token pycomd refuses even the look-up: go to the
    // forwarder's endpoints directly (a context with a token uses PLAIN
    // there).
    let s = stat(&d);
    let (xsub, xpub) = (
        s["xsub"].as_str().expect("xsub").to_string(),
        s["xpub"].as_str().expect("xpub").to_string(),
    );
    let short = Duration::from_millis(800);
    let bad = context(&d, None);
    bad.set_token("not-a-token-pycomd-gave");
    let sub = Subscriber::builder(&bad)
        .pattern("demo.>")
        .endpoint(xpub.clone())
        .timeout(short)
        .connect();
    match sub {
        Ok(_) => panic!("a bad token subscribes"),
        Err(e) => assert!(e.to_string().contains("refused at the handshake"), "{e}"),
    }
    let publisher = Publisher::builder(&bad, "demo.x")
        .endpoint(xsub.clone())
        .timeout(short)
        .connect();
    assert!(publisher.is_err(), "a bad token publishes");
    let alice = context(&d, Some("alice"));
    let token = alice.token().expect("token");
    // The same endpoints with the token while it is good: fine.
    let mut good = Publisher::builder(&alice, "demo.x")
        .endpoint(xsub.clone())
        .connect()
        .expect("a good token publishes");
    let mut watching = context(&d, None).subscribe("demo.>").expect("subscribe");
    good.publish(&1).expect("publish");
    assert!(watching.recv_timeout(ARRIVAL).expect("recv").is_some());
    alice.logout().expect("logout");
    let ended = context(&d, None);
    ended.set_token(token);
    let publisher = Publisher::builder(&ended, "demo.x")
        .endpoint(xsub)
        .timeout(short)
        .connect();
    assert!(publisher.is_err(), "a logged-out token publishes");
    let s = stat(&d);
    assert!(s["connections_refused"].as_u64() >= Some(3), "{s}");
    assert!(d.log().contains("was refused: token"), "{}", d.log());
}

#[test]
fn a_reload_changes_what_publishers_and_subscribers_may_do() {
    let (setup, d) = daemon(r#"["read"]"#);
    let root = context(&d, Some("root"));
    let mut carol_pub = context(&d, Some("carol")).publisher("demo.c").expect("carol");
    let mut sub = root.subscribe("demo.>").expect("subscribe");
    carol_pub.publish(&1).expect("publish");
    assert!(
        wait_until(ARRIVAL, || stat(&d)["dropped_denied"] == 1),
        "{}",
        stat(&d)
    );
    // carol's role gets a publish grant: her open connection may publish.
    let config = std::fs::read_to_string(setup.config()).expect("config");
    let more = "\n[[auth.grant]]\nrole = \"nothing\"\npublish = [\"demo.c\"]\n";
    std::fs::write(setup.config(), config + more).expect("config");
    d.signal("HUP");
    assert!(
        wait_until(ARRIVAL, || d.log().contains("grants changed for nothing")),
        "{}",
        d.log()
    );
    carol_pub.publish(&2).expect("publish");
    let m = sub
        .recv_timeout(ARRIVAL)
        .expect("recv")
        .expect("carol's publication");
    assert_eq!(
        (m.topic.as_str(), m.value::<i32>().expect("value")),
        ("demo.c", 2)
    );
}
