//! Operations: the HTTP endpoint (/metrics read with the Python Prometheus
//! client's parser, /health, /ready on a full disk and in a leaderless
//! minority), backups (snapshot save under write load, restore, a damaged
//! snapshot refused), completions.
//!
//! The metrics test needs `PYCOM_PYTHON` with `prometheus_client` (tests/run.sh
//! installs it); the full-disk test root and `mount` (else SKIPPED, as in
//! store_errors.rs).

use pycom_client::{Code, Registration};
use pycom_e2e::cluster::Cluster;
use pycom_e2e::mounts::{prerequisites, skip, Mount};
use pycom_e2e::{bin, http_get, http_raw, leased, wait_until, Daemon};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ADDRESS: &str = "tcp://127.0.0.1:1";
const TTL_MS: u64 = 600_000;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("interop")
        .join(name)
}

/// /metrics parsed by prometheus_client's OpenMetrics parser: sample
/// `name{label=value,...}` (labels sorted) to value.
fn scrape(python: &str, address: &str) -> BTreeMap<String, f64> {
    let (status, body) = http_get(address, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    let mut child = Command::new(python)
        .arg(script("parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run parse_metrics.py");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write the metrics to the parser");
    let out = child.wait_with_output().expect("parse_metrics.py");
    assert!(
        out.status.success(),
        "the Prometheus parser refused pycomd's /metrics: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("the parser's JSON");
    parsed["samples"]
        .as_object()
        .expect("samples")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(f64::NAN)))
        .collect()
}

fn sample(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn python() -> Option<String> {
    if std::env::var("PYCOM_SKIP_INTEROP").as_deref() == Ok("1") {
        eprintln!("PYCOM_SKIP_INTEROP=1: skipping the metrics parser test");
        return None;
    }
    Some(std::env::var("PYCOM_PYTHON").unwrap_or_else(|_| {
        panic!("PYCOM_PYTHON must name a Python with prometheus_client installed: run bash tests/run.sh")
    }))
}

const LOCATE_OK: &str = "pycom_requests_total{code=0,interface=org.pycom.nameserver,method=locate}";
const REGISTER_OK: &str = "pycom_requests_total{code=0,interface=org.pycom.nameserver,method=register}";

#[test]
fn metrics_parse_and_move_with_real_traffic() {
    let Some(python) = python() else { return };
    let d = Daemon::start();
    let address = d.http_address();
    let before = scrape(&python, &address);
    let mut ns = d.ns();
    for i in 0..5 {
        ns.register(&leased(&format!("/m/{i}"), ADDRESS, &["metrics.test"], TTL_MS))
            .expect("register");
    }
    for _ in 0..20 {
        ns.locate("metrics.test", None).expect("locate");
    }
    let missing = ns.locate("metrics.nothing", None);
    assert!(missing.is_err());
    // An interface pycomd does not serve: counted as other, not as itself.
    let mut conn = d.connection(5000);
    let _ = conn.invoke("com.attacker.made.up", "whatever", Value::Null);
    let after = scrape(&python, &address);

    assert_eq!(
        sample(&after, LOCATE_OK) - sample(&before, LOCATE_OK),
        20.0,
        "{after:#?}"
    );
    assert_eq!(sample(&after, REGISTER_OK) - sample(&before, REGISTER_OK), 5.0);
    assert_eq!(
        sample(
            &after,
            "pycom_requests_total{code=3,interface=org.pycom.nameserver,method=locate}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "pycom_requests_total{code=3,interface=other,method=other}"
        ),
        1.0,
        "an unknown interface is counted as other: {after:#?}"
    );
    assert!(
        !after.keys().any(|k| k.contains("attacker")),
        "a client must not create series"
    );
    assert_eq!(sample(&after, "pycom_records{kind=leased}"), 5.0);
    assert_eq!(sample(&after, "pycom_records{kind=probed}"), 0.0);
    assert!(
        sample(&after, "pycom_store_syncs_total{}") >= sample(&before, "pycom_store_syncs_total{}") + 1.0
    );
    let count = |m: &BTreeMap<String, f64>, method: &str| {
        sample(
            m,
            &format!("pycom_request_duration_seconds_count{{method={method}}}"),
        )
    };
    assert_eq!(count(&after, "register") - count(&before, "register"), 5.0);
    assert_eq!(count(&after, "locate") - count(&before, "locate"), 21.0);
    assert_eq!(sample(&after, "pycom_ready{}"), 1.0);
    assert!(sample(&after, "process_resident_memory_bytes{}") > 1e6);
    assert!(sample(&after, "process_open_fds{}") > 3.0);
    assert!(after.contains_key("pycom_pubsub_messages_total{}"));

    // Health, and what the endpoint refuses.
    assert_eq!(http_get(&address, "/health").0, 200);
    assert_eq!(http_get(&address, "/ready").0, 200);
    assert_eq!(http_get(&address, "/nowhere").0, 404);
    let (status, _) =
        http_raw(&address, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").expect("POST");
    assert_eq!(status, 405);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let refused = http_raw(&address, huge.as_bytes());
    assert!(
        matches!(refused, Ok((431, _)) | Err(_)),
        "an oversized head is refused: {refused:?}"
    );
    assert_eq!(
        http_raw(&address, b"\x00\xff garbage\r\n\r\n")
            .expect("garbage")
            .0,
        400
    );
    // A client that sends nothing is dropped, and holds nobody else up.
    let idle = std::net::TcpStream::connect(&address).expect("connect");
    assert_eq!(http_get(&address, "/health").0, 200);
    drop(idle);
}

#[test]
fn ready_turns_503_when_the_disk_is_full_and_200_again_with_space() {
    if let Err(missing) = prerequisites(&[], false) {
        skip("ready on a full disk", &missing);
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mount = match Mount::tmpfs(&dir.path().join("mnt"), "2m") {
        Ok(m) => m,
        Err(e) => {
            skip("ready on a full disk", &format!("a tmpfs mount: {e}"));
            return;
        }
    };
    let d = Daemon::with_data_dir(
        &mount.path().join("data"),
        &[("PYCOMD_MAX_RECORD_BYTES", "1048576")],
        &[],
    );
    let address = d.http_address();
    assert_eq!(http_get(&address, "/ready").0, 200);
    let filler = mount.path().join("filler");
    fill(&filler);
    // A write the disk cannot take: /ready says so at once.
    let err = d
        .ns()
        .register(&big("/full/refused"))
        .expect_err("a register on a full disk must not be acknowledged");
    assert_eq!(err.code(), Some(Code::Unavailable), "{err}");
    let (status, body) = http_get(&address, "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("No space left on device"), "{body}");
    assert_eq!(http_get(&address, "/health").0, 200, "alive all the same");
    // Space again: the idle write probe finds it within its 5 s.
    std::fs::remove_file(&filler).expect("remove the filler");
    assert!(
        wait_until(Duration::from_secs(15), || http_get(&address, "/ready").0 == 200),
        "/ready should answer 200 once the disk has space again; log:\n{}",
        d.log()
    );
    // And without a write: full again, the probe alone turns it 503.
    fill(&filler);
    assert!(
        wait_until(Duration::from_secs(15), || http_get(&address, "/ready").0 == 503),
        "the idle write probe should notice the full disk"
    );
    std::fs::remove_file(&filler).expect("remove the filler");
    drop(d);
    drop(mount);
}

fn big(service: &str) -> Registration {
    // Too big for what a full tmpfs leaves (about 64 KB of metadata).
    let mut r = leased(service, ADDRESS, &["full"], TTL_MS);
    for i in 0..64 {
        r.metadata.insert(format!("pad{i:02}"), "x".repeat(1000));
    }
    r
}

/// Write `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    let _ = file.sync_all();
}

#[test]
fn ready_is_503_in_a_leaderless_minority() {
    let cluster = Cluster::start(3);
    let leader = cluster.expect_leader(Duration::from_secs(20));
    let addresses: BTreeMap<u64, String> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, cluster.daemon(id).http_address()))
        .collect();
    for (id, address) in &addresses {
        assert!(
            wait_until(Duration::from_secs(10), || http_get(address, "/ready").0 == 200),
            "node {id} should be ready with a leader"
        );
    }
    let lonely = cluster
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.isolate(lonely);
    let (status, body) = {
        let mut last = (0, String::new());
        wait_until(Duration::from_secs(20), || {
            last = http_get(&addresses[&lonely], "/ready");
            last.0 == 503
        });
        last
    };
    assert_eq!(status, 503, "a cut-off minority is not ready: {body}");
    assert_eq!(http_get(&addresses[&lonely], "/health").0, 200);
    for (id, address) in addresses.iter().filter(|(id, _)| **id != lonely) {
        assert!(
            wait_until(Duration::from_secs(20), || http_get(address, "/ready").0 == 200),
            "node {id} of the majority stays ready"
        );
    }
    cluster.heal_all();
    assert!(
        wait_until(Duration::from_secs(20), || http_get(
            &addresses[&lonely],
            "/ready"
        )
        .0 == 200),
        "healed, the node is ready again"
    );
}

/// Services listed with `list-services --long --json`: name to revision.
fn revisions(d: &Daemon) -> BTreeMap<String, u64> {
    let out = pycom_e2e::pycomctl(d, &["list-services", "--long", "--json", "--service", "/load/"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| {
            (
                r["service"].as_str().expect("service").to_string(),
                r["state"]["revision"].as_u64().expect("revision"),
            )
        })
        .collect()
}

#[test]
fn snapshot_save_under_write_load_restores_exactly_the_state_at_its_revision() {
    let d = Daemon::start();
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            let mut ns = d.ns();
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) && i < 5000 {
                    let name = format!("/load/{w}/{i}");
                    if ns.register(&leased(&name, ADDRESS, &["load"], TTL_MS)).is_ok() {
                        acknowledged.lock().expect("lock").push(name);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || acknowledged
        .lock()
        .expect("lock")
        .len()
        >= 200));
    let before_save: BTreeSet<String> = acknowledged.lock().expect("lock").iter().cloned().collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.snap");
    let out = pycom_e2e::pycomctl(&d, &["snapshot", "save", file.to_str().expect("utf-8"), "--json"]);
    assert!(
        out.status.success(),
        "snapshot save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let revision = saved["revision"].as_u64().expect("revision");
    // Writes go on after the snapshot, then stop.
    let more = acknowledged.lock().expect("lock").len() + 100;
    wait_until(Duration::from_secs(20), || {
        acknowledged.lock().expect("lock").len() >= more
    });
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }

    // What the original held at that revision: every record written once,
    // none removed, so those with a revision at most the snapshot's.
    let now = revisions(&d);
    let expected: BTreeSet<String> = now
        .iter()
        .filter(|(_, rev)| **rev <= revision)
        .map(|(name, _)| name.clone())
        .collect();
    assert!(
        before_save.is_subset(&expected),
        "every write acknowledged before the save is in the snapshot"
    );
    assert!(expected.len() < now.len(), "writes went on after the snapshot");

    let data = dir.path().join("restored");
    let done = pycom_e2e::restore(&file, &data, false);
    assert!(done.status.success(), "restore: {}", done.stderr);
    let restored = Daemon::with_data_dir(&data, &[], &[]);
    let got = revisions(&restored);
    assert_eq!(
        got.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "the restored registry is exactly the acknowledged state at revision {revision}"
    );
    for (name, rev) in &got {
        assert_eq!(now.get(name), Some(rev), "{name} keeps its revision");
    }
    assert_eq!(
        restored.ns().stat().expect("stat")["revision"].as_u64(),
        Some(revision)
    );
}

#[test]
fn a_damaged_snapshot_or_a_non_empty_data_dir_is_refused() {
    let d = Daemon::start();
    d.ns()
        .register(&leased("/keep/1", ADDRESS, &["keep"], TTL_MS))
        .expect("register");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("b.snap");
    let out = pycom_e2e::pycomctl(&d, &["snapshot", "save", file.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sha256"), "{text}");

    let restore = pycom_e2e::restore;
    // One byte flipped in the registry: the checksum catches it.
    let mut bytes = std::fs::read(&file).expect("read");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x55;
    let damaged = dir.path().join("damaged.snap");
    std::fs::write(&damaged, &bytes).expect("write");
    let empty = dir.path().join("empty");
    let out = restore(&damaged, &empty, false);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("is not a usable pycomd snapshot: it fails its checksum"),
        "{}",
        out.stderr
    );
    assert!(
        !empty.join("log").exists(),
        "nothing is written for a damaged snapshot"
    );
    // Cut short.
    let short = dir.path().join("short.snap");
    std::fs::write(&short, &bytes[..bytes.len() / 2]).expect("write");
    let out = restore(&short, &empty, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("where its header says"), "{}", out.stderr);

    // A data dir in use is not replaced without --force.
    let used = dir.path().join("used");
    assert!(restore(&file, &used, false).status.success());
    let out = restore(&file, &used, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);
    let out = restore(&file, &used, true);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        std::fs::read_dir(&used).expect("read").any(|e| e
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .starts_with("replaced-")),
        "--force keeps what was there aside"
    );
    let restored = Daemon::with_data_dir(&used, &[], &[]);
    assert_eq!(
        restored.ns().locate("keep", None).expect("locate").service,
        "/keep/1"
    );
}

#[test]
fn completions_and_man_pages_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin("pycomctl"))
            .args(["completions", shell])
            .output()
            .expect("run");
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("snapshot") && text.contains("list-services"),
            "{shell}: {text}"
        );
    }
    let out = Command::new(bin("pycomctl")).arg("man").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(".TH pycomctl 1"));
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(bin("pycomctl"))
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(out.status.success());
    assert!(dir.path().join("pycomctl-snapshot.1").is_file());
    // Every subcommand's help has examples.
    for sub in [
        "stat",
        "list-services",
        "locate",
        "call",
        "register",
        "renew",
        "unregister",
        "cluster",
        "pub",
        "sub",
        "watch",
        "login",
        "logout",
        "whoami",
        "auth",
        "snapshot",
        "completions",
        "man",
    ] {
        let out = Command::new(bin("pycomctl"))
            .args([sub, "--help"])
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Examples:"),
            "pycomctl {sub} --help has no examples:\n{text}"
        );
    }
}

