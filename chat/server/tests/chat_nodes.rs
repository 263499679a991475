//! Several chat servers sharing one registry: each registers itself as a node of `chat.Signal`,
//! a client given more than one node moves to another when its node goes away, and a message
//! relayed on one node to a user online on another reaches them at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use chat_api::{
    ChatError, Delivery, InboxItem, NodeClient, RegisterRequest, RoomEvent, Sender, Session,
    SignalClient,
};
use chat_client::{ChatClient, ChatClientConfig};
use chat_server::store::{RedbStore, Store};
use chat_server::{ChatServer, ChatServerConfig};
use futures::StreamExt;
use rpc_core::{Client, RpcError};
use rpc_registry::{MemoryRegistry, Registry, ServiceKey};
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(20);

async fn node(dir: &std::path::Path, registry: &Arc<dyn Registry>) -> ChatServer {
    let mut config = ChatServerConfig::new(dir).with_presence_ttl(Duration::from_secs(2));
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.registry = Some(registry.clone());
    ChatServer::start(config).await.unwrap()
}

async fn nodes_listed(registry: &Arc<dyn Registry>) -> Vec<String> {
    let key = ServiceKey::new("chat.Signal").with_version("2");
    let mut listed: Vec<String> = registry
        .discover(&key)
        .await
        .unwrap()
        .instances
        .into_iter()
        .map(|i| i.endpoint)
        .collect();
    listed.sort();
    listed
}

