//! Serves a registry over RPC, backed by the embedded store or by etcd, until Ctrl-C or SIGTERM,
//! then shuts down gracefully.

/// The allocator that keeps a long-running server's memory flat as clients come and go (see
/// docs/BENCHMARKS.md, "Memory under attack"); without the `jemalloc` feature, the system's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use examples::tls_args::ServerTlsArgs;
use rpc_core::metrics::Metrics;
use rpc_core::{Endpoint, Server, TraceCalls};
use rpc_registry::{MemoryRegistry, PageRequest, Registry, RegistryApiServer, RegistryService};

/// `println!` for what the program tells whoever started it: a stdout that nobody reads any more
/// (a closed pipe) is no reason to stop serving, so a line that cannot be written is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The longest lease TTL the flags accept: a year.
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;
/// The longest wait the flags accept: an hour.
const MAX_WAIT_SECS: u64 = 3600;
/// The smallest frame limit: room for any sensible instance in one register call.
const MIN_FRAME_BYTES: u64 = 64 * 1024;
/// The largest frame limit: what the frame header's 32-bit length can say.
const MAX_FRAME_BYTES: u64 = u32::MAX as u64;

/// Serves the `rpc.Registry` service: servers register their instances under leases, clients
/// discover and watch them.
///
/// Backends:
///   memory  the embedded in-memory store (default): zero setup, one process; its contents are
///           lost when it stops, and registrations heal by themselves when it comes back
///           (clients register again).
///   etcd    stores instances in etcd under leases (needs a build with `--features etcd` and
///           an etcd given with --etcd-endpoint); for more than one registry process. The
///           server waits for etcd at startup, retrying with backoff for up to
///           --backend-wait-secs, so it may start before etcd does.
///
/// Lease TTLs: clients ask for a TTL when they register; the server clamps it to
/// [--min-ttl-secs, --max-ttl-secs]. An instance whose lease is not renewed within its TTL is
/// removed and watchers are told.
///
/// Sizes: no answer grows with the number of instances. `discover` answers pages and a watch
/// sends its snapshots in chunks, each of at most --max-page-len instances and about
/// --max-page-bytes bytes (counted as JSON), which must be at most half of --max-frame-bytes,
/// the largest frame body the server sends or accepts.
///
/// Every flag's range is checked at startup: a value out of range, or a minimum above its
/// maximum, is reported and the server exits with status 2.
///
/// On Ctrl-C or SIGTERM the server stops accepting, tells its clients it is draining, finishes
/// the calls in flight and exits.
#[derive(Parser, Debug)]
#[command(name = "registry-server", version, verbatim_doc_comment)]
struct Args {
    /// Where to listen: tcp://host:port, tls://host:port, ws://host:port/path,
    /// wss://host:port/path, quic://host:port, unix:///path or mem://name. Repeat for several.
    /// tls:// and wss:// need --tls-cert and --tls-key.
    #[arg(long, default_value = "tcp://127.0.0.1:7100")]
    listen: Vec<Endpoint>,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// Serve Prometheus metrics over HTTP at this address, e.g. 127.0.0.1:9100: GET /metrics
    /// (calls, latencies, connections, bytes; with the memory backend also instances by
    /// service, live leases and open watches).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// The store behind the registry.
    #[arg(long, value_enum, default_value_t = Backend::Memory)]
    backend: Backend,
    /// etcd client URLs (with --backend etcd), e.g. http://127.0.0.1:2379. Repeat for several.
    #[arg(long = "etcd-endpoint", default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// The key prefix in etcd (with --backend etcd).
    #[arg(long, default_value = "/rpc/registry/")]
    etcd_prefix: String,
    /// How long to wait for the backend at startup, in seconds (0 to 3600; with --backend etcd):
    /// the server retries with backoff until etcd answers, and gives up after this long; 0 gives
    /// up at the first failure.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECS))]
    backend_wait_secs: u64,
    /// The smallest lease TTL granted, in seconds (1 to 31536000, a year).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_SECS))]
    min_ttl_secs: u64,
    /// The largest lease TTL granted, in seconds (1 to 31536000, at least --min-ttl-secs).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_SECS))]
    max_ttl_secs: u64,
    /// How long calls in flight may take to finish at shutdown, in seconds (0 to 3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_SECS))]
    grace: u64,
    /// The largest frame body sent or accepted, in bytes (65536 to 4294967295).
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(MIN_FRAME_BYTES..=MAX_FRAME_BYTES))]
    max_frame_bytes: u64,
    /// The most instances in one discover page or watch snapshot chunk (1 to 1000000).
    #[arg(long, default_value_t = PageRequest::DEFAULT_LIMIT, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_page_len: u32,
    /// About the most bytes of instances in one discover page or watch snapshot chunk, counted
    /// as JSON (1024 or more, at most half of --max-frame-bytes) [default: an eighth of
    /// --max-frame-bytes, at most 1048576].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1024..))]
    max_page_bytes: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The embedded in-memory store.
    Memory,
    /// etcd.
    Etcd,
}

