//! ZeroMQ's file descriptors stay out of child processes.
//!
//! An application that links pycom-client and starts a subprocess must not
//! hand it libzmq's descriptors. Rust opens its own close-on-exec; libzmq
//! opens its sockets so too, but its epoll and eventfd descriptors only
//! when built with the flags its CMake build finds on Linux, which the
//! vendored build lacked (.cargo/config.toml).

use std::process::Command;

/// The sockets and anonymous inodes (epoll, eventfd) a child process has
/// open, as `ls -l /proc/PID/fd` shows them. Files and pipes the test
/// harness itself may pass on are not libzmq's.
fn inherited() -> Vec<String> {
    let out = Command::new("sh")
        .args(["-c", "ls -l /proc/$$/fd"])
        .output()
        .expect("sh runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_once(" -> "))
        .map(|(_, target)| target.to_string())
        .filter(|target| target.starts_with("socket:") || target.starts_with("anon_inode:"))
        .collect()
}

#[test]
fn a_child_process_inherits_no_zeromq_socket() {
    let ctx = zmq::Context::new();
    let server = ctx.socket(zmq::ROUTER).expect("socket");
    server.bind("tcp://127.0.0.1:*").expect("bind");
    let endpoint = server.get_last_endpoint().expect("endpoint").expect("utf-8");
    let client = ctx.socket(zmq::DEALER).expect("socket");
    client.connect(&endpoint).expect("connect");
    client.send("ping", 0).expect("send");
    assert_eq!(
        server.poll(zmq::POLLIN, 5000).expect("poll"),
        1,
        "the request arrived"
    );
    let leaked = inherited();
    assert!(
        leaked.is_empty(),
        "the child inherited libzmq's descriptors: {leaked:?}"
    );
}
