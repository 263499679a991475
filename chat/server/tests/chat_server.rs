//! The chat server over real TCP on 127.0.0.1: registration and identity, presence and expiry,
//! relay with store-and-forward and acknowledgements, rooms, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::io::Write;
use std::path::Path as FsPath;
use std::time::Duration;

use chat_api::{
    Access, ChatError, Delivery, Destination, Envelope, InboxItem, MAX_TEXT_BYTES, Membership,
    Path, PresenceEvent, RegisterRequest, RoomEvent, Sender, Session, SignalClient, now_ms,
};
use chat_server::{ChatServer, ChatServerConfig};
use futures::StreamExt;
use rpc_core::{Client, RpcError, RpcStream};
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(10);

async fn start(dir: &FsPath, configure: impl FnOnce(&mut ChatServerConfig)) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    configure(&mut config);
    ChatServer::start(config).await.unwrap()
}

/// A user with their own connection (so each has their own observed address).
struct User {
    api: SignalClient<Client>,
    id: Uuid,
    name: String,
    secret: String,
    session: Session,
}

impl User {
    async fn connect(server: &ChatServer) -> SignalClient<Client> {
        let client = Client::builder()
            .connect(&server.endpoints()[0])
            .await
            .unwrap();
        SignalClient::new(client)
    }

    async fn register(server: &ChatServer, name: &str) -> User {
        Self::register_as(server, Uuid::new_v4(), name, &format!("secret of {name}")).await
    }

    async fn register_as(server: &ChatServer, id: Uuid, name: &str, secret: &str) -> User {
        let api = Self::connect(server).await;
        let session = api
            .register(RegisterRequest {
                id,
                name: name.into(),
                secret: secret.into(),
                endpoint: Some(format!("tcp://10.0.0.1:{}", 7000 + name.len())),
            })
            .await
            .unwrap();
        User {
            api,
            id,
            name: name.into(),
            secret: secret.into(),
            session,
        }
    }

    /// Registers again (a new session, same identity) on a new connection.
    async fn reconnect(&self, server: &ChatServer) -> User {
        Self::register_as(server, self.id, &self.name, &self.secret).await
    }

    fn token(&self) -> String {
        self.session.token.clone()
    }

    fn sender(&self) -> Sender {
        Sender {
            id: self.id,
            name: self.name.clone(),
        }
    }

    async fn relay(&self, id: Uuid, to: &User, text: &str) -> Delivery {
        self.api
            .relay(self.token(), id, to.id, text.into(), now_ms())
            .await
            .unwrap()
    }

    async fn inbox(&self) -> RpcStream<InboxItem> {
        self.api.inbox(self.token()).await.unwrap()
    }

    async fn presence(&self) -> RpcStream<PresenceEvent> {
        self.api.presence(self.token()).await.unwrap()
    }
}

async fn next<T: serde::de::DeserializeOwned>(stream: &mut RpcStream<T>) -> T {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("nothing arrived in time")
        .expect("the stream ended")
        .expect("the stream failed")
}

async fn next_message(inbox: &mut RpcStream<InboxItem>) -> Envelope {
    match next(inbox).await {
        InboxItem::Message(envelope) => envelope,
        other => panic!("expected a message, got {other:?}"),
    }
}

fn app_error<T: std::fmt::Debug>(result: Result<T, RpcError<ChatError>>) -> ChatError {
    match result {
        Err(RpcError::Application(e)) => e,
        other => panic!("expected a chat error, got {other:?}"),
    }
}

