//! Call signaling over real TCP on 127.0.0.1: invite, ringing, accept, SDP and ICE relayed to
//! the other side, hang up; declines, cancels, busy, calls nobody answers, a side that goes
//! offline; what may not be done; and a call between users on two nodes sharing a registry
//! and a store.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use chat_api::{
    CallEnd, CallEvent, CallMedia, ChatError, IceCandidate, InboxItem, MAX_SDP_BYTES,
    RegisterRequest, SdpKind, Sender, Session, SignalClient,
};
use chat_server::store::{RedbStore, Store};
use chat_server::{ChatServer, ChatServerConfig};
use futures::StreamExt;
use rpc_core::{Client, RpcError, RpcStream};
use rpc_registry::{MemoryRegistry, Registry};
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(10);

fn config(dir: &FsPath) -> ChatServerConfig {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    config
}

async fn start(dir: &FsPath) -> ChatServer {
    ChatServer::start(config(dir)).await.unwrap()
}

/// A user with a connection, a session and its inbox.
struct User {
    api: SignalClient<Client>,
    id: Uuid,
    name: String,
    session: Session,
    inbox: RpcStream<InboxItem>,
}

impl User {
    async fn register(server: &ChatServer, name: &str) -> User {
        let client = Client::connect(&server.endpoints()[0]).await.unwrap();
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
        let inbox = api.inbox(session.token.clone()).await.unwrap();
        User {
            api,
            id,
            name: name.into(),
            session,
            inbox,
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

    /// The next call event in the inbox (other items are not expected here).
    async fn next_call(&mut self) -> CallEvent {
        let item = tokio::time::timeout(WAIT, self.inbox.next())
            .await
            .unwrap_or_else(|_| panic!("{}: no call event in time", self.name))
            .expect("the inbox ended")
            .expect("the inbox failed");
        match item {
            InboxItem::Call(event) => event,
            other => panic!("{}: expected a call event, got {other:?}", self.name),
        }
    }

    async fn call(&self, user: Uuid, media: Vec<CallMedia>) -> Result<Uuid, ChatError> {
        app(self.api.call(self.token(), user, media).await)
    }

    /// Nothing more arrives for a moment.
    async fn hears_nothing(&mut self) {
        let next = tokio::time::timeout(Duration::from_millis(200), self.inbox.next()).await;
        assert!(next.is_err(), "{}: unexpected {next:?}", self.name);
    }
}

fn app<T: std::fmt::Debug>(result: Result<T, RpcError<ChatError>>) -> Result<T, ChatError> {
    match result {
        Ok(value) => Ok(value),
        Err(RpcError::Application(e)) => Err(e),
        Err(other) => panic!("expected a chat answer, got {other:?}"),
    }
}

fn candidate(n: u32) -> IceCandidate {
    IceCandidate {
        candidate: format!("candidate:{n} 1 udp 2122260223 192.0.2.{n} 5000{n} typ host"),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("frag".into()),
    }
}

/// alice calls bob, bob's device rings and he accepts, offer and answer and candidates cross,
/// alice hangs up: each side sees exactly its part, and the call is gone afterwards.
async fn a_whole_call(alice: &mut User, bob: &mut User) {
    let call = alice
        .call(bob.id, vec![CallMedia::Video, CallMedia::Audio])
        .await
        .unwrap();
    assert_eq!(
        bob.next_call().await,
        CallEvent::Incoming {
            call,
            from: alice.sender(),
            media: vec![CallMedia::Audio, CallMedia::Video],
        }
    );
    app(bob.api.ringing(bob.token(), call).await).unwrap();
    assert_eq!(
        alice.next_call().await,
        CallEvent::Ringing {
            call,
            by: bob.sender()
        }
    );
    app(bob.api.accept_call(bob.token(), call).await).unwrap();
    let accepted = CallEvent::Accepted {
        call,
        by: bob.sender(),
    };
    assert_eq!(alice.next_call().await, accepted);
    assert_eq!(
        bob.next_call().await,
        accepted,
        "bob's other devices stop ringing"
    );
    // Accepting again (an answer lost on the way) changes nothing and tells nobody.
    app(bob.api.accept_call(bob.token(), call).await).unwrap();

    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n".to_owned();
    app(alice
        .api
        .send_sdp(alice.token(), call, SdpKind::Offer, offer.clone())
        .await)
    .unwrap();
    assert_eq!(
        bob.next_call().await,
        CallEvent::Sdp {
            call,
            from: alice.sender(),
            kind: SdpKind::Offer,
            sdp: offer,
        }
    );
    app(bob
        .api
        .send_sdp(bob.token(), call, SdpKind::Answer, "v=0\r\n".into())
        .await)
    .unwrap();
    assert!(matches!(
        alice.next_call().await,
        CallEvent::Sdp { kind: SdpKind::Answer, from, .. } if from == bob.sender()
    ));
    app(alice.api.send_ice(alice.token(), call, candidate(1)).await).unwrap();
    app(bob.api.send_ice(bob.token(), call, candidate(2)).await).unwrap();
    assert_eq!(
        bob.next_call().await,
        CallEvent::Ice {
            call,
            from: alice.sender(),
            candidate: candidate(1),
        }
    );
    assert_eq!(
        alice.next_call().await,
        CallEvent::Ice {
            call,
            from: bob.sender(),
            candidate: candidate(2),
        }
    );

    app(alice.api.hang_up(alice.token(), call).await).unwrap();
    let ended = CallEvent::Ended {
        call,
        by: Some(alice.sender()),
        reason: CallEnd::HungUp,
    };
    assert_eq!(alice.next_call().await, ended);
    assert_eq!(bob.next_call().await, ended);

    // Over: nothing more may be done with it, by either side.
    assert_eq!(
        app(bob.api.accept_call(bob.token(), call).await),
        Err(ChatError::NoSuchCall(call))
    );
    assert_eq!(
        app(alice.api.send_ice(alice.token(), call, candidate(3)).await),
        Err(ChatError::NoSuchCall(call))
    );
    assert_eq!(
        app(bob.api.hang_up(bob.token(), call).await),
        Err(ChatError::NoSuchCall(call))
    );
    alice.hears_nothing().await;
    bob.hears_nothing().await;
}

#[tokio::test]
async fn a_call_rings_is_accepted_carries_sdp_and_ice_and_is_hung_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut alice = User::register(&server, "alice").await;
    let mut bob = User::register(&server, "bob").await;
    a_whole_call(&mut alice, &mut bob).await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn declined_busy_and_cancelled_calls_end_for_both_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut alice = User::register(&server, "alice").await;
    let mut bob = User::register(&server, "bob").await;

    for (busy, reason) in [(false, CallEnd::Rejected), (true, CallEnd::Busy)] {
        let call = alice.call(bob.id, vec![CallMedia::Audio]).await.unwrap();
        assert!(matches!(bob.next_call().await, CallEvent::Incoming { .. }));
        app(bob.api.reject_call(bob.token(), call, busy).await).unwrap();
        let ended = CallEvent::Ended {
            call,
            by: Some(bob.sender()),
            reason,
        };
        assert_eq!(alice.next_call().await, ended);
        assert_eq!(bob.next_call().await, ended);
    }

    // The caller gives up before an answer: cancelled; the callee's late accept is refused.
    let call = alice.call(bob.id, vec![CallMedia::Data]).await.unwrap();
    assert!(matches!(bob.next_call().await, CallEvent::Incoming { .. }));
    app(alice.api.hang_up(alice.token(), call).await).unwrap();
    let cancelled = CallEvent::Ended {
        call,
        by: Some(alice.sender()),
        reason: CallEnd::Cancelled,
    };
    assert_eq!(bob.next_call().await, cancelled);
    assert_eq!(alice.next_call().await, cancelled);
    assert_eq!(
        app(bob.api.accept_call(bob.token(), call).await),
        Err(ChatError::NoSuchCall(call))
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_call_nobody_answers_ends_as_missed_and_one_whose_side_leaves_ends_as_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.call_answer = Duration::from_millis(300);
    let server = ChatServer::start(config).await.unwrap();
    let mut alice = User::register(&server, "alice").await;
    let mut bob = User::register(&server, "bob").await;

    let call = alice.call(bob.id, vec![CallMedia::Audio]).await.unwrap();
    assert!(matches!(bob.next_call().await, CallEvent::Incoming { .. }));
    app(bob.api.ringing(bob.token(), call).await).unwrap();
    assert!(matches!(alice.next_call().await, CallEvent::Ringing { .. }));
    let missed = CallEvent::Ended {
        call,
        by: None,
        reason: CallEnd::Missed,
    };
    assert_eq!(bob.next_call().await, missed);
    assert_eq!(alice.next_call().await, missed);
    assert_eq!(
        app(bob.api.accept_call(bob.token(), call).await),
        Err(ChatError::NoSuchCall(call))
    );

    // Accepted in time, it outlives the answer timer; then bob leaves.
    let call = alice.call(bob.id, vec![CallMedia::Audio]).await.unwrap();
    assert!(matches!(bob.next_call().await, CallEvent::Incoming { .. }));
    app(bob.api.accept_call(bob.token(), call).await).unwrap();
    assert!(matches!(
        alice.next_call().await,
        CallEvent::Accepted { .. }
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    app(bob.api.leave(bob.token()).await).unwrap();
    assert_eq!(
        alice.next_call().await,
        CallEvent::Ended {
            call,
            by: None,
            reason: CallEnd::Gone,
        }
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn what_may_not_be_done_with_a_call_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut alice = User::register(&server, "alice").await;
    let mut bob = User::register(&server, "bob").await;
    let carol = User::register(&server, "carol").await;
    let dave = User::register(&server, "dave").await;
    app(dave.api.leave(dave.token()).await).unwrap();

    let stranger = Uuid::new_v4();
    assert_eq!(
        alice.call(stranger, vec![CallMedia::Audio]).await,
        Err(ChatError::UnknownUser(stranger.to_string()))
    );
    assert_eq!(
        alice.call(dave.id, vec![CallMedia::Audio]).await,
        Err(ChatError::Offline(dave.id.to_string()))
    );
    assert!(matches!(
        alice.call(alice.id, vec![CallMedia::Audio]).await,
        Err(ChatError::Invalid(_))
    ));
    assert!(matches!(
        alice.call(bob.id, vec![]).await,
        Err(ChatError::Invalid(_))
    ));

    let call = alice.call(bob.id, vec![CallMedia::Video]).await.unwrap();
    assert!(matches!(bob.next_call().await, CallEvent::Incoming { .. }));
    // Someone else's call does not exist for carol.
    assert_eq!(
        app(carol.api.accept_call(carol.token(), call).await),
        Err(ChatError::NoSuchCall(call))
    );
    assert_eq!(
        app(carol
            .api
            .send_sdp(carol.token(), call, SdpKind::Offer, "v=0".into())
            .await),
        Err(ChatError::NoSuchCall(call))
    );
    // The caller cannot answer their own call.
    assert!(matches!(
        app(alice.api.accept_call(alice.token(), call).await),
        Err(ChatError::Invalid(_))
    ));
    // Too big, empty, or not one line.
    let huge = "a".repeat(MAX_SDP_BYTES + 1);
    assert!(matches!(
        app(alice
            .api
            .send_sdp(alice.token(), call, SdpKind::Offer, huge)
            .await),
        Err(ChatError::Invalid(_))
    ));
    assert!(matches!(
        app(alice
            .api
            .send_sdp(alice.token(), call, SdpKind::Offer, String::new())
            .await),
        Err(ChatError::Invalid(_))
    ));
    let mut two_lines = candidate(1);
    two_lines.candidate.push_str("\r\na=evil");
    assert!(matches!(
        app(alice.api.send_ice(alice.token(), call, two_lines).await),
        Err(ChatError::Invalid(_))
    ));
    // None of that reached bob, and the call still stands.
    bob.hears_nothing().await;
    app(bob.api.accept_call(bob.token(), call).await).unwrap();
    assert!(matches!(
        alice.next_call().await,
        CallEvent::Accepted { .. }
    ));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_call_between_users_on_two_nodes_goes_through_both_ways() {
    let registry: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("chat.redb")).unwrap());
    let node = |registry: &Arc<dyn Registry>, store: &Arc<dyn Store>| {
        let mut config = config(dir.path());
        config.registry = Some(registry.clone());
        config.store = Some(store.clone());
        ChatServer::start(config)
    };
    let a = node(&registry, &store).await.unwrap();
    let b = node(&registry, &store).await.unwrap();
    let mut alice = User::register(&a, "alice").await;
    let mut bob = User::register(&b, "bob").await;
    // Each node sees the other's user online (through the registry) before they call.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.online_count() < 2 || b.online_count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the nodes see both");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a_whole_call(&mut alice, &mut bob).await;
    // And the other way round, ended by the callee on the other node.
    let call = bob.call(alice.id, vec![CallMedia::Audio]).await.unwrap();
    assert!(matches!(
        alice.next_call().await,
        CallEvent::Incoming { .. }
    ));
    app(alice.api.accept_call(alice.token(), call).await).unwrap();
    assert!(matches!(bob.next_call().await, CallEvent::Accepted { .. }));
    assert!(matches!(
        alice.next_call().await,
        CallEvent::Accepted { .. }
    ));
    app(alice.api.hang_up(alice.token(), call).await).unwrap();
    let ended = CallEvent::Ended {
        call,
        by: Some(alice.sender()),
        reason: CallEnd::HungUp,
    };
    assert_eq!(bob.next_call().await, ended);
    assert_eq!(alice.next_call().await, ended);
    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}
