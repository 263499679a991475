//! Files sent peer to peer between two chat clients (the library) over QUIC on loopback, with a
//! real chat server introducing them: a whole file, a transfer that resumes after the
//! recipient restarts, and the errors a sender meets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_client::{ChatClient, ChatClientConfig, ChatEvent, ChatEvents, FileEvent};
use chat_server::{ChatServer, ChatServerConfig};
use rpc_core::transport::quic::Identity;
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(30);

async fn server(dir: &Path) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    ChatServer::start(config).await.unwrap()
}

/// A recognisable file of `len` bytes.
fn write_file(path: &Path, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(path, &data).unwrap();
    data
}

/// The next file event, skipping others.
async fn next_file_event(events: &mut ChatEvents) -> FileEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(ChatEvent::File(event)) = events.recv().await {
                return event;
            }
        }
    })
    .await
    .expect("no file event came")
}

/// Waits until `client` sees `user`'s device key, which direct paths need.
async fn wait_for_key(client: &ChatClient, user: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.device_key_of(user).await.unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} bound no key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bob's configuration: his files directory, and the same user and device each time.
fn bob_config(
    endpoint: &rpc_core::Endpoint,
    id: Uuid,
    key: &Identity,
    files: &Path,
) -> ChatClientConfig {
    let mut config = ChatClientConfig::new(endpoint.clone(), "bob").identity(id, "bob's secret");
    config.device_key = Some(key.clone());
    config.files_dir = Some(files.to_owned());
    config.max_file_bytes = 50_000_000;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_peer_to_peer_and_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let endpoint = server.endpoints()[0].clone();
    let files = dir.path().join("bob-files");
    let (bob, mut bob_events) = ChatClient::connect(bob_config(
        &endpoint,
        Uuid::new_v4(),
        &Identity::generate().unwrap(),
        &files,
    ))
    .await
    .unwrap();
    let (alice, _a) = ChatClient::connect(ChatClientConfig::new(endpoint, "alice"))
        .await
        .unwrap();
    wait_for_key(&alice, "bob").await;
    wait_for_key(&bob, "alice").await;

    let source = dir.path().join("report.pdf");
    let data = write_file(&source, 3_500_000);
    let seen = Arc::new(AtomicU64::new(0));
    let report = {
        let seen = seen.clone();
        alice
            .send_file("bob", &source, move |sent, size| {
                assert!(sent <= size);
                assert!(
                    sent >= seen.swap(sent, Ordering::Relaxed),
                    "progress goes forward"
                );
            })
            .await
            .unwrap()
    };
    assert_eq!(report.size, 3_500_000);
    assert_eq!(report.name, "report.pdf");
    assert_eq!(report.resumed, 0);
    assert!(report.endpoint.starts_with("quic://"), "{report:?}");
    assert_eq!(seen.load(Ordering::Relaxed), 3_500_000);

    let FileEvent::Incoming {
        name,
        size,
        offset,
        from,
        ..
    } = next_file_event(&mut bob_events).await
    else {
        panic!("the offer first")
    };
    assert_eq!((name.as_str(), size, offset), ("report.pdf", 3_500_000, 0));
    assert_eq!(from.name, "alice");
    let FileEvent::Received { path, .. } = next_file_event(&mut bob_events).await else {
        panic!("then the file")
    };
    assert_eq!(path, files.join("report.pdf"));
    assert!(std::fs::read(&path).unwrap() == data, "the copy differs");
    // Nothing partial is left behind.
    let left: Vec<PathBuf> = std::fs::read_dir(&files)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, [path]);
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_resumes_when_the_recipient_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let endpoint = server.endpoints()[0].clone();
    let files = dir.path().join("bob-files");
    let (bob_id, bob_key) = (Uuid::new_v4(), Identity::generate().unwrap());
    let (bob, mut bob_events) =
        ChatClient::connect(bob_config(&endpoint, bob_id, &bob_key, &files))
            .await
            .unwrap();
    let (alice, _a) = ChatClient::connect(ChatClientConfig::new(endpoint.clone(), "alice"))
        .await
        .unwrap();
    wait_for_key(&alice, "bob").await;
    wait_for_key(&bob, "alice").await;

    let source = dir.path().join("video.bin");
    let data = write_file(&source, 24_000_000);
    // Bob's client stops once a third has arrived, and a new one (same user, same device, same
    // directory) starts: the transfer goes on from where his copy ends.
    let (reached, mut third) = tokio::sync::mpsc::unbounded_channel();
    let sending = tokio::spawn({
        let alice = alice.clone();
        let source = source.clone();
        async move {
            alice
                .send_file(&bob_id.to_string(), &source, move |sent, _| {
                    if sent >= 8_000_000 {
                        let _ = reached.send(());
                    }
                })
                .await
        }
    });
    tokio::time::timeout(WAIT, third.recv()).await.unwrap();
    bob.shutdown().await;
    drop(bob);
    let (_bob, mut bob_events_again) =
        ChatClient::connect(bob_config(&endpoint, bob_id, &bob_key, &files))
            .await
            .unwrap();
    let report = tokio::time::timeout(WAIT, sending)
        .await
        .expect("the transfer ends")
        .unwrap()
        .expect("the transfer resumes and completes");
    assert!(report.resumed >= 1, "{report:?}");

    assert!(matches!(
        next_file_event(&mut bob_events).await,
        FileEvent::Incoming { offset: 0, .. }
    ));
    let FileEvent::Incoming { offset, .. } = next_file_event(&mut bob_events_again).await else {
        panic!("the resumed offer")
    };
    assert!(
        offset >= 1_000_000,
        "resumed from {offset}, not from the start"
    );
    let FileEvent::Received { path, .. } = next_file_event(&mut bob_events_again).await else {
        panic!("then the file")
    };
    assert!(std::fs::read(&path).unwrap() == data, "the copy differs");
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_sender_is_told_clearly_what_went_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let endpoint = server.endpoints()[0].clone();
    let files = dir.path().join("bob-files");
    let mut config = bob_config(
        &endpoint,
        Uuid::new_v4(),
        &Identity::generate().unwrap(),
        &files,
    );
    config.max_file_bytes = 1000;
    let (bob, _b) = ChatClient::connect(config).await.unwrap();
    let mut carol = ChatClientConfig::new(endpoint.clone(), "carol");
    carol.files_dir = None;
    let (_carol, _c) = ChatClient::connect(carol).await.unwrap();
    let (alice, _a) = ChatClient::connect(ChatClientConfig::new(endpoint, "alice"))
        .await
        .unwrap();
    wait_for_key(&alice, "bob").await;
    wait_for_key(&alice, "carol").await;
    wait_for_key(&bob, "alice").await;

    let error = |r: Result<chat_client::FileReport, chat_client::ClientError>| {
        r.expect_err("the send fails").to_string()
    };
    let missing = dir.path().join("nowhere.txt");
    let message = error(alice.send_file("bob", &missing, |_, _| {}).await);
    assert!(
        message.contains("cannot read") && message.contains("nowhere.txt"),
        "{message}"
    );
    let message = error(alice.send_file("bob", dir.path(), |_, _| {}).await);
    assert!(message.contains("not a file"), "{message}");

    let big = dir.path().join("big.bin");
    write_file(&big, 5000);
    let message = error(alice.send_file("bob", &big, |_, _| {}).await);
    assert!(
        message.contains("refused") && message.contains("up to 1.0 kB"),
        "{message}"
    );
    let message = error(alice.send_file("carol", &big, |_, _| {}).await);
    assert!(message.contains("takes no files"), "{message}");
    let message = error(alice.send_file("nobody-here", &big, |_, _| {}).await);
    assert!(message.contains("nobody-here"), "{message}");
    assert!(!files.join("big.bin").exists());
    server.shutdown(Duration::from_millis(100)).await;
}
