//! Replays hostile and unlucky clients against each server program and checks that its memory
//! stays bounded, that it gives the memory back when they leave, and that a well-behaved client
//! is served all the while.
//!
//! Every attack runs against a fresh server process (started from the programs next to this one,
//! on a free loopback port, with a temporary data directory), so its peak RSS (`VmHWM`) is the
//! attack's. Meanwhile a well-behaved client calls the server every 100 ms with a 2 s deadline.
//! When the attack's time is up its connections close; after a settling pause the server's RSS
//! is read again. The run fails when any bound is broken.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, BytesMut};
use chat_api::{Access, RegisterRequest, SignalClient};
use clap::{Parser, ValueEnum};
use examples::hello::GreeterClient;
use examples::proc_status::status_kib;
use rpc_core::codec::{FrameKind, HEADER_LEN, Header, RequestHead, Status};
use rpc_core::{Client, Endpoint, Format};
use rpc_registry::{Instance, PageRequest, RegistryApiClient, ServiceKey};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Replays each attack on the servers' limits against hello-server, registry-server and
/// chat-server (release builds are what the bounds are set for) and checks the bounds: peak RSS,
/// RSS after the attackers leave, and that a well-behaved client is served throughout.
///
/// Attacks: `ping-flood` (connections that send pings and never read the pongs), `call-flood`
/// (connections that send small calls and never read the answers), `junk` (connections that
/// send garbage, a frame announcing a huge body, or an unknown protocol version), `churn` (cycles of
/// many connections opened, used once and closed); for chat-server also `history` (3,000 history
/// calls per connection on a room of 4 KB posts, answers never read), `rooms` (rooms created
/// until every account's quota is spent) and `big-message` (20 MB messages); for registry-server
/// also `discover` (10,000 instances of one service, then discover calls never read).
///
/// Needs an open-file limit above `--churn-connections` plus a few hundred (`ulimit -n`).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The directory of the server programs. Default: the one this program is in.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Only these servers (repeat for several). Default: all.
    #[arg(long, value_enum)]
    server: Vec<Target>,
    /// Only the attacks with these names (repeat for several). Default: all.
    #[arg(long)]
    attack: Vec<String>,
    /// How long each flood lasts, in seconds (1 to 600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    attack_secs: u64,
    /// How long the server gets to give memory back after the attackers leave, in seconds (0 to
    /// 600): its RSS is read after 3 s (or this time, if shorter), then every 250 ms until it
    /// is within --max-growth-mib of what it was before the attack or this time is up (a
    /// loaded machine tears the attackers' connections down, and runs the allocator's purging
    /// thread, later).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=600))]
    settle_secs: u64,
    /// Attacking connections in each flood (1 to 10000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    flood_connections: u64,
    /// Cycles of the churn attack (1 to 1000).
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=1000))]
    churn_cycles: u32,
    /// Connections open at once in each churn cycle (1 to 100000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    churn_connections: u64,
    /// The bound on a server's peak RSS during any attack, in MiB: the default server memory
    /// budget (256 MiB of buffered frames) plus room for the allocator and the runtime.
    #[arg(long, default_value_t = 384)]
    max_peak_mib: u64,
    /// The bound on how much more RSS a server may hold once the attackers have left than
    /// before they came, in MiB.
    #[arg(long, default_value_t = 48)]
    max_growth_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Hello,
    Registry,
    Chat,
}

impl Target {
    const ALL: [Target; 3] = [Target::Hello, Target::Registry, Target::Chat];

    fn program(self) -> &'static str {
        match self {
            Target::Hello => "hello-server",
            Target::Registry => "registry-server",
            Target::Chat => "chat-server",
        }
    }

    fn attacks(self) -> &'static [&'static str] {
        const COMMON: [&str; 4] = ["ping-flood", "call-flood", "junk", "churn"];
        match self {
            Target::Hello => &COMMON,
            Target::Registry => &["ping-flood", "call-flood", "junk", "churn", "discover"],
            Target::Chat => &[
                "ping-flood",
                "call-flood",
                "junk",
                "churn",
                "history",
                "rooms",
                "big-message",
            ],
        }
    }
}

