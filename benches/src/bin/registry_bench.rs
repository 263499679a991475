//! Registry benchmark: register 100,000 instances, discover latency, and how long one change
//! takes to reach 1,000 watchers — for the embedded registry and the registry served over RPC
//! (loopback TCP), and etcd when `--etcd <url>` is given (build with `--features etcd`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use rpc_core::{Client, Endpoint, Server};
use rpc_registry::{
    Instance, MemoryRegistry, Registry, RegistryApiServer, RegistryService, RemoteRegistry,
    ServiceKey, WatchEvent,
};

#[derive(Parser, Debug)]
#[command(about = "Registry benchmark: registration, discovery and watch fan-out")]
struct Args {
    /// Instances to register, spread over `--services` keys.
    #[arg(long, default_value_t = 100_000)]
    instances: usize,
    /// Keys the instances are spread over.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Discover calls to time.
    #[arg(long, default_value_t = 2000)]
    discovers: usize,
    /// Watchers of one key that must all see one change.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Concurrent registrations in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Also measure an etcd at this URL (needs a build with `--features etcd`).
    #[arg(long)]
    etcd: Option<String>,
}

struct Row {
    backend: &'static str,
    register_per_s: f64,
    discover_p50_us: f64,
    discover_p99_us: f64,
    fanout_ms: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rows = Vec::new();

    let memory: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    rows.push(measure("memory (embedded)", memory, &args).await?);

    let store: Arc<dyn Registry> = Arc::new(MemoryRegistry::new());
    let server = Server::builder()
        .service(RegistryApiServer::new(RegistryService::new(store)))
        .listen("tcp://127.0.0.1:0")
        .start()
        .await?;
    let endpoint: Endpoint = server
        .local_endpoint()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no endpoint"))?;
    let remote: Arc<dyn Registry> = Arc::new(RemoteRegistry::new(
        Client::builder().connect(&endpoint).await?,
    ));
    rows.push(measure("RPC-served (memory behind TCP)", remote, &args).await?);
    server.shutdown(Duration::from_secs(1)).await;

    if let Some(url) = &args.etcd {
        rows.push(measure("etcd", etcd(url).await?, &args).await?);
    }

    println!(
        "\n{} instances over {} keys, {} discovers of a {}-instance key, {} watchers of one key.\n",
        args.instances,
        args.services,
        args.discovers,
        args.instances / args.services.max(1),
        args.watchers
    );
    println!(
        "| registry | register (instances/s) | discover p50 | discover p99 | one change to all watchers |"
    );
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.0} | {:.0} µs | {:.0} µs | {:.1} ms |",
            r.backend, r.register_per_s, r.discover_p50_us, r.discover_p99_us, r.fanout_ms
        );
    }
    Ok(())
}

#[cfg(feature = "etcd")]
async fn etcd(url: &str) -> anyhow::Result<Arc<dyn Registry>> {
    let mut config = rpc_registry::EtcdConfig::new([url.to_owned()]);
    config.prefix = format!("/bench/{}/", std::process::id());
    Ok(Arc::new(rpc_registry::EtcdRegistry::connect(config).await?))
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_: &str) -> anyhow::Result<Arc<dyn Registry>> {
    anyhow::bail!("built without etcd support: add --features etcd")
}

async fn measure(
    backend: &'static str,
    registry: Arc<dyn Registry>,
    args: &Args,
) -> anyhow::Result<Row> {
    eprintln!("{backend}: registering {} instances", args.instances);
    let lease = registry.grant(Duration::from_secs(600)).await?;
    let start = Instant::now();
    let per_key = (args.instances / args.services.max(1)).max(1);
    let mut pending = futures::stream::FuturesUnordered::new();
    for i in 0..args.instances {
        let registry = registry.clone();
        let key = ServiceKey::new(format!("bench.svc-{}", i / per_key));
        let instance = Instance::new(
            key,
            format!("tcp://10.{}.{}.{}:7000", i >> 16, (i >> 8) & 255, i & 255),
        );
        pending.push(async move { registry.register(instance, lease.id).await });
        if pending.len() >= args.concurrency
            && let Some(r) = pending.next().await
        {
            r?;
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    let register_per_s = args.instances as f64 / start.elapsed().as_secs_f64();

    eprintln!("{backend}: {} discovers", args.discovers);
    let key = ServiceKey::new("bench.svc-7");
    let mut samples = Vec::with_capacity(args.discovers);
    for _ in 0..args.discovers {
        let t = Instant::now();
        let snapshot = registry.discover(&key).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(
            snapshot.instances.len() == per_key,
            "discover returned {}",
            snapshot.instances.len()
        );
    }
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;

    eprintln!("{backend}: {} watchers", args.watchers);
    let watched = ServiceKey::new("bench.watched");
    let mut streams = Vec::with_capacity(args.watchers);
    for _ in 0..args.watchers {
        let mut stream = registry.watch(&watched, None).await?;
        match stream.next().await {
            Some(Ok(WatchEvent::Snapshot(_))) => {}
            other => anyhow::bail!("expected a snapshot, got {other:?}"),
        }
        streams.push(stream);
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for mut stream in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            if let Some(Ok(WatchEvent::Change { .. })) = stream.next().await {
                let _ = tx.send(Instant::now());
            }
        });
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let changed_at = Instant::now();
    registry
        .register(
            Instance::new(watched.clone(), "tcp://10.255.255.1:7000"),
            lease.id,
        )
        .await?;
    let mut last = changed_at;
    let mut seen = 0;
    while let Some(at) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await? {
        last = last.max(at);
        seen += 1;
        if seen == args.watchers {
            break;
        }
    }
    anyhow::ensure!(
        seen == args.watchers,
        "only {seen} of {} watchers saw the change",
        args.watchers
    );
    let _ = registry.revoke(lease.id).await;
    Ok(Row {
        backend,
        register_per_s,
        discover_p50_us: p(0.5),
        discover_p99_us: p(0.99),
        fanout_ms: last.duration_since(changed_at).as_secs_f64() * 1e3,
    })
}
