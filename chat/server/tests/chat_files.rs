//! Files between two chat clients (the library) on loopback, with a real chat server: peer to
//! peer over QUIC (a whole file, a transfer that resumes after the recipient restarts), through
//! the server when there is no direct path, held for an offline user until they return, the
//! upload protocol itself (resume, wrong offsets, a bad hash, who may download), and the
//! errors a sender meets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_api::{
    Attachment, ChatError, Delivery, Path as Via, RegisterRequest, SignalClient, now_ms,
};
use chat_client::{ChatClient, ChatClientConfig, ChatEvent, ChatEvents, FileEvent};
use chat_server::store::{RedbStore, Store};
use chat_server::{ChatServer, ChatServerConfig};
use rpc_core::transport::quic::Identity;
use rpc_core::{Client, RpcError};
use sha2::{Digest, Sha256};
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
    assert_eq!(report.path, Via::Direct);
    assert!(
        report.endpoint.as_deref().unwrap().starts_with("quic://"),
        "{report:?}"
    );
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

/// A server whose store the test reads too.
async fn server_with_store(
    dir: &std::path::Path,
    configure: impl FnOnce(&mut ChatServerConfig),
) -> (ChatServer, Arc<RedbStore>) {
    let store = Arc::new(RedbStore::open(&dir.join("chat.redb")).unwrap());
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    config.store = Some(store.clone());
    configure(&mut config);
    (ChatServer::start(config).await.unwrap(), store)
}

