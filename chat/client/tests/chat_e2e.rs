//! The chat programs end to end: `chat-server` and `chat-client --json` as separate processes
//! on 127.0.0.1, each test with its own server, port and data directory.
//!
//! `chat-server` is another package's program: test it in the same run (`cargo test -p
//! chat-server -p chat-client`, or `--workspace`) so that it is built, and up to date.
//!
//! Every wait is bounded; a failing wait prints what the process said so far.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

#[path = "../../server/tests/support/mod.rs"]
mod support;
use support::{Killed, free_port, lines_of, program_of};

/// How long any one expected thing may take.
const WAIT: Duration = Duration::from_secs(10);

/// A free TCP port with nothing listening on it: an advertised endpoint no direct message can
/// reach (direct messages go over quic:// only), so messages to it go through the server.
fn closed_endpoint() -> String {
    format!("tcp://127.0.0.1:{}", free_port())
}

/// Where a process's stderr goes: nowhere, or with `CHAT_E2E_LOG_DIR=<dir>` set, appended to
/// `<dir>/<name>.log` (with `RUST_LOG=debug` unless it is set), to see what went wrong.
fn stderr_for(command: &mut Command, name: &str) {
    let Some(dir) = std::env::var_os("CHAT_E2E_LOG_DIR") else {
        command.stderr(Stdio::null());
        return;
    };
    let path = Path::new(&dir).join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    command.stderr(file);
    if std::env::var_os("RUST_LOG").is_none() {
        command.env("RUST_LOG", "debug");
    }
}

/// A `chat-server` process.
struct ChatServer {
    process: Option<Killed>,
    port: u16,
    dir: PathBuf,
    ttl_secs: u64,
    /// More flags for the server.
    flags: Vec<String>,
    /// `tcp`, or `tls` for a server started with a certificate.
    scheme: &'static str,
}

impl ChatServer {
    fn start(dir: &Path, ttl_secs: u64) -> ChatServer {
        Self::start_with(dir, ttl_secs, &[])
    }

    fn start_with(dir: &Path, ttl_secs: u64, flags: &[&str]) -> ChatServer {
        let mut server = ChatServer {
            process: None,
            port: free_port(),
            dir: dir.to_owned(),
            ttl_secs,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            scheme: "tcp",
        };
        server.spawn();
        server
    }

    /// A server on `tls://` with this certificate and key.
    fn start_tls(dir: &Path, cert: &Path, key: &Path) -> ChatServer {
        let mut server = ChatServer {
            process: None,
            port: free_port(),
            dir: dir.to_owned(),
            ttl_secs: 10,
            flags: vec![
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ],
            scheme: "tls",
        };
        server.spawn();
        server
    }

    fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// Starts the process (again) on the same port and data directory; retries for a while in
    /// case the port is not free yet.
    fn spawn(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut command = Command::new(program_of("chat-server", "chat-server"));
            command
                .args(["--listen", &self.endpoint(), "--data-dir"])
                .arg(&self.dir)
                .args(["--presence-ttl-secs", &self.ttl_secs.to_string()])
                .args(&self.flags)
                .stdin(Stdio::null())
                .stdout(Stdio::piped());
            stderr_for(&mut command, &format!("server-{}", self.port));
            let mut child = command.spawn().expect("chat-server starts");
            let lines = lines_of(&mut child);
            let child = Killed(child);
            match lines.recv_timeout(WAIT) {
                Ok(line) if line.starts_with("chat-server listening on") => {
                    self.process = Some(child);
                    return;
                }
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "chat-server did not start: {other:?}"
                    );
                    drop(child);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Kills the server with SIGKILL: no shutdown, no flush beyond what was committed.
    fn kill9(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.0.kill().expect("SIGKILL");
            process.0.wait().expect("reaped");
        }
    }
}

/// A `chat-client --json` process, driven through its stdin.
struct Client {
    name: String,
    id: Uuid,
    process: Killed,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every event read so far, in order.
    seen: Vec<Value>,
    /// Events read but not yet matched by an `expect`, in order.
    pending: VecDeque<Value>,
}

impl Client {
    /// Starts a client with a fresh id and secret and waits until it is online.
    fn online(server: &ChatServer, name: &str, extra: &[&str]) -> Client {
        let id = Uuid::new_v4();
        let mut client = Client::spawn(server, name, id, &format!("secret-of-{id}"), extra);
        client.expect("online", WAIT, |e| is_state(e, "online"));
        client
    }

