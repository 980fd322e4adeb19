//! The nameserver methods, as PROTOCOL.md section 4 defines them.

use pycom_client::{Code, ServiceInfo};
use pycom_e2e::{leased, probed, Daemon};
use serde_json::json;
use std::collections::BTreeSet;

#[test]
fn stat_reports_counts_and_version() {
    let d = Daemon::start();
    let mut ns = d.ns();
    ns.register(&leased("/a", "tcp://127.0.0.1:1", &["x.a", "x.b"], 10_000))
        .unwrap();
    let stat = ns.stat().unwrap();
    // /a, pycomd itself and its forwarder.
    assert_eq!(stat["services"], json!(1 + pycom_e2e::OWN_RECORDS), "{stat}");
    assert_eq!(stat["interfaces"], json!(2 + pycom_e2e::OWN_RECORDS), "{stat}");
    assert!(stat["version"].is_string());
    assert!(stat["requests"].as_u64().unwrap() >= 2);
}

#[test]
fn pycomd_lists_itself() {
    let d = Daemon::start();
    let me = d.ns().locate("org.pycom.nameserver", None).unwrap();
    assert_eq!(me.service, "/org/pycom/nameserver");
    assert_eq!(me.address, d.endpoint);
    let err = d
        .ns()
        .register(&leased("/org/pycom/nameserver", &d.endpoint, &["x"], 5000))
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AccessDenied));
}

#[test]
fn interface_adds_interfaces_replaces() {
    let d = Daemon::start();
    let mut conn = d.connection(5000);
    let reg =
        |conn: &mut pycom_client::Connection, args| conn.invoke("org.pycom.nameserver", "register", args);
    // PyCOM 0.3 style: one call per interface, each adds.
    reg(
        &mut conn,
        json!({"service": "/s", "address": "tcp://127.0.0.1:5", "interface": "i.one"}),
    )
    .unwrap();
    reg(
        &mut conn,
        json!({"service": "/s", "address": "tcp://127.0.0.1:5", "interface": "i.two"}),
    )
    .unwrap();
    let got = d.ns().locate("i.one", None).unwrap();
    assert_eq!(got.interfaces, vec!["i.one", "i.two"]);
    // PyCOM 0.4 style: the list replaces the set.
    reg(
        &mut conn,
        json!({"service": "/s", "address": "tcp://127.0.0.1:5", "interfaces": ["i.three"]}),
    )
    .unwrap();
    assert_eq!(
        d.ns().locate("i.one", None).unwrap_err().code(),
        Some(Code::ServiceNotFound)
    );
    assert_eq!(
        d.ns().locate("i.three", None).unwrap().interfaces,
        vec!["i.three"]
    );
    // Both at once is ambiguous.
    let err = reg(
        &mut conn,
        json!({"service": "/s", "address": "tcp://127.0.0.1:5", "interface": "a", "interfaces": ["b"]}),
    )
    .unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest));
}

#[test]
fn locate_filters_by_service_and_lists_all() {
    let d = Daemon::start();
    let mut ns = d.ns();
    ns.register(&leased("/one", "tcp://127.0.0.1:1", &["shared"], 10_000))
        .unwrap();
    ns.register(&leased(
        "/two",
        "tcp://127.0.0.1:2",
        &["shared", "only.two"],
        10_000,
    ))
    .unwrap();
    assert_eq!(
        ns.locate("shared", Some("/two")).unwrap().address,
        "tcp://127.0.0.1:2"
    );
    let err = ns.locate("only.two", Some("/one")).unwrap_err();
    assert_eq!(err.code(), Some(Code::ServiceNotFound));
    assert!(err.to_string().contains("only.two"), "{err}");
    let all: Vec<String> = ns
        .locate_all("shared", None)
        .unwrap()
        .into_iter()
        .map(|s| s.service)
        .collect();
    assert_eq!(all, vec!["/one", "/two"]);
    assert_eq!(
        ns.locate_all("missing", None).unwrap_err().code(),
        Some(Code::ServiceNotFound)
    );
}

#[test]
fn locate_spreads_load_over_live_providers() {
    let d = Daemon::start();
    let mut ns = d.ns();
    for i in 0..3 {
        ns.register(&leased(
            &format!("/p{i}"),
            &format!("tcp://127.0.0.1:{}", 100 + i),
            &["spread"],
            10_000,
        ))
        .unwrap();
    }
    let picked: BTreeSet<String> = (0..9)
        .map(|_| ns.locate("spread", None).unwrap().service)
        .collect();
    assert_eq!(
        picked.len(),
        3,
        "every provider should be picked in 9 calls: {picked:?}"
    );
}

