//! The registry example programs, as separate processes on 127.0.0.1.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

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
        "--max-frame-bytes",
        "--max-page-len",
        "--max-page-bytes",
        "exits with status 2",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}

#[test]
fn registry_server_refuses_bad_flags_with_status_2() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--min-ttl-secs", "100", "--max-ttl-secs", "1"],
            "--min-ttl-secs (100) must not be greater than --max-ttl-secs (1)",
        ),
        (
            &["--max-frame-bytes", "65536", "--max-page-bytes", "40000"],
            "--max-page-bytes (40000) must be at most half of --max-frame-bytes (65536)",
        ),
        (&["--min-ttl-secs", "0"], "--min-ttl-secs"),
        (&["--max-frame-bytes", "1000"], "--max-frame-bytes"),
    ];
    for (flags, message) in cases {
        // Were the flags accepted, it would serve here until killed.
        let endpoint = format!("tcp://127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_registry-server"))
            .args(["--listen", &endpoint])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut server = Killed(child);
        let status = server.exit_status(Duration::from_secs(30));
        let mut stderr = String::new();
        std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_small_frame_limit_gets_a_fitting_page_size() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", &endpoint, "--max-frame-bytes", "65536"])
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
}
