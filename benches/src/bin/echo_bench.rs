//! End-to-end echo benchmark: the framework with each serializer, the raw multiplexed reference
//! (`benches/src/raw.rs`) and the same echo service on tarpc and tonic (`benches/src/peers/`),
//! on loopback TCP, and the framework with postcard over loopback QUIC (`postcard-quic`),
//! WebSocket (`postcard-ws`) and TLS (`postcard-tls`, a self-signed certificate made at start),
//! interleaved: every round runs each workload for every system in turn, so
//! drifts in the machine's load fall on all systems alike.
//!
//! Workloads:
//! (a) one call at a time, 32 B: p50/p99 latency;
//! (b) 64 concurrent calls on one connection, 32 B: calls/s;
//! (c) 4 connections × 64 concurrent calls, 32 B: calls/s;
//! (d) 16 concurrent 64 KiB calls on one connection: MB/s of echoed payload;
//! (e) one server stream of 32 B items: items/s (where the system has server streaming);
//! and CPU time (user + system, client and server together) per call in (b).
//!
//! Client and server run in this process, on one runtime. It prints two markdown tables, the
//! medians with [min–max] and each system's ratio to ours (the framework with postcard), and
//! with `--svg PATH` draws the calls/s (MB/s, items/s) of (b)–(e) as an SVG bar chart.
//!
//! The tonic peer is built only with `--features tonic` (its generated code needs `protoc`);
//! without it the tonic rows are left out:
//!
//! ```text
//! cargo run --release -p benches --features tonic --bin echo-bench -- --rounds 5 --seconds 2 --svg docs/echo-bench.svg
//! ```

/// With `--features mimalloc`, every system runs on mimalloc: glibc's allocator makes threads
/// contend on its arenas when memory allocated on one worker is freed on another.
#[cfg(all(feature = "mimalloc", not(feature = "count-allocs")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// With `--features jemalloc` (and not mimalloc), every system runs on jemalloc, configured as
/// the server programs ship it (`.cargo/config.toml`).
#[cfg(all(
    feature = "jemalloc",
    not(feature = "mimalloc"),
    not(feature = "count-allocs")
))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// With `--features count-allocs`, the system allocator counts its calls, and after the rounds
/// echo-bench counts the allocations per call of every system (a count does not depend on the
/// allocator; the counting itself slows every allocation, so such a build's timings are not
/// the ones to quote). It takes the place of mimalloc or jemalloc when both features are on.
#[cfg(feature = "count-allocs")]
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// The global allocator this build runs on.
const ALLOCATOR: &str = if cfg!(feature = "count-allocs") {
    "the system's (glibc), counting"
} else if cfg!(feature = "mimalloc") {
    "mimalloc"
} else if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "the system's (glibc)"
};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use benches::echo::{EchoClient, EchoImpl, EchoServer};
use benches::peers::tarpc_echo::{self, TarpcClient};
#[cfg(feature = "tonic")]
use benches::peers::tonic_echo::{self, TonicClient};
use benches::raw::{self, RawClient};
use bytes::Bytes;
use clap::Parser;
use futures::{Stream, StreamExt};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rpc_core::tls::{ClientTls, ServerTls};
use rpc_core::{Client, Endpoint, Format, Server};
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(
    about = "Echo benchmark: the framework against the raw multiplexed reference, tarpc \
                   and tonic"
)]
struct Args {
    /// Rounds; each runs every workload for every system, interleaved.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds each throughput measurement runs.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Calls in each latency measurement.
    #[arg(long, default_value_t = 20_000)]
    latency_calls: usize,
    /// Systems to run (default: all): raw, msgpack, postcard, json, postcard-quic (postcard over
    /// `quic://`), postcard-ws (postcard over `ws://`), postcard-tls (postcard over `tls://`),
    /// tarpc, tarpc-nodelay, tonic (tonic only in a build with `--features tonic`).
    #[arg(long, value_delimiter = ',')]
    systems: Vec<String>,
    /// Workloads to run (default: all): a, b, c, d, e.
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Seconds of warm-up per system before the rounds.
    #[arg(long, default_value_t = 0.3)]
    warmup: f64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Writes a bar chart of (b)–(e) to this SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
}

