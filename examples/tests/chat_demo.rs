//! The chat demo as a program: a chat server and three scripted clients in its one process,
//! every step checked.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../chat/server/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Killed, lines_of};

#[test]
fn the_demo_runs_and_every_check_passes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut child);
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not finish within a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let output: Vec<String> = lines.iter().collect();
    let output = output.join("\n");
    assert!(status.success(), "{output}");
    for expected in [
        "path direct",
        "path relayed",
        "path stored",
        "saw all three posts",
        "exactly what she missed",
        "every check passed",
    ] {
        assert!(
            output.contains(expected),
            "{expected:?} missing from:\n{output}"
        );
    }
}

#[test]
fn help_explains_the_demo() {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-demo"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("alice"), "{text}");
}