/// Waits until the server no longer holds file `id` (its recipient acknowledged it).
async fn wait_until_deleted(store: &RedbStore, id: Uuid) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while store.held_file(id).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still holds {id}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_through_the_server_when_there_is_no_direct_path() {
    let dir = tempfile::tempdir().unwrap();
    let (server, store) = server_with_store(dir.path(), |_| {}).await;
    let endpoint = server.endpoints()[0].clone();
    let files = dir.path().join("bob-files");
    // Bob tells the others a UDP port nobody serves, and the server has no STUN service to
    // punch a hole with: no direct path.
    let nowhere = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut config = bob_config(
        &endpoint,
        Uuid::new_v4(),
        &Identity::generate().unwrap(),
        &files,
    );
    config.advertise = Some(format!("quic://{}", nowhere.local_addr().unwrap()));
    let (bob, mut bob_events) = ChatClient::connect(config).await.unwrap();
    let mut alice = ChatClientConfig::new(endpoint, "alice");
    alice.direct_timeout = Duration::from_millis(300);
    let (alice, _a) = ChatClient::connect(alice).await.unwrap();
    wait_for_key(&alice, "bob").await;
    wait_for_key(&bob, "alice").await;

    let source = dir.path().join("scan.png");
    let data = write_file(&source, 3_500_000);
    let seen = Arc::new(AtomicU64::new(0));
    let report = {
        let seen = seen.clone();
        alice
            .send_file("bob", &source, move |sent, _| {
                seen.fetch_max(sent, Ordering::Relaxed);
            })
            .await
            .unwrap()
    };
    assert_eq!(report.path, Via::Relayed, "{report:?}");
    assert_eq!(report.endpoint, None);
    assert!(report.why_not_direct.is_some(), "{report:?}");
    assert_eq!(seen.load(Ordering::Relaxed), 3_500_000);

    let received = tokio::time::timeout(WAIT, async {
        loop {
            if let FileEvent::Received { path, from, .. } = next_file_event(&mut bob_events).await {
                return (path, from);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(received.0, files.join("scan.png"));
    assert_eq!(received.1.name, "alice");
    assert!(
        std::fs::read(&received.0).unwrap() == data,
        "the copy differs"
    );
    // Saved, so acknowledged: the server's copy is gone.
    wait_until_deleted(&store, report.id).await;
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_for_an_offline_user_is_held_until_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let (server, store) = server_with_store(dir.path(), |_| {}).await;
    let endpoint = server.endpoints()[0].clone();
    let files = dir.path().join("bob-files");
    let (bob_id, bob_key) = (Uuid::new_v4(), Identity::generate().unwrap());
    let (bob, _b) = ChatClient::connect(bob_config(&endpoint, bob_id, &bob_key, &files))
        .await
        .unwrap();
    bob.shutdown().await;
    drop(bob);
    let (alice, _a) = ChatClient::connect(ChatClientConfig::new(endpoint.clone(), "alice"))
        .await
        .unwrap();

    let source = dir.path().join("notes.txt");
    let data = write_file(&source, 2_500_000);
    let report = alice
        .send_file(&bob_id.to_string(), &source, |_, _| {})
        .await
        .unwrap();
    assert_eq!(report.path, Via::Stored, "{report:?}");
    assert!(
        report
            .why_not_direct
            .as_deref()
            .unwrap()
            .contains("offline"),
        "{report:?}"
    );
    let held = store.held_file(report.id).await.unwrap().expect("held");
    assert_eq!((held.received, held.file.size), (2_500_000, 2_500_000));
    assert_eq!(held.to, bob_id);

    // Bob comes back: the message that carries the file is in his inbox, and the file is
    // downloaded, checked and saved.
    let (_bob, mut bob_events) =
        ChatClient::connect(bob_config(&endpoint, bob_id, &bob_key, &files))
            .await
            .unwrap();
    let path = tokio::time::timeout(WAIT, async {
        loop {
            if let FileEvent::Received { path, .. } = next_file_event(&mut bob_events).await {
                return path;
            }
        }
    })
    .await
    .unwrap();
    assert!(std::fs::read(&path).unwrap() == data, "the copy differs");
    wait_until_deleted(&store, report.id).await;
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_files_past_its_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _store) = server_with_store(dir.path(), |config| {
        config.max_held_file = 1000;
        config.held_files_quota = 1500;
    })
    .await;
    let endpoint = server.endpoints()[0].clone();
    let bob_id = Uuid::new_v4();
    let (bob, _b) = ChatClient::connect(bob_config(
        &endpoint,
        bob_id,
        &Identity::generate().unwrap(),
        &dir.path().join("bob-files"),
    ))
    .await
    .unwrap();
    bob.shutdown().await;
    let (alice, _a) = ChatClient::connect(ChatClientConfig::new(endpoint, "alice"))
        .await
        .unwrap();
    let bob = bob_id.to_string();

    let big = dir.path().join("big.bin");
    write_file(&big, 2000);
    let message = alice
        .send_file(&bob, &big, |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("at most 1000 bytes") && message.contains("offline"),
        "{message}"
    );
    let small = dir.path().join("small.bin");
    write_file(&small, 900);
    let report = alice.send_file(&bob, &small, |_, _| {}).await.unwrap();
    assert_eq!(report.path, Via::Stored);
    // A second one would pass what the server holds for Bob.
    let message = alice
        .send_file(&bob, &small, |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("quota") && message.contains("900 bytes of files are waiting"),
        "{message}"
    );
    server.shutdown(Duration::from_millis(100)).await;
}

/// Registers a user on its own connection; returns the API and the session's token.
async fn raw_user(server: &ChatServer, name: &str) -> (SignalClient<Client>, String, Uuid) {
    let client = Client::builder()
        .connect(&server.endpoints()[0])
        .await
        .unwrap();
    let api = SignalClient::new(client);
    let id = Uuid::new_v4();
    let session = api
        .register(RegisterRequest {
            id,
            name: name.into(),
            secret: format!("secret of {name}"),
            endpoint: None,
        })
        .await
        .unwrap();
    (api, session.token, id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn uploads_resume_check_their_offsets_and_hash_and_only_the_recipient_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let (server, store) = server_with_store(dir.path(), |_| {}).await;
    let (alice, alice_token, _) = raw_user(&server, "alice").await;
    let (bob, bob_token, bob_id) = raw_user(&server, "bob").await;
    let (carol, carol_token, _) = raw_user(&server, "carol").await;

    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let file = Attachment {
        name: "data.bin".into(),
        size: 3000,
        sha256: hex(&Sha256::digest(&data)),
    };
    let id = Uuid::new_v4();
    let chunk = |from: usize, to: usize| bytes::Bytes::copy_from_slice(&data[from..to]);
    let upload = |offset: u64, piece: bytes::Bytes| {
        alice.upload_chunk(alice_token.clone(), id, offset, piece)
    };
    assert_eq!(
        alice
            .upload_file(alice_token.clone(), id, bob_id, file.clone())
            .await
            .unwrap(),
        0
    );
    upload(0, chunk(0, 1000)).await.unwrap();
    // The answer was lost, say: asking again says where to go on.
    assert_eq!(
        alice
            .upload_file(alice_token.clone(), id, bob_id, file.clone())
            .await
            .unwrap(),
        1000
    );
    let invalid = |r: Result<(), RpcError<ChatError>>| match r {
        Err(RpcError::Application(ChatError::Invalid(message))) => message,
        other => panic!("not refused as invalid: {other:?}"),
    };
    let message = invalid(upload(500, chunk(500, 1500)).await);
    assert!(message.contains("1000 bytes held"), "{message}");
    let message = invalid(upload(1000, bytes::Bytes::from(vec![0; 2500])).await);
    assert!(message.contains("size"), "{message}");
    // Not finished: nothing is relayed, and nobody downloads.
    match alice.finish_upload(alice_token.clone(), id, now_ms()).await {
        Err(RpcError::Application(ChatError::Invalid(message))) => {
            assert!(message.contains("1000 of the file's 3000"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        bob.download(bob_token.clone(), id, 0, 0).await,
        Err(RpcError::Application(ChatError::NoSuchFile(_)))
    ));
    // Another upload under the same id, and another sender's pieces, are refused.
    let other = Attachment {
        size: 10,
        ..file.clone()
    };
    assert!(matches!(
        alice
            .upload_file(alice_token.clone(), id, bob_id, other)
            .await,
        Err(RpcError::Application(ChatError::Invalid(_)))
    ));
    assert!(matches!(
        carol
            .upload_chunk(carol_token.clone(), id, 1000, chunk(1000, 2000))
            .await,
        Err(RpcError::Application(ChatError::NoSuchFile(_)))
    ));
    upload(1000, chunk(1000, 2000)).await.unwrap();
    upload(2000, chunk(2000, 3000)).await.unwrap();
    assert_eq!(
        alice
            .finish_upload(alice_token.clone(), id, now_ms())
            .await
            .unwrap(),
        Delivery::Stored
    );
    // Finishing again relays nothing more.
    alice
        .finish_upload(alice_token.clone(), id, now_ms())
        .await
        .unwrap();

    // Only Bob downloads it, a piece at a time from any offset.
    assert!(matches!(
        carol.download(carol_token.clone(), id, 0, 0).await,
        Err(RpcError::Application(ChatError::NoSuchFile(_)))
    ));
    let mut got = Vec::new();
    loop {
        let piece = bob
            .download(bob_token.clone(), id, got.len() as u64, 0)
            .await
            .unwrap();
        if piece.is_empty() {
            break;
        }
        got.extend_from_slice(&piece);
    }
    assert!(got == data, "the download differs");
    let middle = bob.download(bob_token.clone(), id, 1500, 0).await.unwrap();
    assert_eq!(&middle[..], &data[1500..2000]);
    let capped = bob
        .download(bob_token.clone(), id, 1500, 100)
        .await
        .unwrap();
    assert_eq!(&capped[..], &data[1500..1600]);
    // The message that carries it is in his inbox, once.
    let mut inbox = bob.inbox(bob_token.clone()).await.unwrap();
    let item = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut inbox))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let chat_api::InboxItem::Message(envelope) = item else {
        panic!("{item:?}")
    };
    assert_eq!((envelope.id, envelope.file), (id, Some(file.clone())));
    bob.ack(bob_token.clone(), vec![id]).await.unwrap();
    assert!(store.held_file(id).await.unwrap().is_none());
    assert!(matches!(
        bob.download(bob_token.clone(), id, 0, 0).await,
        Err(RpcError::Application(ChatError::NoSuchFile(_)))
    ));

    // A file whose bytes do not have the declared hash is deleted, not relayed.
    let bad = Uuid::new_v4();
    let lie = Attachment {
        name: "lie.bin".into(),
        size: 4,
        sha256: hex(&Sha256::digest(b"true")),
    };
    alice
        .upload_file(alice_token.clone(), bad, bob_id, lie)
        .await
        .unwrap();
    alice
        .upload_chunk(
            alice_token.clone(),
            bad,
            0,
            bytes::Bytes::from_static(b"fals"),
        )
        .await
        .unwrap();
    match alice
        .finish_upload(alice_token.clone(), bad, now_ms())
        .await
    {
        Err(RpcError::Application(ChatError::Invalid(message))) => {
            assert!(message.contains("SHA-256"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(store.held_file(bad).await.unwrap().is_none());
    // A name that is a path is refused before anything is held.
    let sneaky = Attachment {
        name: "../etc/passwd".into(),
        ..file
    };
    assert!(matches!(
        alice
            .upload_file(alice_token, Uuid::new_v4(), bob_id, sneaky)
            .await,
        Err(RpcError::Application(ChatError::Invalid(_)))
    ));
    server.shutdown(Duration::from_millis(100)).await;
}
