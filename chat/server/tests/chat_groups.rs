//! Rooms as lasting groups over real TCP on 127.0.0.1: invite-only groups and their owner,
//! membership that outlasts sessions and restarts, posts kept for members who are offline, and
//! posts and events that reach members on another node sharing the store and registry.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use chat_api::{
    Access, ChatError, Destination, Envelope, InboxItem, Membership, Path, RegisterRequest,
    RoomEvent, RoomInfo, Sender, Session, SignalClient,
};
use chat_server::store::{RedbStore, Store};
use chat_server::{ChatServer, ChatServerConfig};
use futures::StreamExt;
use rpc_core::{Client, RpcError, RpcStream};
use rpc_registry::{MemoryRegistry, Registry};
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(10);

async fn start(dir: &FsPath) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    ChatServer::start(config).await.unwrap()
}

/// A user with a connection and a session.
struct User {
    api: SignalClient<Client>,
    id: Uuid,
    name: String,
    session: Session,
}

impl User {
    async fn register(server: &ChatServer, name: &str) -> User {
        Self::register_as(server, Uuid::new_v4(), name).await
    }

    async fn register_as(server: &ChatServer, id: Uuid, name: &str) -> User {
        let client = Client::connect(&server.endpoints()[0]).await.unwrap();
        let api = SignalClient::new(client);
        let session = api
            .register(RegisterRequest {
                id,
                name: name.into(),
                secret: format!("secret of {name}"),
                endpoint: None,
            })
            .await
            .unwrap();
        User {
            api,
            id,
            name: name.into(),
            session,
        }
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

    async fn inbox(&self) -> RpcStream<InboxItem> {
        self.api.inbox(self.token()).await.unwrap()
    }

    async fn post(&self, room: &str, text: &str) -> Uuid {
        let id = Uuid::new_v4();
        self.api
            .post(self.token(), room.into(), id, text.into(), 0)
            .await
            .unwrap();
        id
    }

    async fn my_rooms(&self) -> Vec<RoomInfo> {
        self.api
            .my_rooms(self.token(), None, 0)
            .await
            .unwrap()
            .items
    }
}

async fn next(inbox: &mut RpcStream<InboxItem>) -> InboxItem {
    tokio::time::timeout(WAIT, inbox.next())
        .await
        .expect("nothing arrived in time")
        .expect("the inbox ended")
        .expect("the inbox failed")
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

fn room(event: RoomEvent) -> InboxItem {
    InboxItem::Room(event)
}

#[tokio::test]
async fn an_invite_only_group_admits_the_invited_and_the_added_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    let carol = User::register(&server, "carol").await;
    let mut b = bob.inbox().await;
    let mut c = carol.inbox().await;
    let g = || "g".to_owned();

    let info = alice
        .api
        .create_room(alice.token(), g(), Access::InviteOnly)
        .await
        .unwrap();
    let expected = RoomInfo {
        name: g(),
        member_count: 1,
        owner: alice.id,
        access: Access::InviteOnly,
        membership: Membership::Owner,
    };
    assert_eq!(info, expected);

    // Outsiders may not join, invite, read or post, and do not see the group listed.
    let refused = carol.api.join(carol.token(), g()).await;
    assert_eq!(app_error(refused), ChatError::NotInvited(g()));
    let refused = carol.api.invite(carol.token(), g(), bob.id).await;
    assert_eq!(app_error(refused), ChatError::NotAMember(g()));
    let refused = carol.api.history(carol.token(), g(), None, 0).await;
    assert_eq!(app_error(refused), ChatError::NotAMember(g()));
    let refused = carol.api.members(carol.token(), g(), None, 0).await;
    assert_eq!(app_error(refused), ChatError::NotAMember(g()));
    let refused = carol
        .api
        .post(carol.token(), g(), Uuid::new_v4(), "hi".into(), 0)
        .await;
    assert_eq!(app_error(refused), ChatError::NotAMember(g()));
    assert!(
        carol
            .api
            .rooms(carol.token(), None, 0)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(carol.my_rooms().await.is_empty());

    // A member invites; the invited user is told, sees the group as invited, and joins.
    alice.api.invite(alice.token(), g(), bob.id).await.unwrap();
    let invited = RoomEvent::Invited {
        room: g(),
        by: alice.sender(),
    };
    assert_eq!(next(&mut b).await, room(invited));
    let mine = bob.my_rooms().await;
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0].membership, mine[0].owner),
        (Membership::Invited, alice.id)
    );
    let info = bob.api.join(bob.token(), g()).await.unwrap();
    assert_eq!(
        (info.member_count, info.membership),
        (2, Membership::Member)
    );
    let joined = |u: &User| {
        room(RoomEvent::Joined {
            room: g(),
            user: u.sender(),
        })
    };
    assert_eq!(next(&mut b).await, joined(&bob));

    // Only the owner adds and removes.
    let refused = bob.api.add_member(bob.token(), g(), carol.id).await;
    assert_eq!(app_error(refused), ChatError::NotTheOwner(g()));
    let unknown = Uuid::new_v4();
    let refused = alice.api.add_member(alice.token(), g(), unknown).await;
    assert_eq!(
        app_error(refused),
        ChatError::UnknownUser(unknown.to_string())
    );
    alice
        .api
        .add_member(alice.token(), g(), carol.id)
        .await
        .unwrap();
    assert_eq!(next(&mut c).await, joined(&carol));
    assert_eq!(next(&mut b).await, joined(&carol));
    let members = bob.api.members(bob.token(), g(), None, 0).await.unwrap();
    assert_eq!(
        members.items,
        vec![alice.sender(), bob.sender(), carol.sender()]
    );
    let refused = bob.api.remove_member(bob.token(), g(), carol.id).await;
    assert_eq!(app_error(refused), ChatError::NotTheOwner(g()));
    alice
        .api
        .remove_member(alice.token(), g(), carol.id)
        .await
        .unwrap();
    let removed = room(RoomEvent::Removed {
        room: g(),
        user: carol.sender(),
        by: alice.sender(),
    });
    assert_eq!(next(&mut c).await, removed);
    assert_eq!(next(&mut b).await, removed);
    let refused = carol.api.join(carol.token(), g()).await;
    assert_eq!(app_error(refused), ChatError::NotInvited(g()));

    // The owner leaves: the longest-standing member owns the group now.
    alice.api.leave_room(alice.token(), g()).await.unwrap();
    let left = room(RoomEvent::Left {
        room: g(),
        user: alice.sender(),
    });
    assert_eq!(next(&mut b).await, left);
    let mine = bob.my_rooms().await;
    assert_eq!(
        (mine[0].owner, mine[0].membership, mine[0].member_count),
        (bob.id, Membership::Owner, 1)
    );
    let refused = alice.api.remove_member(alice.token(), g(), bob.id).await;
    assert_eq!(app_error(refused), ChatError::NotTheOwner(g()));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn membership_outlasts_sessions_and_restarts_and_posts_wait_for_offline_members() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let alice = User::register(&server, "alice").await;
    let bob = User::register(&server, "bob").await;
    alice
        .api
        .create_room(alice.token(), "g".into(), Access::InviteOnly)
        .await
        .unwrap();
    alice
        .api
        .add_member(alice.token(), "g".into(), bob.id)
        .await
        .unwrap();
    // Bob goes offline; alice posts to the group meanwhile.
    bob.api.leave(bob.token()).await.unwrap();
    let mut posts = Vec::new();
    for i in 0..3 {
        posts.push(alice.post("g", &format!("post {i}")).await);
    }
    server.shutdown(Duration::from_secs(1)).await;

    let server = start(dir.path()).await;
    let alice = User::register_as(&server, alice.id, "alice").await;
    let bob = User::register_as(&server, bob.id, "bob").await;
    let mine = bob.my_rooms().await;
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (
            mine[0].name.as_str(),
            mine[0].membership,
            mine[0].member_count
        ),
        ("g", Membership::Member, 2)
    );
    // The posts wait in bob's mailbox, in order, and come once acknowledged.
    let mut b = bob.inbox().await;
    let mut got = Vec::new();
    for _ in &posts {
        let post = next_message(&mut b).await;
        assert_eq!(post.path, Path::Room);
        assert_eq!(post.to, Destination::Room("g".into()));
        assert_eq!(post.from, alice.sender());
        got.push(post.id);
    }
    assert_eq!(got, posts);
    bob.api.ack(bob.token(), got).await.unwrap();
    drop(b);
    let mut b = bob.inbox().await;
    let marker = Uuid::new_v4();
    alice
        .api
        .relay(alice.token(), marker, bob.id, "after".into(), 0)
        .await
        .unwrap();
    // Nothing acknowledged comes again: the next message is the one sent after.
    assert_eq!(next_message(&mut b).await.id, marker);
    let history = bob.api.history(bob.token(), "g".into(), None, 0).await;
    let kept: Vec<Uuid> = history.unwrap().items.iter().map(|p| p.id).collect();
    assert_eq!(kept, posts);
    server.shutdown(Duration::from_secs(1)).await;
}

