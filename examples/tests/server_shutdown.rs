//! Every server program drains and exits cleanly when stopped by SIGTERM, as it does on Ctrl-C:
//! each runs as a separate process on 127.0.0.1, answers a real call, is sent the signal with
//! `kill`, and must exit by itself with success and say that it drained and stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../chat/server/tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use chat_api::{RegisterRequest, SignalClient};
use examples::hello::GreeterClient;
use futures::StreamExt;
use rpc_core::Client;
use rpc_registry::{Instance, Registry, RemoteRegistry, ServiceKey};
use support::{Killed, free_port, lines_of};
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(20);

/// The servers' grace period, in seconds: longer than `WAIT`, so a server that exits within
/// `WAIT` did so because its drain completed (its clients closed their connections after the
/// go-away), not because the grace period ran out.
const GRACE: &str = "60";

/// A server program, running.
struct Running {
    process: Killed,
    /// Its stdout, line by line.
    lines: Receiver<String>,
}

impl Running {
    /// Starts `bin` with `args` and waits for its first line, which must contain `ready`.
    fn start(bin: &str, args: &[&str], ready: &str) -> Running {
        let mut child = Command::new(bin)
            .args(args)
            .args(["--grace", GRACE])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server program starts");
        let lines = lines_of(&mut child);
        let process = Killed(child);
        let line = lines
            .recv_timeout(WAIT)
            .expect("the server says where it listens");
        assert!(line.contains(ready), "{line}");
        Running { process, lines }
    }

    /// Sends `signal` (`TERM` or `INT`) and expects a clean exit.
    fn stop_with(&mut self, signal: &str, name: &str) {
        self.process.signal(signal);
        self.expect_clean_exit(signal, name);
    }

    /// Waits for the process, sent `signal`, to exit; checks that it succeeded and said it
    /// drained and stopped.
    fn expect_clean_exit(&mut self, signal: &str, name: &str) {
        let status = self.process.exit_status(WAIT);
        // It exited, so its stdout is closed and the reader ends after the last line.
        let said: Vec<String> = self.lines.iter().collect();
        assert!(status.success(), "{name} exited with {status}: {said:?}");
        assert!(
            said.iter()
                .any(|l| l.starts_with(&format!("SIG{signal}: draining"))),
            "{name} did not say it was draining: {said:?}"
        );
        assert_eq!(
            said.last().map(String::as_str),
            Some(format!("{name} stopped").as_str()),
            "{said:?}"
        );
    }
}

/// Enough items that the server must still be sending most of them after the signal: a stream
/// runs at most a credit window (a few hundred items) ahead of what the client has read.
const COUNT: u32 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_server_on_sigterm_finishes_a_stream_in_flight_and_exits_cleanly() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Running::start(
        env!("CARGO_BIN_EXE_hello-server"),
        &["--listen", &endpoint],
        "serving hello.Greeter",
    );
    let greeter = GreeterClient::new(Client::connect(&endpoint).await.unwrap());
    assert_eq!(
        greeter.hello("tester".into()).await.unwrap(),
        "hello, tester, from hello-server"
    );
    let mut countdown = greeter.countdown(COUNT).await.unwrap();
    assert_eq!(countdown.next().await.unwrap().unwrap(), COUNT);

    server.process.signal("TERM");
    // The call in flight goes on to its end.
    let mut expected = COUNT - 1;
    while let Some(item) = tokio::time::timeout(WAIT, countdown.next())
        .await
        .expect("the stream goes on after SIGTERM")
    {
        assert_eq!(item.expect("no error in the stream"), expected);
        expected -= 1;
    }
    assert_eq!(expected, 0, "the stream ended early");
    drop(countdown);
    server.expect_clean_exit("TERM", "hello-server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_server_on_ctrl_c_drains_and_exits_cleanly() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Running::start(
        env!("CARGO_BIN_EXE_hello-server"),
        &["--listen", &endpoint],
        "serving hello.Greeter",
    );
    let greeter = GreeterClient::new(Client::connect(&endpoint).await.unwrap());
    assert_eq!(greeter.add(2, 40).await.unwrap(), 42);
    server.stop_with("INT", "hello-server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_server_on_sigterm_drains_and_exits_cleanly() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Running::start(
        env!("CARGO_BIN_EXE_registry-server"),
        &["--listen", &endpoint],
        "listening on",
    );
    let registry = RemoteRegistry::connect_lazy(&endpoint).unwrap();
    let key = ServiceKey::new("test.Echo");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    registry
        .register(Instance::new(key.clone(), "tcp://127.0.0.1:9"), lease.id)
        .await
        .unwrap();
    assert_eq!(registry.discover(&key).await.unwrap().instances.len(), 1);
    server.stop_with("TERM", "registry-server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_server_on_sigterm_drains_and_exits_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Running::start(
        env!("CARGO_BIN_EXE_chat-server"),
        &[
            "--listen",
            &endpoint,
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        "chat-server listening on",
    );
    let chat = SignalClient::new(Client::connect(&endpoint).await.unwrap());
    let session = chat
        .register(RegisterRequest {
            id: Uuid::new_v4(),
            name: "ann".into(),
            secret: "secret of ann".into(),
            endpoint: None,
        })
        .await
        .unwrap();
    let online = chat.online(session.token, None, 0).await.unwrap();
    assert_eq!(online.items.len(), 1, "{online:?}");
    server.stop_with("TERM", "chat-server");
}