/// What a system is built on.
#[derive(Clone, Debug)]
enum Kind {
    /// The raw multiplexed reference.
    Raw,
    /// The framework with this serializer.
    Ours(Format),
    /// The framework with this serializer, over QUIC (the built-in `quic://` endpoints).
    OursQuic(Format),
    /// The framework with this serializer, over its WebSocket transport (`ws://`).
    OursWs(Format),
    /// The framework with this serializer, over TLS (`tls://`), trusting these settings.
    OursTls(Format, ClientTls),
    /// tarpc (serde transport, bincode), with or without `TCP_NODELAY`.
    Tarpc { nodelay: bool },
    /// tonic (gRPC, prost).
    #[cfg(feature = "tonic")]
    Tonic,
}

#[derive(Clone, Debug)]
struct System {
    name: &'static str,
    addr: SocketAddr,
    kind: Kind,
}

impl System {
    async fn connect(&self) -> anyhow::Result<EchoConn> {
        Ok(match &self.kind {
            Kind::Raw => EchoConn::Raw(RawClient::connect(self.addr).await?),
            Kind::Ours(format) | Kind::OursWs(format) => {
                let endpoint = match self.kind {
                    Kind::OursWs(_) => Endpoint::ws(self.addr, "/"),
                    _ => Endpoint::tcp(self.addr),
                };
                let client = Client::builder()
                    .format(format.clone())
                    .timeout(Duration::from_secs(60))
                    .connect(&endpoint)
                    .await?;
                EchoConn::Ours(EchoClient::new(client))
            }
            Kind::OursTls(format, tls) => {
                let client = Client::builder()
                    .format(format.clone())
                    .timeout(Duration::from_secs(60))
                    .tls(tls.clone())
                    .connect(&Endpoint::tls(self.addr))
                    .await?;
                EchoConn::Ours(EchoClient::new(client))
            }
            Kind::OursQuic(format) => {
                let client = Client::builder()
                    .format(format.clone())
                    .timeout(Duration::from_secs(60))
                    .connect(&Endpoint::quic(self.addr))
                    .await?;
                EchoConn::Ours(EchoClient::new(client))
            }
            Kind::Tarpc { nodelay } => {
                EchoConn::Tarpc(TarpcClient::connect(self.addr, *nodelay).await?)
            }
            #[cfg(feature = "tonic")]
            Kind::Tonic => EchoConn::Tonic(TonicClient::connect(self.addr).await?),
        })
    }

    fn is_ours(&self) -> bool {
        matches!(
            self.kind,
            Kind::Ours(_) | Kind::OursQuic(_) | Kind::OursWs(_) | Kind::OursTls(..)
        )
    }
}

#[derive(Clone)]
enum EchoConn {
    Raw(RawClient),
    Ours(EchoClient<Client>),
    Tarpc(TarpcClient),
    #[cfg(feature = "tonic")]
    Tonic(TonicClient),
}

impl EchoConn {
    async fn echo(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        Ok(match self {
            EchoConn::Raw(c) => c.echo(payload).await.context("raw echo")?,
            EchoConn::Ours(c) => c.echo(payload).await?,
            EchoConn::Tarpc(c) => c.echo(payload).await?,
            #[cfg(feature = "tonic")]
            EchoConn::Tonic(c) => c.echo(payload).await?,
        })
    }

    /// An endless stream of `payload`, or `None` if the system has no server streaming.
    async fn stream(
        &self,
        payload: Bytes,
    ) -> anyhow::Result<Option<std::pin::Pin<Box<dyn Stream<Item = anyhow::Result<Bytes>>>>>> {
        Ok(match self {
            EchoConn::Raw(_) | EchoConn::Tarpc(_) => None,
            EchoConn::Ours(c) => {
                let items = c.stream(payload, u64::MAX).await?;
                Some(Box::pin(items.map(|item| Ok(item?))))
            }
            #[cfg(feature = "tonic")]
            EchoConn::Tonic(c) => {
                let items = c.stream(payload, u64::MAX).await?;
                Some(Box::pin(items.map(|item| Ok(item?))))
            }
        })
    }
}

