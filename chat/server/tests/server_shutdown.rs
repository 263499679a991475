//! The `chat-server` program drains and exits cleanly when stopped by SIGTERM, as every server
//! program of the workspace does (the others' tests are in `examples`): it runs as a separate
//! process on 127.0.0.1, answers a real call, is sent the signal with `kill`, and must exit by
//! itself with success and say that it drained and stopped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use chat_api::{RegisterRequest, SignalClient};
use rpc_core::Client;
use support::{Running, free_port};
use uuid::Uuid;

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

/// Whoever started the server may stop reading what it prints (the chat client tests read its
/// first line only): the server goes on serving, and still drains and exits cleanly, rather than
/// dying on the next line it prints to a closed pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_server_whose_stdout_nobody_reads_keeps_serving_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let data = tempfile::tempdir().unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--listen", &endpoint, "--data-dir"])
        .arg(data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader, and with it the pipe's only read end, is gone.
    assert!(first.starts_with("chat-server listening on"), "{first:?}");

    let chat = SignalClient::new(Client::connect(&endpoint).await.unwrap());
    chat.register(RegisterRequest {
        id: Uuid::new_v4(),
        name: "ann".into(),
        secret: "secret of ann".into(),
        endpoint: None,
    })
    .await
    .unwrap();
    // Stopping makes it print ("draining", "stopped") to the closed pipe.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chat-server did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "chat-server exited with {status}");
}