    fn spawn(server: &ChatServer, name: &str, id: Uuid, secret: &str, extra: &[&str]) -> Client {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chat-client"));
        command
            .args(["--json", "--server", &server.endpoint(), "--name", name])
            .args(["--id", &id.to_string(), "--secret", secret])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        stderr_for(&mut command, &format!("client-{}-{name}", server.port));
        let mut child = command.spawn().expect("chat-client starts");
        let stdin = child.stdin.take();
        let lines = lines_of(&mut child);
        Client {
            name: name.to_owned(),
            id,
            process: Killed(child),
            stdin,
            lines,
            seen: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("the client reads its stdin");
        stdin.flush().unwrap();
    }

    /// The first event not matched before that matches, reading more as needed; panics after
    /// `wait` with everything read.
    fn expect(
        &mut self,
        what: &str,
        wait: Duration,
        mut matches: impl FnMut(&Value) -> bool,
    ) -> Value {
        if let Some(i) = self.pending.iter().position(&mut matches) {
            return self.pending.remove(i).expect("the position is in range");
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", self.name));
                    self.seen.push(event.clone());
                    if matches(&event) {
                        return event;
                    }
                    self.pending.push_back(event);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{} waited {wait:?} for {what}; saw {:#?}",
                        self.name, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{} exited while waiting for {what}; saw {:#?}",
                        self.name, self.seen
                    )
                }
            }
        }
    }

    /// Runs a command and returns its result (the next event of that kind, or an error).
    fn command(&mut self, line: &str, result: &str) -> Value {
        self.send(line);
        let event = self.expect(&format!("the result of {line:?}"), WAIT, |e| {
            e["event"] == result || e["event"] == "error"
        });
        assert_eq!(
            event["event"], result,
            "{}: {line:?} failed: {event}",
            self.name
        );
        event
    }

    /// The direct and relayed messages received so far (room posts aside).
    fn messages(&self) -> Vec<&Value> {
        self.seen
            .iter()
            .filter(|e| e["event"] == "message" && e["room"].is_null())
            .collect()
    }

    /// Waits for the process to exit; its exit code.
    fn exit_code(&mut self, wait: Duration) -> Option<i32> {
        self.stdin = None;
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.process.0.try_wait().unwrap() {
                // Collect what it printed last.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    if let Ok(event) = serde_json::from_str(&line) {
                        self.seen.push(event);
                    }
                }
                return status.code();
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn is_state(event: &Value, state: &str) -> bool {
    event["event"] == "state" && event["state"] == state
}

fn is_message(event: &Value, text: &str) -> bool {
    event["event"] == "message" && event["text"] == text
}

/// The strings of a JSON list, sorted.
fn names_of(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn names(users: &Value) -> Vec<String> {
    let mut names: Vec<String> = users
        .as_array()
        .expect("a list of users")
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn register_lookup_and_the_online_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), 10);
    let mut alice = Client::online(&server, "alice", &[]);
    let mut bob = Client::online(&server, "bob", &[]);

    // alice learns of bob through her presence stream.
    alice.expect("bob coming online", WAIT, |e| {
        e["event"] == "presence" && e["change"] == "joined" && e["users"][0]["name"] == "bob"
    });

    let who = alice.command("/who", "who");
    assert_eq!(names(&who["online"]), ["alice", "bob"]);
    for user in who["online"].as_array().unwrap() {
        let observed = user["observed"].as_str().unwrap();
        assert!(
            observed.contains("127.0.0.1"),
            "observed address {observed}"
        );
        assert!(
            user["advertised"]
                .as_str()
                .unwrap()
                .starts_with("quic://127.0.0.1:")
        );
    }

    let by_name = alice.command("/whois bob", "user");
    assert_eq!(by_name["user"]["id"], bob.id.to_string());
    let by_id = bob.command(&format!("/whois {}", alice.id), "user");
    assert_eq!(by_id["user"]["name"], "alice");

    alice.send("/whois nobody");
    let error = alice.expect("an error", WAIT, |e| e["event"] == "error");
    assert!(
        error["message"].as_str().unwrap().contains("unknown user"),
        "{error}"
    );