#[tokio::test]
async fn register_returns_the_observed_address_and_users_can_be_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;

    let me = &alice.session.user;
    assert!(me.observed.starts_with("127.0.0.1:"), "{}", me.observed);
    assert_eq!(me.advertised.as_deref(), Some("tcp://10.0.0.1:7005"));
    assert_ne!(me.observed, bob.session.user.observed);
    assert_eq!(alice.session.presence_ttl_ms, 10_000);
    assert_eq!(alice.session.heartbeat_ms, 3_333);

    let by_name = alice.api.lookup(alice.token(), "bob".into()).await.unwrap();
    assert_eq!(by_name, bob.session.user);
    let by_case = alice.api.lookup(alice.token(), "BOB".into()).await.unwrap();
    assert_eq!(by_case, bob.session.user);
    let by_id = alice.api.lookup(alice.token(), bob.id.to_string()).await;
    assert_eq!(by_id.unwrap(), bob.session.user);
    let online = alice
        .api
        .online(alice.token(), None, 0)
        .await
        .unwrap()
        .items;
    assert_eq!(
        online,
        vec![alice.session.user.clone(), bob.session.user.clone()]
    );
    let nobody = alice.api.lookup(alice.token(), "carol".into()).await;
    assert_eq!(app_error(nobody), ChatError::UnknownUser("carol".into()));

    // Offline users are found by id only, without addresses.
    bob.api.leave(bob.token()).await.unwrap();
    let gone = alice.api.lookup(alice.token(), "bob".into()).await;
    assert!(matches!(app_error(gone), ChatError::UnknownUser(_)));
    let offline = alice
        .api
        .lookup(alice.token(), bob.id.to_string())
        .await
        .unwrap();
    assert_eq!((offline.name.as_str(), offline.advertised), ("bob", None));
    let online = alice
        .api
        .online(alice.token(), None, 0)
        .await
        .unwrap()
        .items;
    assert_eq!(online, vec![alice.session.user.clone()]);
    assert_eq!(
        app_error(bob.api.heartbeat(bob.token()).await),
        ChatError::NoSession
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn presence_stream_starts_with_who_is_online_then_joins_and_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let mut presence = alice.presence().await;
    assert_eq!(
        next(&mut presence).await,
        PresenceEvent::Online {
            users: vec![alice.session.user.clone()],
            more: false
        }
    );
    let bob = User::register(&server, "bob").await;
    assert_eq!(
        next(&mut presence).await,
        PresenceEvent::Joined(bob.session.user.clone())
    );
    bob.api.leave(bob.token()).await.unwrap();
    assert_eq!(
        next(&mut presence).await,
        PresenceEvent::Left(bob.session.user.clone())
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_client_that_stops_heartbeating_is_dropped_after_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| {
        *c = c.clone().with_presence_ttl(Duration::from_millis(1500));
    })
    .await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    assert_eq!(alice.session.heartbeat_ms, 500);
    alice.api.join(alice.token(), "lobby".into()).await.unwrap();
    bob.api.join(bob.token(), "lobby".into()).await.unwrap();
    let mut inbox = alice.inbox().await;
    let mut presence = alice.presence().await;
    assert!(
        matches!(next(&mut presence).await, PresenceEvent::Online { users, more: false } if users.len() == 2)
    );

    // Alice heartbeats; Bob has gone silent.
    let heart = alice.api.clone();
    let token = alice.token();
    let beating = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            heart.heartbeat(token.clone()).await.unwrap();
        }
    });
    assert_eq!(
        next(&mut presence).await,
        PresenceEvent::Left(bob.session.user.clone())
    );
    assert_eq!(
        app_error(bob.api.heartbeat(bob.token()).await),
        ChatError::NoSession
    );
    // Bob is still a member of the room: membership outlasts the session, so the room is told
    // nothing (alice's next item is her own post) and lists him.
    let post = Uuid::new_v4();
    alice
        .api
        .post(
            alice.token(),
            "lobby".into(),
            post,
            "still there?".into(),
            0,
        )
        .await
        .unwrap();
    assert_eq!(next_message(&mut inbox).await.id, post);
    let members = alice.api.members(alice.token(), "lobby".into(), None, 0);
    assert_eq!(
        members.await.unwrap().items,
        vec![alice.sender(), bob.sender()]
    );
    let online = alice
        .api
        .online(alice.token(), None, 0)
        .await
        .unwrap()
        .items;
    assert_eq!(online, vec![alice.session.user.clone()]);
    beating.abort();
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_message_relayed_twice_to_an_online_user_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let mut inbox = bob.inbox().await;

    let first = Uuid::new_v4();
    assert_eq!(alice.relay(first, &bob, "hello").await, Delivery::Delivered);
    assert_eq!(alice.relay(first, &bob, "hello").await, Delivery::Delivered);
    let second = Uuid::new_v4();
    assert_eq!(
        alice.relay(second, &bob, "again").await,
        Delivery::Delivered
    );

    let got = next_message(&mut inbox).await;
    assert_eq!(got.id, first);
    assert_eq!(got.from, alice.sender());
    assert_eq!(got.to, Destination::User(bob.id));
    assert_eq!((got.text.as_str(), got.path), ("hello", Path::Relayed));
    // The next one is the second message, not the first again.
    assert_eq!(next_message(&mut inbox).await.id, second);
    // Acknowledged, then relayed once more: still not delivered again.
    bob.api.ack(bob.token(), vec![first]).await.unwrap();
    assert_eq!(alice.relay(first, &bob, "hello").await, Delivery::Delivered);
    let third = Uuid::new_v4();
    alice.relay(third, &bob, "third").await;
    assert_eq!(next_message(&mut inbox).await.id, third);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn messages_to_an_offline_user_are_stored_and_delivered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    bob.api.leave(bob.token()).await.unwrap();

    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            alice.relay(*id, &bob, &format!("m{i}")).await,
            Delivery::Stored
        );
    }
    let bob = bob.reconnect(&server).await;
    let mut inbox = bob.inbox().await;
    for (i, id) in ids.iter().enumerate() {
        let got = next_message(&mut inbox).await;
        assert_eq!(
            (got.id, got.text, got.path),
            (*id, format!("m{i}"), Path::Stored)
        );
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn acknowledged_messages_are_deleted_and_the_rest_redelivered() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let (one, two) = (Uuid::new_v4(), Uuid::new_v4());
    alice.relay(one, &bob, "one").await;
    alice.relay(two, &bob, "two").await;

    let mut inbox = bob.inbox().await;
    assert_eq!(next_message(&mut inbox).await.id, one);
    assert_eq!(next_message(&mut inbox).await.id, two);
    bob.api.ack(bob.token(), vec![one]).await.unwrap();

    // A new inbox replaces the old one and delivers what was not acknowledged.
    let mut inbox = bob.inbox().await;
    assert_eq!(next_message(&mut inbox).await.id, two);
    bob.api.ack(bob.token(), vec![two]).await.unwrap();

    let mut inbox = bob.inbox().await;
    let marker = Uuid::new_v4();
    alice.relay(marker, &bob, "marker").await;
    assert_eq!(next_message(&mut inbox).await.id, marker);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn stored_messages_and_identities_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    bob.api.leave(bob.token()).await.unwrap();
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        assert_eq!(alice.relay(*id, &bob, "kept").await, Delivery::Stored);
    }
    server.shutdown(Duration::from_secs(1)).await;

    let server = start(dir.path(), |_| {}).await;
    let thief = User::connect(&server).await;
    let stolen = thief
        .register(RegisterRequest {
            id: bob.id,
            name: "bob".into(),
            secret: "guess".into(),
            endpoint: None,
        })
        .await;
    assert_eq!(app_error(stolen), ChatError::WrongSecret(bob.id));
    let bob = bob.reconnect(&server).await;
    let mut inbox = bob.inbox().await;
    for id in &ids {
        assert_eq!(next_message(&mut inbox).await.id, *id);
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn rooms_tell_their_members_of_joins_leaves_and_posts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.room_history = 3).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let carol = User::register(&server, "carol").await;
    let dave = User::register(&server, "dave").await;
    let mut a = alice.inbox().await;
    let mut b = bob.inbox().await;
    let mut c = carol.inbox().await;
    let joined = |u: &User| {
        InboxItem::Room(RoomEvent::Joined {
            room: "lobby".into(),
            user: u.sender(),
        })
    };

    let info = alice
        .api
        .create_room(alice.token(), "lobby".into(), Access::Open)
        .await
        .unwrap();
    assert_eq!(info.member_count, 1);
    assert_eq!(next(&mut a).await, joined(&alice));
    let again = bob
        .api
        .create_room(bob.token(), "lobby".into(), Access::Open)
        .await;
    assert_eq!(app_error(again), ChatError::RoomExists("lobby".into()));
    bob.api.join(bob.token(), "lobby".into()).await.unwrap();
    let info = carol.api.join(carol.token(), "lobby".into()).await.unwrap();
    assert_eq!(info.member_count, 3);
    let members = carol.api.members(carol.token(), "lobby".into(), None, 0);
    assert_eq!(
        members.await.unwrap().items,
        vec![alice.sender(), bob.sender(), carol.sender()]
    );
    assert_eq!(next(&mut a).await, joined(&bob));
    assert_eq!(next(&mut a).await, joined(&carol));
    assert_eq!(next(&mut b).await, joined(&bob));
    assert_eq!(next(&mut b).await, joined(&carol));
    assert_eq!(next(&mut c).await, joined(&carol));

    let posts: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for (i, id) in posts.iter().enumerate() {
        let text = format!("post {i}");
        alice
            .api
            .post(alice.token(), "lobby".into(), *id, text, now_ms())
            .await
            .unwrap();
    }
    for inbox in [&mut a, &mut b, &mut c] {
        for id in &posts {
            let got = next_message(inbox).await;
            assert_eq!((got.id, got.path), (*id, Path::Room));
            assert_eq!(got.to, Destination::Room("lobby".into()));
        }
    }
    let outsider = dave
        .api
        .post(dave.token(), "lobby".into(), Uuid::new_v4(), "hi".into(), 0);
    assert_eq!(
        app_error(outsider.await),
        ChatError::NotAMember("lobby".into())
    );

    carol
        .api
        .leave_room(carol.token(), "lobby".into())
        .await
        .unwrap();
    let left = InboxItem::Room(RoomEvent::Left {
        room: "lobby".into(),
        user: carol.sender(),
    });
    assert_eq!(next(&mut a).await, left);
    assert_eq!(next(&mut b).await, left);
    let last = Uuid::new_v4();
    bob.api
        .post(bob.token(), "lobby".into(), last, "bye".into(), 0)
        .await
        .unwrap();
    assert_eq!(next_message(&mut a).await.id, last);
    assert_eq!(next_message(&mut b).await.id, last);
    // Carol saw neither her own leave nor the post after it: her next item is this.
    let direct = Uuid::new_v4();
    alice.relay(direct, &carol, "psst").await;
    assert_eq!(next_message(&mut c).await.id, direct);

    let history = alice
        .api
        .history(alice.token(), "lobby".into(), None, 0)
        .await
        .unwrap();
    let kept: Vec<Uuid> = history.items.iter().map(|e| e.id).collect();
    assert_eq!(kept, vec![posts[3], posts[4], last]);
    // The history and the members are for members only; the open room is listed to all.
    let history = dave.api.history(dave.token(), "lobby".into(), None, 0);
    assert_eq!(
        app_error(history.await),
        ChatError::NotAMember("lobby".into())
    );
    let members = dave.api.members(dave.token(), "lobby".into(), None, 0);
    assert_eq!(
        app_error(members.await),
        ChatError::NotAMember("lobby".into())
    );
    let rooms = dave.api.rooms(dave.token(), None, 0).await.unwrap();
    assert_eq!(rooms.items.len(), 1);
    assert_eq!(rooms.items[0].member_count, 2);
    assert_eq!(rooms.items[0].membership, Membership::Outsider);
    let members = alice.api.members(alice.token(), "lobby".into(), None, 0);
    assert_eq!(
        members.await.unwrap().items,
        vec![alice.sender(), bob.sender()]
    );
    let unknown = dave
        .api
        .history(dave.token(), "attic".into(), None, 0)
        .await;
    assert_eq!(app_error(unknown), ChatError::UnknownRoom("attic".into()));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn nobody_can_take_over_another_users_id_or_online_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let thief = User::connect(&server).await;
    let request = |id, name: &str, secret: &str| RegisterRequest {
        id,
        name: name.into(),
        secret: secret.into(),
        endpoint: None,
    };
    let stolen = thief.register(request(alice.id, "alice", "guess")).await;
    assert_eq!(app_error(stolen), ChatError::WrongSecret(alice.id));
    // Alice's session is untouched.
    alice.api.heartbeat(alice.token()).await.unwrap();
    let taken = thief
        .register(request(Uuid::new_v4(), "Alice", "mine"))
        .await;
    assert_eq!(app_error(taken), ChatError::NameTaken("Alice".into()));

    // The right secret opens a new session and retires the old token.
    let again = alice.reconnect(&server).await;
    assert_eq!(
        app_error(alice.api.heartbeat(alice.token()).await),
        ChatError::NoSession
    );
    again.api.heartbeat(again.token()).await.unwrap();
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let api = User::connect(&server).await;
    let request = |name: &str, secret: &str, endpoint: Option<&str>| RegisterRequest {
        id: Uuid::new_v4(),
        name: name.into(),
        secret: secret.into(),
        endpoint: endpoint.map(Into::into),
    };
    let too_long = "x".repeat(33);
    for bad in [
        request("", "s", None),
        request(&too_long, "s", None),
        request("bell\u{7}", "s", None),
        request(" padded", "s", None),
        request("ok", "", None),
        request("ok", "s", Some("not an endpoint")),
    ] {
        let refused = api.register(bad.clone()).await;
        assert!(
            matches!(app_error(refused), ChatError::Invalid(_)),
            "{bad:?}"
        );
    }
    let huge = "x".repeat(MAX_TEXT_BYTES + 1);
    let refused = alice
        .api
        .relay(alice.token(), Uuid::new_v4(), bob.id, huge, 0)
        .await;
    assert!(matches!(app_error(refused), ChatError::Invalid(_)));
    let empty = alice
        .api
        .relay(alice.token(), Uuid::new_v4(), bob.id, String::new(), 0)
        .await;
    assert!(matches!(app_error(empty), ChatError::Invalid(_)));
    let stranger = Uuid::new_v4();
    let refused = alice
        .api
        .relay(alice.token(), Uuid::new_v4(), stranger, "hi".into(), 0)
        .await;
    assert_eq!(
        app_error(refused),
        ChatError::UnknownUser(stranger.to_string())
    );
    let many = vec![Uuid::new_v4(); 5000];
    assert!(matches!(
        app_error(alice.api.ack(alice.token(), many).await),
        ChatError::Invalid(_)
    ));
    let room = alice.api.join(alice.token(), "\n".into()).await;
    assert!(matches!(app_error(room), ChatError::Invalid(_)));
    let nobody = alice.api.online("forged".into(), None, 0).await;
    assert_eq!(app_error(nobody), ChatError::NoSession);
    // Streams carry their errors as messages.
    let forged = match api.inbox("forged".into()).await {
        Err(e) => e,
        Ok(mut stream) => stream.next().await.expect("an error").unwrap_err(),
    };
    assert_eq!(
        forged,
        RpcError::Application(ChatError::NoSession.to_string())
    );

    // A body over the server's frame limit: that connection is refused, nobody else notices.
    let flood = User::connect(&server).await;
    let giant = "x".repeat(ChatServerConfig::DEFAULT_MAX_FRAME_LEN + 1);
    assert!(
        flood
            .relay("t".into(), Uuid::new_v4(), bob.id, giant, 0)
            .await
            .is_err()
    );
    // Bytes that are no frame at all: the connection is closed, nobody else notices.
    let addr = server.endpoints()[0].to_string();
    let mut raw = std::net::TcpStream::connect(addr.trim_start_matches("tcp://")).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n")
        .unwrap();

    let delivered = alice.relay(Uuid::new_v4(), &bob, "still here").await;
    assert_eq!(delivered, Delivery::Stored);
    let carol = User::register(&server, "carol").await;
    assert_eq!(
        carol
            .api
            .online(carol.token(), None, 0)
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn presence_through_a_registry_server_is_shared_and_expires() {
    use std::sync::Arc;

    use rpc_registry::{MemoryRegistry, RegistryApiServer, RegistryService, RemoteRegistry};

    let registry = rpc_core::Server::builder()
        .service(RegistryApiServer::new(RegistryService::new(Arc::new(
            MemoryRegistry::new(),
        ))))
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let registry_endpoint = registry.local_endpoints()[0].clone();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let remote = |c: &mut ChatServerConfig| {
        *c = c.clone().with_presence_ttl(Duration::from_secs(1));
        c.registry = Some(Arc::new(
            RemoteRegistry::connect_lazy(&registry_endpoint).unwrap(),
        ));
    };
    let east = start(dir_a.path(), remote).await;
    let west = start(dir_b.path(), remote).await;

    let alice = User::register(&east, "alice").await;
    let mut presence = alice.presence().await;
    assert!(
        matches!(next(&mut presence).await, PresenceEvent::Online { users, more: false } if users.len() == 1)
    );
    // Bob registers on the other server and never heartbeats.
    let bob = User::register(&west, "bob").await;
    let heart = alice.api.clone();
    let token = alice.token();
    let beating = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            heart.heartbeat(token.clone()).await.unwrap();
        }
    });
    assert_eq!(
        next(&mut presence).await,
        PresenceEvent::Joined(bob.session.user.clone())
    );
    let found = alice.api.lookup(alice.token(), "bob".into()).await.unwrap();
    assert_eq!(found, bob.session.user);
    assert_eq!(
        next(&mut presence).await,
        PresenceEvent::Left(bob.session.user.clone())
    );
    assert_eq!(
        app_error(bob.api.heartbeat(bob.token()).await),
        ChatError::NoSession
    );
    beating.abort();
    east.shutdown(Duration::from_secs(1)).await;
    west.shutdown(Duration::from_secs(1)).await;
    registry.shutdown(Duration::from_secs(1)).await;
}

