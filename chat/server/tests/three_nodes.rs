//! Three `chat-server` processes, nodes of one chat service on one etcd (presence and the list
//! of nodes) and one PostgreSQL (messages, identities, rooms), with `chat-client`s spread over
//! them: messages between users on different nodes arrive, every node sees everyone online,
//! a group and friends span the nodes, when one node is killed (`kill -9`) under load its
//! clients move to the others and every message whose send succeeded reaches its recipient
//! exactly once, and after the whole service restarts the friends and the group are as they
//! were.
//!
//! Needs the `etcd` feature (`cargo test --workspace --all-features`), the `etcd` binary and
//! PostgreSQL (`scripts/system-packages.sh`); without them it fails, it never skips.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../../rpc-registry/tests/support/etcd_server.rs"]
mod etcd_server;
#[path = "support/pg_server.rs"]
mod pg_server;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_api::{Access, ChatError, FriendState, Path};
use chat_client::{ChatClient, ChatClientConfig, ChatEvent, ChatEvents, ClientError, ClientState};
use etcd_server::EtcdServer;
use pg_server::PgServer;
use rpc_core::Endpoint;
use support::{Running, free_port};
use tokio::time::Instant;
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(20);
/// Users per node.
const PER_NODE: usize = 2;
/// The most messages each user sends under load.
const MAX_SENDS: usize = 400;

/// What each user's application was shown: how many times each message id.
type Shown = Arc<Mutex<HashMap<Uuid, u32>>>;

/// One user: its client, the node it started on, and what it was shown.
struct User {
    client: ChatClient,
    name: String,
    node: usize,
    shown: Shown,
}

/// Starts a node on a free port; returns it and its endpoint.
fn start_node(
    bin: &str,
    etcd: &EtcdServer,
    database: &str,
    data: &std::path::Path,
) -> (Running, Endpoint) {
    let listen = format!("tcp://127.0.0.1:{}", free_port());
    start_node_at(bin, etcd, database, data, listen)
}