fn cpu_time() -> Duration {
    // /proc/self/stat fields 14 and 15 (utime, stime) in clock ticks, rather than getrusage,
    // which would need unsafe code.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    let hz = 100; // USER_HZ on Linux
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

async fn latency(conn: &EchoConn, calls: usize) -> anyhow::Result<(Duration, Duration)> {
    let payload = Bytes::from(vec![7u8; 32]);
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let start = Instant::now();
        let back = conn.echo(payload.clone()).await?;
        samples.push(start.elapsed());
        anyhow::ensure!(back.len() == 32, "echo returned {} bytes", back.len());
    }
    samples.sort_unstable();
    Ok((samples[calls / 2], samples[calls * 99 / 100]))
}

/// Runs `per_conn` callers on each connection for `seconds`; returns calls/s and CPU per call.
async fn throughput(
    conns: &[EchoConn],
    per_conn: usize,
    size: usize,
    seconds: f64,
) -> anyhow::Result<(f64, Duration, u64)> {
    let payload = Bytes::from(vec![7u8; size]);
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for conn in conns {
        for _ in 0..per_conn {
            let (conn, stop, count, payload) =
                (conn.clone(), stop.clone(), count.clone(), payload.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                let result = async {
                    while !stop.load(Ordering::Relaxed) {
                        let back = conn.echo(payload.clone()).await?;
                        anyhow::ensure!(back.len() == payload.len(), "short echo");
                        n += 1;
                    }
                    Ok(())
                }
                .await;
                count.fetch_add(n, Ordering::Relaxed);
                result
            }));
        }
    }
    let cpu0 = cpu_time();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu0);
    let calls = count.load(Ordering::Relaxed).max(1);
    Ok((
        calls as f64 / elapsed.as_secs_f64(),
        cpu / calls as u32,
        calls,
    ))
}

async fn stream_items(conn: &EchoConn, seconds: f64) -> anyhow::Result<Option<f64>> {
    Ok(stream_count(conn, seconds)
        .await?
        .map(|(n, elapsed)| n as f64 / elapsed.as_secs_f64()))
}

/// Items received from one stream in about `seconds`, and the time they took.
async fn stream_count(conn: &EchoConn, seconds: f64) -> anyhow::Result<Option<(u64, Duration)>> {
    let Some(mut stream) = conn.stream(Bytes::from(vec![7u8; 32])).await? else {
        return Ok(None);
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        for _ in 0..1024 {
            stream.next().await.context("stream ended")??;
            n += 1;
        }
    }
    Ok(Some((n, start.elapsed())))
}

/// Counts each system's allocations per call, client and server together: (a) 2,000 calls one
/// at a time, (b) 64 concurrent 32 B calls and (d) 16 concurrent 64 KiB calls for `seconds`,
/// and (e) per stream item; for (d) also the bytes allocated per call, in 64 KiB payloads (a
/// copy of the payload needs a buffer of its own, so this bounds the copies).
#[cfg(feature = "count-allocs")]
async fn count_allocations(systems: &[System], seconds: f64) -> anyhow::Result<()> {
    use stats_alloc::Region;
    /// Allocator calls that obtained memory: allocations and reallocations.
    fn obtained(stats: stats_alloc::Stats) -> f64 {
        (stats.allocations + stats.reallocations) as f64
    }
    println!(
        "\nAllocations per call, client and server together (allocations and reallocations; \
         a `count-allocs` build, {seconds} s per measurement):\n"
    );
    println!(
        "| system | (a) allocs/call | (b) allocs/call | (d) allocs/call | (d) bytes/call ÷ 64 KiB | (e) allocs/item |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for system in systems {
        let conn = system.connect().await?;
        latency(&conn, 500).await?;
        let region = Region::new(GLOBAL);
        latency(&conn, 2_000).await?;
        let a = obtained(region.change()) / 2_000.0;
        let one = std::slice::from_ref(&conn);
        throughput(one, 64, 32, 0.2).await?;
        let region = Region::new(GLOBAL);
        let (_, _, calls) = throughput(one, 64, 32, seconds).await?;
        let b = obtained(region.change()) / calls as f64;
        throughput(one, 16, 64 * 1024, 0.2).await?;
        let region = Region::new(GLOBAL);
        let (_, _, calls) = throughput(one, 16, 64 * 1024, seconds).await?;
        let stats = region.change();
        let d = obtained(stats) / calls as f64;
        let d_bytes = stats.bytes_allocated as f64 / (64.0 * 1024.0) / calls as f64;
        stream_count(&conn, 0.2).await?;
        let region = Region::new(GLOBAL);
        let e = match stream_count(&conn, seconds).await? {
            Some((items, _)) => format!("{:.2}", obtained(region.change()) / items as f64),
            None => "n/a".to_owned(),
        };
        println!(
            "| {} | {a:.2} | {b:.2} | {d:.2} | {d_bytes:.2} | {e} |",
            system.name
        );
    }
    Ok(())
}

