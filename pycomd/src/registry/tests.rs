use super::*;
use pycom_client::Code;

fn register(service: &str, address: &str, ifaces: &[&str], replace: bool, ttl_ms: Option<u64>) -> Command {
    Command::Register {
        service: service.into(),
        address: address.into(),
        interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
        replace,
        ttl_ms,
        metadata: None,
        lapsed: None,
        owner: None,
    }
}

fn registered(outcome: Outcome) -> std::sync::Arc<Record> {
    match outcome.0 {
        Ok(Applied::Registered(record)) => record,
        other => panic!("expected a registration, got {other:?}"),
    }
}

#[test]
fn interface_adds_and_interfaces_replaces() {
    let mut s = State::default();
    let _ = s.apply(&register("/s", "tcp://a:1", &["a"], false, None));
    let rec = registered(s.apply(&register("/s", "tcp://a:1", &["b"], false, None)));
    assert_eq!(rec.interfaces, vec!["a", "b"]);
    let rec = registered(s.apply(&register("/s", "tcp://a:1", &["c"], true, None)));
    assert_eq!(rec.interfaces, vec!["c"]);
}

#[test]
fn the_revision_grows_by_one_per_change_and_not_for_a_repeat() {
    let mut s = State::default();
    let (_, changes) = s.apply(&register("/s", "tcp://a:1", &["a"], true, Some(1000)));
    assert_eq!(changes[0].kind, ChangeKind::Registered);
    assert_eq!((changes[0].revision, s.revision()), (1, 1));
    let (result, changes) = s.apply(&register("/s", "tcp://a:1", &["a"], true, Some(1000)));
    assert!(
        result.is_ok() && changes.is_empty(),
        "an identical register changes nothing"
    );
    let (_, changes) = s.apply(&register("/s", "tcp://a:1", &["b"], true, Some(1000)));
    assert_eq!(changes[0].kind, ChangeKind::Updated);
    assert_eq!(
        changes[0].previous.as_ref().map(|p| p.interfaces.clone()),
        Some(vec!["a".to_string()])
    );
    let (_, changes) = s.apply(&Command::Unregister {
        service: "/s".into(),
        address: "tcp://a:1".into(),
        owner: None,
        admin: false,
    });
    assert_eq!(changes[0].kind, ChangeKind::Unregistered);
    assert_eq!(s.revision(), 3);
}

#[test]
fn another_address_is_refused_and_changes_nothing() {
    let mut s = State::default();
    let _ = s.apply(&register("/s", "tcp://a:1", &["a"], true, Some(1000)));
    let before = s.clone();
    let (result, changes) = s.apply(&register("/s", "tcp://b:1", &["a"], true, None));
    assert_eq!(result.unwrap_err().code, Code::AccessDenied);
    assert!(changes.is_empty());
    let (result, _) = s.apply(&Command::Unregister {
        service: "/s".into(),
        address: "tcp://b:1".into(),
        owner: None,
        admin: false,
    });
    assert_eq!(result.unwrap_err().code, Code::AccessDenied);
    assert_eq!(s, before);
}

#[test]
fn a_lapsed_lease_frees_the_name_for_another_address() {
    let mut s = State::default();
    let old = registered(s.apply(&register("/s", "tcp://a:1", &["a"], true, Some(1000))));
    let mut cmd = register("/s", "tcp://b:1", &["a"], true, None);
    if let Command::Register { lapsed, .. } = &mut cmd {
        *lapsed = Some(old.revision);
    }
    let (result, changes) = s.apply(&cmd);
    assert_eq!(registered((result, vec![])).address, "tcp://b:1");
    let kinds: Vec<_> = changes.iter().map(|c| c.kind).collect();
    assert_eq!(kinds, vec![ChangeKind::Expired, ChangeKind::Registered]);
    // The expiry proposed for the old version arrives late: it spares the new one.
    let (result, changes) = s.apply(&Command::Expire {
        service: "/s".into(),
        revision: old.revision,
    });
    assert_eq!(result.unwrap(), Applied::Removed(false));
    assert!(changes.is_empty());
    assert!(s.get("/s").is_some());
}