#[tokio::test]
async fn a_client_moves_to_another_node_when_its_node_goes_away() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(dir_a.path(), &registry).await;
    let b = node(dir_b.path(), &registry).await;
    let (a_endpoint, b_endpoint) = (a.endpoints()[0].clone(), b.endpoints()[0].clone());

    // Each node is listed in the registry under its real endpoint.
    let mut expected = vec![a_endpoint.to_string(), b_endpoint.to_string()];
    expected.sort();
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes_listed(&registry).await != expected {
        assert!(tokio::time::Instant::now() < deadline, "both nodes listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut config = ChatClientConfig::new(a_endpoint.clone(), "wanderer");
    config.fallback_servers = vec![b_endpoint.clone()];
    config.call_timeout = Duration::from_secs(2);
    let (client, _events) = ChatClient::connect(config).await.unwrap();
    let me = client.id();
    assert!(client.state().is_online(), "{:?}", client.state());

    // Node a goes away (and is withdrawn from the registry): the client registers on b.
    a.shutdown(Duration::from_millis(200)).await;
    assert_eq!(nodes_listed(&registry).await, vec![b_endpoint.to_string()]);
    let mut state = client.watch_state();
    tokio::time::timeout(WAIT, async {
        loop {
            let seen_on_b = b.online_count() > 0;
            if seen_on_b && state.borrow().is_online() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), state.changed()).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the client is online on node b: {:?}", client.state()));
    let user = client.lookup(&me.to_string()).await.unwrap();
    assert_eq!(user.name, "wanderer");

    client.close().await;
    b.shutdown(Duration::from_millis(200)).await;
    assert!(nodes_listed(&registry).await.is_empty(), "b withdrew too");
}

#[tokio::test]
async fn a_client_that_finds_its_nodes_in_the_registry_moves_when_its_node_goes_away() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(dir_a.path(), &registry).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while nodes_listed(&registry).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "a is listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The configured server is nowhere: the registry's list is what the client uses.
    let nowhere = "tcp://127.0.0.1:1".parse().unwrap();
    let mut config = ChatClientConfig::new(nowhere, "finder");
    config.registry = Some(registry.clone());
    config.call_timeout = Duration::from_secs(2);
    let (client, _events) = ChatClient::connect(config).await.unwrap();
    assert_eq!(a.online_count(), 1);

    // A second node comes up, the first goes away: the client registers on the second.
    let b = node(dir_b.path(), &registry).await;
    while nodes_listed(&registry).await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "b is listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.shutdown(Duration::from_millis(200)).await;
    let mut state = client.watch_state();
    tokio::time::timeout(WAIT, async {
        while !(b.online_count() > 0 && state.borrow().is_online()) {
            let _ = tokio::time::timeout(Duration::from_millis(50), state.changed()).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the client is online on node b: {:?}", client.state()));
    // Node a is gone: a call that succeeds went to node b.
    let me = client.lookup(&client.id().to_string()).await.unwrap();
    assert_eq!(me.name, "finder");
    client.close().await;
    b.shutdown(Duration::from_millis(200)).await;
}

async fn shared_node(
    dir: &std::path::Path,
    registry: &Arc<dyn Registry>,
    store: &Arc<dyn Store>,
) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.registry = Some(registry.clone());
    config.store = Some(store.clone());
    ChatServer::start(config).await.unwrap()
}

async fn register(server: &ChatServer, name: &str) -> (SignalClient<Client>, Session) {
    let api = SignalClient::new(Client::connect(&server.endpoints()[0]).await.unwrap());
    let session = api
        .register(RegisterRequest {
            id: Uuid::new_v4(),
            name: name.into(),
            secret: format!("the secret of {name}"),
            endpoint: None,
        })
        .await
        .unwrap();
    (api, session)
}

#[tokio::test]
async fn a_message_relayed_on_one_node_reaches_a_user_online_on_another_at_once() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("chat.redb")).unwrap());
    let a = shared_node(dir.path(), &registry, &store).await;
    let b = shared_node(dir.path(), &registry, &store).await;
    let (alice, alice_session) = register(&a, "alice").await;
    let (bob, bob_session) = register(&b, "bob").await;
    let mut inbox = bob.inbox(bob_session.token.clone()).await.unwrap();
    // Node a sees bob online (through the registry) before alice writes to him.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.online_count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "a sees bob");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let id = Uuid::new_v4();
    let delivery = alice
        .relay(
            alice_session.token.clone(),
            id,
            bob_session.user.id,
            "across nodes".into(),
            0,
        )
        .await
        .unwrap();
    assert_eq!(delivery, Delivery::Delivered);
    let item = tokio::time::timeout(WAIT, inbox.next())
        .await
        .expect("the message arrives")
        .unwrap()
        .unwrap();
    let InboxItem::Message(envelope) = item else {
        panic!("{item:?}")
    };
    assert_eq!((envelope.id, envelope.text.as_str()), (id, "across nodes"));

    // Sent again (its answer lost), it is not delivered twice; a second message follows it.
    let again = alice
        .relay(
            alice_session.token.clone(),
            id,
            bob_session.user.id,
            "across nodes".into(),
            0,
        )
        .await
        .unwrap();
    assert_eq!(again, Delivery::Delivered);
    let second = Uuid::new_v4();
    alice
        .relay(
            alice_session.token,
            second,
            bob_session.user.id,
            "second".into(),
            0,
        )
        .await
        .unwrap();
    let next = tokio::time::timeout(WAIT, inbox.next())
        .await
        .expect("the second message arrives")
        .unwrap()
        .unwrap();
    assert!(
        matches!(&next, InboxItem::Message(e) if e.id == second),
        "{next:?}"
    );

    a.shutdown(Duration::from_millis(200)).await;
    b.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_push_without_the_stores_node_secret_is_refused_and_pushes_nothing() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("chat.redb")).unwrap());
    let a = shared_node(dir.path(), &registry, &store).await;
    let (bob, bob_session) = register(&a, "bob").await;
    let mut inbox = bob.inbox(bob_session.token.clone()).await.unwrap();
    let node = NodeClient::new(Client::connect(&a.endpoints()[0]).await.unwrap());
    let forged = InboxItem::Room(RoomEvent::Joined {
        room: "lobby".into(),
        user: Sender {
            id: Uuid::new_v4(),
            name: "mallory".into(),
        },
    });

    let refused = node
        .push("a guess".into(), vec![bob_session.user.id], forged.clone())
        .await;
    assert!(
        matches!(&refused, Err(RpcError::Application(ChatError::Invalid(why))) if why.contains("node secret")),
        "{refused:?}"
    );
    // With the store's secret (as another node on the same store has it) the item arrives.
    let secret = store.node_secret().await.unwrap();
    let reached = node
        .push(secret, vec![bob_session.user.id], forged.clone())
        .await
        .unwrap();
    assert_eq!(reached, 1);
    let item = tokio::time::timeout(WAIT, inbox.next())
        .await
        .expect("the pushed item arrives")
        .unwrap()
        .unwrap();
    // The refused one never arrived: the first item is the one pushed with the secret.
    assert_eq!(item, forged);
    a.shutdown(Duration::from_millis(200)).await;
}
