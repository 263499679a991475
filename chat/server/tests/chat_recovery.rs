//! The chat server and client recovering from failures by themselves: a store that hit a real
//! I/O error (a file that may not grow, as on a full disk), and a connection lost in the middle
//! of a send or of a file upload.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_api::{ChatError, Delivery, Envelope, InboxItem, Path, RegisterRequest, SignalClient};
use chat_client::{ChatClient, ChatClientConfig, ChatEvent, ChatEvents};
use chat_server::{ChatServer, ChatServerConfig};
use futures::StreamExt;
use rpc_core::{Client, Endpoint, RpcError};
use support::Killed;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// How long anything that should happen may take before the test gives up.
const WAIT: Duration = Duration::from_secs(30);

/// A `chat-server` process whose files may not grow past a size, as on a disk that is full:
/// the shell that starts it sets the file size limit (`ulimit -f`, RLIMIT_FSIZE) and ignores
/// SIGXFSZ, so that writing past it fails with EFBIG (an I/O error) instead of killing it.
struct Confined {
    process: Killed,
    endpoint: Endpoint,
}

impl Confined {
    fn start(data: &std::path::Path, limit_bytes: u64) -> Confined {
        let script = r#"trap '' XFSZ; ulimit -S -f "$1"; shift; exec "$@""#;
        let mut child = Command::new("sh")
            .args(["-c", script, "sh", &(limit_bytes / 512).to_string()])
            .arg(env!("CARGO_BIN_EXE_chat-server"))
            .args(["--listen", "tcp://127.0.0.1:0", "--data-dir"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let endpoint = line.trim().strip_prefix("chat-server listening on ");
        let endpoint = endpoint
            .unwrap_or_else(|| panic!("{line:?}"))
            .parse()
            .unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Confined {
            process: Killed(child),
            endpoint,
        }
    }

    /// Lifts the limit, as freeing space on the disk would.
    fn lift_limit(&self) {
        let status = Command::new("prlimit")
            .args([
                "--pid",
                &self.process.0.id().to_string(),
                "--fsize=unlimited:",
            ])
            .status()
            .expect("prlimit (util-linux) runs");
        assert!(status.success(), "prlimit: {status}");
    }

    async fn register(&self, name: &str, id: Uuid) -> (SignalClient<Client>, String) {
        let api = SignalClient::new(Client::builder().connect(&self.endpoint).await.unwrap());
        let request = RegisterRequest {
            id,
            name: name.into(),
            secret: format!("secret of {name}"),
            endpoint: None,
        };
        let token = api.register(request).await.unwrap().token;
        (api, token)
    }
}

#[tokio::test]
async fn the_store_recovers_from_an_io_error_by_itself_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Confined::start(dir.path(), 2 << 20);
    let bob = Uuid::new_v4();
    let (bob_api, token) = server.register("bob", bob).await;
    bob_api.leave(token).await.unwrap();
    let (alice, token) = server.register("alice", Uuid::new_v4()).await;
    let text = "x".repeat(4000);

    // Messages for bob, who is offline, are stored until the file cannot grow.
    let mut stored = Vec::new();
    let failed = loop {
        assert!(stored.len() < 5000, "the file limit was never reached");
        let id = Uuid::new_v4();
        match alice.relay(token.clone(), id, bob, text.clone(), 0).await {
            Ok(Delivery::Stored) => stored.push(id),
            Err(RpcError::Application(ChatError::StorageUnavailable)) => break id,
            other => panic!("expected stored or storage unavailable, got {other:?}"),
        }
    };
    assert!(!stored.is_empty());

    // Space comes back: without a restart the store works again, the message that failed goes
    // through when sent again with its id, and so do more than the file could hold before.
    server.lift_limit();
    let relay = |id: Uuid| {
        let (alice, token, text) = (alice.clone(), token.clone(), text.clone());
        async move {
            let deadline = Instant::now() + WAIT;
            loop {
                match alice.relay(token.clone(), id, bob, text.clone(), 0).await {
                    Ok(delivery) => return delivery,
                    // Still opening the database again.
                    Err(RpcError::Application(ChatError::StorageUnavailable)) => {
                        assert!(Instant::now() < deadline, "the store did not recover");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("expected stored or storage unavailable, got {other:?}"),
                }
            }
        }
    };
    assert_eq!(relay(failed).await, Delivery::Stored);
    stored.push(failed);
    for _ in 0..stored.len() {
        let id = Uuid::new_v4();
        assert_eq!(relay(id).await, Delivery::Stored);
        stored.push(id);
    }

    // Bob gets everything that was acknowledged, the retried message among it, each once.
    let (bob_api, token) = server.register("bob", bob).await;
    let mut inbox = bob_api.inbox(token.clone()).await.unwrap();
    let expected = stored;
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let item = tokio::time::timeout(WAIT, inbox.next()).await.unwrap();
        match item.unwrap().unwrap() {
            InboxItem::Message(m) => received.push(m.id),
            InboxItem::Room(_)
            | InboxItem::Friend(_)
            | InboxItem::Call(_)
            | InboxItem::Punch(_) => {}
        }
    }
    assert_eq!(received, expected);
}

/// A TCP proxy in front of the chat server that can lose the server's answers and then cut
/// every connection, as a network that fails in the middle of a call would.
struct Proxy {
    endpoint: Endpoint,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    /// Whether what the server sends is dropped instead of passed on.
    drop_answers: AtomicBool,
    connections: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Proxy {
    async fn start(server: &Endpoint) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("tcp://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let target = server.to_string();
        let target = target.trim_start_matches("tcp://").to_owned();
        let state = Arc::new(ProxyState::default());
        let accepting = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let state = accepting.clone();
                let task = tokio::spawn(async move {
                    let (mut from_client, mut to_server) =
                        (client.into_split(), server.into_split());
                    let up = tokio::io::copy(&mut from_client.0, &mut to_server.1);
                    let down = async {
                        let mut buf = vec![0u8; 16 << 10];
                        loop {
                            let n = to_server.0.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if !state.drop_answers.load(Ordering::SeqCst) {
                                from_client.1.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    let _ = tokio::join!(up, down);
                });
                accepting
                    .connections
                    .lock()
                    .unwrap()
                    .push(task.abort_handle());
            }
        });
        Proxy { endpoint, state }
    }

    fn drop_answers(&self, drop: bool) {
        self.state.drop_answers.store(drop, Ordering::SeqCst);
    }

    /// Closes every connection made through the proxy so far.
    fn cut(&self) {
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// A client of the in-process server whose peer cannot be reached directly (so messages to it
/// go through the server).
async fn chat_client(server: &Endpoint, name: &str) -> (ChatClient, ChatEvents) {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("tcp://{}", closed.local_addr().unwrap());
    let mut config = ChatClientConfig::new(server.clone(), name);
    config.advertise = Some(closed);
    ChatClient::connect(config).await.unwrap()
}

/// The next message this client shows, skipping other events.
async fn next_message(events: &mut ChatEvents) -> Envelope {
    loop {
        let event = tokio::time::timeout(WAIT, events.recv()).await;
        if let ChatEvent::Message(m) = event.unwrap().unwrap() {
            return m;
        }
    }
}

#[tokio::test]
async fn a_send_cut_off_before_its_answer_is_sent_again_with_its_id_and_reported_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ChatServerConfig::new(dir.path());
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    let server = ChatServer::start(config).await.unwrap();
    let proxy = Proxy::start(&server.endpoints()[0]).await;
    let (bob, mut bob_events) = chat_client(&server.endpoints()[0], "bob").await;
    let (alice, _alice_events) = chat_client(&proxy.endpoint, "alice").await;
    for client in [&alice, &bob] {
        client.join("lobby").await.unwrap();
    }

    // The server takes the relay, but its answer never reaches alice: the connection drops.
    proxy.drop_answers(true);
    let sending = tokio::spawn({
        let alice = alice.clone();
        async move { alice.send("bob", "did it arrive?").await }
    });
    let received = next_message(&mut bob_events).await;
    assert_eq!(received.text, "did it arrive?");
    proxy.cut();
    proxy.drop_answers(false);
    let report = sending.await.unwrap().expect("reported sent, not failed");
    assert_eq!(report.id, received.id);
    assert_eq!(report.path, Path::Relayed);

    // The same for a post in a room.
    proxy.drop_answers(true);
    let posting = tokio::spawn({
        let alice = alice.clone();
        async move { alice.post("lobby", "posted once").await }
    });
    let received = next_message(&mut bob_events).await;
    assert_eq!(received.text, "posted once");
    proxy.cut();
    proxy.drop_answers(false);
    let id = posting.await.unwrap().expect("reported posted, not failed");
    assert_eq!(id, received.id);

    // Neither came twice: the next thing bob gets is the next message.
    alice.send("bob", "next").await.unwrap();
    assert_eq!(next_message(&mut bob_events).await.text, "next");
    let history = bob.history("lobby").await.unwrap();
    let posts: Vec<&str> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(posts, ["posted once"]);
    alice.close().await;
    bob.close().await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_upload_cut_off_resumes_where_the_servers_copy_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ChatServerConfig::new(dir.path());
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    let server = ChatServer::start(config).await.unwrap();
    let proxy = Proxy::start(&server.endpoints()[0]).await;
    // Bob cannot be reached directly: the file goes through the server.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bob = ChatClientConfig::new(server.endpoints()[0].clone(), "bob");
    bob.advertise = Some(format!("quic://{}", closed.local_addr().unwrap()));
    bob.files_dir = Some(dir.path().join("bob-files"));
    bob.max_file_bytes = 100 << 20;
    let (_bob, mut bob_events) = ChatClient::connect(bob).await.unwrap();
    let mut alice = ChatClientConfig::new(proxy.endpoint.clone(), "alice");
    alice.direct_timeout = Duration::from_millis(300);
    let (alice, _alice_events) = ChatClient::connect(alice).await.unwrap();

    let source = dir.path().join("backup.bin");
    let data: Vec<u8> = (0..20_000_000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(&source, &data).unwrap();
    // A quarter of the way, the server's answers stop reaching alice (a piece is in flight,
    // taken by the server or not), then every connection through the proxy is cut.
    let (quarter, mut reached) = tokio::sync::mpsc::unbounded_channel();
    let sending = tokio::spawn({
        let alice = alice.clone();
        async move {
            alice
                .send_file("bob", &source, move |sent, _| {
                    if sent >= 5_000_000 {
                        let _ = quarter.send(());
                    }
                })
                .await
        }
    });
    tokio::time::timeout(WAIT, reached.recv()).await.unwrap();
    proxy.drop_answers(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.cut();
    proxy.drop_answers(false);
    let report = tokio::time::timeout(WAIT, sending)
        .await
        .expect("the upload ends")
        .unwrap()
        .expect("the upload resumes and completes");
    assert_eq!(report.path, Path::Relayed, "{report:?}");
    assert!(report.resumed >= 1, "{report:?}");
    let saved = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(ChatEvent::File(chat_client::FileEvent::Received { path, .. })) =
                bob_events.recv().await
            {
                return path;
            }
        }
    })
    .await
    .unwrap();
    assert!(std::fs::read(saved).unwrap() == data, "the copy differs");
    server.shutdown(Duration::from_millis(100)).await;
}