/// One figure per round.
#[derive(Default, Clone, Debug)]
struct Samples(Vec<f64>);

impl Samples {
    fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 0 => (v[n / 2 - 1] + v[n / 2]) / 2.0,
            n => v[n / 2],
        }
    }

    fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// Round by round `self / other`: the ratio of two systems measured side by side.
    fn ratios(&self, other: &Samples) -> Samples {
        Samples(self.0.iter().zip(&other.0).map(|(a, b)| a / b).collect())
    }

    fn cell(&self) -> String {
        if self.0.is_empty() {
            "n/a".into()
        } else {
            format!(
                "{} [{}–{}]",
                fmt(self.median()),
                fmt(self.min()),
                fmt(self.max())
            )
        }
    }

    fn ratio_cell(&self) -> String {
        if self.0.is_empty() {
            "n/a".into()
        } else {
            format!("{:.2} [{:.2}–{:.2}]", self.median(), self.min(), self.max())
        }
    }
}

struct Metric {
    /// Column heading.
    column: &'static str,
    /// What it measures, for the legend and the chart.
    label: &'static str,
    /// Its unit on the chart's axis.
    unit: &'static str,
}

const A_P50: usize = 0;
const A_P99: usize = 1;
const B: usize = 2;
const C: usize = 3;
const D: usize = 4;
const E: usize = 5;
const CPU: usize = 6;

