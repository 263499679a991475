//! Serves the hello service until Ctrl-C or SIGTERM, then shuts down gracefully.

/// The allocator that keeps a long-running server's memory flat as clients come and go (see
/// docs/BENCHMARKS.md, "Memory under attack"); without the `jemalloc` feature, the system's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use examples::hello::{GreeterServer, HelloService};
use examples::tls_args::ServerTlsArgs;
use rpc_core::metrics::Metrics;
use rpc_core::{Endpoint, Server, TraceCalls};

/// `println!` for what the program tells whoever started it: a stdout that nobody reads any more
/// (a closed pipe) is no reason to stop serving, so a line that cannot be written is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Serves the `hello.Greeter` service (hello, add, countdown) on one or more endpoints.
///
/// Clients pick their serializer (MessagePack, postcard, JSON) per connection; the server
/// answers each call in the serializer it arrived in. On Ctrl-C or SIGTERM the server stops
/// accepting, tells its clients it is draining, finishes the calls in flight and exits.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where to listen: tcp://host:port, tls://host:port, ws://host:port/path,
    /// wss://host:port/path, quic://host:port, unix:///path or mem://name. Repeat for several.
    /// tls:// and wss:// need --tls-cert and --tls-key.
    #[arg(long, default_value = "tcp://127.0.0.1:7000")]
    listen: Vec<Endpoint>,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// Serve Prometheus metrics (calls, latencies, connections, bytes) over HTTP at this
    /// address, e.g. 127.0.0.1:9100: GET /metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// A name shown in greetings, to tell instances apart.
    #[arg(long, default_value = "hello-server")]
    name: String,
    /// How long calls in flight may take to finish at shutdown, in seconds.
    #[arg(long, default_value_t = 5)]
    grace: u64,
    /// Answers waiting for one client, in KiB, past which its requests are no longer read
    /// until they drain (a client that does not read its answers stops being read).
    #[arg(long, default_value_t = 4 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    connection_buffer_kib: u64,
    /// Answers waiting for one client, in KiB, past which its connection is closed.
    #[arg(long, default_value_t = 32 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_connection_buffer_kib: u64,
    /// Answers waiting for all clients together, in MiB, past which the connection holding the
    /// most is closed.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    max_server_buffer_mib: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();
    let args = Args::parse();
    let stop = examples::shutdown_signal()?;
    let mut builder = Server::builder()
        .service(GreeterServer::new(HelloService {
            name: args.name.clone(),
        }))
        .filter(TraceCalls)
        .buffers(
            kib(args.connection_buffer_kib)?,
            kib(args.max_connection_buffer_kib)?,
            kib(args.max_server_buffer_mib.saturating_mul(1024))?,
        );
    if let Some(tls) = args.tls.server_tls()? {
        builder = builder.tls(tls);
    }
    for endpoint in &args.listen {
        builder = builder.listen(endpoint.clone());
    }
    let metrics = Metrics::new();
    let metrics_server = match args.metrics {
        Some(addr) => {
            builder = builder.metrics(&metrics);
            Some(metrics.serve(addr).await?)
        }
        None => None,
    };
    // Settings that do not fit together (a connection buffer over the server's) are refused here,
    // before anything is bound.
    let server = builder.start().await?;
    for endpoint in server.local_endpoints() {
        say!(
            "hello-server {:?} serving hello.Greeter on {endpoint}",
            args.name
        );
    }
    if let Some(metrics_server) = &metrics_server {
        say!("metrics on http://{}/metrics", metrics_server.local_addr());
    }
    let signal = stop.await;
    say!(
        "{signal}: draining, calls in flight have {} s to finish",
        args.grace
    );
    server.shutdown(Duration::from_secs(args.grace)).await;
    say!("hello-server stopped");
    Ok(())
}

fn kib(n: u64) -> anyhow::Result<usize> {
    n.checked_mul(1024)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| anyhow::anyhow!("{n} KiB is too large"))
}
