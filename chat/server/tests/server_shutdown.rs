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
