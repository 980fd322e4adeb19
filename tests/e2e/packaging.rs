//! pycomd as it is installed and configured: configuration from the
//! environment, `--check-config`, the warning for an open listener, the
//! systemd unit, and the README's set-up and benchmark commands.

use pycom_e2e::{free_port, pycomd_command, run_to_exit, wait_until, Daemon};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)).unwrap()
}

/// pycomd with only the `PYCOMD_*` environment given here (none inherited).
fn pycomd_env(env: &[(&str, &str)]) -> Command {
    let mut cmd = pycomd_command();
    for (k, _) in std::env::vars() {
        if k.starts_with("PYCOMD_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn pycomd_config_in_the_environment_is_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("pycomd.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"tcp://127.0.0.1:{port}\"\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let mut child = pycomd_env(&[("PYCOMD_CONFIG", config.to_str().unwrap())])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ctx = zmq::Context::new();
    let conn = pycom_client::Connection::open(&ctx, &format!("tcp://127.0.0.1:{port}")).unwrap();
    let mut ns = pycom_client::NameserverClient::new(conn);
    let up = wait_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_none() && ns.stat().is_ok()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        up,
        "pycomd did not serve on the listen of PYCOMD_CONFIG's file:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // A missing file is refused, naming the variable.
    let out = run_to_exit(
        pycomd_env(&[("PYCOMD_CONFIG", "/nonexistent/pycomd.toml")])
            .args(["--listen", &format!("tcp://127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(dir.path().join("never")),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("PYCOMD_CONFIG"), "{}", out.stderr);
    assert!(out.stderr.contains("/nonexistent/pycomd.toml"), "{}", out.stderr);
    assert!(!dir.path().join("never").exists());
}

#[test]
fn an_unknown_or_bad_pycomd_variable_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        run_to_exit(
            pycomd_env(env)
                .args(["--listen", &format!("tcp://127.0.0.1:{}", free_port())])
                .arg("--data-dir")
                .arg(dir.path().join("data")),
            Duration::from_secs(10),
        )
    };
    let out = run(&[("PYCOMD_FOO", "1")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr
            .contains("environment variable PYCOMD_FOO is not a pycomd setting; the settings are: "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("PYCOMD_MAX_RECORDS"), "{}", out.stderr);

    let out = run(&[("PYCOMD_MAX_RECORDS", "abc")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("PYCOMD_MAX_RECORDS=abc: "), "{}", out.stderr);

    let out = run(&[("PYCOMD_UNSAFE_NO_FSYNC", "maybe")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("PYCOMD_UNSAFE_NO_FSYNC=maybe: "),
        "{}",
        out.stderr
    );

    // Valid on its own, inconsistent with the rest: still named.
    let out = run(&[("PYCOMD_TTL_MIN_MS", "0")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("PYCOMD_TTL_MIN_MS=0"), "{}", out.stderr);
    assert!(
        !dir.path().join("data").exists(),
        "refused before opening the data dir"
    );
}

#[test]
fn check_config_prints_the_effective_settings_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pycomd.toml");
    std::fs::write(&config, "probe_failures = 7\nlog_level = \"debug\"\n").unwrap();
    let port = free_port();
    let data = dir.path().join("data");
    let out = pycomd_env(&[("PYCOMD_TTL_MAX_MS", "60000")])
        .arg("--check-config")
        .arg("--config")
        .arg(&config)
        .args(["--listen", &format!("tcp://127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for line in [
        "probe_failures = 7".to_string(),
        "log_level = \"debug\"".to_string(),
        "ttl_max_ms = 60000".to_string(),
        format!("listen = \"tcp://127.0.0.1:{port}\""),
        format!("data_dir = \"{}\"", data.display()),
        "unsafe_no_fsync = false".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "no line {line}:\n{text}"
        );
    }
    assert!(!data.exists(), "--check-config created the data dir");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "--check-config left the port bound"
    );

    // An error: exit 2 and the sentence, nothing on stdout.
    std::fs::write(&config, "ttl_min_ms = 5000\nttl_max_ms = 10\n").unwrap();
    let out = pycomd_env(&[])
        .args(["--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ttl_min_ms = 5000"),
        "{out:?}"
    );
}

#[test]
fn listening_beyond_loopback_without_access_control_is_warned_about() {
    const WARNING: &str = "without access control";
    let d = Daemon::start();
    assert!(!d.log().contains(WARNING), "{}", d.log());

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("log");
    let mut child = pycomd_env(&[])
        .args(["--listen", &format!("tcp://0.0.0.0:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let warned = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap().contains(WARNING)
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(warned, "{text}");
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains(&format!("tcp://0.0.0.0:{port}")), "{text}");
}

#[test]
fn the_systemd_unit_is_ready_for_operators() {
    let unit = repo_file("systemd/pycomd.service");
    for needle in [
        "After=network-online.target",
        "Wants=network-online.target",
        "RestartPreventExitStatus=2",
        "EnvironmentFile=-/etc/default/pycomd",
        "LimitNOFILE=65536",
    ] {
        assert!(unit.lines().any(|l| l.trim() == needle), "unit lacks {needle}");
    }
    assert!(
        !unit.contains("github.com/pycom/pycom"),
        "a made-up Documentation= URL"
    );
    for doc in unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Documentation="))
    {
        for url in doc.split_whitespace() {
            assert!(
                url.starts_with("man:") || url.starts_with("file:"),
                "Documentation={url}: a man: or file: URL that the install steps provide"
            );
            if let Some(path) = url.strip_prefix("file:") {
                assert!(
                    unit.contains(path) && repo_file("README.md").contains(path),
                    "nothing installs {path}"
                );
            }
        }
    }
}

/// The text of the README section under `heading` (to the next heading
/// of the same or a higher level).
fn readme_section(heading: &str) -> String {
    let readme = repo_file("README.md");
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = readme.lines().skip_while(|l| l.trim() != heading);
    assert!(lines.next().is_some(), "README has no {heading}");
    let mut in_code = false;
    lines
        .take_while(|l| {
            if l.starts_with("```") {
                in_code = !in_code;
            }
            let hashes = l.chars().take_while(|c| *c == '#').count();
            in_code || hashes == 0 || hashes > level || !l[hashes..].starts_with(' ')
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The shell lines of a section's code blocks.
fn commands(section: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for l in section.lines() {
        if l.starts_with("```") {
            in_code = !in_code;
            if !in_code {
                out.push(String::new());
            }
        } else if in_code {
            out.push(l.to_string());
        }
    }
    out
}

#[test]
fn the_readme_quick_start_builds_everything_and_names_the_prerequisites() {
    let quick = readme_section("## Quick start");
    let setup = commands(&quick)
        .into_iter()
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>();
    assert_eq!(setup.len(), 2, "two set-up commands: {setup:?}");
    assert!(
        setup[0].starts_with("cargo build --release") && setup[0].contains("target/release/pycomd"),
        "step 1 builds the workspace (pycomctl too) and runs pycomd: {}",
        setup[0]
    );
    assert!(setup[1].starts_with("bash tests/run.sh"), "{}", setup[1]);
    let lower = quick.to_lowercase();
    for needle in ["c++", "python3-venv", "rust"] {
        assert!(
            lower.contains(needle),
            "the prerequisites do not mention {needle}:\n{quick}"
        );
    }
}

#[test]
fn the_readme_benchmarks_leave_the_users_registry_alone() {
    let bench = readme_section("## Benchmarks");
    let lines = commands(&bench);
    assert!(
        lines.iter().any(|l| l.starts_with("bash bench/run.sh")),
        "{bench}"
    );
    for l in lines.iter().filter(|l| l.contains("pycom-bench ")) {
        let needs_pycomd = !["invoke", "fdatasync"]
            .iter()
            .any(|op| l.contains(&format!("--op {op}")));
        if needs_pycomd {
            assert!(
                l.contains("--nameserver"),
                "this would load the default pycomd on :2012: {l}"
            );
            assert!(!l.contains(":2012"), "{l}");
        }
    }
    // The throw-away pycomd those lines use: its own port and data dir.
    let pycomd = lines
        .iter()
        .find(|l| l.contains("target/release/pycomd "))
        .expect("a throw-away pycomd for the one-liners");
    assert!(
        pycomd.contains("--listen") && pycomd.contains("--data-dir"),
        "{pycomd}"
    );
    assert!(!pycomd.contains(":2012"), "{pycomd}");
}

/// `--check-config` checks access control as a start would (the users
/// file, the grants), and prints tables as TOML that loads again.
#[test]
fn check_config_checks_access_control_and_prints_tables_as_toml() {
    let setup = pycom_e2e::auth::AuthSetup::new(
        &[("alice", "pw")],
        "[auth.roles]\n\"ops team\" = [\"alice\"]\n\n[[auth.grant]]\nrole = \"ops team\"\nregister = [\"/ops/\"]\n",
    );
    let check = || {
        pycomd_env(&[])
            .args(["--check-config", "--config"])
            .arg(setup.config())
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        "[auth]",
        "enabled = true",
        "[auth.roles]",
        "\"ops team\" = [\"alice\"]",
        "[[auth.grant]]",
        "[security]",
    ] {
        assert!(printed.lines().any(|l| l == line), "no line {line}:\n{printed}");
    }
    // What it printed is a config pycomd takes.
    let again = setup.config().with_extension("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = pycomd_env(&[])
        .args(["--check-config", "--config"])
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A users file with a scheme pycomd does not take: exit 2, naming the line.
    std::fs::write(setup.users(), "alice:{SHA}abc=\n").unwrap();
    let out = check();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":1: user alice: the hash scheme"), "{err}");
}
