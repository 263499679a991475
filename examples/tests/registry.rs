//! The registry example programs, as separate processes on 127.0.0.1.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{Killed, free_port};

#[test]
fn registry_demo_spreads_calls_and_survives_a_stopped_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_registry-demo"))
        .args(["--calls", "600"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("every call succeeded"), "{stdout}");
}

#[test]
fn registry_demo_works_against_a_registry_server() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", &endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Killed(server);
    assert!(line.contains("listening on"), "{line}");

    let out = Command::new(env!("CARGO_BIN_EXE_registry-demo"))
        .args(["--registry", &endpoint, "--calls", "600"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("using the registry server"), "{stdout}");
    assert!(stdout.contains("every call succeeded"), "{stdout}");
}

#[test]
fn registry_server_help_explains_backends_and_ttls() {
    let out = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--backend",
        "memory",
        "etcd",
        "--min-ttl-secs",
        "--max-ttl-secs",
        "--listen",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}
