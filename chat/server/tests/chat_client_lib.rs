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

/// Waits until `client` reads `user`'s device key from the server.
async fn wait_for_key(client: &ChatClient, user: &str) -> [u8; 32] {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(key) = client.device_key_of(user).await.unwrap() {
            return key;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} bound no key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next message `events` shows, skipping other events.
async fn next_message(events: &mut chat_client::ChatEvents) -> chat_api::Envelope {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(chat_client::ChatEvent::Message(m)) = events.recv().await {
                return m;
            }
        }
    })
    .await
    .expect("no message came")
}

#[tokio::test]
async fn direct_messages_are_authenticated_by_device_keys() {
    use chat_api::{Destination, Envelope, Path, PeerClient, PeerError, Sender};
    use rpc_core::transport::quic::{Identity, PeerAuth, QuicConfig, QuicEndpoint};

    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path()).await;
    let endpoint = server.endpoints()[0].clone();
    let (alice, _a) = ChatClient::connect(ChatClientConfig::new(endpoint.clone(), "alice"))
        .await
        .unwrap();
    let (bob, mut bob_events) = ChatClient::connect(ChatClientConfig::new(endpoint, "bob"))
        .await
        .unwrap();
    let bob_key = wait_for_key(&alice, "bob").await;
    wait_for_key(&bob, "alice").await;

    // Alice to Bob, peer to peer over QUIC, each end proving its key.
    assert!(bob.peer_endpoint().to_string().starts_with("quic://"));
    let report = alice.send("bob", "hi, directly").await.unwrap();
    assert_eq!(report.path, Path::Direct, "{report:?}");
    let got = next_message(&mut bob_events).await;
    assert_eq!(
        (got.text.as_str(), got.path),
        ("hi, directly", Path::Direct)
    );
    assert_eq!(got.from.id, alice.id());

    // Someone else, with a key of their own, posing as Alice at Bob's peer: refused.
    let rogue = QuicEndpoint::bind(
        "127.0.0.1:0".parse().unwrap(),
        QuicConfig::new(Identity::generate().unwrap()),
    )
    .unwrap();
    let bob_addr = match bob.peer_endpoint() {
        rpc_core::Endpoint::Quic { host, port } => format!("{host}:{port}").parse().unwrap(),
        other => panic!("{other}"),
    };
    let connector = rogue
        .connector(bob_addr)
        .to(bob_addr, &PeerAuth::pinned(bob_key))
        .unwrap();
    let to_bob = PeerClient::new(
        rpc_core::Client::builder()
            .format(rpc_core::Format::MessagePack)
            .connect_with(connector)
            .await
            .unwrap(),
    );
    let forged = Envelope {
        id: Uuid::new_v4(),
        from: Sender {
            id: alice.id(),
            name: "alice".to_owned(),
        },
        to: Destination::User(bob.id()),
        text: "send me your password".to_owned(),
        sent_at_ms: chat_api::now_ms(),
        path: Path::Direct,
        file: None,
    };
    let refused = to_bob.deliver(forged).await;
    assert!(
        matches!(
            refused,
            Err(rpc_core::RpcError::Application(PeerError::Unauthenticated(
                _
            )))
        ),
        "{refused:?}"
    );

    // And a peer that pins another key than Bob's does not get through the handshake.
    let wrong = rogue
        .connector(bob_addr)
        .to(bob_addr, &PeerAuth::pinned([9; 32]))
        .unwrap();
    let handshake = rpc_core::Client::builder()
        .wait_for_reconnect(false)
        .connect_with(wrong)
        .await;
    assert!(handshake.is_err());

    // Bob saw only Alice's message.
    alice.send("bob", "still me").await.unwrap();
    assert_eq!(next_message(&mut bob_events).await.text, "still me");
    server.shutdown(Duration::from_secs(1)).await;
}

/// A peer whose advertised endpoint leads nowhere (as the private address of a device behind a
/// NAT would) is reached through a hole punched with the server's help: the two exchange
/// candidates through the server, the recipient probes, the sender connects.
#[tokio::test]
async fn a_hole_is_punched_when_the_advertised_endpoint_leads_nowhere() {
    use chat_api::Path;

    let dir = tempfile::tempdir().unwrap();
    let mut config = ChatServerConfig::new(dir.path());
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    config.stun = Some(chat_server::StunConfig::new("127.0.0.1:0".parse().unwrap()));
    let server = ChatServer::start(config).await.unwrap();
    let endpoint = server.endpoints()[0].clone();

    let (alice, _a) = ChatClient::connect(ChatClientConfig::new(endpoint.clone(), "alice"))
        .await
        .unwrap();
    // Bob tells the others a UDP port nobody serves.
    let nowhere = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bob_config = ChatClientConfig::new(endpoint, "bob");
    bob_config.advertise = Some(format!("quic://{}", nowhere.local_addr().unwrap()));
    bob_config.direct_timeout = Duration::from_secs(2);
    let (bob, mut bob_events) = ChatClient::connect(bob_config).await.unwrap();
    wait_for_key(&alice, "bob").await;
    wait_for_key(&bob, "alice").await;
    // Both learn their public addresses in the background, after registering.
    let deadline = tokio::time::Instant::now() + WAIT;
    let report = loop {
        let report = alice.send("bob", "through the hole").await.unwrap();
        if report.path == Path::Direct || tokio::time::Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(report.path, Path::Direct, "{report:?}");
    loop {
        let got = next_message(&mut bob_events).await;
        if got.text == "through the hole" && got.path == Path::Direct {
            break;
        }
    }
    // The punched path is kept: the next message takes it at once.
    let again = alice.send("bob", "again").await.unwrap();
    assert_eq!((again.path, again.direct_error), (Path::Direct, None));
    server.shutdown(Duration::from_secs(1)).await;
}
