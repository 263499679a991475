//! The chat server's limits over real TCP on 127.0.0.1: what names may contain, how much of
//! their input errors quote, paged lists whose pages stay small whatever other users do, and
//! per-user quotas.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::path::Path as FsPath;
use std::time::Duration;

use chat_api::{
    Access, ChatError, Delivery, InboxItem, MAX_TEXT_BYTES, Membership, Page, PresenceEvent,
    RegisterRequest, RoomInfo, Session, SignalClient,
};
use chat_server::page::{ContentLen, MIN_PAGE_BYTES};
use chat_server::{ChatServer, ChatServerConfig};
use futures::StreamExt;
use rpc_core::{Client, Format, RpcError};
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
        api.history(alice.token.clone(), long.clone(), None, 0)
            .await,
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

#[test]
fn the_server_program_refuses_durations_and_sizes_out_of_range() {
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
        let said = support::refused_at_startup(server, &args);
        assert!(said.contains(flag), "{flag} {value}: {said}");
    }
    let help = std::process::Command::new(server)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--max-rooms-created",
        "--max-rooms-joined",
        "--max-pending",
        "--max-page-items",
        "--max-page-bytes",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// Every page of a list, asked for with `limit`, checking each against the frame limit as it
/// comes (in the two serializers that make it largest and smallest).
async fn all_pages<T, F, Fut>(frame_limit: usize, mut page: F) -> (Vec<T>, usize)
where
    T: serde::Serialize,
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, RpcError<ChatError>>>,
{
    let mut items = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let next = page(after.clone()).await.unwrap();
        pages += 1;
        for format in [Format::Json, Format::MessagePack] {
            let encoded = format.to_bytes(&next).unwrap().len();
            assert!(encoded < frame_limit, "a page of {encoded} bytes");
        }
        assert!(!next.items.is_empty(), "an empty page before the end");
        items.extend(next.items);
        match next.next {
            Some(cursor) => after = Some(cursor),
            None => return (items, pages),
        }
    }
}