#[test]
fn list_services_filters_with_anchored_regexes() {
    let d = Daemon::start();
    let mut ns = d.ns();
    ns.register(&leased(
        "/com/foo/a",
        "tcp://127.0.0.1:1",
        &["com.foo.alpha"],
        10_000,
    ))
    .unwrap();
    ns.register(&probed("/com/bar/b", "tcp://127.0.0.1:2", &["com.bar.beta"]))
        .unwrap();
    let names = |v: Vec<ServiceInfo>| v.into_iter().map(|s| s.service).collect::<Vec<_>>();
    assert_eq!(
        names(ns.list_services(None, Some("/com/")).unwrap()),
        vec!["/com/bar/b", "/com/foo/a"]
    );
    // Anchored at the start, like Python's re.match: "foo" does not match "/com/foo/a".
    assert!(ns.list_services(None, Some("foo")).unwrap().is_empty());
    assert_eq!(
        names(ns.list_services(Some("com\\.bar"), None).unwrap()),
        vec!["/com/bar/b"]
    );
    assert_eq!(
        names(ns.list_services(Some("com"), Some("/com/f")).unwrap()),
        vec!["/com/foo/a"]
    );
    let all = ns.list_services(None, None).unwrap();
    assert_eq!(all.len(), 2 + pycom_e2e::OWN_RECORDS);
    let err = ns.list_services(Some("(unclosed"), None).unwrap_err();
    assert_eq!(err.code(), Some(Code::BadRequest));
    assert!(err.to_string().contains("'interface'"), "{err}");
}

#[test]
fn metadata_is_stored_and_returned() {
    let d = Daemon::start();
    let mut reg = leased("/m", "tcp://127.0.0.1:1", &["m.i"], 10_000);
    reg.metadata.insert("zone".into(), "eu-1".into());
    d.ns().register(&reg).unwrap();
    assert_eq!(
        d.ns()
            .locate("m.i", None)
            .unwrap()
            .metadata
            .get("zone")
            .map(String::as_str),
        Some("eu-1")
    );
    let err = d
        .connection(5000)
        .invoke(
            "org.pycom.nameserver",
            "register",
            json!({"service": "/m2", "address": "tcp://h:1", "interface": "x", "metadata": {"n": 1}}),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("metadata tag 'n' must be a string"),
        "{err}"
    );
}

#[test]
fn introspect_in_pycom_0_4_format() {
    let d = Daemon::start();
    let r = d
        .connection(5000)
        .invoke("org.pycom.nameserver", "introspect", json!(null))
        .unwrap();
    assert_eq!(r["name"], "org.pycom.nameserver");
    assert!(r["docstring"].is_string());
    let locate = &r["methods"]["locate"];
    assert_eq!(locate["required_arguments"], json!(["interface"]));
    assert_eq!(locate["optional_arguments"], json!(["service", "as_list"]));
    assert_eq!(locate["results"], json!(["address", "service", "interfaces"]));
    for m in [
        "stat",
        "register",
        "renew",
        "unregister",
        "list_services",
        "introspect",
    ] {
        assert!(r["methods"][m]["docstring"].is_string(), "{m} missing");
    }
}

#[test]
fn unknown_method_and_interface() {
    let d = Daemon::start();
    let mut conn = d.connection(5000);
    let err = conn
        .invoke("org.pycom.nameserver", "frobnicate", json!(null))
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::MethodNotFound));
    assert!(err.to_string().contains("frobnicate"));
    let err = conn.invoke("com.other", "stat", json!(null)).unwrap_err();
    assert_eq!(err.code(), Some(Code::ServiceNotFound));
}

#[test]
fn ownership_belongs_to_the_registering_address() {
    let d = Daemon::start();
    let mut ns = d.ns();
    ns.register(&leased("/owned", "tcp://127.0.0.1:1", &["o"], 10_000))
        .unwrap();
    let err = ns
        .register(&leased("/owned", "tcp://127.0.0.1:2", &["o"], 10_000))
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::AccessDenied));
    assert!(err.to_string().contains("owned by another address"), "{err}");
    assert_eq!(
        ns.unregister("/owned", "tcp://127.0.0.1:2").unwrap_err().code(),
        Some(Code::AccessDenied)
    );
    assert_eq!(
        ns.renew("/owned", "tcp://127.0.0.1:2").unwrap_err().code(),
        Some(Code::AccessDenied)
    );
    // The same address renews and re-registers freely.
    ns.register(&leased("/owned", "tcp://127.0.0.1:1", &["o", "p"], 10_000))
        .unwrap();
    ns.unregister("/owned", "tcp://127.0.0.1:1").unwrap();
    // Once unregistered, the name is free for anyone.
    ns.register(&leased("/owned", "tcp://127.0.0.1:2", &["o"], 10_000))
        .unwrap();
    assert_eq!(ns.locate("o", None).unwrap().address, "tcp://127.0.0.1:2");
    assert_eq!(
        ns.unregister("/nobody", "tcp://127.0.0.1:2").unwrap_err().code(),
        Some(Code::ServiceNotFound)
    );
}