#[test]
fn under_access_control_only_the_admin_takes_a_backup() {
    use pycom_e2e::auth::{call, login, AuthSetup};
    let setup = AuthSetup::new(
        &[("alice", "alice-pw"), ("root", "root-pw")],
        "[auth.roles]\nadmin = [\"root\"]\nusers = [\"alice\"]\n",
    );
    let d = setup.start();
    let alice = login(&d, "alice", "alice-pw").expect("alice logs in");
    let refused =
        call(&d, Some(&alice), "org.pycom.admin", "snapshot", Value::Null).expect_err("alice is no admin");
    assert_eq!(refused.code, Code::AccessDenied, "{}", refused.message);
    assert!(
        refused.message.contains("only the admin role"),
        "{}",
        refused.message
    );
    let anonymous = call(&d, None, "org.pycom.admin", "snapshot", Value::Null).expect_err("anonymous");
    assert_eq!(anonymous.code, Code::AccessDenied);
    let root = login(&d, "root", "root-pw").expect("root logs in");
    let taken = call(&d, Some(&root), "org.pycom.admin", "snapshot", Value::Null).expect("root may");
    assert!(taken["tokens"].as_u64().is_some_and(|n| n >= 2), "{taken}");
    let chunk = call(
        &d,
        Some(&root),
        "org.pycom.admin",
        "snapshot_chunk",
        serde_json::json!({"id": taken["id"], "offset": 0}),
    )
    .expect("a chunk");
    assert_eq!(chunk["eof"], Value::Bool(true), "a small registry fits one chunk");
    let refused = call(
        &d,
        Some(&alice),
        "org.pycom.admin",
        "snapshot_chunk",
        serde_json::json!({"id": taken["id"], "offset": 0}),
    )
    .expect_err("alice may not read it either");
    assert_eq!(refused.code, Code::AccessDenied);
}

