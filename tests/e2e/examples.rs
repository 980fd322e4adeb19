//! The pycom-client examples run as the README says, against a real pycomd.
//! (`cargo test` builds examples before it runs tests.)

use pycom_e2e::{bin, wait_until, Daemon};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn example(name: &str) -> std::path::PathBuf {
    bin(&format!("examples/{name}"))
}

#[test]
fn counter_keeps_one_count_per_client() {
    let d = Daemon::start();
    let out = Command::new(example("counter"))
        .env("PYCOM_NAMESERVER", &d.endpoint)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("alice counted 13") && stdout.contains("bob counted 1"),
        "{stdout}"
    );
}

#[test]
fn echo_service_serves_the_echo_client_and_unregisters_on_ctrl_c() {
    let d = Daemon::start();
    let mut service = Command::new(example("echo_service"))
        .env("PYCOM_NAMESERVER", &d.endpoint)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(service.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("echo service on tcp://"), "{line}");
    let out = Command::new(example("echo_client"))
        .env("PYCOM_NAMESERVER", &d.endpoint)
        .arg(r#"{"hello": [1, 2]}"#)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(r#"answered {"hello":[1,2]}"#), "{stdout}");
    Command::new("kill")
        .args(["-INT", &service.id().to_string()])
        .status()
        .unwrap();
    let mut ns = d.ns();
    assert!(wait_until(Duration::from_secs(5), || ns
        .locate("com.example.echo", None)
        .is_err()));
    assert!(service.wait().unwrap().success());
}