async fn shared_node(
    dir: &FsPath,
    registry: &Arc<dyn Registry>,
    store: &Arc<dyn Store>,
) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.registry = Some(registry.clone());
    config.store = Some(store.clone());
    ChatServer::start(config).await.unwrap()
}

#[tokio::test]
async fn posts_and_events_on_one_node_reach_members_online_on_another_at_once() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("chat.redb")).unwrap());
    let a = shared_node(dir.path(), &registry, &store).await;
    let b = shared_node(dir.path(), &registry, &store).await;
    let alice = User::register(&a, "alice").await;
    let bob = User::register(&b, "bob").await;
    let carol = User::register(&b, "carol").await;
    let mut bi = bob.inbox().await;
    let mut ci = carol.inbox().await;
    // Node a sees bob and carol online (through the registry) before alice acts.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.online_count() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a sees bob and carol"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    alice
        .api
        .create_room(alice.token(), "g".into(), Access::InviteOnly)
        .await
        .unwrap();
    alice
        .api
        .add_member(alice.token(), "g".into(), bob.id)
        .await
        .unwrap();
    let joined = room(RoomEvent::Joined {
        room: "g".into(),
        user: bob.sender(),
    });
    assert_eq!(next(&mut bi).await, joined);
    alice
        .api
        .invite(alice.token(), "g".into(), carol.id)
        .await
        .unwrap();
    let invited = room(RoomEvent::Invited {
        room: "g".into(),
        by: alice.sender(),
    });
    assert_eq!(next(&mut ci).await, invited);

    let posts = [alice.post("g", "one").await, alice.post("g", "two").await];
    for id in posts {
        let post = next_message(&mut bi).await;
        assert_eq!((post.id, post.path), (id, Path::Room));
    }
    // Node b answers for the same group: the store is the authority.
    let info = carol.api.join(carol.token(), "g".into()).await.unwrap();
    assert_eq!((info.owner, info.member_count), (alice.id, 3));
    let last = carol.post("g", "three").await;
    let joined = room(RoomEvent::Joined {
        room: "g".into(),
        user: carol.sender(),
    });
    assert_eq!(next(&mut bi).await, joined);
    assert_eq!(next_message(&mut bi).await.id, last);
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}
