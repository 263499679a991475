//! Several chat servers sharing one registry: each registers itself as a node of `chat.Signal`,
//! and a client given more than one node moves to another when its node goes away.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use chat_client::{ChatClient, ChatClientConfig};
use chat_server::{ChatServer, ChatServerConfig};
use rpc_registry::{MemoryRegistry, Registry, ServiceKey};

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(20);

async fn node(dir: &std::path::Path, registry: &Arc<dyn Registry>) -> ChatServer {
    let mut config = ChatServerConfig::new(dir).with_presence_ttl(Duration::from_secs(2));
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.registry = Some(registry.clone());
    ChatServer::start(config).await.unwrap()
}

async fn nodes_listed(registry: &Arc<dyn Registry>) -> Vec<String> {
    let key = ServiceKey::new("chat.Signal").with_version("1");
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
