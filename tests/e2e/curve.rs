//! CURVE on pycomd's request endpoint (`[security] curve = true`), with the
//! real opt-in binaries: pycomd and pycomctl built against the system
//! libzmq (`cargo build --release --config etc/system-libzmq.toml
//! --target-dir target/system-zmq -p pycomd -p pycomctl`), found in the
//! directory `PYCOM_CURVE_BIN_DIR` names (`.ci/run` builds them and sets
//! it). Without it those tests say they are skipped and pass. The default
//! (vendored, CURVE-less) binaries' refusals are tested always.

use pycom_e2e::{bin, free_port, pycomd_command, run_to_exit, stderr, stdout, Streamed};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A well-formed CURVE public key that is nobody's server key here.
const WRONG_KEY: &str = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";

/// The opt-in binaries' directory, or `None` (skipped, said on stderr).
fn curve_bin_dir() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("PYCOM_CURVE_BIN_DIR").filter(|d| !d.is_empty()) else {
        eprintln!(
            "PYCOM_CURVE_BIN_DIR is not set: skipping the CURVE test (it needs pycomd and pycomctl built with --config etc/system-libzmq.toml; .ci/run builds them)"
        );
        return None;
    };
    let dir = PathBuf::from(dir);
    for name in ["pycomd", "pycomctl"] {
        assert!(
            dir.join(name).is_file(),
            "PYCOM_CURVE_BIN_DIR={}: no {name} there (build it with cargo build --release --config etc/system-libzmq.toml --target-dir target/system-zmq -p pycomd -p pycomctl)",
            dir.display()
        );
    }
    Some(dir)
}

/// The opt-in pycomd on `endpoint` with `data_dir`, started with CURVE on
/// through `how` (config file or environment); returns once it serves.
fn start_curve_pycomd(
    bin_dir: &Path,
    endpoint: &str,
    data_dir: &Path,
    how: &[(&str, &str)],
    args: &[&str],
) -> Streamed {
    let mut cmd = Command::new(bin_dir.join("pycomd"));
    cmd.arg("--listen")
        .arg(endpoint)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PYCOMD_CONFIG")
        // System-picked forwarder ports, as Daemon does: never the defaults.
        .env("PYCOMD_PUBSUB__XSUB", "tcp://127.0.0.1:*")
        .env("PYCOMD_PUBSUB__XPUB", "tcp://127.0.0.1:*");
    for (k, v) in how {
        cmd.env(k, v);
    }
    let mut pycomd = Streamed::spawn(&mut cmd);
    pycomd.wait_stderr("serving", Duration::from_secs(30));
    pycomd
}