#[test]
fn a_late_probe_verdict_spares_a_re_registered_record() {
    let mut s = State::default();
    let first = registered(s.apply(&register("/p", "tcp://a:1", &["p"], true, None)));
    let second = registered(s.apply(&register("/p", "tcp://a:1", &["q"], true, None)));
    let stale = Command::ProbeFailed {
        service: "/p".into(),
        revision: first.revision,
    };
    assert_eq!(s.apply(&stale).0.unwrap(), Applied::Removed(false));
    let current = Command::ProbeFailed {
        service: "/p".into(),
        revision: second.revision,
    };
    let (_, changes) = s.apply(&current);
    assert_eq!(changes[0].kind, ChangeKind::Dropped);
    assert!(s.get("/p").is_none());
}

#[test]
fn reserved_names_are_refused() {
    let mut s = State::default();
    let (result, _) = s.apply(&register(
        "/org/pycom/nameserver",
        "tcp://a:1",
        &["x"],
        true,
        None,
    ));
    assert_eq!(result.unwrap_err().code, Code::AccessDenied);
}

#[test]
fn replaying_the_same_commands_gives_the_same_state() {
    let commands = vec![
        register("/a", "tcp://a:1", &["x"], true, Some(5000)),
        register("/b", "tcp://b:1", &["x", "y"], true, None),
        register("/a", "tcp://z:1", &["x"], true, None),
        Command::Expire {
            service: "/a".into(),
            revision: 1,
        },
        register("/a", "tcp://z:1", &["x"], false, None),
    ];
    let run = || {
        let mut s = State::default();
        for c in &commands {
            let _ = s.apply(c);
        }
        s
    };
    assert_eq!(run(), run());
}

#[test]
fn the_index_follows_the_state() {
    let me = Record {
        service: "/org/pycom/nameserver".into(),
        address: "tcp://127.0.0.1:2012".into(),
        interfaces: vec!["org.pycom.nameserver".into()],
        metadata: Default::default(),
        ttl_ms: None,
        revision: 0,
        owner: None,
    };
    let mut r = Registry::new(State::default(), vec![me]);
    for s in ["/a", "/b", "/c"] {
        let _ = r.apply(&register(s, &format!("tcp://{s}:1"), &["x"], true, None));
    }
    let all = |_: &str| true;
    let mut seen: Vec<String> = (0..6)
        .map(|_| {
            let json = r.pick("x", None, all).expect("a provider");
            let v: serde_json::Value = serde_json::from_str(json.get()).unwrap();
            v["service"].as_str().unwrap().to_string()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, vec!["/a", "/a", "/b", "/b", "/c", "/c"]);
    let _ = r.apply(&register("/a", "tcp:///a:1", &["y"], true, None));
    assert_eq!(r.providers("x", None, all).len(), 2);
    assert_eq!(r.providers("y", None, all).len(), 1);
    assert!(r.pick("x", None, |s| s != "/b" && s != "/c").is_none());
    assert!(r.pick("org.pycom.nameserver", None, all).is_some());
    assert_eq!(r.len(), 4);
}

#[test]
fn the_state_counts_its_records_bytes() {
    let mut s = State::default();
    let _ = s.apply(&register("/s", "tcp://a:1", &["a"], false, None));
    let first = s.bytes();
    assert_eq!(first, "/s".len() + "tcp://a:1".len() + "a".len());
    let _ = s.apply(&register("/s", "tcp://a:1", &["bb"], false, None));
    assert_eq!(s.bytes(), first + 2, "'interface' adds to the set");
    let _ = s.apply(&Command::Unregister {
        service: "/s".into(),
        address: "tcp://a:1".into(),
        owner: None,
        admin: false,
    });
    assert_eq!(s.bytes(), 0);
    let rebuilt = State::from_parts(0, vec![], vec![], vec![]);
    assert_eq!(rebuilt.bytes(), 0);
}
