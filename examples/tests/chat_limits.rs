//! The chat server's limits over real TCP on 127.0.0.1: what names may contain, how much of
//! their input errors quote, paged lists whose pages stay small whatever other users do, and
//! per-user quotas.

use std::path::Path as FsPath;

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
    server.shutdown(std::time::Duration::from_secs(1)).await;
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
    server.shutdown(std::time::Duration::from_secs(1)).await;
}