const METRICS: [Metric; 7] = [
    Metric {
        column: "(a) p50 µs",
        label: "(a) 1 call at a time, 32 B: p50 latency",
        unit: "µs",
    },
    Metric {
        column: "(a) p99 µs",
        label: "(a) 1 call at a time, 32 B: p99 latency",
        unit: "µs",
    },
    Metric {
        column: "(b) calls/s",
        label: "(b) 64 concurrent calls, 1 connection, 32 B",
        unit: "calls/s",
    },
    Metric {
        column: "(c) calls/s",
        label: "(c) 4 connections × 64 concurrent calls, 32 B",
        unit: "calls/s",
    },
    Metric {
        column: "(d) MB/s",
        label: "(d) 16 concurrent 64 KiB calls, 1 connection",
        unit: "MB/s echoed",
    },
    Metric {
        column: "(e) items/s",
        label: "(e) one server stream, 32 B items",
        unit: "items/s",
    },
    Metric {
        column: "CPU µs/call",
        label: "CPU time per call in (b), client + server",
        unit: "µs",
    },
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// Starts every server and returns the systems `args` selects.
async fn start_systems(args: &Args) -> anyhow::Result<(Vec<System>, rpc_core::ServerHandle)> {
    let selected = |name: &str| args.systems.is_empty() || args.systems.iter().any(|n| n == name);
    let (raw_listener, raw_addr) = listener().await?;
    raw::serve(raw_listener);
    let (tarpc_listener, tarpc_addr) = listener().await?;
    tarpc_echo::serve(tarpc_listener, false);
    let (tarpc_nodelay_listener, tarpc_nodelay_addr) = listener().await?;
    tarpc_echo::serve(tarpc_nodelay_listener, true);
    let tonic = if selected("tonic") {
        start_tonic().await?
    } else {
        None
    };
    // A self-signed certificate for the TLS row, as an operator would make one.
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?.self_signed(&key)?;
    let server_tls = ServerTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;
    let client_tls = ClientTls::with_ca_pem(cert.pem().as_bytes())?;
    let server = Server::builder()
        .service(EchoServer::new(EchoImpl))
        .tls(server_tls)
        .listen("tcp://127.0.0.1:0")
        .listen("quic://127.0.0.1:0")
        .listen("ws://127.0.0.1:0/")
        .listen("tls://127.0.0.1:0")
        .start()
        .await?;
    let [
        Endpoint::Tcp { port, .. },
        Endpoint::Quic {
            port: quic_port, ..
        },
        Endpoint::Ws { port: ws_port, .. },
        Endpoint::Tls { port: tls_port, .. },
    ] = server.local_endpoints()
    else {
        anyhow::bail!("server has no TCP, QUIC, WebSocket and TLS endpoints");
    };
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse()?;
    let rpc_addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let quic_addr: SocketAddr = format!("127.0.0.1:{quic_port}").parse()?;
    let ws_addr: SocketAddr = format!("127.0.0.1:{ws_port}").parse()?;
    let system = |name, addr, kind| System { name, addr, kind };
    let all = [
        system("raw", raw_addr, Kind::Raw),
        system("msgpack", rpc_addr, Kind::Ours(Format::MessagePack)),
        system("postcard", rpc_addr, Kind::Ours(Format::Postcard)),
        system("json", rpc_addr, Kind::Ours(Format::Json)),
        system("postcard-quic", quic_addr, Kind::OursQuic(Format::Postcard)),
        system("postcard-ws", ws_addr, Kind::OursWs(Format::Postcard)),
        system(
            "postcard-tls",
            tls_addr,
            Kind::OursTls(Format::Postcard, client_tls),
        ),
        system("tarpc", tarpc_addr, Kind::Tarpc { nodelay: false }),
        system(
            "tarpc-nodelay",
            tarpc_nodelay_addr,
            Kind::Tarpc { nodelay: true },
        ),
    ];
    for name in &args.systems {
        anyhow::ensure!(
            name == "tonic" || all.iter().any(|s| s.name == name),
            "unknown system {name:?}"
        );
    }
    let systems: Vec<System> = all
        .into_iter()
        .filter(|s| selected(s.name))
        .chain(tonic)
        .collect();
    anyhow::ensure!(!systems.is_empty(), "no system to run");
    Ok((systems, server))
}

async fn listener() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Starts the tonic peer.
#[cfg(feature = "tonic")]
async fn start_tonic() -> anyhow::Result<Option<System>> {
    let (listener, addr) = listener().await?;
    tonic_echo::serve(listener);
    Ok(Some(System {
        name: "tonic",
        addr,
        kind: Kind::Tonic,
    }))
}

/// The tonic peer is not in this build: says so, and the tonic rows are left out.
#[cfg(not(feature = "tonic"))]
async fn start_tonic() -> anyhow::Result<Option<System>> {
    eprintln!("tonic peer not built: rebuild with --features tonic");
    Ok(None)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let load_before = load_average();
    let (systems, server) = start_systems(&args).await?;
    let mut results: Vec<Vec<Samples>> =
        vec![vec![Samples::default(); METRICS.len()]; systems.len()];

    eprintln!("warming up");
    for system in &systems {
        let conn = system.connect().await?;
        if args.warmup > 0.0 {
            throughput(std::slice::from_ref(&conn), 64, 32, args.warmup).await?;
        }
    }
    let on = |w: &str| args.workloads.is_empty() || args.workloads.iter().any(|x| x == w);
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        for (i, system) in systems.iter().enumerate().filter(|_| on("a")) {
            let conn = system.connect().await?;
            let (p50, p99) = latency(&conn, args.latency_calls).await?;
            results[i][A_P50].0.push(p50.as_secs_f64() * 1e6);
            results[i][A_P99].0.push(p99.as_secs_f64() * 1e6);
        }
        for (i, system) in systems.iter().enumerate().filter(|_| on("b")) {
            let conn = system.connect().await?;
            let (rate, cpu, _) =
                throughput(std::slice::from_ref(&conn), 64, 32, args.seconds).await?;
            results[i][B].0.push(rate);
            results[i][CPU].0.push(cpu.as_secs_f64() * 1e6);
        }
        for (i, system) in systems.iter().enumerate().filter(|_| on("c")) {
            let mut conns = Vec::new();
            for _ in 0..4 {
                conns.push(system.connect().await?);
            }
            let (rate, _, _) = throughput(&conns, 64, 32, args.seconds).await?;
            results[i][C].0.push(rate);
        }
        for (i, system) in systems.iter().enumerate().filter(|_| on("d")) {
            let conn = system.connect().await?;
            let (rate, _, _) =
                throughput(std::slice::from_ref(&conn), 16, 64 * 1024, args.seconds).await?;
            results[i][D].0.push(rate * 64.0 * 1024.0 / 1e6);
        }
        for (i, system) in systems.iter().enumerate().filter(|_| on("e")) {
            let conn = system.connect().await?;
            if let Some(rate) = stream_items(&conn, args.seconds).await? {
                results[i][E].0.push(rate);
            }
        }
    }
    let load_after = load_average();

    print_tables(&args, &systems, &results, &load_before, &load_after);
    #[cfg(feature = "count-allocs")]
    count_allocations(&systems, args.seconds.min(1.0)).await?;
    server.shutdown(Duration::from_secs(1)).await;
    if let Some(path) = &args.svg {
        let title = format!(
            "Echo over loopback TCP (QUIC for postcard-quic), {} round(s) interleaved: medians, whiskers min–max",
            args.rounds
        );
        write_svg(path, &systems, &results, &title)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn print_tables(
    args: &Args,
    systems: &[System],
    results: &[Vec<Samples>],
    load_before: &str,
    load_after: &str,
) {
    println!(
        "Echo over loopback TCP (QUIC for postcard-quic), {} rounds interleaved, {} s per throughput run, {} calls per \
         latency run, {} worker threads; client and server in one process.",
        args.rounds, args.seconds, args.latency_calls, args.workers
    );
    println!(
        "CPU: {}; allocator: {ALLOCATOR}; load average before: {load_before}; after: {load_after}.\n",
        cpu_model()
    );
    for metric in &METRICS {
        println!("- {}: {} ({})", metric.column, metric.label, metric.unit);
    }
    println!("\nMedians [min–max] over the rounds:\n");
    print_header("system", METRICS.len());
    for (system, row) in systems.iter().zip(results) {
        let cells: Vec<String> = row.iter().map(Samples::cell).collect();
        println!("| {} | {} |", system.name, cells.join(" | "));
    }

    let Some(ours) = systems
        .iter()
        .position(|s| s.name == "postcard")
        .or_else(|| systems.iter().position(System::is_ours))
    else {
        return;
    };
    let ours_name = systems[ours].name;
    println!(
        "\nEach system ÷ ours ({ours_name}), round by round, median [min–max]: above 1 is more \
         calls/s, MB/s or items/s, or more latency or CPU, than ours.\n"
    );
    print_header(&format!("system ÷ {ours_name}"), METRICS.len());
    for (i, system) in systems.iter().enumerate().filter(|&(i, _)| i != ours) {
        let cells: Vec<String> = (0..METRICS.len())
            .map(|m| results[i][m].ratios(&results[ours][m]).ratio_cell())
            .collect();
        println!("| {} | {} |", system.name, cells.join(" | "));
    }

    if let Some(raw) = systems.iter().position(|s| s.name == "raw") {
        println!(
            "\nOurs ÷ raw multiplexed (the performance bars: (a) p50 ≤ 1.1, (b) and (c) ≥ 1.0, \
             (d) ≥ 0.9, CPU ≤ 1.25):\n"
        );
        print_header("ours ÷ raw", METRICS.len());
        for (i, system) in systems.iter().enumerate().filter(|(_, s)| s.is_ours()) {
            let cells: Vec<String> = (0..METRICS.len())
                .map(|m| results[i][m].ratios(&results[raw][m]).ratio_cell())
                .collect();
            println!("| {} | {} |", system.name, cells.join(" | "));
        }
    }

    // Ours against the better tarpc variant on each workload, and against tonic.
    println!();
    for (label, names) in [
        ("tarpc's best", &["tarpc", "tarpc-nodelay"][..]),
        ("tonic", &["tonic"][..]),
    ] {
        let mut parts = Vec::new();
        for m in [B, C, D] {
            let best = systems
                .iter()
                .enumerate()
                .filter(|(i, s)| names.contains(&s.name) && !results[*i][m].0.is_empty())
                .max_by(|(i, _), (j, _)| {
                    results[*i][m].median().total_cmp(&results[*j][m].median())
                });
            if let Some((i, peer)) = best.filter(|_| !results[ours][m].0.is_empty()) {
                let ratio = results[ours][m].ratios(&results[i][m]);
                parts.push(format!(
                    "{} {} (vs {})",
                    &METRICS[m].column[..3],
                    ratio.ratio_cell(),
                    peer.name
                ));
            }
        }
        if !parts.is_empty() {
            println!(
                "Ours ({ours_name}) ÷ {label}, round by round: {}.",
                parts.join(", ")
            );
        }
    }
}

fn print_header(first: &str, columns: usize) {
    let names: Vec<&str> = METRICS.iter().map(|m| m.column).collect();
    println!("| {first} | {} |", names.join(" | "));
    println!("|---|{}", "---:|".repeat(columns));
}

/// Draws (b)–(e) as horizontal bars, one panel per workload, one bar per system.
fn write_svg(
    path: &Path,
    systems: &[System],
    results: &[Vec<Samples>],
    title: &str,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let labels: Vec<String> = systems
        .iter()
        .map(|s| {
            if s.is_ours() {
                format!("ours, {}", s.name)
            } else {
                s.name.to_string()
            }
        })
        .collect();
    let n = systems.len();
    // Segment 0 is at the bottom: put the first system at the top, as in the table. An integer
    // range is inclusive, so `0..n - 1` makes `n` segments.
    let row = |i: usize| n - 1 - i;
    for (area, metric) in root.split_evenly((2, 2)).iter().zip([B, C, D, E]) {
        let max = results
            .iter()
            .map(|r| r[metric].max())
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1.0);
        let mut chart = ChartBuilder::on(area)
            .caption(METRICS[metric].label, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(120)
            .build_cartesian_2d(0.0..max * 1.22, (0..n.saturating_sub(1)).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .y_labels(n)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(r) if *r < n => labels[n - 1 - r].clone(),
                _ => String::new(),
            })
            .x_labels(6)
            .x_label_formatter(&|v| value(metric, *v))
            .x_desc(METRICS[metric].unit)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 13))
            .draw()?;
        let value_style =
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, system) in systems.iter().enumerate() {
            let samples = &results[i][metric];
            let center = SegmentValue::CenterOf(row(i));
            if samples.0.is_empty() {
                chart.draw_series(std::iter::once(Text::new(
                    " n/a",
                    (0.0, center),
                    value_style.clone(),
                )))?;
                continue;
            }
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row(i))),
                    (samples.median(), SegmentValue::Exact(row(i) + 1)),
                ],
                color(system).filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            chart.draw_series(std::iter::once(bar))?;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![
                    (samples.min(), center.clone()),
                    (samples.max(), center.clone()),
                ],
                BLACK.stroke_width(2),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("  {}", value(metric, samples.median())),
                (samples.max(), center),
                value_style.clone(),
            )))?;
        }
    }
    root.present()?;
    Ok(())
}

