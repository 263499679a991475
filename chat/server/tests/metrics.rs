//! The `chat-server` program serves Prometheus metrics with `--metrics ADDR`: it runs as a
//! separate process on 127.0.0.1, users register and relay messages, and the scraped counters
//! show them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use chat_api::{Delivery, RegisterRequest, Session, SignalClient};
use futures::StreamExt;
use rpc_core::Client;
use support::{Running, free_port, metric, scrape};
use uuid::Uuid;

async fn scrape_async(addr: &str) -> String {
    let addr = addr.to_owned();
    tokio::task::spawn_blocking(move || scrape(&addr))
        .await
        .unwrap()
}

async fn register(chat: &SignalClient<Client>, name: &str) -> Session {
    chat.register(RegisterRequest {
        id: Uuid::new_v4(),
        name: name.into(),
        secret: format!("secret of {name}"),
        endpoint: None,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_server_counts_users_and_messages() {
    let data = tempfile::tempdir().unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Running::start(
        env!("CARGO_BIN_EXE_chat-server"),
        &[
            "--listen",
            &endpoint,
            "--metrics",
            &metrics,
            "--data-dir",
            data.path().to_str().unwrap(),
            "--password-memory-kib",
            "64",
            "--password-iterations",
            "1",
        ],
        "chat-server listening on",
    );
    let said = server.lines.recv_timeout(Running::WAIT).unwrap();
    assert_eq!(said, format!("metrics on http://{metrics}/metrics"));

    let before = scrape_async(&metrics).await;
    assert_eq!(
        metric(&before, "chat_online_users", &[]),
        Some(0.0),
        "{before}"
    );
    assert_eq!(
        metric(&before, "chat_messages_total", &[("path", "stored")]),
        Some(0.0)
    );

    let ann_chat = SignalClient::new(Client::connect(&endpoint).await.unwrap());
    let bob_chat = SignalClient::new(Client::connect(&endpoint).await.unwrap());
    let ann = register(&ann_chat, "ann").await;
    let bob = register(&bob_chat, "bob").await;
    // Bob has no inbox open: the message is stored for him.
    let delivery = ann_chat
        .relay(
            ann.token.clone(),
            Uuid::new_v4(),
            bob.user.id,
            "hi".into(),
            0,
        )
        .await
        .unwrap();
    assert_eq!(delivery, Delivery::Stored);
    // With his inbox open, the next one is pushed to him at once.
    let mut inbox = bob_chat.inbox(bob.token.clone()).await.unwrap();
    inbox.next().await.unwrap().unwrap();
    let delivery = ann_chat
        .relay(
            ann.token.clone(),
            Uuid::new_v4(),
            bob.user.id,
            "there".into(),
            0,
        )
        .await
        .unwrap();
    assert_eq!(delivery, Delivery::Delivered);

    let after = scrape_async(&metrics).await;
    assert_eq!(
        metric(&after, "chat_online_users", &[]),
        Some(2.0),
        "{after}"
    );
    assert_eq!(
        metric(&after, "chat_messages_total", &[("path", "stored")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&after, "chat_messages_total", &[("path", "relayed")]),
        Some(1.0)
    );
    assert_eq!(metric(&after, "chat_messages_waiting", &[]), Some(2.0));
    assert_eq!(metric(&after, "chat_calls_in_progress", &[]), Some(0.0));
    let registered = [
        ("service", "chat.Signal"),
        ("method", "register"),
        ("status", "ok"),
    ];
    assert_eq!(
        metric(&after, "rpc_server_calls_total", &registered),
        Some(2.0)
    );
    assert_eq!(metric(&after, "rpc_server_connections", &[]), Some(2.0));
}
