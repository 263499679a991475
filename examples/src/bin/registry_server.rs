//! Serves a registry over RPC, backed by the embedded store or by etcd, until Ctrl-C or SIGTERM,
//! then shuts down gracefully.

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rpc_core::{Endpoint, Server, TraceCalls};
use rpc_registry::{MemoryRegistry, Registry, RegistryApiServer, RegistryService};

/// Serves the `rpc.Registry` service: servers register their instances under leases, clients
/// discover and watch them.
///
/// Backends:
///   memory  the embedded in-memory store (default): zero setup, one process; its contents are
///           lost when it stops, and registrations heal by themselves when it comes back
///           (clients register again).
///   etcd    stores instances in etcd under leases (needs a build with `--features etcd` and
///           a running etcd given with --etcd-endpoint); for more than one registry process.
///
/// Lease TTLs: clients ask for a TTL when they register; the server clamps it to
/// [--min-ttl-secs, --max-ttl-secs]. An instance whose lease is not renewed within its TTL is
/// removed and watchers are told.
///
/// On Ctrl-C or SIGTERM the server stops accepting, tells its clients it is draining, finishes
/// the calls in flight and exits.
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// Where to listen: tcp://host:port, unix:///path or mem://name. Repeat for several.
    #[arg(long, default_value = "tcp://127.0.0.1:7100")]
    listen: Vec<Endpoint>,
    /// The store behind the registry.
    #[arg(long, value_enum, default_value_t = Backend::Memory)]
    backend: Backend,
    /// etcd client URLs (with --backend etcd), e.g. http://127.0.0.1:2379. Repeat for several.
    #[arg(long = "etcd-endpoint", default_value = "http://127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,
    /// The key prefix in etcd (with --backend etcd).
    #[arg(long, default_value = "/rpc/registry/")]
    etcd_prefix: String,
    /// The smallest lease TTL granted, in seconds.
    #[arg(long, default_value_t = 1)]
    min_ttl_secs: u64,
    /// The largest lease TTL granted, in seconds.
    #[arg(long, default_value_t = 3600)]
    max_ttl_secs: u64,
    /// How long calls in flight may take to finish at shutdown, in seconds.
    #[arg(long, default_value_t = 5)]
    grace: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The embedded in-memory store.
    Memory,
    /// etcd.
    Etcd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    examples::init_logging();
    let args = Args::parse();
    let stop = examples::shutdown_signal()?;
    let registry: Arc<dyn Registry> = match args.backend {
        Backend::Memory => Arc::new(MemoryRegistry::new()),
        Backend::Etcd => etcd(&args).await?,
    };
    let service = RegistryService::new(registry).with_ttl_bounds(
        Duration::from_secs(args.min_ttl_secs),
        Duration::from_secs(args.max_ttl_secs),
    );
    let mut builder = Server::builder()
        .service(RegistryApiServer::new(service))
        .filter(TraceCalls);
    for endpoint in &args.listen {
        builder = builder.listen(endpoint.clone());
    }
    let server = builder.start().await?;
    for endpoint in server.local_endpoints() {
        println!(
            "registry-server ({:?} backend) listening on {endpoint}",
            args.backend
        );
    }
    let signal = stop.await;
    println!(
        "{signal}: draining, calls in flight have {} s to finish",
        args.grace
    );
    server.shutdown(Duration::from_secs(args.grace)).await;
    println!("registry-server stopped");
    Ok(())
}

#[cfg(feature = "etcd")]
async fn etcd(args: &Args) -> anyhow::Result<Arc<dyn Registry>> {
    let mut config = rpc_registry::EtcdConfig::new(args.etcd_endpoints.clone());
    config.prefix = args.etcd_prefix.clone();
    Ok(Arc::new(rpc_registry::EtcdRegistry::connect(config).await?))
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_: &Args) -> anyhow::Result<Arc<dyn Registry>> {
    anyhow::bail!(
        "this build has no etcd backend; build with: cargo run -p examples --features etcd --bin registry-server -- --backend etcd"
    )
}
