//! Loads a chat server, or several nodes of one chat service, with simulated clients and reports
//! what they sustained.
//!
//! Each simulated client has its own TCP connection, to one of the nodes (round robin): it
//! registers, opens its inbox, heartbeats at the interval the server asks for, and acknowledges
//! what arrives. A pacer relays messages between random pairs of online clients at the target
//! rate; with several nodes most pairs are on different nodes, so most messages cross nodes. Latency is measured from just
//! before `relay` is called to the message's arrival in the recipient's inbox (both ends are in
//! this process, so one clock serves both).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chat_api::{InboxItem, PresenceEvent, RegisterRequest, SignalClient, now_ms};
use clap::Parser;
use examples::proc_status::status_kib;
use futures::StreamExt;
use rpc_core::{Client, Endpoint};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Simulates many chat clients against a chat server, or several nodes of one chat service, and
/// reports the sustained message rate, delivery latency and each server's memory.
///
/// Without `--server` it starts `--nodes` chat servers (the `chat-server` found next to this
/// program: build it with `cargo build -p chat-server` in the same profile) as child processes
/// on free ports with temporary data directories, so that the memory figures are the servers'
/// alone. Several nodes must share a store and a registry: give them `--store postgres://...`
/// and `--registry etcd://...` (or a registry server's endpoint). Every client has its own
/// connection: with 2,000 clients this process and the servers hold 2,000 sockets each, so
/// `ulimit -n` must allow a few more than `--clients`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A running chat server to load instead of starting them; repeat for the nodes of one
    /// chat service (the clients are spread over them).
    #[arg(long)]
    server: Vec<Endpoint>,
    /// The process id of each `--server`, in the same order, to report its memory.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// How many chat servers to start, without `--server` (1 to 16).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    nodes: u64,
    /// The `--store` of the servers started: `redb` (one node only: each node would have its
    /// own file) or a postgres:// URL they share.
    #[arg(long, default_value = "redb")]
    store: String,
    /// The `--registry` of the servers started: `embedded` (one node only), an etcd://host:port
    /// (a chat-server built with `--features etcd`) or a registry server's endpoint.
    #[arg(long, default_value = "embedded")]
    registry: String,
    /// The chat-server program to start. Default: `chat-server` next to this program.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The presence TTL of the server started, in seconds (1 to 3600; clients heartbeat every
    /// third).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    presence_ttl_secs: u64,
    /// How many clients to simulate.
    #[arg(long, default_value_t = 2000)]
    clients: usize,
    /// Messages per second to relay, over all clients.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// How long to send, in seconds (1 to 86400, after every client has registered).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    seconds: u64,
    /// The size of each message's text, in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How many of the clients also watch presence (each gets every join and leave).
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// The most relays in flight at once; the pacer waits beyond it.
    #[arg(long, default_value_t = 2048)]
    in_flight: usize,
}

/// What the inboxes saw.
#[derive(Default)]
struct Stats {
    relayed: AtomicU64,
    /// Relayed between users on different nodes.
    relayed_across: AtomicU64,
    relay_failed: AtomicU64,
    delivered: AtomicU64,
    /// Delivered while the pacer was sending.
    delivered_in_window: AtomicU64,
    duplicates: AtomicU64,
    heartbeats: AtomicU64,
    presence_events: AtomicU64,
    heartbeat_failed: AtomicU64,
    /// Inbox streams that ended with an error and were opened again.
    inbox_reopened: AtomicU64,
    /// Inboxes given up on (their session was gone).
    inbox_lost: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
    seen: Mutex<HashSet<Uuid>>,
}

/// How many times in a row an inbox may fail, each time opened again, before its client gives up.
const MAX_INBOX_FAILURES: u32 = 5;