/// The flags, checked against each other.
#[derive(Debug)]
struct Settings {
    listen: Vec<Endpoint>,
    tls: ServerTlsArgs,
    metrics: Option<SocketAddr>,
    backend: Backend,
    // The etcd settings are read only by a build with the etcd backend.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    etcd_endpoints: Vec<String>,
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    etcd_prefix: String,
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    backend_wait: Duration,
    ttl: (Duration, Duration),
    grace: Duration,
    max_frame_bytes: usize,
    max_page_len: u32,
    max_page_bytes: u32,
}

impl Settings {
    /// Each flag's own range is checked as it is parsed; this checks the flags that bound each
    /// other.
    fn new(args: Args) -> Result<Settings, String> {
        if args.min_ttl_secs > args.max_ttl_secs {
            return Err(format!(
                "--min-ttl-secs ({}) must not be greater than --max-ttl-secs ({})",
                args.min_ttl_secs, args.max_ttl_secs
            ));
        }
        let max_page_bytes = match args.max_page_bytes {
            Some(bytes) if u64::from(bytes) > args.max_frame_bytes / 2 => {
                return Err(format!(
                    "--max-page-bytes ({bytes}) must be at most half of --max-frame-bytes ({}), \
                     to leave room for what a page carries besides its instances",
                    args.max_frame_bytes
                ));
            }
            Some(bytes) => bytes,
            // An eighth of the frame, as the default page is of the default frame.
            None => {
                let eighth = args.max_frame_bytes / 8;
                let bytes = eighth.min(u64::from(PageRequest::DEFAULT_MAX_BYTES));
                u32::try_from(bytes).unwrap_or(PageRequest::DEFAULT_MAX_BYTES)
            }
        };
        if args.etcd_endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err("--etcd-endpoint must not be empty".to_owned());
        }
        Ok(Settings {
            listen: args.listen,
            tls: args.tls,
            metrics: args.metrics,
            backend: args.backend,
            etcd_endpoints: args.etcd_endpoints,
            etcd_prefix: args.etcd_prefix,
            backend_wait: Duration::from_secs(args.backend_wait_secs),
            ttl: (
                Duration::from_secs(args.min_ttl_secs),
                Duration::from_secs(args.max_ttl_secs),
            ),
            grace: Duration::from_secs(args.grace),
            // The range checked above fits in a u32, and so in a usize on every target Tokio
            // supports.
            max_frame_bytes: usize::try_from(args.max_frame_bytes).unwrap_or(usize::MAX),
            max_page_len: args.max_page_len,
            max_page_bytes,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();
    let settings = match Settings::new(Args::parse()) {
        Ok(settings) => settings,
        // Reported as clap reports a bad flag: the message and the usage on stderr, status 2.
        Err(message) => Args::command()
            .error(ErrorKind::ArgumentConflict, message)
            .exit(),
    };
    let mut stop = Box::pin(examples::shutdown_signal()?);
    let metrics = Metrics::new();
    let registry: Arc<dyn Registry> = match settings.backend {
        Backend::Memory => {
            let memory = MemoryRegistry::new();
            register_gauges(&metrics, &memory);
            Arc::new(memory)
        }
        Backend::Etcd => tokio::select! {
            registry = etcd(&settings) => registry?,
            signal = &mut stop => {
                say!("{signal}: stopping before the backend answered");
                return Ok(());
            }
        },
    };
    let (min_ttl, max_ttl) = settings.ttl;
    let service = RegistryService::new(registry)
        .with_ttl_bounds(min_ttl, max_ttl)
        .with_page_limits(settings.max_page_len, settings.max_page_bytes);
    let mut builder = Server::builder()
        .service(RegistryApiServer::new(service))
        .max_frame_len(settings.max_frame_bytes)
        .filter(TraceCalls);
    if let Some(tls) = settings.tls.server_tls()? {
        builder = builder.tls(tls);
    }
    for endpoint in &settings.listen {
        builder = builder.listen(endpoint.clone());
    }
    let metrics_server = match settings.metrics {
        Some(addr) => {
            builder = builder.metrics(&metrics);
            Some(metrics.serve(addr).await?)
        }
        None => None,
    };
    let server = builder.start().await?;
    for endpoint in server.local_endpoints() {
        say!(
            "registry-server ({:?} backend) listening on {endpoint}",
            settings.backend
        );
    }
    if let Some(metrics_server) = &metrics_server {
        say!("metrics on http://{}/metrics", metrics_server.local_addr());
    }
    let signal = stop.await;
    say!(
        "{signal}: draining, calls in flight have {} s to finish",
        settings.grace.as_secs()
    );
    server.shutdown(settings.grace).await;
    say!("registry-server stopped");
    Ok(())
}

/// The embedded store's gauges, read at every scrape. They hold a clone of the store, which
/// lives as long as the program anyway.
fn register_gauges(metrics: &Metrics, memory: &MemoryRegistry) {
    let m = memory.clone();
    metrics.register_gauge_family_fn(
        "registry_instances",
        "Instances registered, by service name",
        "service",
        move || {
            m.instances_by_service()
                .into_iter()
                .map(|(service, n)| (service, gauge(n)))
                .collect()
        },
    );
    let m = memory.clone();
    metrics.register_gauge_fn("registry_leases", "Leases live", move || {
        gauge(m.lease_count())
    });
    let m = memory.clone();
    metrics.register_gauge_fn("registry_watchers", "Watches open", move || {
        gauge(m.watcher_count())
    });
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Connects to etcd, retrying with backoff while it does not answer, for up to
/// `settings.backend_wait`.
#[cfg(feature = "etcd")]
async fn etcd(settings: &Settings) -> anyhow::Result<Arc<dyn Registry>> {
    use rpc_core::Backoff;
    use rpc_registry::{EtcdConfig, EtcdRegistry, RegistryError};
    use tokio::time::Instant;

    let mut config = EtcdConfig::new(settings.etcd_endpoints.clone());
    config.prefix = settings.etcd_prefix.clone();
    let endpoints = settings.etcd_endpoints.join(", ");
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let deadline = Instant::now() + settings.backend_wait;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let reason = match EtcdRegistry::connect(config.clone()).await {
            Ok(registry) => return Ok(Arc::new(registry)),
            Err(RegistryError::Unavailable(reason)) => reason,
            Err(e) => return Err(e.into()),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!(
                "etcd at {endpoints} did not answer within {} s (--backend-wait-secs): {reason}",
                settings.backend_wait.as_secs()
            );
        }
        // Half the ceiling plus a random half of it: never a burst of attempts, and many
        // registry servers restarted together do not retry together.
        let ceiling = backoff.ceiling(attempt);
        let delay = (ceiling / 2 + ceiling.mul_f64(fastrand::f64()) / 2).min(left);
        tracing::warn!("waiting for etcd at {endpoints}, retrying in {delay:.1?}: {reason}");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_: &Settings) -> anyhow::Result<Arc<dyn Registry>> {
    anyhow::bail!(
        "this build has no etcd backend; build with: cargo run -p examples --features etcd --bin registry-server -- --backend etcd"
    )
}