/// A running server program, killed when dropped.
struct Server {
    child: Child,
    endpoint: Endpoint,
    addr: std::net::SocketAddr,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(bin_dir: &Path, target: Target) -> anyhow::Result<Server> {
        let data = tempfile::tempdir()?;
        let program = bin_dir.join(format!(
            "{}{}",
            target.program(),
            std::env::consts::EXE_SUFFIX
        ));
        let mut command = Command::new(&program);
        command.args(["--listen", "tcp://127.0.0.1:0"]);
        if target == Target::Chat {
            command.arg("--data-dir").arg(data.path());
        }
        let mut child = command
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let endpoint = loop {
            let Some(line) = lines.next() else {
                bail!("{} exited before it listened", target.program());
            };
            let line = line?;
            if let Some(at) = line.find("tcp://") {
                break line[at..].trim().to_owned();
            }
        };
        // Keep reading, so that the server never writes to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        let addr = endpoint
            .trim_start_matches("tcp://")
            .parse()
            .with_context(|| format!("the address in {endpoint:?}"))?;
        let endpoint = endpoint
            .parse()
            .map_err(|e| anyhow::anyhow!("{endpoint:?}: {e}"))?;
        Ok(Server {
            child,
            endpoint,
            addr,
            _data: data,
        })
    }

