//! Accounts and friends over real sockets: names reserved for good (offline, across a
//! restart), login by name and password, and friend requests with their events, on one server
//! and across two servers sharing a store and a registry.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use chat_api::{
    ChatError, Friend, FriendEvent, FriendState, InboxItem, LoginRequest, RegisterRequest, Sender,
    Session, SignalClient,
};
use chat_server::store::{RedbStore, Store};
use chat_server::{ChatServer, ChatServerConfig};
use futures::StreamExt;
use rpc_core::{Client, RpcError, RpcStream};
use rpc_registry::{MemoryRegistry, Registry};
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(20);

type Api = SignalClient<Client>;

/// A server on a free port; password hashing made cheap, as the tests hash many.
fn config(dir: &std::path::Path) -> ChatServerConfig {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    config
}

async fn connect(server: &ChatServer) -> Api {
    SignalClient::new(Client::connect(&server.endpoints()[0]).await.unwrap())
}

async fn register_as(
    api: &Api,
    id: Uuid,
    name: &str,
    secret: &str,
) -> Result<Session, RpcError<ChatError>> {
    api.register(RegisterRequest {
        id,
        name: name.into(),
        secret: secret.into(),
        endpoint: None,
    })
    .await
}

async fn user(server: &ChatServer, name: &str) -> (Api, Session) {
    let api = connect(server).await;
    let session = register_as(&api, Uuid::new_v4(), name, &format!("pw of {name}"))
        .await
        .unwrap();
    (api, session)
}

async fn login(api: &Api, name: &str, password: &str) -> Result<Session, RpcError<ChatError>> {
    api.login(LoginRequest {
        name: name.into(),
        password: password.into(),
        endpoint: None,
    })
    .await
}

fn refused<T: std::fmt::Debug>(result: Result<T, RpcError<ChatError>>) -> ChatError {
    match result {
        Err(RpcError::Application(e)) => e,
        other => panic!("expected a chat error, got {other:?}"),
    }
}

async fn next_friend_event(inbox: &mut RpcStream<InboxItem>) -> FriendEvent {
    let item = tokio::time::timeout(WAIT, inbox.next())
        .await
        .expect("an inbox item arrives")
        .expect("the inbox is open")
        .expect("an item");
    match item {
        InboxItem::Friend(event) => event,
        other => panic!("expected a friend event, got {other:?}"),
    }
}

async fn all_friends(api: &Api, session: &Session) -> Vec<Friend> {
    api.friends(session.token.clone(), None, 0)
        .await
        .unwrap()
        .items
}

fn sender(session: &Session) -> Sender {
    Sender {
        id: session.user.id,
        name: session.user.name.clone(),
    }
}

