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

/// A `chat-client --json` running in a node of the lab, driven through its stdin.
struct LabClient {
    name: &'static str,
    _process: Killed,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl LabClient {
    /// Starts a client on `node`, its peer socket on `lan_ip`, and waits until it is online.
    fn online(lab: &Lab, node: &str, name: &'static str, lan_ip: &str, dir: &Path) -> LabClient {
        let id = uuid::Uuid::new_v4();
        let mut command = lab.command(node, Path::new(env!("CARGO_BIN_EXE_chat-client")));
        command
            .args([
                "--json",
                "--server",
                &format!("tcp://{SERVER_IP}:{CHAT_PORT}"),
            ])
            .args(["--name", name, "--id", &id.to_string()])
            .args(["--secret", &format!("secret-of-{id}")])
            .args(["--listen", &format!("quic://{lan_ip}:0")])
            .args(["--direct-timeout-ms", "3000"])
            .arg("--files-dir")
            .arg(dir.join(format!("{name}-files")))
            .arg("--identity")
            .arg(dir.join(format!("{name}.json")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("chat-client starts");
        let stdin = child.stdin.take().expect("stdin");
        let lines = lines_of(&mut child);
        let mut client = LabClient {
            name,
            _process: Killed(child),
            stdin,
            lines,
            seen: Vec::new(),
        };
        client.expect("online", |e| {
            e["event"] == "state" && e["state"] == "online"
        });
        client
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{line}").expect("the client reads its stdin");
        self.stdin.flush().unwrap();
    }

    /// The next event that matches, within 15 s.
    fn expect(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!("{} waited for {what}; saw {:#?}", self.name, self.seen);
            };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            self.seen.push(event.clone());
            if matches(&event) {
                return event;
            }
        }
    }
}

/// A lab with the server and a client behind each router (alice on a, bob on b), both online
/// and with their NAT discovered and reported.
struct LabPair {
    alice: LabClient,
    bob: LabClient,
    /// The server's and the clients' files.
    data: tempfile::TempDir,
    // Dropped last: the programs stop before the lab is torn down.
    _server: Killed,
    _lab: Lab,
}

impl LabPair {
    /// `None` where [`Lab::up`] cannot build a lab (and says why).
    fn up(behaviour_a: &str, behaviour_b: &str) -> Option<LabPair> {
        let lab = Lab::up(behaviour_a, behaviour_b)?;
        let data = tempfile::tempdir().unwrap();
        let server = start_server(&lab, data.path());
        let mut alice = LabClient::online(&lab, "a", "alice", "192.0.2.2", data.path());
        let mut bob = LabClient::online(&lab, "b", "bob", "198.51.100.2", data.path());
        // `/nat` waits for each side's NAT discovery (which runs once, after registering) and
        // its report to the server, which hole punching goes by.
        for client in [&mut alice, &mut bob] {
            client.send("/nat");
            let nat = client.expect("the NAT report", |e| {
                e["event"] == "nat" || e["event"] == "error"
            });
            assert_eq!(nat["event"], "nat", "{nat}");
        }
        Some(LabPair {
            alice,
            bob,
            data,
            _server: server,
            _lab: lab,
        })
    }
}

/// Two clients behind the routers `behaviour_a` and `behaviour_b`: a `/connect` from a to b,
/// then a message, and the path both took. Both advertise their private addresses, which the
/// other cannot reach: a direct path exists only through a punched hole.
fn message_path(behaviour_a: &str, behaviour_b: &str) -> Option<Value> {
    // Every part bound, so that the lab and the server live to the end.
    let LabPair {
        mut alice,
        mut bob,
        data: _data,
        _server,
        _lab,
    } = LabPair::up(behaviour_a, behaviour_b)?;
    alice.send("/connect bob");
    let connected = alice.expect("the path to bob", |e| {
        e["event"] == "path" || e["event"] == "error"
    });
    assert_eq!(connected["event"], "path", "{connected}");
    let path = connected["path"].as_str().unwrap_or_default().to_owned();
    assert!(
        connected["took_ms"].as_u64().is_some_and(|ms| ms < 5000),
        "{behaviour_a}/{behaviour_b}: {connected}"
    );
    if path == "direct" {
        assert!(
            connected["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with("quic://")),
            "{connected}"
        );
    }
    assert!(
        !connected["why"].as_str().unwrap_or_default().is_empty(),
        "{connected}"
    );
    // A message goes the way `/connect` found.
    alice.send("/msg bob hello");
    let sent = alice.expect("the send's result", |e| {
        e["event"] == "sent" || e["event"] == "error"
    });
    assert_eq!(sent["event"], "sent", "{sent}");
    bob.expect("alice's message", |e| {
        e["event"] == "message" && e["text"] == "hello"
    });
    assert_eq!(sent["path"], path.as_str(), "{connected} then {sent}");
    alice.send("/paths");
    let paths = alice.expect("the paths", |e| e["event"] == "paths");
    assert_eq!(paths["paths"][0]["user"], "bob", "{paths}");
    assert_eq!(paths["paths"][0]["path"], path.as_str(), "{paths}");
    Some(connected)
}

#[test]
fn a_hole_is_punched_between_two_port_restricted_cones() {
    if let Some(connected) = message_path("pr", "pr") {
        assert_eq!(connected["path"], "direct", "{connected}");
    }
}

#[test]
fn a_hole_is_punched_between_an_address_restricted_cone_and_no_nat() {
    if let Some(connected) = message_path("ar", "none") {
        assert_eq!(connected["path"], "direct", "{connected}");
    }
}

/// The symmetric side's real port comes from its probes (a peer-reflexive candidate).
#[test]
fn a_hole_is_punched_from_no_nat_to_a_symmetric_nat() {
    if let Some(connected) = message_path("none", "sym") {
        assert_eq!(connected["path"], "direct", "{connected}");
    }
}

#[test]
fn a_hole_is_punched_from_a_symmetric_nat_to_an_address_restricted_cone() {
    if let Some(connected) = message_path("sym", "ar") {
        assert_eq!(connected["path"], "direct", "{connected}");
    }
}

#[test]
fn two_symmetric_nats_fall_back_on_the_relay() {
    if let Some(connected) = message_path("sym", "sym") {
        assert_eq!(connected["path"], "relayed", "{connected}");
        let why = connected["why"].as_str().unwrap_or_default();
        assert!(
            why.contains("both NATs give a new public port"),
            "{connected}"
        );
    }
}

/// The birthday paradox: the symmetric side sprays from many ports, the port-restricted side
/// probes random ports of its address until one meets.
#[test]
fn a_hole_is_punched_from_a_port_restricted_cone_to_a_symmetric_nat() {
    if let Some(connected) = message_path("pr", "sym") {
        assert_eq!(connected["path"], "direct", "{connected}");
    }
}

#[test]
fn a_hole_is_punched_from_a_symmetric_nat_to_a_port_restricted_cone() {
    if let Some(connected) = message_path("sym", "pr") {
        assert_eq!(connected["path"], "direct", "{connected}");
    }
}

/// A file from behind a port-restricted cone to a host behind a symmetric NAT: over the path
/// the birthday paradox found, through the symmetric side's splice, whole.
#[test]
fn a_file_crosses_the_path_the_birthday_paradox_found() {
    let Some(LabPair {
        mut alice,
        mut bob,
        data,
        _server,
        _lab,
    }) = LabPair::up("pr", "sym")
    else {
        return;
    };
    let source = data.path().join("archive.bin");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    alice.send(&format!("/send bob {}", source.display()));
    let sent = alice.expect("the file sent", |e| {
        e["event"] == "file_sent" || e["event"] == "error"
    });
    assert_eq!(sent["event"], "file_sent", "{sent}");
    assert_eq!(sent["size"], 3_000_000, "{sent}");
    let received = bob.expect("the file", |e| {
        e["event"] == "file" && e["change"] != "incoming"
    });
    assert_eq!(received["change"], "received", "{received}");
    let path = received["path"].as_str().unwrap();
    assert!(std::fs::read(path).unwrap() == bytes, "the copy differs");
    alice.send("/paths");
    let paths = alice.expect("the paths", |e| e["event"] == "paths");
    assert_eq!(paths["paths"][0]["path"], "direct", "{paths}");
}

/// Between two symmetric NATs no hole is punched: a file goes through the server, which holds
/// it until the recipient's client has downloaded it, checked its hash and saved it.
#[test]
fn between_two_symmetric_nats_a_file_goes_through_the_server() {
    let Some(LabPair {
        mut alice,
        mut bob,
        data,
        _server,
        _lab,
    }) = LabPair::up("sym", "sym")
    else {
        return;
    };
    let source = data.path().join("photos.tar");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 17 % 251) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    alice.send(&format!("/send bob {}", source.display()));
    let sent = alice.expect("the file sent", |e| {
        e["event"] == "file_sent" || e["event"] == "error"
    });
    assert_eq!(sent["event"], "file_sent", "{sent}");
    assert_eq!(sent["path"], "relayed", "{sent}");
    assert!(
        sent["why_not_direct"]
            .as_str()
            .is_some_and(|why| why.contains("both NATs give a new public port")),
        "{sent}"
    );
    let received = bob.expect("the file", |e| {
        e["event"] == "file" && e["change"] != "incoming"
    });
    assert_eq!(received["change"], "received", "{received}");
    let path = received["path"].as_str().unwrap();
    assert!(std::fs::read(path).unwrap() == bytes, "the copy differs");
}