    fn rss_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmRSS:").unwrap_or(0)
    }

    fn peak_kib(&self) -> u64 {
        status_kib(self.child.id(), "VmHWM:").unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// What the well-behaved client saw.
#[derive(Default)]
struct Served {
    ok: AtomicU64,
    failed: AtomicU64,
    slowest_us: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

/// The well-behaved client: one call every 100 ms with a 2 s deadline until `stop`.
async fn behave(target: Target, endpoint: Endpoint, served: Arc<Served>, stop: Arc<AtomicBool>) {
    let client = match Client::builder()
        .timeout(Duration::from_secs(2))
        .connect(&endpoint)
        .await
    {
        Ok(client) => client,
        Err(e) => {
            served.failed.fetch_add(1, Ordering::Relaxed);
            *served.first_error.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("connect: {e}"));
            return;
        }
    };
    let probe = Probe::new(target, client).await;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let outcome = probe.call().await;
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        served.slowest_us.fetch_max(took, Ordering::Relaxed);
        match outcome {
            Ok(()) => served.ok.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                let mut first = served.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert(e);
                served.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One cheap, real call per server.
enum Probe {
    Hello(GreeterClient<Client>),
    Registry(RegistryApiClient<Client>),
    Chat(SignalClient<Client>, Result<String, String>),
}

impl Probe {
    async fn new(target: Target, client: Client) -> Probe {
        match target {
            Target::Hello => Probe::Hello(GreeterClient::new(client)),
            Target::Registry => Probe::Registry(RegistryApiClient::new(client)),
            Target::Chat => {
                let api = SignalClient::new(client);
                let token = api
                    .register(RegisterRequest {
                        id: Uuid::new_v4(),
                        name: "well-behaved".into(),
                        secret: "a secret long enough".into(),
                        endpoint: None,
                    })
                    .await
                    .map(|session| session.token)
                    .map_err(|e| format!("register: {e}"));
                Probe::Chat(api, token)
            }
        }
    }

    async fn call(&self) -> Result<(), String> {
        match self {
            Probe::Hello(api) => api
                .hello("soak".into())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Probe::Registry(api) => api
                .discover(ServiceKey::new("soak.Probe"), PageRequest::default())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Probe::Chat(api, token) => {
                let token = token.clone()?;
                // Heartbeat keeps the session; a page of rooms is a list other users grow.
                api.heartbeat(token.clone())
                    .await
                    .map_err(|e| format!("heartbeat: {e}"))?;
                api.rooms(token, None, 0)
                    .await
                    .map(drop)
                    .map_err(|e| format!("rooms: {e}"))
            }
        }
    }
}

/// One frame's bytes: header and body.
fn frame(kind: FrameKind, id: u64, status: Status, body: &[u8]) -> BytesMut {
    let header = Header {
        kind,
        serializer: Format::MessagePack.id(),
        status,
        request_id: id,
        body_len: u32::try_from(body.len()).unwrap_or(u32::MAX),
    };
    let mut out = BytesMut::with_capacity(HEADER_LEN + body.len());
    header.put(&mut out);
    out.put_slice(body);
    out
}

/// The body of a request for `service`/`method` with MessagePack `args`.
fn request_body(service: &str, version: &str, method: &str, args: &impl Serialize) -> BytesMut {
    let head = RequestHead {
        service: service.into(),
        version: version.into(),
        method: method.into(),
        ..Default::default()
    };
    let mut body = BytesMut::new();
    // Names this short always fit the preamble, and these arguments always serialize.
    let _ = head.put(&mut body);
    let _ = Format::MessagePack.encode(args, &mut body);
    body
}

/// The body of one cheap call with an answer, for the call flood.
fn cheap_call(target: Target) -> BytesMut {
    match target {
        Target::Hello => request_body("hello.Greeter", "1", "hello", &("flood",)),
        Target::Registry => request_body(
            "rpc.Registry",
            "2",
            "discover",
            &(ServiceKey::new("soak.Flood"), PageRequest::default()),
        ),
        Target::Chat => request_body("chat.Signal", "2", "heartbeat", &("not a token",)),
    }
}

/// Writes frames made by `next` (given a fresh request id) as fast as the server takes them,
/// never reading, until `until`.
async fn flood(addr: std::net::SocketAddr, until: Instant, next: impl Fn(u64) -> BytesMut) {
    let Ok(mut socket) = TcpStream::connect(addr).await else {
        return;
    };
    let mut id = 1u64;
    while Instant::now() < until {
        let mut batch = BytesMut::new();
        while batch.len() < 64 * 1024 {
            batch.unsplit(next(id));
            id += 1;
        }
        let write = socket.write_all(&batch);
        match tokio::time::timeout_at(until.into(), write).await {
            Ok(Ok(())) => {}
            // Closed by the server, or blocked until the end: either way this attacker is done.
            Ok(Err(_)) | Err(_) => break,
        }
    }
}

async fn flood_all(
    addr: std::net::SocketAddr,
    connections: u64,
    until: Instant,
    next: impl Fn(u64) -> BytesMut + Clone + Send + 'static,
) {
    let mut set = JoinSet::new();
    for _ in 0..connections {
        set.spawn(flood(addr, until, next.clone()));
    }
    set.join_all().await;
}

/// Connections that send junk; each should be closed by the server. Returns how many were.
async fn junk(addr: std::net::SocketAddr, until: Instant) -> (u64, u64) {
    let kinds: [fn() -> BytesMut; 3] = [
        || BytesMut::from(&b"GET / HTTP/1.1\r\nHost: soak\r\n\r\n"[..]),
        || {
            // A header announcing 1 GiB.
            let mut out = frame(FrameKind::Request, 1, Status::OK, &[]);
            let len = out.len();
            out[len - 4..].copy_from_slice(&(1u32 << 30).to_be_bytes());
            out
        },
        || {
            // A ping, then a header of a protocol version nobody speaks.
            let mut out = frame(FrameKind::Ping, 1, Status::OK, &[]);
            let mut bad = frame(FrameKind::Ping, 2, Status::OK, &[]);
            bad[2] = 0x7f;
            out.unsplit(bad);
            out
        },
    ];
    let (mut tried, mut closed) = (0u64, 0u64);
    while Instant::now() < until && tried < 3_000 {
        let mut set = JoinSet::new();
        for kind in kinds {
            set.spawn(async move {
                let mut socket = TcpStream::connect(addr).await.ok()?;
                socket.write_all(&kind()).await.ok()?;
                let mut sink = vec![0u8; 64 * 1024];
                // Closed within 5 s, after whatever the server says first.
                tokio::time::timeout(Duration::from_secs(5), async {
                    while socket.read(&mut sink).await.ok()? > 0 {}
                    Some(())
                })
                .await
                .ok()?
            });
        }
        for outcome in set.join_all().await {
            tried += 1;
            closed += u64::from(outcome.is_some());
        }
    }
    (tried, closed)
}

/// One churn cycle: `count` connections each send a ping and read its pong; when all are open
/// they close together. Returns how many were answered.
async fn churn_cycle(addr: std::net::SocketAddr, count: u64) -> u64 {
    let ping = frame(FrameKind::Ping, 1, Status::OK, &[]);
    let gate = Arc::new(tokio::sync::Semaphore::new(256));
    let all_open = Arc::new(tokio::sync::Barrier::new(
        usize::try_from(count).unwrap_or(1),
    ));
    let mut set = JoinSet::new();
    for _ in 0..count {
        let (ping, gate, all_open) = (ping.clone(), gate.clone(), all_open.clone());
        set.spawn(async move {
            let answered = async {
                let _permit = gate.acquire().await.ok()?;
                let mut socket =
                    tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
                        .await
                        .ok()?
                        .ok()?;
                socket.write_all(&ping).await.ok()?;
                let mut pong = [0u8; HEADER_LEN];
                tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut pong))
                    .await
                    .ok()?
                    .ok()?;
                Some(socket)
            }
            .await;
            all_open.wait().await;
            u64::from(answered.is_some())
        });
    }
    set.join_all().await.into_iter().sum()
}

/// The chat history attack: a room of 100 posts of 4 KB, then `connections` × 3,000 history
/// calls whose answers are never read.
async fn history(server: &Server, connections: u64, until: Instant) -> anyhow::Result<()> {
    let (api, token) = chat_user(&server.endpoint, "poster").await?;
    api.create_room(token.clone(), "big".into(), Access::Open)
        .await?;
    let text = "x".repeat(4000);
    for _ in 0..100 {
        api.post(token.clone(), "big".into(), Uuid::new_v4(), text.clone(), 0)
            .await?;
    }
    let body = request_body(
        "chat.Signal",
        "2",
        "history",
        &(token, "big", None::<String>, 0u32),
    );
    amplify(server.addr, &body, connections, until).await;
    Ok(())
}

/// Answer amplification: up to 3 connections each write 3,000 copies of the request `body` in
/// one go and hold the connection, never reading an answer, until the attack's time is up.
async fn amplify(addr: std::net::SocketAddr, body: &[u8], connections: u64, until: Instant) {
    let mut batch = BytesMut::new();
    for id in 1..=3_000 {
        batch.unsplit(frame(FrameKind::Request, id, Status::OK, body));
    }
    let batch = batch.freeze();
    let mut set = JoinSet::new();
    for _ in 0..connections.min(3) {
        let batch = batch.clone();
        set.spawn(async move {
            let Ok(mut socket) = TcpStream::connect(addr).await else {
                return;
            };
            let _ = tokio::time::timeout_at(until.into(), socket.write_all(&batch)).await;
            tokio::time::sleep_until(until.into()).await;
        });
    }
    set.join_all().await;
}

/// The rooms attack: accounts create rooms until their quota is spent, up to 60,000 rooms or
/// the attack's time. Returns (created, refused).
async fn rooms(server: &Server, until: Instant) -> anyhow::Result<(u64, u64)> {
    let (mut created, mut refused) = (0u64, 0u64);
    let mut account = 0u32;
    while created < 60_000 && Instant::now() < until {
        account += 1;
        let (api, token) = chat_user(&server.endpoint, &format!("rooms{account}")).await?;
        loop {
            let room = format!("r{account}-{created}-{refused}");
            match api.create_room(token.clone(), room, Access::Open).await {
                Ok(_) => created += 1,
                Err(_) => {
                    refused += 1;
                    break;
                }
            }
            if created >= 60_000 || Instant::now() >= until {
                break;
            }
        }
        let _ = api.leave(token).await;
    }
    Ok((created, refused))
}

/// The big message attack: 20 MB relays, each on a fresh connection. Returns (sent, closed).
async fn big_message(server: &Server, until: Instant) -> anyhow::Result<(u64, u64)> {
    let (_api, token) = chat_user(&server.endpoint, "bigsender").await?;
    let text = "y".repeat(20 << 20);
    let body = request_body(
        "chat.Signal",
        "2",
        "relay",
        &(token, Uuid::new_v4(), Uuid::new_v4(), text, 0u64),
    );
    let message = frame(FrameKind::Request, 1, Status::OK, &body);
    let (mut sent, mut closed) = (0u64, 0u64);
    while Instant::now() < until && sent < 20 {
        sent += 1;
        let mut socket = TcpStream::connect(server.addr).await?;
        let write = socket.write_all(&message);
        let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
        let mut sink = vec![0u8; 4096];
        let read = async {
            while socket.read(&mut sink).await.ok()? > 0 {}
            Some(())
        };
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(5), read).await {
            closed += 1;
        }
    }
    Ok((sent, closed))
}

