//! The chat client library against a real chat server: how it rides out, or gives up on, a
//! server that goes away.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use chat_api::{Access, ChatError};
use chat_client::{ChatClient, ChatClientConfig, ClientError, ClientState};
use chat_server::{ChatServer, ChatServerConfig};
use rpc_core::Backoff;
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(20);

async fn server(dir: &std::path::Path) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    // Cheap hashing: these tests are not about the KDF.
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    ChatServer::start(config).await.unwrap()
}

#[tokio::test]
async fn a_client_logs_in_by_name_and_password_as_the_same_user() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let endpoint = server.endpoints()[0].clone();
    let first =
        ChatClientConfig::new(endpoint.clone(), "Alice").identity(Uuid::new_v4(), "hunter22");
    let id = first.id;
    let (alice, _events) = ChatClient::connect(first).await.unwrap();
    alice.create_room("den", Access::InviteOnly).await.unwrap();
    alice.shutdown().await;

    // On another device: the name (folded as the server folds names) and the password.
    let (again, _events) =
        ChatClient::connect(ChatClientConfig::new(endpoint.clone(), "ALICE").login("hunter22"))
            .await
            .unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(again.name(), "Alice");
    assert!(again.state().is_online(), "{:?}", again.state());
    // The server kept her group; the client read it at registration.
    assert_eq!(again.joined_rooms(), ["den"]);
    let me = again.lookup(&id.to_string()).await.unwrap();
    assert_eq!(me.name, "Alice");
    again.shutdown().await;

    for (name, password) in [("alice", "wrong"), ("nobody", "hunter22")] {
        let refused =
            ChatClient::connect(ChatClientConfig::new(endpoint.clone(), name).login(password))
                .await;
        assert!(
            matches!(refused, Err(ClientError::Chat(ChatError::WrongLogin))),
            "{name}: {refused:?}"
        );
    }
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_client_gives_up_after_its_reconnect_limit_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let mut config = ChatClientConfig::new(server.endpoints()[0].clone(), "quitter");
    config.call_timeout = Duration::from_millis(500);
    config.reconnect = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
    config.max_reconnect_attempts = Some(3);
    let (client, _events) = ChatClient::connect(config).await.unwrap();
    assert!(client.state().is_online(), "{:?}", client.state());

    // The server goes away for good: three attempts fail, then the client stops.
    server.shutdown(Duration::from_millis(100)).await;
    let mut state = client.watch_state();
    let last = tokio::time::timeout(WAIT, state.wait_for(ClientState::is_final))
        .await
        .expect("the client gives up")
        .unwrap()
        .clone();
    match last {
        ClientState::GaveUp { reason, attempts } => {
            assert_eq!(attempts, 3);
            assert!(!reason.is_empty());
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    // A call now says the client is closed rather than waiting.
    assert!(client.who().await.is_err());
}

#[tokio::test]
async fn without_a_limit_a_client_keeps_trying_until_the_server_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let first = server(dir.path()).await;
    let endpoint = first.endpoints()[0].clone();
    let mut config = ChatClientConfig::new(endpoint.clone(), "stayer");
    config.call_timeout = Duration::from_millis(500);
    config.reconnect = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
    let (client, _events) = ChatClient::connect(config).await.unwrap();
    first.shutdown(Duration::from_millis(100)).await;
    let mut state = client.watch_state();
    tokio::time::timeout(WAIT, async {
        while !matches!(&*state.borrow(), ClientState::Reconnecting { attempt, .. } if *attempt >= 5)
        {
            state.changed().await.unwrap();
        }
    })
    .await
    .expect("several failed attempts");
    // The same address again: the client is back by itself.
    let mut config = ChatServerConfig::new(dir.path());
    config.listen = vec![endpoint];
    let second = ChatServer::start(config).await.unwrap();
    tokio::time::timeout(WAIT, state.wait_for(ClientState::is_online))
        .await
        .expect("back online")
        .unwrap();
    client.shutdown().await;
    second.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn each_client_binds_its_device_key_and_sees_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let endpoint = server.endpoints()[0].clone();
    let kept = rpc_core::transport::quic::Identity::generate().unwrap();
    let mut alice = ChatClientConfig::new(endpoint.clone(), "alice");
    alice.device_key = Some(kept.clone());
    let mut nobody = ChatClientConfig::new(endpoint.clone(), "keyless");
    nobody.device_key = None;
    let bob = ChatClientConfig::new(endpoint, "bob");
    let bob_key = bob.device_key.as_ref().unwrap().public_key();
    let (alice, _a) = ChatClient::connect(alice).await.unwrap();
    let (bob, _b) = ChatClient::connect(bob).await.unwrap();
    let (_nobody, _n) = ChatClient::connect(nobody).await.unwrap();
    // Bound right after each registration, in the background: wait for it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let seen = (
            bob.device_key_of("alice").await.unwrap(),
            alice.device_key_of("bob").await.unwrap(),
        );
        if seen == (Some(kept.public_key()), Some(bob_key)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "keys seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(alice.device_key_of("keyless").await.unwrap(), None);
    server.shutdown(Duration::from_secs(1)).await;
}
