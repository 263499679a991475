//! The chat server and client recovering from failures by themselves: a store that hit a real
//! I/O error (a file that may not grow, as on a full disk), and a connection lost in the middle
//! of a send.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use examples::chat::api::{ChatError, Delivery, InboxItem, RegisterRequest, SignalClient};
use futures::StreamExt;
use rpc_core::{Client, Endpoint, RpcError};
use support::Killed;
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
            InboxItem::Room(_) => {}
        }
    }
    assert_eq!(received, expected);
}
