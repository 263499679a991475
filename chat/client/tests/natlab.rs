//! The chat programs behind real NATs: `scripts/natlab` builds network namespaces joined by veth
//! pairs, with routers whose iptables rules give each NAT behaviour, and the programs run
//! inside them.
//!
//! Needs root (namespaces and iptables). Without it the tests say so and pass, except under CI
//! (`CI` set), where a lab that cannot be built fails the test. Each test builds its own lab,
//! named after the process and the test, and tears it down when it ends, failed or not.
//!
//! `chat-server` is another package's program: test it in the same run (`cargo test -p
//! chat-server -p chat-client`, or `--workspace`) so that it is built, and up to date.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../server/tests/support/mod.rs"]
mod support;
use support::{Killed, lines_of, program_of};

/// The rendezvous server's two addresses on the lab's public network.
const SERVER_IP: &str = "203.0.113.1";
const SERVER_ALT_IP: &str = "203.0.113.2";
const STUN_PORT: u16 = 3478;
const CHAT_PORT: u16 = 7300;

fn natlab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/natlab")
}

/// A NAT lab, torn down when dropped.
struct Lab {
    name: String,
}

impl Lab {
    /// Builds a lab with these router behaviours (`none`, `pr`, `ar`, `sym`) for hosts a and
    /// b, or returns `None` (after saying why) where this machine cannot build one and the
    /// test is not running under CI.
    fn up(behaviour_a: &str, behaviour_b: &str) -> Option<Lab> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{:x}{}",
            std::process::id() % 0xfffff,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab { name };
        let output = Command::new(natlab_script())
            .args(["up", &lab.name, behaviour_a, behaviour_b])
            .stdin(Stdio::null())
            .output()
            .expect("scripts/natlab runs");
        if output.status.success() {
            return Some(lab);
        }
        let why = String::from_utf8_lossy(&output.stderr).into_owned();
        if std::env::var_os("CI").is_some() {
            panic!("cannot build the NAT lab under CI: {why}");
        }
        eprintln!(
            "skipped: cannot build the NAT lab here (needs root, iproute2, iptables, ipset): {why}"
        );
        None
    }

    /// `command` to run inside `node` (server, a, b).
    fn command(&self, node: &str, program: &Path) -> Command {
        let mut command = Command::new(natlab_script());
        command.args(["exec", &self.name, node]).arg(program);
        command
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(natlab_script())
            .args(["down", &self.name])
            .status();
    }
}

/// Starts `chat-server` on the lab's public network, with STUN on both of its addresses.
fn start_server(lab: &Lab, data: &Path) -> Killed {
    let mut command = lab.command("server", &program_of("chat-server", "chat-server"));
    command
        .args([
            "--listen",
            &format!("tcp://{SERVER_IP}:{CHAT_PORT}"),
            "--data-dir",
        ])
        .arg(data)
        .args([
            "--stun",
            &format!("{SERVER_IP}:{STUN_PORT}"),
            "--stun-alt-ip",
            SERVER_ALT_IP,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut process = Killed(command.spawn().expect("chat-server starts"));
    let lines = lines_of(&mut process.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    // Ready once it has said where STUN is: that line comes after the listeners are bound.
    while !seen
        .iter()
        .any(|line: &String| line.starts_with("chat-server stun on"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("chat-server did not start STUN in the lab; it said {seen:?}"),
        }
    }
    process
}

/// Runs `chat-client --nat-check --json` on `node` and returns its report.
fn nat_check(lab: &Lab, node: &str) -> Value {
    let started = Instant::now();
    let output: Output = lab
        .command(node, Path::new(env!("CARGO_BIN_EXE_chat-client")))
        .args([
            "--nat-check",
            "--json",
            "--stun",
            &format!("{SERVER_IP}:{STUN_PORT}"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("chat-client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "chat-client --nat-check on {node} failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the NAT check on {node} took {:?}",
        started.elapsed()
    );
    let line = stdout.lines().last().expect("one line of JSON");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// What RFC 5780's tests must find behind each router behaviour of the lab, and the public
/// address the host is seen at.
fn expected(behaviour: &str) -> (&'static str, &'static str) {
    match behaviour {
        "none" => ("endpoint-independent", "endpoint-independent"),
        "pr" => ("endpoint-independent", "address-and-port-dependent"),
        "ar" => ("endpoint-independent", "address-dependent"),
        "sym" => ("address-and-port-dependent", "address-and-port-dependent"),
        other => panic!("unknown behaviour {other}"),
    }
}

fn classifies(behaviour_a: &str, behaviour_b: &str) {
    let Some(lab) = Lab::up(behaviour_a, behaviour_b) else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let _server = start_server(&lab, data.path());
    for (node, behaviour, lan_ip, router_ip) in [
        ("a", behaviour_a, "192.0.2.2", "203.0.113.11"),
        ("b", behaviour_b, "198.51.100.2", "203.0.113.12"),
    ] {
        let report = nat_check(&lab, node);
        let (mapping, filtering) = expected(behaviour);
        assert_eq!(report["kind"], "nat", "{report}");
        assert_eq!(
            report["mapping"], mapping,
            "{behaviour} on {node}: {report}"
        );
        assert_eq!(
            report["filtering"], filtering,
            "{behaviour} on {node}: {report}"
        );
        let public = report["public"].as_str().unwrap_or_default();
        let seen_as = if behaviour == "none" {
            lan_ip
        } else {
            router_ip
        };
        assert!(
            public.starts_with(&format!("{seen_as}:")),
            "{behaviour} on {node}: the server saw it at {public}, not at {seen_as}"
        );
    }
}

#[test]
fn no_nat_and_a_port_restricted_cone_are_told_apart() {
    classifies("none", "pr");
}

#[test]
fn an_address_restricted_cone_and_a_symmetric_nat_are_told_apart() {
    classifies("ar", "sym");
}