/// `pycomctl ARGS` (the opt-in one in `bin_dir`) against `endpoint`, with
/// `PYCOM_SERVER_KEY` set to `key` or unset.
fn ctl(pycomctl: &Path, endpoint: &str, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(pycomctl);
    cmd.env("PYCOM_NAMESERVER", endpoint)
        .env_remove("PYCOM_SERVER_KEY")
        .env_remove("PYCOM_TOKEN")
        .args(args);
    if let Some(key) = key {
        cmd.env("PYCOM_SERVER_KEY", key);
    }
    cmd.output().expect("run pycomctl")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn curve_pycomd_answers_only_clients_with_its_key() {
    let Some(bin_dir) = curve_bin_dir() else {
        return;
    };
    let pycomctl = bin_dir.join("pycomctl");
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let config = dir.path().join("pycomd.toml");
    std::fs::write(&config, "[security]\ncurve = true\n").expect("write the config file");
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());

    // Through the config file: the key pair is made at the first start.
    let mut pycomd = start_curve_pycomd(
        &bin_dir,
        &endpoint,
        &data_dir,
        &[],
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let public_path = data_dir.join("curve/server.public");
    let public = std::fs::read_to_string(&public_path).expect("server.public written at start");
    assert!(public.ends_with('\n'), "{public:?}");
    let key = public.trim_end().to_string();
    assert_eq!(key.len(), 40, "{public:?}");
    assert_eq!(mode(&public_path), 0o644);
    assert_eq!(mode(&data_dir.join("curve/server.secret")), 0o600);
    let logged = pycomd.wait_stderr("PYCOM_SERVER_KEY=", Duration::from_secs(5));
    assert!(logged.contains(&format!("PYCOM_SERVER_KEY={key}")), "{logged}");

    // With the key, from the environment or the flag: answers.
    let o = ctl(&pycomctl, &endpoint, Some(&key), &["stat"]);
    assert!(o.status.success(), "stat with the key: {o:?}");
    assert!(stdout(&o).contains("version"), "{o:?}");
    let o = ctl(
        &pycomctl,
        &endpoint,
        None,
        &["--server-key", &key, "--json", "locate", "org.pycom.nameserver"],
    );
    assert!(o.status.success(), "locate with --server-key: {o:?}");
    assert!(stdout(&o).contains("/org/pycom/nameserver"), "{o:?}");

    // Without it (plaintext) and with another key: no answer, only the timeout.
    let o = ctl(&pycomctl, &endpoint, None, &["--timeout", "500", "stat"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "a plaintext client got an answer: {o:?}"
    );
    assert!(stderr(&o).contains("no reply within 500 ms"), "{o:?}");
    assert!(stdout(&o).is_empty(), "{o:?}");
    let o = ctl(
        &pycomctl,
        &endpoint,
        Some(WRONG_KEY),
        &["--timeout", "500", "stat"],
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "a client with a wrong key got an answer: {o:?}"
    );
    assert!(stderr(&o).contains("no reply within 500 ms"), "{o:?}");
    assert!(stderr(&o).contains("is the server key pycomd's?"), "{o:?}");
    // A malformed key is a usage error, before anything is sent.
    let o = ctl(&pycomctl, &endpoint, Some("not-a-key"), &["stat"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("40 Z85 characters"), "{o:?}");
    // Still serving the right client after the refused ones.
    let o = ctl(&pycomctl, &endpoint, Some(&key), &["--timeout", "5000", "stat"]);
    assert!(o.status.success(), "stat after refused clients: {o:?}");

    // Restarted, through the environment this time: the same key.
    drop(pycomd);
    let pycomd = start_curve_pycomd(
        &bin_dir,
        &endpoint,
        &data_dir,
        &[("PYCOMD_SECURITY__CURVE", "true")],
        &[],
    );
    let again = std::fs::read_to_string(&public_path).expect("server.public kept");
    assert_eq!(again, public, "the key pair changed on restart");
    let o = ctl(&pycomctl, &endpoint, Some(&key), &["stat"]);
    assert!(o.status.success(), "stat after the restart: {o:?}");
    drop(pycomd);
}

#[test]
fn the_default_build_refuses_curve() {
    // pycomd: refuses to start (exit 2) rather than serve in cleartext,
    // saying how to get a build with CURVE; the data dir is not touched.
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let exited = run_to_exit(
        pycomd_command()
            .arg("--listen")
            .arg(format!("tcp://127.0.0.1:{}", free_port()))
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("PYCOMD_CONFIG")
            .env("PYCOMD_SECURITY__CURVE", "true"),
        Duration::from_secs(20),
    );
    assert_eq!(exited.status.code(), Some(2), "{}", exited.stderr);
    assert!(
        exited.stderr.contains("vendored libzmq, which has no CURVE"),
        "{}",
        exited.stderr
    );
    assert!(
        exited
            .stderr
            .contains("cargo build --release --config etc/system-libzmq.toml"),
        "{}",
        exited.stderr
    );
    assert!(
        !data_dir.exists(),
        "the data dir was made by a pycomd that refused to start"
    );

    // pycomctl: a server key it cannot use is a usage error.
    let o = Command::new(bin("pycomctl"))
        .env("PYCOM_NAMESERVER", format!("tcp://127.0.0.1:{}", free_port()))
        .env("PYCOM_SERVER_KEY", WRONG_KEY)
        .arg("stat")
        .output()
        .expect("run pycomctl");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("has no CURVE"), "{o:?}");
    assert!(stderr(&o).contains("etc/system-libzmq.toml"), "{o:?}");
}
