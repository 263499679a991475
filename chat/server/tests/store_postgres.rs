//! The PostgreSQL store against a real PostgreSQL, which each test starts on a free loopback
//! port (see `support/pg_server.rs`; it needs Debian's `postgresql`, which
//! `scripts/system-packages.sh` installs): the store's contract (`conformance/mod.rs`), a lost
//! connection, and two chat servers sharing one database.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod conformance;
#[path = "support/pg_server.rs"]
mod pg_server;
mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_api::{
    Delivery, Destination, InboxItem, Path, RegisterRequest, Sender, Session, SignalClient, now_ms,
};
use chat_server::store::{Binding, PgStore, Relayed, Store, StoreError};
use chat_server::{ChatServer, ChatServerConfig};
use futures::StreamExt;
use pg_server::PgServer;
use rpc_core::{Client, Endpoint, RpcStream};
use support::{Killed, lines_of};
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(10);

/// Each database of the suite is a database of one server.
struct Postgres {
    server: PgServer,
    created: Mutex<HashSet<String>>,
}

impl conformance::Backend for Postgres {
    async fn open(&self, name: &str) -> Arc<dyn Store> {
        let new = self.created.lock().unwrap().insert(name.to_owned());
        if new {
            self.server.create_database(name).await;
        }
        Arc::new(PgStore::connect(&self.server.url(name)).await.unwrap())
    }
}

#[tokio::test]
async fn the_postgres_store_keeps_the_contract() {
    let backend = Postgres {
        server: PgServer::start(),
        created: Mutex::default(),
    };
    conformance::run(&backend).await;
}

#[tokio::test]
async fn users_of_the_format_before_accounts_are_migrated_on_connect() {
    let server = PgServer::start();
    server.create_database("legacy").await;
    let (client, connection) =
        tokio_postgres::connect(&server.url("legacy"), tokio_postgres::NoTls)
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    // The table as the store made it before accounts, with two users whose names clash.
    client
        .batch_execute(
            "CREATE TABLE chat_users (id UUID PRIMARY KEY, name TEXT NOT NULL, \
             salt BYTEA NOT NULL, hash BYTEA NOT NULL)",
        )
        .await
        .unwrap();
    let (ann, bob, other_ann) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    for (id, name) in [(ann, "Ann"), (bob, "bob"), (other_ann, "ANN")] {
        client
            .execute(
                "INSERT INTO chat_users (id, name, salt, hash) VALUES ($1, $2, $3, $4)",
                &[&id, &name, &vec![0xabu8; 16], &vec![0xcdu8; 32]],
            )
            .await
            .unwrap();
    }
    drop(client);
    let _ = connection.await;

    let store = PgStore::connect(&server.url("legacy")).await.unwrap();
    let account = store.user(ann).await.unwrap().unwrap();
    assert_eq!(account.name, "Ann");
    assert_eq!(
        account.credential,
        format!("$chat-sha256${}${}", "ab".repeat(16), "cd".repeat(32))
    );
    assert_eq!(store.user_by_name("ann").await.unwrap().unwrap().0, ann);
    assert_eq!(store.user_by_name("BOB").await.unwrap().unwrap().0, bob);
    // The one whose name was taken first keeps the account, not the name.
    assert_eq!(store.user(other_ann).await.unwrap().unwrap().name, "ANN");
    assert_eq!(
        store
            .bind(other_ann, "ANN", "x", Some(&account.credential))
            .await
            .unwrap(),
        Binding::NameTaken
    );
    // Connecting again finds the migrated table as it is.
    store.close().await;
    let store = PgStore::connect(&server.url("legacy")).await.unwrap();
    assert_eq!(store.user_by_name("Ann").await.unwrap().unwrap().0, ann);
    store.close().await;
}

#[tokio::test]
async fn a_lost_connection_is_reported_unavailable_and_replaced() {
    let mut server = PgServer::start();
    let store = PgStore::connect(&server.url("postgres")).await.unwrap();
    let bob = Uuid::new_v4();
    assert_eq!(
        store.bind(bob, "bob", "s", None).await.unwrap(),
        Binding::Created
    );

    server.stop();
    match store.user(bob).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(!store.is_healthy());

    // The database comes back: the next call opens a new connection, and finds everything.
    server.start_again();
    let user = store.user(bob).await.unwrap().unwrap();
    assert_eq!(user.name, "bob");
    assert!(store.is_healthy());
    let message = chat_api::Envelope {
        id: Uuid::new_v4(),
        from: Sender {
            id: Uuid::new_v4(),
            name: "alice".into(),
        },
        to: Destination::User(bob),
        text: "hi".into(),
        sent_at_ms: now_ms(),
        path: Path::Stored,
        file: None,
    };
    assert_eq!(
        store.relay(bob, &message, 10).await.unwrap(),
        Relayed::Stored { seq: 1 }
    );
    store.close().await;
    assert_eq!(store.user(bob).await, Err(StoreError::Closed));
}