    // Without --id and --secret the identity is made once and kept in the identity file.
    let identity = dir.path().join("carol.json");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut carol = Command::new(env!("CARGO_BIN_EXE_chat-client"))
            .args([
                "--json",
                "--server",
                &server.endpoint(),
                "--name",
                "carol",
                "--identity",
            ])
            .arg(&identity)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = lines_of(&mut carol);
        let _carol = Killed(carol);
        let online = loop {
            let line = lines.recv_timeout(WAIT).expect("carol prints her state");
            let event: Value = serde_json::from_str(&line).unwrap();
            if is_state(&event, "online") {
                break event;
            }
        };
        ids.push(online["id"].clone());
        // stdin is closed: she leaves and exits by herself.
    }
    assert_eq!(ids[0], ids[1], "the identity file gives the same id again");
    assert!(identity.exists());
    bob.send("/quit");
    assert_eq!(bob.exit_code(WAIT), Some(0));
}

#[test]
fn a_client_that_stops_heartbeating_disappears() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), 1);
    let mut alice = Client::online(&server, "alice", &[]);
    let mut bob = Client::online(&server, "bob", &[]);
    alice.expect("bob coming online", WAIT, |e| {
        e["event"] == "presence" && e["change"] == "joined" && e["users"][0]["name"] == "bob"
    });

    // SIGKILL: bob neither leaves nor heartbeats any more.
    bob.process.0.kill().unwrap();
    bob.process.0.wait().unwrap();
    alice.expect("bob leaving within the TTL", WAIT, |e| {
        e["event"] == "presence" && e["change"] == "left" && e["users"][0]["name"] == "bob"
    });
    let who = alice.command("/who", "who");
    assert_eq!(names(&who["online"]), ["alice"]);
}

#[test]
fn direct_when_the_peer_is_reachable_relayed_when_its_endpoint_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), 10);
    let mut alice = Client::online(&server, "alice", &[]);
    let mut bob = Client::online(&server, "bob", &[]);
    let closed = closed_endpoint();
    let mut carol = Client::online(&server, "carol", &["--advertise", &closed]);

    let sent = alice.command("/msg bob straight to you", "sent");
    assert_eq!(sent["path"], "direct", "{sent}");
    let got = bob.expect("alice's message", WAIT, |e| {
        is_message(e, "straight to you")
    });
    assert_eq!(got["path"], "direct");
    assert_eq!(got["from"], "alice");

    let sent = alice.command("/msg carol through the server", "sent");
    assert_eq!(sent["path"], "relayed", "{sent}");
    assert!(sent["direct_error"].is_string(), "{sent}");
    let got = carol.expect("alice's message", WAIT, |e| {
        is_message(e, "through the server")
    });
    assert_eq!(got["path"], "relayed");

    // A last message to each, so that any duplicate of the first would have shown by now.
    alice.command("/msg bob end", "sent");
    alice.command("/msg carol end", "sent");
    bob.expect("the last message", WAIT, |e| is_message(e, "end"));
    carol.expect("the last message", WAIT, |e| is_message(e, "end"));
    assert_eq!(bob.messages().len(), 2, "{:#?}", bob.seen);
    assert_eq!(carol.messages().len(), 2, "{:#?}", carol.seen);
}

#[test]
fn clients_talk_to_a_server_over_tls_with_its_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let server = ChatServer::start_tls(&dir.path().join("data"), &cert_file, &key_file);
    assert!(server.endpoint().starts_with("tls://"));

    let ca = cert_file.display().to_string();
    let mut alice = Client::online(&server, "alice", &["--tls-ca", &ca]);
    let mut bob = Client::online(&server, "bob", &["--tls-ca", &ca]);
    let who = alice.command("/who", "who");
    assert_eq!(names(&who["online"]), ["alice", "bob"]);
    for user in who["online"].as_array().unwrap() {
        // The server sees the address a TLS client came from, as for TCP.
        let observed = user["observed"].as_str().unwrap();
        assert!(observed.starts_with("127.0.0.1:"), "{observed}");
    }
    bob.send("/quit");
    assert_eq!(bob.exit_code(WAIT), Some(0));
    // bob is offline: the message is stored on the server and delivered over TLS later.
    alice.expect("bob leaving", WAIT, |e| {
        e["event"] == "presence" && e["change"] == "left"
    });
    let sent = alice.command("/msg bob kept for you", "sent");
    assert_eq!(sent["path"], "stored", "{sent}");
    let mut bob = Client::spawn(
        &server,
        "bob",
        bob.id,
        &format!("secret-of-{}", bob.id),
        &["--tls-ca", &ca],
    );
    bob.expect("the stored message", WAIT, |e| {
        is_message(e, "kept for you")
    });

    // Without the CA the client does not trust the server, and says so.
    let out = Command::new(env!("CARGO_BIN_EXE_chat-client"))
        .args(["--server", &server.endpoint(), "--name", "mallory"])
        .args(["--max-reconnect-attempts", "1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("certificate") && stderr.contains("give the CA that signed it"),
        "{stderr}"
    );
}