/// Starts a node listening on `listen`.
fn start_node_at(
    bin: &str,
    etcd: &EtcdServer,
    database: &str,
    data: &std::path::Path,
    listen: String,
) -> (Running, Endpoint) {
    let registry = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
    let node = Running::start(
        bin,
        &[
            "--listen",
            &listen,
            "--store",
            database,
            "--registry",
            &registry,
            "--presence-ttl-secs",
            "3",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "chat-server listening on ",
    );
    // What it says after where it listens: where it keeps its data, then its presence.
    let said: Vec<String> = (0..2)
        .map(|_| node.lines.recv_timeout(WAIT).unwrap())
        .collect();
    assert!(
        said[0].starts_with("chat-server data in PostgreSQL"),
        "{said:?}"
    );
    assert!(
        said[1].starts_with("chat-server presence in etcd at 127.0.0.1:"),
        "{said:?}"
    );
    (node, listen.parse().unwrap())
}

/// A user that starts on `nodes[node]` and falls back on the others, sending through the
/// servers only (it advertises a closed port, so nobody reaches it directly).
async fn user(nodes: &[Endpoint], node: usize, name: String) -> User {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("tcp://{}", closed.local_addr().unwrap());
    let mut config = ChatClientConfig::new(nodes[node].clone(), name.clone());
    config.fallback_servers = (1..nodes.len())
        .map(|i| nodes[(node + i) % nodes.len()].clone())
        .collect();
    config.advertise = Some(closed);
    config.direct_timeout = Duration::from_millis(200);
    let (client, events) = ChatClient::connect(config).await.unwrap();
    let shown = Shown::default();
    tokio::spawn(count_messages(events, shown.clone()));
    User {
        client,
        name,
        node,
        shown,
    }
}

async fn count_messages(mut events: ChatEvents, shown: Shown) {
    while let Some(event) = events.recv().await {
        if let ChatEvent::Message(m) = event {
            *shown.lock().unwrap().entry(m.id).or_default() += 1;
        }
    }
}

/// Waits until every user in `to` was shown `id` (of the pairs in `sent`).
async fn wait_shown(users: &[User], sent: &[(Uuid, usize)], what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let missing = sent
            .iter()
            .filter(|(id, to)| !users[*to].shown.lock().unwrap().contains_key(id))
            .count();
        if missing == 0 {
            return;
        }
        if Instant::now() >= deadline {
            let missing: Vec<String> = sent
                .iter()
                .filter(|(id, to)| !users[*to].shown.lock().unwrap().contains_key(id))
                .map(|(id, to)| format!("{id} to {}", users[*to].name))
                .collect();
            panic!(
                "{what}: {} of {} messages sent were not received within {WAIT:?}: {missing:?}",
                missing.len(),
                sent.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every user still running sees every user online, through its own node.
async fn wait_everyone_online(users: &[User]) {
    let everyone: HashSet<&str> = users.iter().map(|u| u.name.as_str()).collect();
    let deadline = Instant::now() + WAIT;
    for user in users {
        loop {
            let online: HashSet<String> = match user.client.who().await {
                Ok(list) => list.into_iter().map(|u| u.name).collect(),
                Err(_) => HashSet::new(),
            };
            if everyone.iter().all(|name| online.contains(*name)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} (started on node {}) sees {online:?} online, not all of {everyone:?}",
                user.name,
                user.node
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_on_etcd_and_postgres_relay_share_presence_and_survive_a_kill() {
    let etcd = EtcdServer::start();
    let pg = PgServer::start();
    pg.create_database("chat").await;
    let database = pg.url("chat");
    let bin = env!("CARGO_BIN_EXE_chat-server");
    let data = tempfile::tempdir().unwrap();
    let (mut nodes, endpoints): (Vec<Running>, Vec<Endpoint>) = (0..3)
        .map(|i| {
            let dir = data.path().join(format!("node-{i}"));
            start_node(bin, &etcd, &database, &dir)
        })
        .unzip();

    // Users 0, 3 on node 0; 1, 4 on node 1; 2, 5 on node 2.
    let mut users = Vec::new();
    for i in 0..3 * PER_NODE {
        users.push(user(&endpoints, i % 3, format!("user-{i}")).await);
    }

    // Every node sees every user online, whichever node they registered on.
    wait_everyone_online(&users).await;

    // 1:1 messages between users on different nodes go through the servers and arrive.
    let mut sent = Vec::new();
    for (from, sender) in users.iter().enumerate() {
        for (to, recipient) in users.iter().enumerate() {
            if sender.node == recipient.node {
                continue;
            }
            let text = format!("{from} to {to}");
            let report = sender.client.send(&recipient.name, &text).await.unwrap();
            assert_eq!(report.path, Path::Relayed, "{text}: {report:?}");
            sent.push((report.id, to));
        }
    }
    wait_shown(&users, &sent, "across nodes").await;

    // A group across the three nodes: user-0 (node 0) makes it and adds user-1 (node 1), invites
    // user-2 (node 2), who joins; a post by any member reaches the others at once.
    users[0]
        .client
        .create_room("crew", Access::InviteOnly)
        .await
        .unwrap();
    users[0]
        .client
        .add_member("crew", &users[1].name)
        .await
        .unwrap();
    users[0]
        .client
        .invite("crew", &users[2].name)
        .await
        .unwrap();
    let outsider = users[5].client.join("crew").await;
    assert!(
        matches!(outsider, Err(ClientError::Chat(ChatError::NotInvited(_)))),
        "{outsider:?}"
    );
    let joined = users[2].client.join("crew").await.unwrap();
    assert_eq!(joined.member_count, 3);
    let post = users[1].client.post("crew", "hello crew").await.unwrap();
    wait_shown(&users, &[(post, 0), (post, 2)], "a group post across nodes").await;

    // Friends across nodes: user-0 asks user-1, who accepts; each sees the other online.
    let (_, state) = users[0]
        .client
        .request_friend(&users[1].name)
        .await
        .unwrap();
    assert_eq!(state, FriendState::RequestSent);
    users[1].client.accept_friend(&users[0].name).await.unwrap();
    let friends = users[0].client.friends().await.unwrap();
    assert_eq!(friends.len(), 1, "{friends:?}");
    assert_eq!(
        (
            friends[0].user.name.as_str(),
            friends[0].state,
            friends[0].online
        ),
        (users[1].name.as_str(), FriendState::Friends, true)
    );

    // Under load, node 0 is killed: every user keeps sending to users on other nodes.
    let users = Arc::new(users);
    let stop_sending = tokio_util::sync::CancellationToken::new();
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let senders: Vec<_> = (0..users.len())
        .map(|from| {
            let (users, stop, killed_at) = (users.clone(), stop_sending.clone(), killed_at.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let (mut failed, mut after_kill) = (0, 0);
                let others: Vec<usize> = (0..users.len())
                    .filter(|&to| users[to].node != users[from].node)
                    .collect();
                for n in 0..MAX_SENDS {
                    if stop.is_cancelled() {
                        break;
                    }
                    let to = others[n % others.len()];
                    let text = format!("load {from} to {to} #{n}");
                    match users[from].client.send(&users[to].name, &text).await {
                        Ok(report) => {
                            sent.push((report.id, to));
                            if killed_at.lock().unwrap().is_some() {
                                after_kill += 1;
                            }
                        }
                        Err(_) => failed += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (sent, failed, after_kill)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[0].process.0.kill().unwrap();
    *killed_at.lock().unwrap() = Some(Instant::now());

    // The killed node's users register again on the others.
    for user in users.iter().filter(|u| u.node == 0) {
        let mut state = user.client.watch_state();
        tokio::time::timeout(
            WAIT,
            state.wait_for(
                |s| matches!(s, ClientState::Online { reconnects, .. } if *reconnects >= 1),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{} is not online again within {WAIT:?}", user.name))
        .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_sending.cancel();

    let mut sent = Vec::new();
    let mut failed = 0;
    for (from, sender) in senders.into_iter().enumerate() {
        let (each, each_failed, after_kill) = tokio::time::timeout(WAIT, sender)
            .await
            .expect("the senders stop")
            .unwrap();
        assert!(
            after_kill > 0,
            "{} sent nothing successfully after node 0 was killed ({each_failed} failed)",
            users[from].name
        );
        sent.extend(each);
        failed += each_failed;
    }
    println!(
        "under load: {} messages sent successfully, {failed} sends failed",
        sent.len()
    );
    wait_shown(&users, &sent, "under load with node 0 killed").await;
    // Anything shown twice would have been by now, or soon after: give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut twice = Vec::new();
    for (id, to) in &sent {
        let times = users[*to].shown.lock().unwrap()[id];
        if times != 1 {
            twice.push((users[*to].name.clone(), *id, times));
        }
    }
    assert!(twice.is_empty(), "shown more than once: {twice:?}");

    // The two nodes left see everyone online again.
    wait_everyone_online(&users).await;

    // The whole service restarts: node 0 comes back where it was, then the other two stop.
    // Every client moves to node 0 by itself, and the friends and the group are as they were.
    let (restarted, _) = start_node_at(
        bin,
        &etcd,
        &database,
        &data.path().join("node-0"),
        endpoints[0].to_string(),
    );
    let reconnects_before: Vec<u32> = users
        .iter()
        .map(|user| match user.client.state() {
            ClientState::Online { reconnects, .. } => reconnects,
            _ => 0,
        })
        .collect();
    for node in nodes.iter_mut().skip(1) {
        node.stop_with("TERM", "chat-server");
    }
    nodes[0] = restarted;
    for (user, &reconnects) in users.iter().zip(&reconnects_before) {
        let mut state = user.client.watch_state();
        tokio::time::timeout(
            WAIT,
            state.wait_for(
                |s| matches!(s, ClientState::Online { reconnects: now, .. } if *now > reconnects),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{} is not back on node 0 within {WAIT:?}", user.name))
        .unwrap();
    }
    let friends = users[1].client.friends().await.unwrap();
    assert_eq!(
        friends
            .iter()
            .map(|f| (f.user.name.as_str(), f.state))
            .collect::<Vec<_>>(),
        [(users[0].name.as_str(), FriendState::Friends)]
    );
    let crew = users[2].client.my_rooms().await.unwrap();
    assert_eq!(crew.len(), 1, "{crew:?}");
    assert_eq!(
        (crew[0].name.as_str(), crew[0].member_count, crew[0].owner),
        ("crew", 3, users[0].client.id())
    );
    let after = users[2].client.post("crew", "still here").await.unwrap();
    wait_shown(
        &users,
        &[(after, 0), (after, 1)],
        "a group post after the restart",
    )
    .await;

    for user in users.iter() {
        user.client.close().await;
    }
    nodes[0].stop_with("TERM", "chat-server");
}
