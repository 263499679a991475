//! Device identity keys over real TCP on 127.0.0.1: a device binds its ed25519 key to its
//! session with a proof that it holds the key, others read it while the session lasts, and a
//! proof that is wrong, or made for another session, binds nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::time::Duration;

use chat_api::{ChatError, DEVICE_KEY_CONTEXT, DeviceKey, RegisterRequest, Session, SignalClient};
use chat_server::{ChatServer, ChatServerConfig};
use rpc_core::transport::quic::Identity;
use rpc_core::{Client, RpcError};
use uuid::Uuid;

async fn start(dir: &std::path::Path) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    ChatServer::start(config).await.unwrap()
}

async fn register(server: &ChatServer, id: Uuid, name: &str) -> (SignalClient<Client>, Session) {
    let api = SignalClient::new(Client::connect(&server.endpoints()[0]).await.unwrap());
    let session = api
        .register(RegisterRequest {
            id,
            name: name.into(),
            secret: format!("secret of {name}"),
            endpoint: None,
        })
        .await
        .unwrap();
    (api, session)
}

/// `identity`'s key with its proof for the session `token`.
fn device_key(identity: &Identity, token: &str) -> DeviceKey {
    let mut signed = DEVICE_KEY_CONTEXT.to_vec();
    signed.extend_from_slice(token.as_bytes());
    DeviceKey {
        public: identity.public_key().to_vec(),
        proof: identity.sign(&signed).to_vec(),
    }
}

fn app<T: std::fmt::Debug>(result: Result<T, RpcError<ChatError>>) -> Result<T, ChatError> {
    match result {
        Ok(value) => Ok(value),
        Err(RpcError::Application(e)) => Err(e),
        Err(other) => panic!("expected a chat answer, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bound_key_is_what_others_read_while_the_session_lasts() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let alice_id = Uuid::new_v4();
    let (alice, session) = register(&server, alice_id, "alice").await;
    let (bob, bob_session) = register(&server, Uuid::new_v4(), "bob").await;
    let token = session.token.clone();

    // Nothing bound yet.
    assert_eq!(
        app(bob
            .device_key_of(bob_session.token.clone(), "alice".into())
            .await),
        Ok(None)
    );
    let phone = Identity::generate().unwrap();
    app(alice
        .bind_device_key(token.clone(), device_key(&phone, &token))
        .await)
    .unwrap();
    for who in ["alice".to_owned(), alice_id.to_string()] {
        assert_eq!(
            app(bob.device_key_of(bob_session.token.clone(), who).await),
            Ok(Some(phone.public_key().to_vec()))
        );
    }

    // Binding again replaces the key.
    let laptop = Identity::generate().unwrap();
    app(alice
        .bind_device_key(token.clone(), device_key(&laptop, &token))
        .await)
    .unwrap();
    assert_eq!(
        app(bob
            .device_key_of(bob_session.token.clone(), "alice".into())
            .await),
        Ok(Some(laptop.public_key().to_vec()))
    );

    // A new session (a new registration) starts without a key; gone, the user has none.
    let (alice_again, new_session) = register(&server, alice_id, "alice").await;
    assert_eq!(
        app(bob
            .device_key_of(bob_session.token.clone(), "alice".into())
            .await),
        Ok(None)
    );
    app(alice_again.leave(new_session.token.clone()).await).unwrap();
    assert!(matches!(
        app(bob
            .device_key_of(bob_session.token.clone(), "alice".into())
            .await),
        Err(ChatError::UnknownUser(_))
    ));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_proof_that_is_wrong_or_made_for_another_session_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let (alice, session) = register(&server, Uuid::new_v4(), "alice").await;
    let (bob, bob_session) = register(&server, Uuid::new_v4(), "bob").await;
    let token = session.token.clone();
    let key = Identity::generate().unwrap();

    // Bob's proof, replayed by alice for her own session.
    let replayed = device_key(&key, &bob_session.token);
    // Someone else's public key with a proof made by another key.
    let mut stolen = device_key(&Identity::generate().unwrap(), &token);
    stolen.public = key.public_key().to_vec();
    let mut short = device_key(&key, &token);
    short.public.pop();
    let mut truncated = device_key(&key, &token);
    truncated.proof.truncate(63);
    for (what, bad) in [
        ("a proof for another session", replayed),
        ("another key's proof", stolen),
        ("a 31-byte key", short),
        ("a 63-byte proof", truncated),
    ] {
        let refused = app(alice.bind_device_key(token.clone(), bad).await);
        assert!(
            matches!(refused, Err(ChatError::Invalid(_))),
            "{what}: {refused:?}"
        );
    }
    assert_eq!(
        app(bob
            .device_key_of(bob_session.token.clone(), "alice".into())
            .await),
        Ok(None)
    );
    assert_eq!(
        app(alice
            .bind_device_key("no such token".into(), device_key(&key, "no such token"))
            .await),
        Err(ChatError::NoSession)
    );
    server.shutdown(Duration::from_secs(1)).await;
}