#[test]
fn store_and_forward_survives_a_server_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ChatServer::start(dir.path(), 2);
    let mut alice = Client::online(&server, "alice", &[]);
    let (bob_id, bob_secret) = (Uuid::new_v4(), "bob's secret");
    let closed = closed_endpoint();
    let bob_args = ["--advertise", closed.as_str()];

    // bob registers once and leaves: alice knows him, the server keeps his mail.
    let mut bob = Client::spawn(&server, "bob", bob_id, bob_secret, &bob_args);
    bob.expect("online", WAIT, |e| is_state(e, "online"));
    alice.expect("bob coming online", WAIT, |e| {
        e["event"] == "presence" && e["change"] == "joined" && e["users"][0]["name"] == "bob"
    });
    bob.send("/quit");
    assert_eq!(bob.exit_code(WAIT), Some(0));
    alice.expect("bob leaving", WAIT, |e| {
        e["event"] == "presence" && e["change"] == "left" && e["users"][0]["name"] == "bob"
    });

    let texts: Vec<String> = (1..=7).map(|i| format!("message {i}")).collect();
    for text in &texts[..3] {
        let sent = alice.command(&format!("/msg bob {text}"), "sent");
        assert_eq!(sent["path"], "stored", "{sent}");
    }

    // kill -9 and restart on the same port and data: alice reconnects by herself.
    server.kill9();
    alice.expect("reconnecting", WAIT, |e| is_state(e, "reconnecting"));
    server.spawn();
    alice.expect("back online", WAIT, |e| is_state(e, "online"));
    for text in &texts[3..6] {
        let sent = alice.command(&format!("/msg bob {text}"), "sent");
        assert_eq!(sent["path"], "stored", "{sent}");
    }

    // bob comes back and gets the six, in order.
    let mut bob = Client::spawn(&server, "bob", bob_id, bob_secret, &bob_args);
    bob.expect("online", WAIT, |e| is_state(e, "online"));
    for text in &texts[..6] {
        let got = bob.expect(text, WAIT, |e| e["event"] == "message");
        assert_eq!(got["text"], text.as_str(), "out of order: {:#?}", bob.seen);
        assert_eq!(got["path"], "stored");
    }

    // The server dies again with bob online; both reconnect; the seventh goes through the relay.
    server.kill9();
    bob.expect("reconnecting", WAIT, |e| is_state(e, "reconnecting"));
    server.spawn();
    bob.expect("back online", WAIT, |e| is_state(e, "online"));
    alice.expect("back online", WAIT, |e| {
        is_state(e, "online") && e["reconnects"].as_u64() >= Some(2)
    });
    let sent = alice.command(&format!("/msg bob {}", texts[6]), "sent");
    assert_eq!(sent["path"], "relayed", "{sent}");
    bob.expect(&texts[6], WAIT, |e| is_message(e, &texts[6]));

    let received: Vec<&str> = bob
        .messages()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(received, texts, "every message exactly once, in order");
}