/// The discover attack: 10,000 instances of one service, then `connections` × 3,000 discover
/// calls whose answers are never read.
async fn discover(server: &Server, connections: u64, until: Instant) -> anyhow::Result<u64> {
    let api = RegistryApiClient::new(Client::connect(&server.endpoint).await?);
    let lease = api.grant(600_000).await?;
    let key = ServiceKey::new("soak.Crowded");
    let mut set = JoinSet::new();
    for shard in 0..10u32 {
        let (api, key) = (api.clone(), key.clone());
        set.spawn(async move {
            for i in 0..1_000u32 {
                let instance = Instance::new(
                    key.clone(),
                    format!("tcp://127.0.0.1:{}", 1 + shard * 1000 + i),
                );
                api.register(instance, lease.id).await?;
            }
            anyhow::Ok(())
        });
    }
    for done in set.join_all().await {
        done?;
    }
    let body = request_body(
        "rpc.Registry",
        "2",
        "discover",
        &(key, PageRequest::default()),
    );
    amplify(server.addr, &body, connections, until).await;
    Ok(10_000)
}

async fn chat_user(
    endpoint: &Endpoint,
    name: &str,
) -> anyhow::Result<(SignalClient<Client>, String)> {
    let api = SignalClient::new(Client::connect(endpoint).await?);
    let session = api
        .register(RegisterRequest {
            id: Uuid::new_v4(),
            name: name.into(),
            secret: format!("the secret of {name}"),
            endpoint: None,
        })
        .await?;
    Ok((api, session.token))
}

