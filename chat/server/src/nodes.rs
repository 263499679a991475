//! Chat servers on one registry and one store reach each other: each registers itself as a node
//! of `chat.Signal` (with its server id), and a message relayed on one node to a user whose
//! session another node holds is stored, then that node is told to read it (`chat.Node`'s
//! `wake`), which it pushes to the user's open inbox. Events that are not stored (room and
//! friend events) reach users on other nodes through `push`, which only servers that know the
//! store's node secret may call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_api::{ChatError, InboxItem, Node, NodeClient, SignalClient};
use rpc_core::tls::ClientTls;
use rpc_core::{Backoff, Client, RpcError};
use rpc_registry::{Instance, Registration, Registry, ServiceKey};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::inbox::Live;
use crate::state::Shared;

/// How long telling another node to read a mailbox may take before the message is left stored
/// (its recipient reads it at the latest when their inbox opens again).
const WAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The metadata key of a node instance that names its server id.
const SERVER_ID: &str = "server";

/// `chat.Node` as this server serves it.
#[derive(Debug)]
pub(crate) struct NodeService {
    shared: Arc<Shared>,
}

impl NodeService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        NodeService { shared }
    }
}

impl Node for NodeService {
    async fn wake(&self, user: Uuid, seq: u64) -> bool {
        let Some(session) = self.shared.session_of(user) else {
            return false;
        };
        // The message must be in the store this server reads (servers that do not share a
        // store would otherwise each think the other delivered it).
        let stored = self
            .shared
            .store
            .mailbox(user, seq.saturating_sub(1), 1)
            .await
            .is_ok_and(|mailbox| mailbox.messages.first().is_some_and(|(s, _)| *s == seq));
        stored && session.inbox.push(Live::Wake)
    }

    async fn push(
        &self,
        node_secret: String,
        users: Vec<Uuid>,
        item: InboxItem,
    ) -> Result<u32, ChatError> {
        if !constant_time_eq(node_secret.as_bytes(), self.shared.node_secret.as_bytes()) {
            warn!("a push with a wrong node secret was refused");
            return Err(ChatError::Invalid(
                "wrong node secret: pushes come from chat servers on the same store".into(),
            ));
        }
        Ok(self.shared.push_local(&users, &item))
    }
}

/// Whether two byte strings are equal, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Shared {
    /// Pushes `item` to the open inboxes of those of `users` whose sessions this server holds;
    /// how many it reached.
    pub(crate) fn push_local(&self, users: &[Uuid], item: &InboxItem) -> u32 {
        let mut reached = 0;
        for user in users {
            let Some(session) = self.session_of(*user) else {
                continue;
            };
            if let InboxItem::Call(event) = item {
                // Keeps this server's view of its users' calls in step with the other side's.
                self.calls.observe(&session.sender(), event);
            }
            if session.inbox.push(Live::Item(item.clone())) {
                reached += 1;
            }
        }
        reached
    }

    /// Pushes `item` (not stored: a room or friend event) to the open inboxes of `users`,
    /// wherever their sessions are: here, or on the other nodes their presence names (all of
    /// those at once). How many inboxes it reached.
    pub(crate) async fn push_everywhere(&self, users: &[Uuid], item: &InboxItem) -> u32 {
        let mut here = Vec::new();
        let mut elsewhere: HashMap<String, Vec<Uuid>> = HashMap::new();
        for &user in users {
            match self.presence.node_of(user) {
                Some(node) if node != self.server_id && self.session_of(user).is_none() => {
                    elsewhere.entry(node).or_default().push(user);
                }
                _ => here.push(user),
            }
        }
        let reached = self.push_local(&here, item);
        let remote = elsewhere.into_iter().map(|(node, users)| async move {
            self.nodes
                .push(&*self.registry, &node, &self.node_secret, users, item)
                .await
        });
        reached + futures::future::join_all(remote).await.iter().sum::<u32>()
    }
}

/// Clients of the other nodes, by server id, made when first needed.
#[derive(Debug, Default)]
pub(crate) struct NodeLinks {
    clients: Mutex<HashMap<String, NodeClient<Client>>>,
    /// For nodes that advertise `tls://` or `wss://` endpoints.
    tls: Option<ClientTls>,
}