#[tokio::test]
async fn thousands_of_rooms_list_in_pages_each_under_the_frame_limit() {
    let dir = tempfile::tempdir().unwrap();
    // The smallest frame limit and page budget the server allows, so that a few thousand rooms
    // show what tens of thousands do with the defaults.
    let frame_limit = ChatServerConfig::MIN_FRAME_LEN;
    let server = start(dir.path(), |c| {
        c.max_frame_len = frame_limit;
        c.max_page_bytes = MIN_PAGE_BYTES;
    })
    .await;
    let api = connect(&server).await;
    let users = 30;
    let per_user = 100;
    let mut makers = Vec::new();
    for i in 0..users {
        makers.push(register(&api, &format!("maker{i}")).await);
    }
    let tokens: Vec<String> = makers.iter().map(|s| s.token.clone()).collect();
    let created: Vec<String> = futures::stream::iter(0..users * per_user)
        .map(|i| {
            let (api, token) = (api.clone(), tokens[i / per_user].clone());
            async move {
                let name = format!("room-{i:05}");
                api.create_room(token, name.clone(), Access::Open)
                    .await
                    .unwrap();
                name
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut expected = created;
    expected.sort();

    let listed: Vec<RoomInfo> = expected
        .iter()
        .map(|name| {
            // room-00000 to room-00099 were made by the first maker, who lists them.
            let i: usize = name["room-".len()..].parse().unwrap();
            RoomInfo {
                name: name.clone(),
                member_count: 1,
                owner: makers[i / per_user].user.id,
                access: Access::Open,
                membership: if i / per_user == 0 {
                    Membership::Owner
                } else {
                    Membership::Outsider
                },
            }
        })
        .collect();
    // All of them in one answer would not fit in a frame.
    assert!(Format::MessagePack.to_bytes(&listed).unwrap().len() > frame_limit);

    let token = tokens[0].clone();
    let (rooms, pages) = all_pages(frame_limit, |after| api.rooms(token.clone(), after, 0)).await;
    assert_eq!(rooms, listed);
    assert!(pages > 1, "{pages} pages");
    // A limit above the server's maximum gets the maximum.
    let one = api.rooms(token.clone(), None, u32::MAX).await.unwrap();
    assert!(one.items.len() <= ChatServerConfig::DEFAULT_MAX_PAGE_ITEMS);
    // A small limit is kept.
    let two = api.rooms(token.clone(), None, 2).await.unwrap();
    assert_eq!(two.items, listed[..2]);
    let bad = api.rooms(token, Some("x".repeat(100)), 0).await;
    assert!(matches!(app_error(bad), ChatError::Invalid(_)));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_history_of_large_posts_comes_in_pages_of_at_most_64_kib() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let api = connect(&server).await;
    let alice = register(&api, "alice").await;
    api.join(alice.token.clone(), "lobby".into()).await.unwrap();
    let mut posted = Vec::new();
    for i in 0..ChatServerConfig::DEFAULT_ROOM_HISTORY {
        let id = Uuid::new_v4();
        let text = format!("{i:03}{}", "x".repeat(MAX_TEXT_BYTES - 3));
        api.post(alice.token.clone(), "lobby".into(), id, text, 0)
            .await
            .unwrap();
        posted.push(id);
    }
    let mut after = None;
    let mut history = Vec::new();
    loop {
        let page = api
            .history(alice.token.clone(), "lobby".into(), after, 0)
            .await
            .unwrap();
        let content: usize = page.items.iter().map(ContentLen::content_len).sum();
        assert!(content <= 64 << 10, "a page of {content} bytes");
        assert!(!page.items.is_empty());
        history.extend(page.items.iter().map(|e| e.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(history, posted);
    let bad = api
        .history(alice.token.clone(), "lobby".into(), Some("x".into()), 0)
        .await;
    assert!(matches!(app_error(bad), ChatError::Invalid(_)));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn who_is_online_and_who_is_in_a_room_come_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.max_page_items = 2).await;
    let api = connect(&server).await;
    let mut sessions = Vec::new();
    for name in ["eve", "bob", "dan", "ann", "cat"] {
        let session = register(&api, name).await;
        api.join(session.token.clone(), "lobby".into())
            .await
            .unwrap();
        sessions.push(session);
    }
    let token = sessions[0].token.clone();
    let limit = ChatServerConfig::DEFAULT_MAX_FRAME_LEN;
    let (online, pages) = all_pages(limit, |after| api.online(token.clone(), after, 0)).await;
    let names: Vec<&str> = online.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["ann", "bob", "cat", "dan", "eve"]);
    assert_eq!(pages, 3);
    let (members, pages) = all_pages(limit, |after| {
        api.members(token.clone(), "lobby".into(), after, 0)
    })
    .await;
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["ann", "bob", "cat", "dan", "eve"]);
    assert_eq!(pages, 3);
    let info = api.join(token.clone(), "lobby".into()).await.unwrap();
    assert_eq!(info.member_count, 5);

    // Between two pages someone not yet listed leaves and someone new comes after the cursor:
    // nobody is listed twice or missed, and the changes show.
    let first = api.online(token.clone(), None, 0).await.unwrap();
    api.leave(sessions[2].token.clone()).await.unwrap(); // dan
    register(&api, "cal").await;
    let (rest, _) = all_pages(limit, |after| {
        let after = after.or(first.next.clone());
        api.online(token.clone(), after, 0)
    })
    .await;
    let names: Vec<&str> = first
        .items
        .iter()
        .chain(&rest)
        .map(|u| u.name.as_str())
        .collect();
    assert_eq!(names, ["ann", "bob", "cal", "cat", "eve"]);

    // The presence stream starts with the online list in parts of the same size.
    let mut presence = api.presence(token.clone()).await.unwrap();
    let mut parts = Vec::new();
    loop {
        match presence.next().await.unwrap().unwrap() {
            PresenceEvent::Online { users, more } => {
                assert!(users.len() <= 2);
                parts.extend(users.into_iter().map(|u| u.name));
                if !more {
                    break;
                }
            }
            other => panic!("a change before the list ended: {other:?}"),
        }
    }
    assert_eq!(parts, ["ann", "bob", "cal", "cat", "eve"]);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn each_user_has_quotas_of_rooms_made_rooms_joined_and_messages_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let quotas = |c: &mut ChatServerConfig| {
        c.max_rooms_created = 3;
        c.max_rooms_joined = 4;
        c.max_pending = 2;
    };
    let server = start(dir.path(), quotas).await;
    let api = connect(&server).await;
    let alice_request = request("alice");
    let alice = api.register(alice_request.clone()).await.unwrap().token;
    let bob = register(&api, "bob").await.token;
    let quota = |e: ChatError, what: &str| match e {
        ChatError::Quota(message) => assert!(message.contains(what), "{message}"),
        other => panic!("expected a quota error, got {other:?}"),
    };

    // Rooms made: by create_room, or by joining a room nobody made yet.
    api.create_room(alice.clone(), "r1".into(), Access::Open)
        .await
        .unwrap();
    api.create_room(alice.clone(), "r2".into(), Access::Open)
        .await
        .unwrap();
    api.join(alice.clone(), "r3".into()).await.unwrap();
    quota(
        app_error(
            api.create_room(alice.clone(), "r4".into(), Access::Open)
                .await,
        ),
        "3 rooms",
    );
    quota(
        app_error(api.join(alice.clone(), "r4".into()).await),
        "3 rooms",
    );
    let rooms = api.rooms(alice.clone(), None, 0).await.unwrap().items;
    assert_eq!(rooms.len(), 3, "{rooms:?}");

    // Rooms joined at once.
    api.create_room(bob.clone(), "b1".into(), Access::Open)
        .await
        .unwrap();
    api.create_room(bob.clone(), "b2".into(), Access::Open)
        .await
        .unwrap();
    api.join(alice.clone(), "b1".into()).await.unwrap();
    quota(
        app_error(api.join(alice.clone(), "b2".into()).await),
        "4 rooms",
    );
    // Joining a room again is no new room.
    api.join(alice.clone(), "b1".into()).await.unwrap();
    api.leave_room(alice.clone(), "r1".into()).await.unwrap();
    api.join(alice.clone(), "b2".into()).await.unwrap();
    // Membership outlasts the session: ending it frees no slot.
    api.create_room(bob.clone(), "b3".into(), Access::Open)
        .await
        .unwrap();
    api.leave(alice).await.unwrap();
    let alice = api.register(alice_request.clone()).await.unwrap().token;
    let mine = api.my_rooms(alice.clone(), None, 0).await.unwrap().items;
    let names: Vec<&str> = mine.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["b1", "b2", "r2", "r3"]);
    quota(
        app_error(api.join(alice.clone(), "b3".into()).await),
        "4 rooms",
    );

    // Messages waiting for one user: the newest is refused, its sender is told, and what was
    // accepted is all kept.
    let carol_request = request("carol");
    let carol = api.register(carol_request.clone()).await.unwrap();
    api.leave(carol.token).await.unwrap();
    let to = carol.user.id;
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for id in &ids[..2] {
        let stored = api.relay(bob.clone(), *id, to, "kept".into(), 0).await;
        assert_eq!(stored.unwrap(), Delivery::Stored);
    }
    let refused = api
        .relay(bob.clone(), ids[2], to, "refused".into(), 0)
        .await;
    quota(app_error(refused), "2 messages");
    // A retry of a message already accepted is not refused.
    let again = api.relay(bob.clone(), ids[0], to, "kept".into(), 0).await;
    assert_eq!(again.unwrap(), Delivery::Stored);
    let carol = api.register(carol_request).await.unwrap();
    let mut inbox = api.inbox(carol.token.clone()).await.unwrap();
    for id in &ids[..2] {
        match inbox.next().await.unwrap().unwrap() {
            InboxItem::Message(m) => assert_eq!(m.id, *id),
            other => panic!("{other:?}"),
        }
    }
    api.ack(carol.token.clone(), ids[..2].to_vec())
        .await
        .unwrap();
    let delivered = api.relay(bob.clone(), ids[2], to, "now".into(), 0).await;
    assert_eq!(delivered.unwrap(), Delivery::Delivered);
    server.shutdown(Duration::from_secs(1)).await;

    // The rooms a user made are counted across restarts.
    let server = start(dir.path(), quotas).await;
    let api = connect(&server).await;
    let alice = api.register(alice_request).await.unwrap().token;
    quota(
        app_error(
            api.create_room(alice.clone(), "r5".into(), Access::Open)
                .await,
        ),
        "3 rooms",
    );
    server.shutdown(Duration::from_secs(1)).await;
}