#[test]
fn a_room_with_three_members() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), 10);
    let mut people: Vec<Client> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| Client::online(&server, name, &[]))
        .collect();
    for person in &mut people {
        let joined = person.command("/join lobby", "joined");
        assert_eq!(joined["room"], "lobby");
    }
    people[0].expect("bob and carol joining", WAIT, |e| {
        e["event"] == "room" && e["change"] == "joined" && e["user"] == "carol"
    });
    assert!(
        people[0]
            .seen
            .iter()
            .any(|e| e["event"] == "room" && e["change"] == "joined" && e["user"] == "bob")
    );

    people[0].command("/say lobby hello from alice", "posted");
    // Plain text goes to the room joined last.
    people[1].command("hello from bob", "posted");
    for person in &mut people {
        let first = person.expect("alice's post", WAIT, |e| is_message(e, "hello from alice"));
        assert_eq!(first["room"], "lobby");
        assert_eq!(first["path"], "room");
        person.expect("bob's post", WAIT, |e| is_message(e, "hello from bob"));
    }

    let rooms = people[2].command("/rooms", "rooms");
    let lobby = &rooms["rooms"][0];
    assert_eq!(lobby["name"], "lobby");
    assert_eq!(lobby["member_count"], 3, "{rooms}");
    let members = people[2].command("/members lobby", "members");
    assert_eq!(names_of(&members["members"]), ["alice", "bob", "carol"]);

    people[2].command("/leave lobby", "left");
    people[0].expect("carol leaving", WAIT, |e| {
        e["event"] == "room" && e["change"] == "left" && e["user"] == "carol"
    });
    let history = people[0].command("/history lobby", "history");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["hello from alice", "hello from bob"]);
}

#[test]
fn lists_longer_than_a_page_are_fetched_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start_with(dir.path(), 10, &["--max-page-items", "2"]);
    let mut alice = Client::online(&server, "alice", &[]);
    let _bob = Client::online(&server, "bob", &[]);
    let _carol = Client::online(&server, "carol", &[]);
    let rooms = ["attic", "cellar", "hall", "kitchen", "lobby"];
    for room in rooms {
        alice.command(&format!("/join {room}"), "joined");
    }
    let texts: Vec<String> = (1..=5).map(|i| format!("post {i}")).collect();
    for text in &texts {
        alice.command(&format!("/say lobby {text}"), "posted");
    }

    let who = alice.command("/who", "who");
    assert_eq!(names(&who["online"]), ["alice", "bob", "carol"]);
    let listed = alice.command("/rooms", "rooms");
    let listed: Vec<&str> = listed["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, rooms);
    let history = alice.command("/history lobby", "history");
    let posts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(posts, texts);
}

#[test]
fn an_impersonation_attempt_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), 10);
    let mut alice = Client::online(&server, "alice", &[]);

    let mut mallory = Client::spawn(&server, "mallory", alice.id, "not alice's secret", &[]);
    assert_eq!(mallory.exit_code(WAIT), Some(1), "{:#?}", mallory.seen);
    let error = mallory
        .seen
        .iter()
        .find(|e| e["event"] == "error")
        .expect("an error line");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("wrong secret"), "{message}");
    assert!(message.contains(&alice.id.to_string()), "{message}");

    // alice is still herself and still online.
    let who = alice.command("/who", "who");
    assert_eq!(names(&who["online"]), ["alice"]);
    assert_eq!(who["online"][0]["id"], alice.id.to_string());
}

#[test]
fn the_same_user_starting_again_elsewhere_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), 10);
    let mut watcher = Client::online(&server, "watcher", &[]);
    let (id, secret) = (Uuid::new_v4(), "dana's secret");
    let mut first = Client::spawn(&server, "dana", id, secret, &[]);
    first.expect("online", WAIT, |e| is_state(e, "online"));
    let mut second = Client::spawn(&server, "dana", id, secret, &[]);
    second.expect("online", WAIT, |e| is_state(e, "online"));

    // The older client steps aside instead of registering again (which would start a fight).
    first.expect("replaced", WAIT, |e| is_state(e, "replaced"));
    assert_eq!(first.exit_code(WAIT), Some(1));
    // The newer one stays online and reachable.
    let sent = watcher.command("/msg dana still there?", "sent");
    assert_eq!(sent["path"], "direct", "{sent}");
    second.expect("the message", WAIT, |e| is_message(e, "still there?"));
    let who = watcher.command("/who", "who");
    assert_eq!(names(&who["online"]), ["dana", "watcher"]);
    assert!(
        !second.seen.iter().any(|e| is_state(e, "reconnecting")),
        "{:#?}",
        second.seen
    );
}