/// The metric names a PromQL expression mentions (`pycom_*`, `process_*`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("pycom_") || word.starts_with("process_"))
        .map(str::to_string)
        .collect()
}

/// The sample names of a /metrics page.
fn exported(address: &str) -> BTreeSet<String> {
    let (status, body) = http_get(address, "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// etc/grafana/pycomd.json asks only for what pycomd exports: every metric
/// its queries name is on the /metrics page of a node with access control
/// on or of a cluster member (the families only those have).
#[test]
fn the_grafana_dashboard_asks_only_for_metrics_pycomd_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/grafana/pycomd.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut asked = BTreeSet::new();
    let mut queries = 0;
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has a PromQL expr");
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{}: {expr} names no pycomd metric",
                panel["title"]
            );
            asked.extend(names);
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} queries");

    let setup = pycom_e2e::auth::AuthSetup::new(&[("alice", "alice-pw")], "");
    let secured = setup.start();
    let cluster = Cluster::start(3);
    cluster.expect_leader(Duration::from_secs(20));
    let mut exported_names = exported(&secured.http_address());
    exported_names.extend(exported(&cluster.daemon(1).http_address()));
    let missing: Vec<_> = asked.difference(&exported_names).collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for metrics pycomd does not export: {missing:?}\nexported: {exported_names:?}"
    );
    // And it shows every family pycomd exports (bar the build info it
    // lists instances by).
    let family = |name: &str| {
        ["_bucket", "_sum", "_count", "_total", "_info"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name)
            .to_string()
    };
    let shown: BTreeSet<String> = asked.iter().map(|n| family(n)).collect();
    let unshown: Vec<_> = exported_names
        .iter()
        .map(|n| family(n))
        .filter(|f| !shown.contains(f) && f != "pycom_build")
        .collect();
    assert!(unshown.is_empty(), "the dashboard leaves out {unshown:?}");
}