#[tokio::test]
async fn connecting_waits_for_a_database_that_starts_late() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    // Nothing listens yet: a connection is refused, and that is worth waiting for.
    match PgStore::connect(&url).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    let waiting =
        tokio::spawn(async move { PgStore::connect_within(&url, Duration::from_secs(60)).await });
    let server = tokio::task::spawn_blocking(move || PgServer::start_on(port))
        .await
        .unwrap();
    let store = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("connected once the database started")
        .unwrap()
        .unwrap();
    assert!(store.rooms().await.unwrap().is_empty());
    store.close().await;
    drop(server);
    // What is not a URL is not waited for.
    match PgStore::connect_within("postgres://127.0.0.1:notaport/x", WAIT).await {
        Err(StoreError::Database(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn chat_server(db: &PgServer, data: &std::path::Path) -> ChatServer {
    let mut config = ChatServerConfig::new(data);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    let store = PgStore::connect(&db.url("chat")).await.unwrap();
    config.store = Some(Arc::new(store));
    ChatServer::start(config).await.unwrap()
}

async fn register(server: &ChatServer, id: Uuid, name: &str) -> (SignalClient<Client>, Session) {
    let client = Client::builder()
        .connect(&server.endpoints()[0])
        .await
        .unwrap();
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
    (api, session)
}

async fn next_message(inbox: &mut RpcStream<InboxItem>) -> chat_api::Envelope {
    let item = tokio::time::timeout(WAIT, inbox.next())
        .await
        .expect("nothing arrived in time")
        .expect("the stream ended")
        .expect("the stream failed");
    match item {
        InboxItem::Message(envelope) => envelope,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_stored_through_one_server_reaches_its_recipient_on_another_once() {
    let db = PgServer::start();
    db.create_database("chat").await;
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = chat_server(&db, data_a.path()).await;
    let b = chat_server(&db, data_b.path()).await;

    let bob = Uuid::new_v4();
    let (api, session) = register(&a, bob, "bob").await;
    api.leave(session.token).await.unwrap();
    let (alice_a, alice_session) = register(&a, Uuid::new_v4(), "alice").await;
    let (message, marker) = (Uuid::new_v4(), Uuid::new_v4());
    let relay = |id: Uuid, text: &str| {
        alice_a.relay(alice_session.token.clone(), id, bob, text.into(), now_ms())
    };
    assert_eq!(relay(message, "hello").await.unwrap(), Delivery::Stored);
    // Sent again (its answer was lost, say): stored once.
    relay(message, "hello").await.unwrap();

    // Bob comes back through the other server: his identity and his message are there.
    let (bob_b, bob_session) = register(&b, bob, "bob").await;
    let mut inbox = bob_b.inbox(bob_session.token.clone()).await.unwrap();
    let got = next_message(&mut inbox).await;
    assert_eq!(
        (got.id, got.text.as_str(), got.path),
        (message, "hello", Path::Stored)
    );
    bob_b
        .ack(bob_session.token.clone(), vec![message])
        .await
        .unwrap();

    // Sent once more after the acknowledgement: not delivered again. The next message is.
    relay(message, "hello").await.unwrap();
    relay(marker, "marker").await.unwrap();
    let mut inbox = bob_b.inbox(bob_session.token.clone()).await.unwrap();
    assert_eq!(next_message(&mut inbox).await.id, marker);

    a.shutdown(Duration::from_secs(1)).await;
    b.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_server_program_waits_for_its_database_and_says_so() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--listen", "tcp://127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--store")
        .arg(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let lines = lines_of(&mut child);
    let _child = Killed(child);
    // It says it waits before anything listens.
    let (said, waiting) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut said = Some(said);
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if line.contains("waiting for PostgreSQL")
                && let Some(said) = said.take()
            {
                let _ = said.send(line);
            }
        }
    });
    let line = waiting
        .recv_timeout(WAIT)
        .expect("the server says it waits");
    assert!(line.contains("retrying in"), "{line}");

    let db = tokio::task::spawn_blocking(move || PgServer::start_on(port))
        .await
        .unwrap();
    let line = lines.recv_timeout(Duration::from_secs(20)).unwrap();
    let endpoint: Endpoint = line
        .strip_prefix("chat-server listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .parse()
        .unwrap();
    let line = lines.recv_timeout(WAIT).unwrap();
    assert_eq!(
        line,
        format!("chat-server data in PostgreSQL at 127.0.0.1:{port}/postgres")
    );
    let api = SignalClient::new(Client::builder().connect(&endpoint).await.unwrap());
    let bob = Uuid::new_v4();
    let request = RegisterRequest {
        id: bob,
        name: "bob".into(),
        secret: "secret".into(),
        endpoint: None,
    };
    api.register(request).await.unwrap();
    // The identity is in the database.
    let store = PgStore::connect(&db.url("postgres")).await.unwrap();
    assert_eq!(store.user(bob).await.unwrap().unwrap().name, "bob");
    store.close().await;
}
