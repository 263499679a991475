//! The chat service in one command: a server and three scripted clients, every step checked.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chat_api::{
    Access, Destination, Envelope, FriendEvent, FriendState, Membership, Path, PresenceEvent,
    RoomEvent,
};
use chat_client::{ChatClient, ChatClientConfig, ChatEvent, ChatEvents, path_name};
use chat_server::{ChatServer, ChatServerConfig};
use clap::Parser;
use rpc_core::Endpoint;
use rpc_registry::MemoryRegistry;

/// Runs the chat service end to end in one process and prints what happens.
///
/// A chat server starts on 127.0.0.1 (a free port) with an embedded registry and its storage in
/// a temporary directory. Three scripted clients, alice, bob and carol, then: register and show
/// the addresses the server observed; find each other; exchange a direct message (peer to peer)
/// and, once bob's peer is unreachable, a relayed one; meet in the room "lobby"; alice makes the
/// invite-only group "crew" (adds bob, invites carol) and bob and alice become friends; while
/// carol is offline, alice writes to her and bob posts in the group: carol comes back on another
/// device, logging in by name and password, and receives exactly what she missed, in order.
/// Every step is checked; the exit status is 0 only if all checks passed.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The presence TTL of the demo server, in milliseconds (300 to 3600000).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(300..=3_600_000))]
    presence_ttl_ms: u64,
    /// How long to wait for any one expected event, in milliseconds (1 to 60000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    wait_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chat-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let outcome = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), demo(&args))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the demo took over a minute")))
    });
    match outcome {
        Ok(()) => {
            println!(
                "\n✓ demo complete in {:.1} s: every check passed",
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("\n✗ demo FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One scripted user: the client and the events it has not looked at yet.
struct Person {
    name: String,
    /// Kept to come back as the same user (same id and secret).
    config: ChatClientConfig,
    client: ChatClient,
    events: ChatEvents,
    wait: Duration,
}

impl Person {
    async fn connect(config: ChatClientConfig, wait: Duration) -> anyhow::Result<Person> {
        let name = config.name.clone();
        let (client, events) = ChatClient::connect(config.clone())
            .await
            .with_context(|| format!("{name} could not connect"))?;
        Ok(Person {
            name,
            config,
            client,
            events,
            wait,
        })
    }

    /// Reads events until one matches, for up to the wait; the others are passed over.
    async fn expect<T>(
        &mut self,
        what: &str,
        mut matches: impl FnMut(&ChatEvent) -> Option<T>,
    ) -> anyhow::Result<T> {
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(self.wait).unwrap_or(now);
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!("{} waited {:?} in vain for {what}", self.name, self.wait)
                })?
                .with_context(|| format!("{}'s client stopped", self.name))?;
            if let Some(found) = matches(&event) {
                return Ok(found);
            }
        }
    }

    /// The next direct message (not a room post) this person receives.
    async fn message(&mut self, what: &str) -> anyhow::Result<Envelope> {
        self.expect(what, |e| match e {
            ChatEvent::Message(m) if matches!(m.to, Destination::User(_)) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Checks that no further message arrives for a little while.
    async fn no_more_messages(&mut self, quiet: Duration) -> anyhow::Result<()> {
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(quiet).unwrap_or(now);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if let ChatEvent::Message(m) = event {
                bail!(
                    "{} got an unexpected message: {:?} from {}",
                    self.name,
                    m.text,
                    m.from.name
                );
            }
        }
        Ok(())
    }
}

fn check(line: impl AsRef<str>) {
    println!("   ✓ {}", line.as_ref());
}

fn step(number: u32, title: &str) {
    println!("\n{number}. {title}");
}

async fn demo(args: &Args) -> anyhow::Result<()> {
    let wait = Duration::from_millis(args.wait_ms);
    let data = tempfile::tempdir().context("creating a temporary directory")?;
    let mut config = ChatServerConfig::new(data.path())
        .with_presence_ttl(Duration::from_millis(args.presence_ttl_ms));
    config.listen = vec!["tcp://127.0.0.1:0".parse()?];
    config.registry = Some(Arc::new(MemoryRegistry::new()));
    let server = ChatServer::start(config)
        .await
        .context("starting the chat server")?;
    let endpoint: Endpoint = server
        .endpoints()
        .first()
        .cloned()
        .context("the server listens nowhere")?;
    println!("chat demo: one chat server and three clients (alice, bob, carol) in this process");
    println!("   chat server listening on {endpoint}");
    println!(
        "   embedded registry for presence (TTL {} ms), storage in {}",
        args.presence_ttl_ms,
        data.path().display()
    );

    step(1, "alice, bob and carol register");
    let mut people = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let person = Person::connect(ChatClientConfig::new(endpoint.clone(), name), wait).await?;
        let session = person
            .client
            .session()
            .with_context(|| format!("{name} is not online after connecting"))?;
        check(format!("{name} registered with id {}", person.client.id()));
        println!(
            "       the server sees {name} at {}; {name}'s own peer listens on {}",
            session.user.observed,
            person.client.peer_endpoint(),
        );
        people.push(person);
    }
    let [mut alice, mut bob, carol] =
        <[Person; 3]>::try_from(people).map_err(|_| anyhow::anyhow!("three people expected"))?;

    step(2, "they find each other");
    let mut seen = BTreeSet::new();
    alice
        .expect("bob and carol in alice's presence stream", |e| {
            match e {
                ChatEvent::Presence(PresenceEvent::Online { users, .. }) => {
                    seen.extend(users.iter().map(|u| u.name.clone()));
                }
                ChatEvent::Presence(PresenceEvent::Joined(user)) => {
                    seen.insert(user.name.clone());
                }
                _ => {}
            }
            (seen.contains("bob") && seen.contains("carol")).then_some(())
        })
        .await?;
    check("alice's presence stream showed bob and carol coming online");
    let mut online: Vec<String> = alice
        .client
        .who()
        .await?
        .into_iter()
        .map(|u| u.name)
        .collect();
    online.sort();
    ensure!(
        online == ["alice", "bob", "carol"],
        "alice sees {online:?} online"
    );
    check(format!("alice asks who is online: {}", online.join(", ")));
    let found = bob.client.lookup("carol").await?;
    ensure!(found.id == carol.client.id(), "bob found the wrong carol");
    check(format!(
        "bob looks up \"carol\": id {}, direct messages to {}",
        found.id,
        found.advertised.as_deref().unwrap_or("nowhere")
    ));

    step(
        3,
        "alice writes to bob: peer to peer, over QUIC, each end proving its device key",
    );
    let text = "hi bob, this one comes straight from my client";
    let report = alice.client.send("bob", text).await?;
    ensure!(
        report.path == Path::Direct,
        "alice's message went {:?}, not direct",
        report.path
    );
    check(format!(
        "alice sent {text:?}: path {}",
        path_name(report.path)
    ));
    let got = bob.message("alice's direct message").await?;
    ensure!(
        got.text == text && got.path == Path::Direct,
        "bob got {got:?}"
    );
    check(format!(
        "bob received it from {} by path {}",
        got.from.name,
        path_name(got.path)
    ));

    step(4, "bob's peer becomes unreachable: the server relays");
    bob.client.stop_peer().await;
    check(format!(
        "bob stopped serving his peer; he still advertises {}",
        bob.client.advertised().unwrap_or("nothing")
    ));
    let text = "bob, your peer is down, so this goes through the server";
    let report = alice.client.send("bob", text).await?;
    ensure!(
        report.path == Path::Relayed,
        "alice's message went {:?}, not relayed",
        report.path
    );
    check(format!(
        "alice sent {text:?}: direct failed ({}), path {}",
        report.direct_error.as_deref().unwrap_or("?"),
        path_name(report.path)
    ));
    let got = bob.message("alice's relayed message").await?;
    ensure!(
        got.text == text && got.path == Path::Relayed,
        "bob got {got:?}"
    );
    check(format!(
        "bob received it from {} by path {}",
        got.from.name,
        path_name(got.path)
    ));

    step(5, "they meet in the room \"lobby\"");
    let mut people = [alice, bob, carol];
    for person in &people {
        let info = person.client.join("lobby").await?;
        let members = person.client.members(&info.name).await?;
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        check(format!(
            "{} joins #lobby; members now: {}",
            person.name,
            names.join(", ")
        ));
    }
    for i in 0..2 {
        let later: Vec<String> = people[i + 1..].iter().map(|p| p.name.clone()).collect();
        let mut joined = BTreeSet::new();
        let person = &mut people[i];
        person
            .expect("the others joining #lobby", |e| {
                if let ChatEvent::Room(RoomEvent::Joined { room, user }) = e
                    && room == "lobby"
                {
                    joined.insert(user.name.clone());
                }
                later.iter().all(|n| joined.contains(n)).then_some(())
            })
            .await?;
        check(format!("{} saw {} join", person.name, later.join(" and ")));
    }
    let posts = [
        ("alice", "hello lobby!"),
        ("bob", "hi all"),
        ("carol", "good to see you both"),
    ];
    for (i, (name, text)) in posts.iter().enumerate() {
        people[i].client.post("lobby", text).await?;
        check(format!("{name} posts {text:?}"));
    }
    for person in &mut people {
        let mut got = Vec::new();
        person
            .expect("the three posts in #lobby", |e| {
                if let ChatEvent::Message(m) = e
                    && m.to == Destination::Room("lobby".into())
                {
                    got.push((m.from.name.clone(), m.text.clone()));
                }
                (got.len() == posts.len()).then_some(())
            })
            .await?;
        let expected: Vec<(String, String)> = posts
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        ensure!(got == expected, "{} saw the posts {got:?}", person.name);
        check(format!("{} saw all three posts, in order", person.name));
    }

    step(
        6,
        "alice makes the group \"crew\"; bob and alice become friends",
    );
    let [mut alice, mut bob, mut carol] = people;
    let crew = alice.client.create_room("crew", Access::InviteOnly).await?;
    ensure!(
        crew.access == Access::InviteOnly && crew.membership == Membership::Owner,
        "alice made {crew:?}"
    );
    check("alice makes #crew, invite-only, which she owns");
    alice.client.add_member("crew", "bob").await?;
    check("alice adds bob to #crew");
    alice.client.invite("crew", "carol").await?;
    carol
        .expect("an invitation to #crew", |e| match e {
            ChatEvent::Room(RoomEvent::Invited { room, by }) if room == "crew" => {
                Some(by.name.clone())
            }
            _ => None,
        })
        .await?;
    check("alice invites carol; carol is told");
    let joined = carol.client.join("crew").await?;
    ensure!(joined.member_count == 3, "carol joined {joined:?}");
    check("carol joins #crew: 3 members");
    let (_, asked) = bob.client.request_friend("alice").await?;
    ensure!(
        asked == FriendState::RequestSent,
        "bob's request: {asked:?}"
    );
    alice
        .expect("bob's friend request", |e| match e {
            ChatEvent::Friend(FriendEvent::Requested { from }) if from.name == "bob" => Some(()),
            _ => None,
        })
        .await?;
    check("bob asks alice to be friends; alice is told");
    alice.client.accept_friend("bob").await?;
    bob.expect("alice accepting", |e| match e {
        ChatEvent::Friend(FriendEvent::Accepted { by }) if by.name == "alice" => Some(()),
        _ => None,
    })
    .await?;
    let friends = alice.client.friends().await?;
    ensure!(
        friends.len() == 1
            && friends[0].user.name == "bob"
            && friends[0].state == FriendState::Friends
            && friends[0].online,
        "alice's friends: {friends:?}"
    );
    check("alice accepts; her friends list shows bob, online");

    step(
        7,
        "carol goes offline; alice writes to her, bob posts in #crew",
    );
    let carol_id = carol.client.id();
    carol.client.shutdown().await;
    check("carol left the server");
    alice
        .expect("carol leaving", |e| match e {
            ChatEvent::Presence(PresenceEvent::Left(u)) if u.id == carol_id => Some(()),
            _ => None,
        })
        .await?;
    check("alice's presence stream showed carol going offline");
    let missed = [
        "carol, you missed the end of the party",
        "call me when you are back",
    ];
    for text in missed {
        let report = alice.client.send("carol", text).await?;
        ensure!(
            report.path == Path::Stored,
            "alice's message went {:?}, not stored",
            report.path
        );
        check(format!(
            "alice sent {text:?}: path {} (the server keeps it)",
            path_name(report.path)
        ));
    }

    let plan = "tomorrow at ten, carol will see this when she is back";
    bob.client.post("crew", plan).await?;
    check(format!(
        "bob posts {plan:?} in #crew (kept for carol, who is still a member)"
    ));

    step(
        8,
        "carol comes back on another device, by name and password, and gets what she missed",
    );
    let password = carol.config.secret.clone();
    let another_device = ChatClientConfig::new(endpoint.clone(), "carol").login(password);
    let mut carol = Person::connect(another_device, wait).await?;
    ensure!(
        carol.client.id() == carol_id,
        "carol logged in as {}, not {carol_id}",
        carol.client.id()
    );
    check(format!(
        "carol logged in by name and password: the same id, {carol_id}"
    ));
    let expected = [
        (missed[0], Path::Stored),
        (missed[1], Path::Stored),
        (plan, Path::Room),
    ];
    for (i, (text, path)) in expected.iter().enumerate() {
        let got = carol
            .expect("the messages she missed", |e| match e {
                ChatEvent::Message(m) => Some(m.clone()),
                _ => None,
            })
            .await?;
        ensure!(
            got.text == *text && got.path == *path,
            "carol's message {} was {got:?}, expected {text:?} by path {}",
            i + 1,
            path_name(*path)
        );
        let place = match &got.to {
            Destination::Room(room) => format!(" in #{room}"),
            Destination::User(_) => String::new(),
        };
        check(format!(
            "carol received {:?} from {}{place} by path {}",
            got.text,
            got.from.name,
            path_name(got.path)
        ));
    }
    carol.no_more_messages(Duration::from_millis(500)).await?;
    check("exactly what she missed, in order, each once");
    let rooms: Vec<String> = carol.client.joined_rooms();
    ensure!(rooms == ["crew", "lobby"], "carol is in {rooms:?}");
    check("the server kept her rooms: #crew and #lobby");

    step(9, "everyone leaves");
    for person in [&alice, &bob, &carol] {
        person.client.shutdown().await;
    }
    alice.events.close();
    check("alice, bob and carol left");
    server.shutdown(Duration::from_secs(2)).await;
    check("the chat server shut down");
    Ok(())
}