fn color(system: &System) -> RGBColor {
    match system.name {
        "raw" => RGBColor(150, 150, 150),
        "postcard" => RGBColor(31, 119, 180),
        "msgpack" => RGBColor(98, 160, 210),
        "json" => RGBColor(160, 200, 232),
        "postcard-quic" => RGBColor(148, 103, 189),
        "postcard-ws" => RGBColor(20, 70, 120),
        "postcard-tls" => RGBColor(188, 128, 45),
        "tarpc" => RGBColor(253, 174, 107),
        "tarpc-nodelay" => RGBColor(230, 120, 20),
        _ => RGBColor(44, 160, 44),
    }
}

/// A figure of `metric` for the chart: MB/s as they are, counts as `1.23M` or `152k`.
fn value(metric: usize, v: f64) -> String {
    if metric == D {
        format!("{v:.0}")
    } else {
        si(v)
    }
}

/// `1234567` as `1.23M`, `152000` as `152k`.
fn si(v: f64) -> String {
    let (scaled, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    if scaled >= 100.0 || scaled == scaled.trunc() {
        format!("{scaled:.0}{suffix}")
    } else if scaled >= 10.0 {
        format!("{scaled:.1}{suffix}")
    } else {
        format!("{scaled:.2}{suffix}")
    }
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "{model}, {} logical CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}