/// One simulated client.
#[derive(Clone)]
struct Sim {
    api: SignalClient<Client>,
    /// The index of its node.
    node: usize,
    id: Uuid,
    token: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Errors only: thousands of clients connecting and closing say little worth reading.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let args = Args::parse();
    anyhow::ensure!(args.clients >= 2, "--clients must be at least 2");
    anyhow::ensure!(
        args.rate > 0 && args.seconds > 0,
        "--rate and --seconds must be positive"
    );
    warn_about_file_limit(args.clients);
    anyhow::ensure!(
        args.server_pid.is_empty() || args.server_pid.len() == args.server.len(),
        "give one --server-pid per --server, in the same order"
    );
    anyhow::ensure!(
        args.nodes == 1 || (args.store != "redb" && args.registry != "embedded"),
        "--nodes {} needs a shared --store postgres://... and --registry (etcd://... or a \
         registry server's endpoint): the nodes of one chat service share both",
        args.nodes
    );

    let data = tempfile::tempdir()?;
    let mut children = Vec::new();
    let endpoints = if args.server.is_empty() {
        let mut endpoints = Vec::new();
        for node in 0..args.nodes {
            let dir = data.path().join(format!("node-{node}"));
            let (endpoint, child) = start_server(&args, &dir)?;
            endpoints.push(endpoint);
            children.push(Killed(child));
        }
        endpoints
    } else {
        args.server.clone()
    };
    let server_pids: Vec<u32> = if children.is_empty() {
        args.server_pid.clone()
    } else {
        children.iter().map(|c| c.0.id()).collect()
    };
    let listed: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    println!(
        "chat-load: loading {} with {} clients",
        listed.join(", "),
        args.clients
    );

    let base = Instant::now();
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let window_open = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // Register the watchers first, so that they see everyone else join.
    let started = Instant::now();
    let watchers: Vec<Registered> = futures::stream::iter(0..args.watchers.min(args.clients))
        .map(|i| register(&endpoints, i))
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    for watcher in &watchers {
        let events = watcher.sim.api.presence(watcher.sim.token.clone()).await?;
        tokio::spawn(watch_presence(events, stats.clone(), stop.clone()));
    }

