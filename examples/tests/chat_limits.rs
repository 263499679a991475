//! The chat server's limits over real TCP on 127.0.0.1: what names may contain, how much of
//! their input errors quote, paged lists whose pages stay small whatever other users do, and
//! per-user quotas.

mod support;

use std::path::Path as FsPath;
use std::time::Duration;

use examples::chat::api::{ChatError, RegisterRequest, Session, SignalClient};
use examples::chat::server::{ChatServer, ChatServerConfig};
use rpc_core::{Client, RpcError};
use uuid::Uuid;

async fn start(dir: &FsPath, configure: impl FnOnce(&mut ChatServerConfig)) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    configure(&mut config);
    ChatServer::start(config).await.unwrap()
}

async fn connect(server: &ChatServer) -> SignalClient<Client> {
    let client = Client::builder()
        .connect(&server.endpoints()[0])
        .await
        .unwrap();
    SignalClient::new(client)
}

fn request(name: &str) -> RegisterRequest {
    RegisterRequest {
        id: Uuid::new_v4(),
        name: name.into(),
        secret: format!("secret of {name}"),
        endpoint: None,
    }
}

async fn register(api: &SignalClient<Client>, name: &str) -> Session {
    api.register(request(name)).await.unwrap()
}

fn app_error<T: std::fmt::Debug>(result: Result<T, RpcError<ChatError>>) -> ChatError {
    match result {
        Err(RpcError::Application(e)) => e,
        other => panic!("expected a chat error, got {other:?}"),
    }
}

#[tokio::test]
async fn names_that_hide_characters_or_turn_text_around_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let api = connect(&server).await;
    let alice = register(&api, "alice").await;
    for name in [
        "\u{200B}",
        "ali\u{200B}ce",
        "al\u{200D}ice",
        "\u{FEFF}alice",
        "alice\u{202E}gpj.exe",
        "\u{2066}bob\u{2069}",
        "bob\u{200F}",
        "bob\u{61C}",
        "bob\u{2060}",
        "bob\u{1B}[2J",
    ] {
        let refused = api.register(request(name)).await;
        assert!(
            matches!(app_error(refused), ChatError::Invalid(_)),
            "{name:?}"
        );
        let room = api.join(alice.token.clone(), name.into()).await;
        assert!(matches!(app_error(room), ChatError::Invalid(_)), "{name:?}");
    }
    // Ordinary names in any script are fine.
    register(&api, "Zoë 李 مرحبا").await;
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn errors_quote_a_short_prefix_of_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let api = connect(&server).await;
    let alice = register(&api, "alice").await;
    let long = "w".repeat(1 << 20);
    let quoted = |e: ChatError| {
        let text = e.to_string();
        assert!(text.len() < 200, "{} bytes quoted", text.len());
        assert!(text.contains("wwww…"), "{text}");
    };
    quoted(app_error(
        api.lookup(alice.token.clone(), long.clone()).await,
    ));
    quoted(app_error(
        api.history(alice.token.clone(), long.clone()).await,
    ));
    quoted(app_error(
        api.leave_room(alice.token.clone(), long.clone()).await,
    ));
    quoted(app_error(
        api.post(
            alice.token.clone(),
            long.clone(),
            Uuid::new_v4(),
            "hi".into(),
            0,
        )
        .await,
    ));
    let endpoint = RegisterRequest {
        endpoint: Some(format!("tcp://{}", "w".repeat(200))),
        ..request("bob")
    };
    let refused = app_error(api.register(endpoint).await).to_string();
    assert!(refused.len() < 200, "{refused}");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn settings_out_of_range_are_refused_when_the_server_starts() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |configure: fn(&mut ChatServerConfig)| {
        let mut config = ChatServerConfig::new(dir.path());
        config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
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
    let error = refused(|c| *c = c.clone().with_presence_ttl(Duration::from_secs(u64::MAX))).await;
    assert!(error.contains("presence TTL"), "{error}");
    let error = refused(|c| c.heartbeat = c.presence_ttl).await;
    assert!(error.contains("heartbeat"), "{error}");
    let error = refused(|c| c.heartbeat = Duration::ZERO).await;
    assert!(error.contains("heartbeat"), "{error}");
    let error = refused(|c| c.room_history = 0).await;
    assert!(error.contains("room history"), "{error}");
    let error = refused(|c| c.max_pending = 0).await;
    assert!(error.contains("mailbox"), "{error}");
    let error = refused(|c| c.max_frame_len = 100).await;
    assert!(error.contains("frame"), "{error}");
    // Nothing was opened: no database file was made.
    assert!(!dir.path().join("chat.redb").exists());
}

/// Runs a program with arguments that must be refused at startup; returns what it said.
fn refused_at_startup(program: &str, args: &[&str]) -> String {
    let child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = support::Killed(child);
    let status = child.exit_status(Duration::from_secs(10));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{program} {args:?}: {stderr}");
    stderr
}

#[test]
fn the_programs_refuse_durations_and_sizes_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let server = env!("CARGO_BIN_EXE_chat-server");
    let base = ["--listen", "tcp://127.0.0.1:0", "--data-dir", data];
    for (flag, value) in [
        ("--presence-ttl-secs", "18446744073709551615"),
        ("--presence-ttl-secs", "0"),
        ("--grace", "18446744073709551615"),
        ("--room-history", "0"),
        ("--max-pending", "0"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain([flag, value]).collect();
        let said = refused_at_startup(server, &args);
        assert!(said.contains(flag), "{flag} {value}: {said}");
    }
    let client = env!("CARGO_BIN_EXE_chat-client");
    let base = ["--json", "--name", "ann", "--server", "tcp://127.0.0.1:9"];
    for (flag, value) in [
        ("--direct-timeout-ms", "0"),
        ("--direct-timeout-ms", "18446744073709551615"),
        ("--for", "-1"),
        ("--for", "NaN"),
        ("--for", "1e300"),
    ] {
        let given = format!("{flag}={value}");
        let args: Vec<&str> = base.iter().copied().chain([given.as_str()]).collect();
        let said = refused_at_startup(client, &args);
        assert!(said.contains(flag), "{flag} {value}: {said}");
    }
}