/// A request frame (protocol §2 and §4) in JSON, to `chat.Signal` version 2.
fn request_frame(id: u64, method: &str, args: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in ["chat.Signal", "2", method] {
        body.push(part.len() as u8);
        body.extend_from_slice(part.as_bytes());
    }
    body.extend_from_slice(&5000u32.to_be_bytes()); // deadline, ms
    body.push(0); // no metadata
    body.extend_from_slice(args);
    let mut frame = vec![0xDA, 0xB0, 1, 1, 3, 0];
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Reads one frame: (kind, status, request id, body).
fn read_frame(stream: &mut TcpStream) -> (u8, u8, u64, Vec<u8>) {
    let mut head = [0u8; 18];
    stream.read_exact(&mut head).expect("a response frame");
    let len = u32::from_be_bytes(head[14..18].try_into().unwrap()) as usize;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).unwrap();
    let id = u64::from_be_bytes(head[6..14].try_into().unwrap());
    (head[3], head[5], id, body)
}

/// Whether the server closed the connection (rather than leaving it open), within the wait.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a go-away or an error frame before closing is fine
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true, // reset
        }
    }
}

#[test]
fn malformed_or_oversized_input_gets_a_clear_error_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(dir.path(), 10);
    let mut alice = Client::online(&server, "alice", &[]);
    let address = format!("127.0.0.1:{}", server.port);

    // Bytes that are not the protocol at all.
    let mut raw = TcpStream::connect(&address).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n")
        .unwrap();
    assert!(
        closed_by_server(&mut raw),
        "garbage must close the connection"
    );

    // A frame announcing a 4 GiB body: refused on the header alone.
    let mut raw = TcpStream::connect(&address).unwrap();
    let mut head = vec![0xDA, 0xB0, 1, 1, 3, 0];
    head.extend_from_slice(&7u64.to_be_bytes());
    head.extend_from_slice(&u32::MAX.to_be_bytes());
    raw.write_all(&head).unwrap();
    assert!(
        closed_by_server(&mut raw),
        "an oversized frame must close the connection"
    );

    // Well-framed calls with arguments of the wrong shape get an error answer, and the
    // connection carries on.
    let mut raw = TcpStream::connect(&address).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    raw.write_all(&request_frame(1, "register", br#"["not a request"]"#))
        .unwrap();
    let (kind, status, id, body) = read_frame(&mut raw);
    assert_eq!((kind, status, id), (2, 1, 1), "a BAD_REQUEST response");
    let message = String::from_utf8_lossy(&body[2..]);
    assert!(message.contains("arguments"), "{message}");
    raw.write_all(&request_frame(
        2,
        "lookup",
        br#"["no-such-token", "alice"]"#,
    ))
    .unwrap();
    let (_, status, id, body) = read_frame(&mut raw);
    assert_eq!(
        (status, id),
        (7, 2),
        "an application error: {}",
        String::from_utf8_lossy(&body)
    );

    // Chat-level rules: too long a name, too long a message.
    let mut long_name = Client::spawn(&server, &"n".repeat(40), Uuid::new_v4(), "s", &[]);
    assert_eq!(long_name.exit_code(WAIT), Some(1));
    let error = long_name
        .seen
        .iter()
        .find(|e| e["event"] == "error")
        .expect("an error");
    assert!(
        error["message"].as_str().unwrap().contains("invalid"),
        "{error}"
    );
    alice.send(&format!("/msg alice {}", "x".repeat(5000)));
    let error = alice.expect("an error", WAIT, |e| e["event"] == "error");
    assert!(
        error["message"].as_str().unwrap().contains("limit"),
        "{error}"
    );
    // The error quotes the start of the command, not all of it.
    let quoted = error["command"].as_str().unwrap();
    assert!(
        quoted.starts_with("/msg alice xxx") && quoted.ends_with('…'),
        "{quoted}"
    );
    assert_eq!(quoted.chars().count(), chat_api::EXCERPT_CHARS + 1);

    // Still serving: the old client and a new one.
    let who = alice.command("/who", "who");
    assert_eq!(names(&who["online"]), ["alice"]);
    let _bob = Client::online(&server, "bob", &[]);
    let who = alice.command("/who", "who");
    assert_eq!(names(&who["online"]), ["alice", "bob"]);
}

#[test]
fn help_explains_the_program() {
    let out = Command::new(env!("CARGO_BIN_EXE_chat-client"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "--json",
        "--for",
        "--identity",
        "--advertise",
        "/msg",
        "/join",
        "relay",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[test]
fn the_program_refuses_durations_out_of_range() {
    let client = env!("CARGO_BIN_EXE_chat-client");
    let base = ["--json", "--name", "ann", "--server", "tcp://127.0.0.1:9"];
    for (flag, value) in [
        ("--direct-timeout-ms", "0"),
        ("--direct-timeout-ms", "18446744073709551615"),
        ("--for", "-1"),
        ("--for", "NaN"),
        ("--for", "1e300"),
    ] {
        let given = format!("{flag}={value}");
        let args: Vec<&str> = base.iter().copied().chain([given.as_str()]).collect();
        let said = support::refused_at_startup(client, &args);
        assert!(said.contains(flag), "{flag} {value}: {said}");
    }
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port on 127.0.0.1")
}

/// Runs `chat-client --nat-check --json` with `flags`; returns its one line and how long it took.
fn nat_check(flags: &[&str]) -> (Value, Duration) {
    let started = Instant::now();
    let mut command = Command::new(program_of("chat-client", "chat-client"));
    command
        .args(["--nat-check", "--json"])
        .args(flags)
        .stdin(Stdio::null());
    stderr_for(&mut command, "nat-check");
    let output = command.output().expect("chat-client runs");
    let took = started.elapsed();
    assert!(output.status.success(), "{:?}: {output:?}", output.status);
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    (serde_json::from_str(lines[0]).unwrap(), took)
}

#[test]
fn nat_check_classifies_loopback_as_no_nat_through_the_servers_stun() {
    let dir = tempfile::tempdir().unwrap();
    let stun = format!("127.0.0.1:{}", free_udp_port());
    let alternate_port = free_udp_port().to_string();
    let server = ChatServer::start_with(
        dir.path(),
        10,
        &[
            "--stun",
            &stun,
            "--stun-alt-port",
            &alternate_port,
            "--stun-alt-ip",
            "127.0.0.2",
        ],
    );
    // In a session: /nat finds the client's own NAT, /nat <user> what that user reported.
    let mut alice = Client::online(&server, "alice", &[]);
    let mut bob = Client::online(&server, "bob", &[]);
    let mine = alice.command("/nat", "nat");
    assert_eq!(mine["user"], Value::Null, "{mine}");
    assert_eq!(mine["mapping"], "endpoint-independent", "{mine}");
    assert_eq!(mine["filtering"], "endpoint-independent", "{mine}");
    let seen = bob.command("/nat alice", "nat");
    assert_eq!(seen["user"], "alice", "{seen}");
    assert_eq!(seen["public"], mine["public"], "{seen}");
    for flags in [
        vec!["--stun", stun.as_str()],
        vec!["--server", &server.endpoint()],
    ] {
        let (report, took) = nat_check(&flags);
        assert_eq!(report["kind"], "nat", "{report}");
        assert_eq!(report["event"], "nat", "{report}");
        assert_eq!(report["mapping"], "endpoint-independent", "{report}");
        assert_eq!(report["filtering"], "endpoint-independent", "{report}");
        assert_eq!(report["stun"], stun.as_str(), "{report}");
        let public: std::net::SocketAddr = report["public"].as_str().unwrap().parse().unwrap();
        assert_eq!(public.ip().to_string(), "127.0.0.1");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}

#[test]
fn nat_check_without_an_answer_exits_1_within_3_seconds() {
    // Nothing listens there: no answer, an unknown NAT, status 1, on time.
    let stun = format!("127.0.0.1:{}", free_udp_port());
    let started = Instant::now();
    let output = Command::new(program_of("chat-client", "chat-client"))
        .args(["--nat-check", "--json", "--stun", &stun])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["mapping"], "unknown");
    assert_eq!(report["public"], Value::Null);
}

#[test]
fn a_key_file_is_made_once_for_its_owner_only_and_a_bad_one_is_refused() {
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let run = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_chat-client"))
            .args(["--server", &closed_endpoint(), "--name", "keyholder"])
            .arg("--key-file")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let key = dir.path().join("device.key");
    let first = run(&key);
    // Nobody to connect to, but the key is made before that.
    assert!(!first.status.success());
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.trim().len(), 64, "{text:?}");
    assert!(
        text.trim().chars().all(|c| c.is_ascii_hexdigit()),
        "{text:?}"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    run(&key);
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        text,
        "kept, not made again"
    );

    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    let refused = run(&bad);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not a device key"), "{stderr}");
}