    // Then everyone else, a bounded number at a time.
    let others: Vec<Registered> = futures::stream::iter(watchers.len()..args.clients)
        .map(|i| register(&endpoints, i))
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let registered_in = started.elapsed();
    if endpoints.len() > 1 {
        // Every node learns who is on the others through the registry's watch: let the last
        // registrations reach them all, so that no message is relayed to a user its node does
        // not yet know is online (it would be stored until that user's next wake).
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let sims: Vec<Registered> = watchers.into_iter().chain(others).collect();
    let heartbeat = sims[0].heartbeat;
    let sims: Vec<Sim> = sims.into_iter().map(|r| r.sim).collect();

    for sim in &sims {
        let inbox = sim.api.inbox(sim.token.clone()).await?;
        tokio::spawn(read_inbox(
            sim.clone(),
            inbox,
            base,
            stats.clone(),
            window_open.clone(),
            stop.clone(),
        ));
        tokio::spawn(heartbeat_loop(
            sim.clone(),
            heartbeat,
            stats.clone(),
            stop.clone(),
        ));
    }
    let rss_at_start: Vec<Option<u64>> = server_pids.iter().map(|&pid| rss_kib(pid)).collect();

    // Send at the target rate for the window.
    let sims = Arc::new(sims);
    let limit = Arc::new(Semaphore::new(args.in_flight));
    let text_pad = "x".repeat(args.size.saturating_sub(24));
    let window = Duration::from_secs(args.seconds);
    let mut peak_rss = vec![0; server_pids.len()];
    let mut sent = 0u64;
    window_open.store(true, Ordering::Relaxed);
    let window_start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut next_sample = Duration::ZERO;
    while window_start.elapsed() < window {
        tick.tick().await;
        let elapsed = window_start.elapsed();
        if elapsed >= next_sample {
            next_sample = next_sample.saturating_add(Duration::from_secs(1));
            for (peak, &pid) in peak_rss.iter_mut().zip(&server_pids) {
                *peak = (*peak).max(rss_kib(pid).unwrap_or(0));
            }
        }
        let due = (elapsed.as_secs_f64() * args.rate as f64) as u64;
        // When the server falls behind, the pacer waits for permits; it never sends past the
        // window to catch up.
        while sent < due && window_start.elapsed() < window {
            let permit = limit.clone().acquire_owned().await?;
            sent += 1;
            let from = fastrand::usize(..sims.len());
            let mut to = fastrand::usize(..sims.len() - 1);
            if to >= from {
                to += 1;
            }
            let (sims, stats, pad) = (sims.clone(), stats.clone(), text_pad.clone());
            tokio::spawn(async move {
                let (sender, recipient) = (&sims[from], &sims[to]);
                let at = base.elapsed().as_nanos();
                let text = format!("{at:020} {pad}");
                let result = sender
                    .api
                    .relay(
                        sender.token.clone(),
                        Uuid::new_v4(),
                        recipient.id,
                        text,
                        now_ms(),
                    )
                    .await;
                match result {
                    Ok(_) => {
                        stats.relayed.fetch_add(1, Ordering::Relaxed);
                        if sender.node != recipient.node {
                            stats.relayed_across.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        stats.relay_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                drop(permit);
            });
        }
    }
    let sent_in = window_start.elapsed();
    window_open.store(false, Ordering::Relaxed);

    // Wait for the relays in flight, then for the inboxes to catch up.
    let _ = limit.acquire_many(args.in_flight as u32).await?;
    let drain = Instant::now();
    while stats.delivered.load(Ordering::Relaxed) < stats.relayed.load(Ordering::Relaxed)
        && drain.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let servers: Vec<ServerMemory> = server_pids
        .iter()
        .enumerate()
        .map(|(i, &pid)| ServerMemory {
            at_start: rss_at_start[i],
            peak: Some(peak_rss[i]).filter(|&p| p > 0),
            at_end: rss_kib(pid),
            high_water: status_kib(pid, "VmHWM:"),
        })
        .collect();
    stop.cancel();
    for sim in sims.iter() {
        sim.api.caller().close();
    }
    report(&Report {
        args: &args,
        registered_in,
        sent_in,
        stats: &stats,
        nodes: endpoints.len(),
        servers: &servers,
        own_rss: status_kib(std::process::id(), "VmRSS:"),
    });
    drop(children);
    Ok(())
}

struct Registered {
    sim: Sim,
    heartbeat: Duration,
}

/// Registers client `i` on node `i % endpoints.len()`.
async fn register(endpoints: &[Endpoint], i: usize) -> anyhow::Result<Registered> {
    let node = i % endpoints.len();
    let client = Client::builder()
        .connect(&endpoints[node])
        .await
        .with_context(|| format!("client {i} connecting"))?;
    let api = SignalClient::new(client);
    let id = Uuid::new_v4();
    let session = api
        .register(RegisterRequest {
            id,
            name: format!("load-{i}"),
            secret: Uuid::new_v4().to_string(),
            endpoint: None,
        })
        .await
        .with_context(|| format!("client {i} registering"))?;
    Ok(Registered {
        // The server's number, within sane bounds.
        heartbeat: Duration::from_millis(session.heartbeat_ms.clamp(100, 3_600_000)),
        sim: Sim {
            api,
            node,
            id,
            token: session.token,
        },
    })
}

/// Reads one client's inbox: records each message's latency and acknowledges in batches.
async fn read_inbox(
    sim: Sim,
    mut inbox: rpc_core::RpcStream<InboxItem>,
    base: Instant,
    stats: Arc<Stats>,
    window_open: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) {
    let mut to_ack = Vec::new();
    let mut failures = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            item = inbox.next() => match item {
                Some(Ok(InboxItem::Message(envelope))) => {
                    failures = 0;
                    let now = base.elapsed().as_nanos();
                    let sent: u128 = envelope.text.get(..20).and_then(|t| t.parse().ok()).unwrap_or(now);
                    let micros = u32::try_from(now.saturating_sub(sent) / 1000).unwrap_or(u32::MAX);
                    if stats.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(envelope.id) {
                        stats.delivered.fetch_add(1, Ordering::Relaxed);
                        if window_open.load(Ordering::Relaxed) {
                            stats.delivered_in_window.fetch_add(1, Ordering::Relaxed);
                        }
                        stats.latencies_us.lock().unwrap_or_else(|e| e.into_inner()).push(micros);
                    } else {
                        stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    to_ack.push(envelope.id);
                    if to_ack.len() >= 64 {
                        ack(&sim, &mut to_ack).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    if stop.is_cancelled() {
                        return;
                    }
                    // As a real client does: open it again, which replays what is stored and
                    // not yet acknowledged (a store that was briefly unavailable, an inbox
                    // closed for overflow). Give up when the session is gone: the stream of an
                    // inbox opened without one ends at once, again and again.
                    failures += 1;
                    if failures > MAX_INBOX_FAILURES {
                        eprintln!("inbox of {} failed {failures} times in a row: {e}", sim.id);
                        stats.inbox_lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    stats.inbox_reopened.fetch_add(1, Ordering::Relaxed);
                    ack(&sim, &mut to_ack).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match sim.api.inbox(sim.token.clone()).await {
                        Ok(again) => inbox = again,
                        Err(again) => {
                            eprintln!("inbox of {} failed: {e}; opening it again: {again}", sim.id);
                            return;
                        }
                    }
                }
                None => return,
            },
            _ = tick.tick() => ack(&sim, &mut to_ack).await,
            () = stop.cancelled() => return,
        }
    }
}

/// Counts what a presence stream brings.
async fn watch_presence(
    mut events: rpc_core::RpcStream<PresenceEvent>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(_)) => {
                    stats.presence_events.fetch_add(1, Ordering::Relaxed);
                }
                _ => return,
            },
            () = stop.cancelled() => return,
        }
    }
}

async fn ack(sim: &Sim, ids: &mut Vec<Uuid>) {
    if ids.is_empty() {
        return;
    }
    let _ = sim.api.ack(sim.token.clone(), std::mem::take(ids)).await;
}

async fn heartbeat_loop(sim: Sim, every: Duration, stats: Arc<Stats>, stop: CancellationToken) {
    // Spread the clients' heartbeats over the interval.
    let offset = every.mul_f64(fastrand::f64());
    let now = tokio::time::Instant::now();
    let mut tick = tokio::time::interval_at(now.checked_add(offset).unwrap_or(now), every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match sim.api.heartbeat(sim.token.clone()).await {
            Ok(()) => stats.heartbeats.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.heartbeat_failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

struct Report<'a> {
    args: &'a Args,
    registered_in: Duration,
    sent_in: Duration,
    stats: &'a Stats,
    nodes: usize,
    /// Each server's memory, when its process id is known.
    servers: &'a [ServerMemory],
    own_rss: Option<u64>,
}

/// A server's resident memory, in KiB: at the start of sending, the peak while sending
/// (sampled each second), at the end, and its high-water mark (VmHWM).
struct ServerMemory {
    at_start: Option<u64>,
    peak: Option<u64>,
    at_end: Option<u64>,
    high_water: Option<u64>,
}

fn report(r: &Report<'_>) {
    let s = r.stats;
    let secs = r.sent_in.as_secs_f64();
    let relayed = s.relayed.load(Ordering::Relaxed);
    let delivered = s.delivered.load(Ordering::Relaxed);
    let in_window = s.delivered_in_window.load(Ordering::Relaxed);
    let mut latencies =
        std::mem::take(&mut *s.latencies_us.lock().unwrap_or_else(|e| e.into_inner()));
    latencies.sort_unstable();
    let pct = |p: f64| -> String {
        if latencies.is_empty() {
            return "-".into();
        }
        let i = ((latencies.len() - 1) as f64 * p).round() as usize;
        format!("{:.2} ms", f64::from(latencies[i]) / 1000.0)
    };
    let mib = |kib: Option<u64>| {
        kib.map_or("n/a".to_owned(), |k| {
            format!("{:.1} MiB", k as f64 / 1024.0)
        })
    };
    let a = r.args;
    println!();
    println!("chat-load report");
    println!(
        "  {:<28} {} over {} node{}",
        "clients (one connection each)",
        a.clients,
        r.nodes,
        if r.nodes == 1 { "" } else { "s" }
    );
    println!(
        "  {:<28} {:.2} s ({} watchers saw {} presence events)",
        "all registered in",
        r.registered_in.as_secs_f64(),
        a.watchers.min(a.clients),
        s.presence_events.load(Ordering::Relaxed)
    );
    println!(
        "  {:<28} {} msg/s, {} B each, for {:.1} s",
        "target", a.rate, a.size, secs
    );
    println!(
        "  {:<28} {} ({:.0} msg/s)",
        "relayed (accepted)",
        relayed,
        relayed as f64 / secs
    );
    println!(
        "  {:<28} {}",
        "relayed across nodes",
        s.relayed_across.load(Ordering::Relaxed)
    );
    println!(
        "  {:<28} {}",
        "relay errors",
        s.relay_failed.load(Ordering::Relaxed)
    );
    println!(
        "  {:<28} {} ({:.0} msg/s sustained while sending)",
        "delivered",
        delivered,
        in_window as f64 / secs
    );
    println!(
        "  {:<28} {}",
        "lost (relayed, not delivered)",
        relayed.saturating_sub(delivered)
    );
    println!(
        "  {:<28} {}",
        "delivered twice",
        s.duplicates.load(Ordering::Relaxed)
    );
    println!(
        "  {:<28} {}",
        "inboxes opened again",
        s.inbox_reopened.load(Ordering::Relaxed)
    );
    println!(
        "  {:<28} {}",
        "inboxes given up (no session)",
        s.inbox_lost.load(Ordering::Relaxed)
    );
    println!(
        "  {:<28} {} / {} / {} / {}",
        "latency p50 / p90 / p99 / max",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "  {:<28} {} ok, {} failed",
        "heartbeats",
        s.heartbeats.load(Ordering::Relaxed),
        s.heartbeat_failed.load(Ordering::Relaxed)
    );
    if r.servers.is_empty() {
        println!("  {:<28} n/a (give --server-pid)", "server RSS");
    }
    for (i, m) in r.servers.iter().enumerate() {
        println!(
            "  {:<28} {} at start, {} peak, {} at end (high-water {})",
            format!("server {i} RSS"),
            mib(m.at_start),
            mib(m.peak),
            mib(m.at_end),
            mib(m.high_water)
        );
    }
    println!("  {:<28} {}", "load generator RSS", mib(r.own_rss));
}

/// Kills the child server when the load generator exits, however it exits.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(args: &Args, data: &std::path::Path) -> anyhow::Result<(Endpoint, Child)> {
    let program = match &args.server_bin {
        Some(program) => program.clone(),
        None => std::env::current_exe()?
            .with_file_name(format!("chat-server{}", std::env::consts::EXE_SUFFIX)),
    };
    let mut child = Command::new(&program)
        .args(["--listen", "tcp://127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--presence-ttl-secs", &args.presence_ttl_secs.to_string()])
        .args(["--store", &args.store, "--registry", &args.registry])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with `cargo build -p chat-server` in the same profile, or \
                 name it with --server-bin)",
                program.display()
            )
        })?;
    let stdout = child.stdout.take().context("the server's stdout")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    // Keep reading, so that the server never writes to a closed pipe.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let endpoint = line
        .trim()
        .strip_prefix("chat-server listening on ")
        .with_context(|| format!("unexpected first line from the server: {line:?}"))?
        .parse()
        .map_err(|e| anyhow::anyhow!("the server's endpoint: {e}"))?;
    Ok((endpoint, child))
}

fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Warns when the open-file limit is too low for one socket per client (Linux only).
fn warn_about_file_limit(clients: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < clients + 64
    {
        eprintln!(
            "warning: the open-file limit is {soft}, too low for {clients} clients; \
                 raise it with `ulimit -n {}`",
            clients + 256
        );
    }
}