impl NodeLinks {
    pub(crate) fn new(tls: Option<ClientTls>) -> Self {
        NodeLinks {
            clients: Mutex::default(),
            tls,
        }
    }

    /// Tells the node with `server_id` that `user`'s mailbox has the new message `seq`;
    /// whether it pushed it to an open inbox.
    pub(crate) async fn wake(
        &self,
        registry: &dyn Registry,
        server_id: &str,
        user: Uuid,
        seq: u64,
    ) -> bool {
        let Some(client) = self.client(registry, server_id).await else {
            return false;
        };
        match client.wake(user, seq).await {
            Ok(pushed) => pushed,
            Err(e) => {
                debug!(node = server_id, %user, "waking another node: {e}");
                self.lock().remove(server_id);
                false
            }
        }
    }

    /// Asks the node with `server_id` to push `item` to those of `users` it holds; how many
    /// inboxes it reached (0 when the node cannot be reached: the item is not stored).
    pub(crate) async fn push(
        &self,
        registry: &dyn Registry,
        server_id: &str,
        node_secret: &str,
        users: Vec<Uuid>,
        item: &InboxItem,
    ) -> u32 {
        let Some(client) = self.client(registry, server_id).await else {
            return 0;
        };
        match client
            .push(node_secret.to_owned(), users, item.clone())
            .await
        {
            Ok(reached) => reached,
            Err(RpcError::Application(e)) => {
                warn!(node = server_id, "another node refused a push: {e}");
                0
            }
            Err(e) => {
                debug!(node = server_id, "pushing to another node: {e}");
                self.lock().remove(server_id);
                0
            }
        }
    }

    async fn client(&self, registry: &dyn Registry, server_id: &str) -> Option<NodeClient<Client>> {
        if let Some(client) = self.lock().get(server_id) {
            return Some(client.clone());
        }
        let key = ServiceKey::of::<SignalClient<Client>>();
        let nodes = tokio::time::timeout(WAKE_TIMEOUT, registry.discover(&key))
            .await
            .ok()?
            .ok()?;
        let endpoint = nodes
            .instances
            .iter()
            .find(|i| i.metadata.get(SERVER_ID).is_some_and(|id| id == server_id))?
            .endpoint
            .clone();
        let mut builder = Client::builder()
            .timeout(WAKE_TIMEOUT)
            .connect_timeout(WAKE_TIMEOUT);
        if let Some(tls) = &self.tls {
            builder = builder.tls(tls.clone());
        }
        let client = builder.connect_lazy(endpoint.as_str()).ok()?;
        let client = NodeClient::new(client);
        self.lock().insert(server_id.to_owned(), client.clone());
        Some(client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NodeClient<Client>>> {
        // Each change is one insert or remove: a poisoned lock is still consistent.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Registers this server as a node (instances of `chat.Signal` at `endpoints`, naming its
/// server id) in the registry, trying again with backoff while the registry cannot be reached,
/// until `stop`; then withdraws it.
pub(crate) async fn register_node(
    registry: Arc<dyn Registry>,
    server_id: String,
    endpoints: Vec<String>,
    ttl: Duration,
    stop: CancellationToken,
) {
    let key = ServiceKey::of::<SignalClient<Client>>();
    let instances: Vec<Instance> = endpoints
        .iter()
        .map(|endpoint| {
            Instance::new(key.clone(), endpoint.clone()).with_metadata(SERVER_ID, &server_id)
        })
        .collect();
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut attempt = 0;
    let registration = loop {
        match Registration::start(registry.clone(), instances.clone(), ttl).await {
            Ok(registration) => break registration,
            Err(e) => {
                warn!(
                    attempt,
                    "registering this node in the registry: {e}; trying again"
                );
                let wait = backoff
                    .delay(attempt, fastrand::f64())
                    .unwrap_or(Duration::from_secs(10));
                attempt += 1;
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    info!(endpoints = ?endpoints, "this node is registered as {key}");
    stop.cancelled().await;
    if let Err(e) = registration.withdraw().await {
        debug!("withdrawing this node from the registry: {e}");
    }
}