#[tokio::test]
async fn a_name_stays_reserved_while_its_owner_is_offline_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(config(dir.path())).await.unwrap();
    let api = connect(&server).await;
    let alice = Uuid::new_v4();
    let session = register_as(&api, alice, "Alice", "pw").await.unwrap();
    api.leave(session.token).await.unwrap();
    let eve = Uuid::new_v4();
    assert_eq!(
        refused(register_as(&api, eve, "aLiCe", "x").await),
        ChatError::NameTaken("aLiCe".into())
    );
    server.shutdown(Duration::from_secs(1)).await;

    let server = ChatServer::start(config(dir.path())).await.unwrap();
    let api = connect(&server).await;
    assert_eq!(
        refused(register_as(&api, eve, "alice", "x").await),
        ChatError::NameTaken("alice".into())
    );
    // The owner renames: the old name is free for anyone.
    let session = register_as(&api, alice, "Alicia", "pw").await.unwrap();
    assert_eq!(session.user.name, "Alicia");
    let taken = register_as(&api, eve, "alice", "x").await.unwrap();
    assert_eq!(taken.user.id, eve);
    // And the owner cannot take it back.
    assert_eq!(
        refused(register_as(&api, alice, "ALICE", "pw").await),
        ChatError::NameTaken("ALICE".into())
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn login_by_name_and_password_opens_a_session_as_the_same_id() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(config(dir.path())).await.unwrap();
    let api = connect(&server).await;
    let bob = Uuid::new_v4();
    let first = register_as(&api, bob, "Bob", "correct horse")
        .await
        .unwrap();
    api.leave(first.token).await.unwrap();

    let session = login(&api, "BOB", "correct horse").await.unwrap();
    assert_eq!(session.user.id, bob);
    assert_eq!(session.user.name, "Bob", "the name as registered");
    // The session works.
    let me = api
        .lookup(session.token.clone(), bob.to_string())
        .await
        .unwrap();
    assert_eq!(me.name, "Bob");

    // Wrong password and unknown name are told apart by nobody.
    assert_eq!(
        refused(login(&api, "bob", "battery staple").await),
        ChatError::WrongLogin
    );
    assert_eq!(
        refused(login(&api, "nobody", "correct horse").await),
        ChatError::WrongLogin
    );
    // The id's secret is the password.
    assert_eq!(
        refused(register_as(&api, bob, "Bob", "battery staple").await),
        ChatError::WrongSecret(bob)
    );
    // A failed login left the session alone.
    api.heartbeat(session.token).await.unwrap();
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn friends_request_accept_list_and_unfriend_with_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChatServer::start(config(dir.path())).await.unwrap();
    let (ann, ann_session) = user(&server, "ann").await;
    let (bob, bob_session) = user(&server, "bob").await;
    let (cat, cat_session) = user(&server, "cat").await;
    let (ann_id, bob_id) = (ann_session.user.id, bob_session.user.id);
    let mut ann_inbox = ann.inbox(ann_session.token.clone()).await.unwrap();
    let mut bob_inbox = bob.inbox(bob_session.token.clone()).await.unwrap();

    assert!(matches!(
        refused(ann.request_friend(ann_session.token.clone(), ann_id).await),
        ChatError::Invalid(_)
    ));
    assert!(matches!(
        refused(
            ann.request_friend(ann_session.token.clone(), Uuid::new_v4())
                .await
        ),
        ChatError::UnknownUser(_)
    ));
    assert_eq!(
        refused(bob.accept_friend(bob_session.token.clone(), ann_id).await),
        ChatError::NoFriendRequest(ann_id.to_string())
    );

    let state = ann
        .request_friend(ann_session.token.clone(), bob_id)
        .await
        .unwrap();
    assert_eq!(state, FriendState::RequestSent);
    assert_eq!(
        next_friend_event(&mut bob_inbox).await,
        FriendEvent::Requested {
            from: sender(&ann_session)
        }
    );
    assert_eq!(
        all_friends(&bob, &bob_session).await,
        [Friend {
            user: sender(&ann_session),
            state: FriendState::RequestReceived,
            online: true,
        }]
    );
    bob.accept_friend(bob_session.token.clone(), ann_id)
        .await
        .unwrap();
    assert_eq!(
        next_friend_event(&mut ann_inbox).await,
        FriendEvent::Accepted {
            by: sender(&bob_session)
        }
    );
    // Cat asks ann, ann asks cat back: friends at once, and cat is told.
    cat.request_friend(cat_session.token.clone(), ann_id)
        .await
        .unwrap();
    assert!(matches!(
        next_friend_event(&mut ann_inbox).await,
        FriendEvent::Requested { .. }
    ));
    let state = ann
        .request_friend(ann_session.token.clone(), cat_session.user.id)
        .await
        .unwrap();
    assert_eq!(state, FriendState::Friends);

    // Ann's list, a page at a time, by name; online as presence says.
    cat.leave(cat_session.token.clone()).await.unwrap();
    let first = ann
        .friends(ann_session.token.clone(), None, 1)
        .await
        .unwrap();
    let expected_bob = Friend {
        user: sender(&bob_session),
        state: FriendState::Friends,
        online: true,
    };
    assert_eq!(first.items, [expected_bob]);
    let second = ann
        .friends(ann_session.token.clone(), first.next, 1)
        .await
        .unwrap();
    assert_eq!(
        second.items,
        [Friend {
            user: sender(&cat_session),
            state: FriendState::Friends,
            online: false,
        }]
    );
    assert_eq!(second.next, None);
    assert!(matches!(
        refused(
            ann.friends(ann_session.token.clone(), Some("bogus".into()), 1)
                .await
        ),
        ChatError::Invalid(_)
    ));

    // Unfriending tells the other, and is idempotent.
    ann.unfriend(ann_session.token.clone(), bob_id)
        .await
        .unwrap();
    assert_eq!(
        next_friend_event(&mut bob_inbox).await,
        FriendEvent::Removed {
            by: sender(&ann_session)
        }
    );
    ann.unfriend(ann_session.token.clone(), bob_id)
        .await
        .unwrap();
    assert_eq!(all_friends(&bob, &bob_session).await, []);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_friends_quota_refuses_requests_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.max_friends = 1;
    let server = ChatServer::start(config).await.unwrap();
    let (ann, ann_session) = user(&server, "ann").await;
    let (_bob, bob_session) = user(&server, "bob").await;
    let (cat, cat_session) = user(&server, "cat").await;
    ann.request_friend(ann_session.token.clone(), bob_session.user.id)
        .await
        .unwrap();
    assert!(matches!(
        refused(
            ann.request_friend(ann_session.token.clone(), cat_session.user.id)
                .await
        ),
        ChatError::Quota(_)
    ));
    assert!(matches!(
        refused(
            cat.request_friend(cat_session.token.clone(), ann_session.user.id)
                .await
        ),
        ChatError::Quota(_)
    ));
    assert_eq!(all_friends(&cat, &cat_session).await, []);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn friend_events_reach_a_user_on_another_node() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("chat.redb")).unwrap());
    let node = |store: &Arc<dyn Store>| {
        let mut config = config(dir.path());
        config.registry = Some(registry.clone());
        config.store = Some(store.clone());
        ChatServer::start(config)
    };
    let a = node(&store).await.unwrap();
    let b = node(&store).await.unwrap();
    let (ann, ann_session) = user(&a, "ann").await;
    let (bob, bob_session) = user(&b, "bob").await;
    let mut ann_inbox = ann.inbox(ann_session.token.clone()).await.unwrap();
    let mut bob_inbox = bob.inbox(bob_session.token.clone()).await.unwrap();
    // Each node sees the other's user online (through the registry).
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.online_count() < 2 || b.online_count() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both nodes see both"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    ann.request_friend(ann_session.token.clone(), bob_session.user.id)
        .await
        .unwrap();
    assert_eq!(
        next_friend_event(&mut bob_inbox).await,
        FriendEvent::Requested {
            from: sender(&ann_session)
        }
    );
    bob.accept_friend(bob_session.token.clone(), ann_session.user.id)
        .await
        .unwrap();
    assert_eq!(
        next_friend_event(&mut ann_inbox).await,
        FriendEvent::Accepted {
            by: sender(&bob_session)
        }
    );
    // Node a lists bob, online on node b.
    assert_eq!(
        all_friends(&ann, &ann_session).await,
        [Friend {
            user: sender(&bob_session),
            state: FriendState::Friends,
            online: true,
        }]
    );
    bob.unfriend(bob_session.token.clone(), ann_session.user.id)
        .await
        .unwrap();
    assert_eq!(
        next_friend_event(&mut ann_inbox).await,
        FriendEvent::Removed {
            by: sender(&bob_session)
        }
    );
    // A name is reserved across nodes, and the account signs in on either.
    let eve = connect(&a).await;
    assert_eq!(
        refused(register_as(&eve, Uuid::new_v4(), "BOB", "x").await),
        ChatError::NameTaken("BOB".into())
    );
    bob.leave(bob_session.token.clone()).await.unwrap();
    let again = login(&eve, "bob", "pw of bob").await.unwrap();
    assert_eq!(again.user.id, bob_session.user.id);
    a.shutdown(Duration::from_millis(200)).await;
    b.shutdown(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_password_hashed_with_other_parameters_is_hashed_again_at_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chat.redb");
    let open = || Arc::new(RedbStore::open(&path).unwrap()) as Arc<dyn Store>;
    let with = |store: &Arc<dyn Store>, iterations: u32| {
        let mut config = config(dir.path());
        config.store = Some(store.clone());
        config.password_hashing.iterations = iterations;
        ChatServer::start(config)
    };
    let store = open();
    let server = with(&store, 1).await.unwrap();
    let api = connect(&server).await;
    let id = Uuid::new_v4();
    register_as(&api, id, "dora", "pw").await.unwrap();
    let before = store.user(id).await.unwrap().unwrap().credential;
    assert!(
        before.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
        "{before}"
    );
    server.shutdown(Duration::from_secs(1)).await;

    let store = open();
    let server = with(&store, 2).await.unwrap();
    let api = connect(&server).await;
    // The old hash still verifies (a wrong password still does not), and is replaced.
    assert_eq!(
        refused(login(&api, "dora", "wrong").await),
        ChatError::WrongLogin
    );
    assert_eq!(store.user(id).await.unwrap().unwrap().credential, before);
    let session = login(&api, "dora", "pw").await.unwrap();
    assert_eq!(session.user.id, id);
    let after = store.user(id).await.unwrap().unwrap().credential;
    assert!(after.starts_with("$argon2id$v=19$m=64,t=2,p=1$"), "{after}");
    // And the new one verifies.
    register_as(&api, id, "dora", "pw").await.unwrap();
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn account_settings_out_of_range_are_refused_when_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |configure: fn(&mut ChatServerConfig)| {
        let mut config = config(dir.path());
        configure(&mut config);
        async move {
            match ChatServer::start(config).await {
                Ok(server) => {
                    server.shutdown(Duration::from_secs(1)).await;
                    panic!("the server started");
                }
                Err(e) => e.to_string(),
            }
        }
    };
    let error = refused(|c| c.max_friends = 0).await;
    assert!(error.contains("friends"), "{error}");
    let error = refused(|c| c.password_hashing.memory_kib = 7).await;
    assert!(error.contains("password hashing memory"), "{error}");
    let error = refused(|c| c.password_hashing.iterations = 0).await;
    assert!(error.contains("iterations"), "{error}");
    let error = refused(|c| c.password_hashing.parallelism = 65).await;
    assert!(error.contains("parallelism"), "{error}");
    // Each lane needs 8 KiB.
    let error = refused(|c| {
        c.password_hashing.memory_kib = 8;
        c.password_hashing.parallelism = 2;
    })
    .await;
    assert!(error.contains("password hashing"), "{error}");
    assert!(!dir.path().join("chat.redb").exists());
}

#[test]
fn the_server_program_refuses_account_settings_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = env!("CARGO_BIN_EXE_chat-server");
    let base = ["--listen", "tcp://127.0.0.1:0", "--data-dir", data];
    for (flag, value) in [
        ("--max-friends", "0"),
        ("--password-memory-kib", "7"),
        ("--password-memory-kib", "4194305"),
        ("--password-iterations", "0"),
        ("--password-parallelism", "65"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain([flag, value]).collect();
        let said = support::refused_at_startup(server, &args);
        assert!(said.contains(flag), "{flag} {value}: {said}");
    }
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--password-memory-kib", "8", "--password-parallelism", "2"])
        .collect();
    let said = support::refused_at_startup(server, &args);
    assert!(said.contains("password hashing"), "{said}");
}