/// One attack's figures.
struct Outcome {
    target: Target,
    attack: &'static str,
    before_kib: u64,
    peak_kib: u64,
    after_kib: u64,
    ok: u64,
    failed: u64,
    slowest: Duration,
    detail: String,
    problems: Vec<String>,
}

async fn run_attack(
    args: &Args,
    bin_dir: &Path,
    target: Target,
    attack: &'static str,
) -> anyhow::Result<Outcome> {
    let mut server = Server::start(bin_dir, target)?;
    // Let the server finish starting (the embedded registry, the store) before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before_kib = server.rss_kib();
    let served = Arc::new(Served::default());
    let stop = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(behave(
        target,
        server.endpoint.clone(),
        served.clone(),
        stop.clone(),
    ));
    let until = Instant::now() + Duration::from_secs(args.attack_secs);
    let addr = server.addr;
    let mut detail = String::new();
    match attack {
        "ping-flood" => {
            flood_all(addr, args.flood_connections, until, |id| {
                frame(FrameKind::Ping, id, Status::OK, &[])
            })
            .await;
        }
        "call-flood" => {
            let body = cheap_call(target);
            flood_all(addr, args.flood_connections, until, move |id| {
                frame(FrameKind::Request, id, Status::OK, &body)
            })
            .await;
        }
        "junk" => {
            let (tried, closed) = junk(addr, until).await;
            let _ = write!(
                detail,
                "{closed} of {tried} junk connections closed by the server"
            );
        }
        "churn" => {
            let mut after_cycles = Vec::new();
            let mut answered = 0;
            for _ in 0..args.churn_cycles {
                answered += churn_cycle(addr, args.churn_connections).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                after_cycles.push(server.rss_kib() / 1024);
            }
            let _ = write!(
                detail,
                "{answered} of {} connections answered; RSS after each cycle (MiB): {after_cycles:?}",
                u64::from(args.churn_cycles) * args.churn_connections,
            );
        }
        "history" => history(&server, args.flood_connections, until).await?,
        "rooms" => {
            let (created, refused) = rooms(&server, until).await?;
            let _ = write!(
                detail,
                "{created} rooms created, {refused} refused at a quota"
            );
        }
        "big-message" => {
            let (sent, closed) = big_message(&server, until).await?;
            let _ = write!(
                detail,
                "{closed} of {sent} 20 MB messages refused by closing"
            );
        }
        "discover" => {
            let instances = discover(&server, args.flood_connections, until).await?;
            let _ = write!(detail, "{instances} instances registered");
        }
        other => bail!("no attack named {other:?}"),
    }
    let peak_kib = server.peak_kib();
    let settled = Instant::now() + Duration::from_secs(args.settle_secs);
    let bound_kib = before_kib + args.max_growth_mib * 1024;
    tokio::time::sleep(Duration::from_secs(args.settle_secs.min(3))).await;
    let after_kib = loop {
        let rss = server.rss_kib();
        if rss <= bound_kib || Instant::now() >= settled {
            break rss;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let _ = good.await;
    let ok = served.ok.load(Ordering::Relaxed);
    let failed = served.failed.load(Ordering::Relaxed);
    let slowest = Duration::from_micros(served.slowest_us.load(Ordering::Relaxed));
    let mut problems = Vec::new();
    if !server.alive() {
        problems.push("the server died".to_owned());
    }
    if failed > 0 || ok == 0 {
        let first = served
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        problems.push(format!(
            "the well-behaved client failed {failed} of {} calls ({first})",
            ok + failed
        ));
    }
    if peak_kib > args.max_peak_mib * 1024 {
        problems.push(format!(
            "peak RSS {} MiB is over {} MiB",
            peak_kib / 1024,
            args.max_peak_mib
        ));
    }
    if after_kib > before_kib + args.max_growth_mib * 1024 {
        problems.push(format!(
            "RSS after the attack {} MiB is more than {} MiB over the {} MiB before",
            after_kib / 1024,
            args.max_growth_mib,
            before_kib / 1024
        ));
    }
    Ok(Outcome {
        target,
        attack,
        before_kib,
        peak_kib,
        after_kib,
        ok,
        failed,
        slowest,
        detail,
        problems,
    })
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .to_owned(),
    };
    let targets = if args.server.is_empty() {
        Target::ALL.to_vec()
    } else {
        args.server.clone()
    };
    for name in &args.attack {
        if !Target::ALL
            .iter()
            .any(|t| t.attacks().contains(&name.as_str()))
        {
            bail!("no attack named {name:?}");
        }
    }
    let mut outcomes = Vec::new();
    for target in targets {
        for &attack in target.attacks() {
            if !args.attack.is_empty() && !args.attack.iter().any(|a| a == attack) {
                continue;
            }
            eprintln!("{} / {attack}…", target.program());
            let outcome = run_attack(&args, &bin_dir, target, attack)
                .await
                .with_context(|| format!("{} / {attack}", target.program()))?;
            eprintln!(
                "  RSS {} → peak {} → {} MiB; well-behaved client {} ok, {} failed, slowest {:?}{}",
                mib(outcome.before_kib),
                mib(outcome.peak_kib),
                mib(outcome.after_kib),
                outcome.ok,
                outcome.failed,
                outcome.slowest,
                if outcome.detail.is_empty() {
                    String::new()
                } else {
                    format!("; {}", outcome.detail)
                }
            );
            outcomes.push(outcome);
        }
    }
    println!(
        "| server | attack | RSS before (MiB) | peak | after | well-behaved calls ok / failed | slowest | bounds |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|");
    let mut broken = 0;
    for o in &outcomes {
        println!(
            "| {} | {} | {} | {} | {} | {} / {} | {} ms | {} |",
            o.target.program(),
            o.attack,
            mib(o.before_kib),
            mib(o.peak_kib),
            mib(o.after_kib),
            o.ok,
            o.failed,
            o.slowest.as_millis(),
            if o.problems.is_empty() {
                "held".to_owned()
            } else {
                o.problems.join("; ")
            }
        );
        broken += usize::from(!o.problems.is_empty());
    }
    if broken > 0 {
        bail!("{broken} of {} attacks broke a bound", outcomes.len());
    }
    Ok(())
}
