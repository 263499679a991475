//! The hello example programs, run as separate processes on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../chat/server/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use support::{Killed, free_port};

fn start_server(endpoint: &str) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello-server"))
        .args(["--listen", endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the line that says it is serving.
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("serving hello.Greeter"), "{line}");
    Killed(child)
}

#[test]
fn hello_client_talks_to_hello_server_in_every_format_and_style() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let _server = start_server(&endpoint);
    for args in [
        vec!["--format", "msgpack"],
        vec!["--format", "postcard"],
        vec!["--format", "json"],
        vec!["--blocking"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_hello-client"))
            .args(["--endpoint", &endpoint, "--name", "tester"])
            .args(&args)
            .stderr(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}: {stdout}");
        assert!(
            stdout.contains(r#"hello("tester") -> "hello, tester, from hello-server""#),
            "{stdout}"
        );
        assert!(stdout.contains("add(2, 40) -> 42"), "{stdout}");
        if !args.contains(&"--blocking") {
            assert!(stdout.contains("Overflow"), "{stdout}");
            assert!(stdout.contains("countdown(3) -> 3 2 1"), "{stdout}");
        }
    }
}

#[test]
fn hello_client_fails_clearly_without_a_server() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_hello-client"))
        .args(["--endpoint", &endpoint])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("could not connect"), "{stderr}");
}

#[test]
fn help_says_what_the_programs_do() {
    for bin in [
        env!("CARGO_BIN_EXE_hello-server"),
        env!("CARGO_BIN_EXE_hello-client"),
    ] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("hello.Greeter"), "{text}");
        assert!(
            text.contains("--format") || text.contains("--listen"),
            "{text}"
        );
    }
}