/// A `chat-server` process, killed (SIGKILL) when dropped.
struct Process(std::process::Child, rpc_core::Endpoint);

impl Process {
    fn start(dir: &FsPath) -> Process {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
            .args(["--listen", "tcp://127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let endpoint = line.trim().strip_prefix("chat-server listening on ");
        let endpoint = endpoint.expect(&line).parse().unwrap();
        // Keep reading, so that the server never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Process(child, endpoint)
    }

    /// Registers a user on its own connection; returns the client and the session's token.
    async fn register(&self, id: Uuid, name: &str) -> (SignalClient<Client>, String) {
        let api = SignalClient::new(Client::builder().connect(&self.1).await.unwrap());
        let request = RegisterRequest {
            id,
            name: name.into(),
            secret: format!("secret of {name}"),
            endpoint: None,
        };
        let session = api.register(request).await.unwrap();
        (api, session.token)
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn relayed_messages_survive_a_kill_9_of_the_server_process() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let server = Process::start(dir.path());
    let (bob_api, token) = server.register(bob, "bob").await;
    bob_api.leave(token).await.unwrap();
    let (alice_api, token) = server.register(alice, "alice").await;
    let ids: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        let delivery = alice_api
            .relay(token.clone(), *id, bob, "durable".into(), 0)
            .await;
        assert_eq!(delivery.unwrap(), Delivery::Stored);
    }
    // Killed the moment the last relay returned: no shutdown, no flush.
    server.kill();

    let server = Process::start(dir.path());
    let (alice_api, token) = server.register(alice, "alice").await;
    // The same message relayed again after the restart is still recognised.
    let again = alice_api
        .relay(token, ids[0], bob, "durable".into(), 0)
        .await;
    assert_eq!(again.unwrap(), Delivery::Stored);
    let (bob_api, token) = server.register(bob, "bob").await;
    let mut inbox = bob_api.inbox(token).await.unwrap();
    for id in &ids {
        assert_eq!(next_message(&mut inbox).await.id, *id);
    }
    drop(server);
}

#[tokio::test]
async fn a_post_sent_again_with_its_id_is_posted_once_even_after_it_left_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.room_history = 2).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    alice.api.join(alice.token(), "lobby".into()).await.unwrap();
    bob.api.join(bob.token(), "lobby".into()).await.unwrap();
    let mut inbox = bob.inbox().await;
    let post = |id: Uuid, text: &str| {
        alice
            .api
            .post(alice.token(), "lobby".into(), id, text.into(), now_ms())
    };
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        post(*id, &format!("post {i}")).await.unwrap();
    }
    // The first post is no longer kept; sending it again (a retry) changes nothing.
    post(ids[0], "post 0").await.unwrap();
    post(ids[2], "post 2").await.unwrap();
    let history = bob.api.history(bob.token(), "lobby".into(), None, 0);
    let kept: Vec<Uuid> = history.await.unwrap().items.iter().map(|e| e.id).collect();
    assert_eq!(kept, ids[1..]);
    let marker = Uuid::new_v4();
    post(marker, "marker").await.unwrap();
    let mut received = Vec::new();
    loop {
        match next(&mut inbox).await {
            InboxItem::Message(m) if m.id == marker => break,
            InboxItem::Message(m) => received.push(m.id),
            InboxItem::Room(_)
            | InboxItem::Friend(_)
            | InboxItem::Call(_)
            | InboxItem::Punch(_) => {}
        }
    }
    assert_eq!(received, ids);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_large_mailbox_is_replayed_in_order_a_page_at_a_time_then_live() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    bob.api.leave(bob.token()).await.unwrap();
    // More than the inbox reads from the store at a time.
    let ids: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        assert_eq!(alice.relay(*id, &bob, "stored").await, Delivery::Stored);
    }
    let bob = bob.reconnect(&server).await;
    let mut inbox = bob.inbox().await;
    for id in &ids[..10] {
        assert_eq!(next_message(&mut inbox).await.id, *id);
    }
    // A message relayed while the replay goes on comes after the stored ones, once.
    let live = Uuid::new_v4();
    assert_eq!(alice.relay(live, &bob, "live").await, Delivery::Delivered);
    for id in &ids[10..] {
        assert_eq!(next_message(&mut inbox).await.id, *id);
    }
    assert_eq!(next_message(&mut inbox).await.id, live);
    let marker = Uuid::new_v4();
    alice.relay(marker, &bob, "marker").await;
    assert_eq!(next_message(&mut inbox).await.id, marker);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn punch_requests_reach_the_online_recipient_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let mut inbox = bob.inbox().await;
    let attempt = Uuid::new_v4();
    let candidates = vec!["127.0.0.1:5000".to_owned(), "[::1]:5001".to_owned()];
    alice
        .api
        .punch(alice.token(), bob.id, attempt, candidates.clone(), false)
        .await
        .unwrap();
    let request = loop {
        if let InboxItem::Punch(request) = next(&mut inbox).await {
            break request;
        }
    };
    assert_eq!(request.from, alice.sender(), "the server names the sender");
    assert_eq!(
        (request.attempt, request.candidates, request.answer),
        (attempt, candidates, false)
    );

    for bad in [
        vec!["not an address".to_owned()],
        vec!["127.0.0.1:1".to_owned(); chat_api::MAX_PUNCH_CANDIDATES + 1],
        vec!["x".repeat(100)],
    ] {
        let refused = alice
            .api
            .punch(alice.token(), bob.id, attempt, bad, false)
            .await;
        assert!(matches!(app_error(refused), ChatError::Invalid(_)));
    }
    let nobody = alice
        .api
        .punch(alice.token(), Uuid::new_v4(), attempt, Vec::new(), false)
        .await;
    assert!(matches!(app_error(nobody), ChatError::Offline(_)));
    let no_session = alice
        .api
        .punch("no such token".into(), bob.id, attempt, Vec::new(), true)
        .await;
    assert!(matches!(app_error(no_session), ChatError::NoSession));
}
