//! Three hello servers register in a registry; a client spreads calls over them by name; one
//! server stops and its share moves to the others without a failed call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use examples::hello::{GreeterClient, GreeterServer, HelloService};
use rpc_core::{Client, Endpoint, Server};
use rpc_registry::{
    DiscoverClient, Discovery, MemoryRegistry, RegisterOptions, RegisteredServer, Registry,
    RemoteRegistry,
};

/// Starts three `hello.Greeter` servers that register themselves, then calls the service by
/// name through a discovery-aware client and prints how the calls spread; stops one server
/// mid-run and shows its share moving to the others with no failed call.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A registry server to use (e.g. tcp://127.0.0.1:7100, see `registry-server`); by default
    /// an embedded registry in this process.
    #[arg(long)]
    registry: Option<Endpoint>,
    /// Calls per phase.
    #[arg(long, default_value_t = 3000)]
    calls: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let registry: Arc<dyn Registry> = match &args.registry {
        Some(endpoint) => {
            println!("using the registry server at {endpoint}");
            Arc::new(RemoteRegistry::new(
                Client::builder().connect(endpoint).await?,
            ))
        }
        None => {
            println!("using an embedded registry");
            Arc::new(MemoryRegistry::new())
        }
    };

    let mut servers = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let builder = Server::builder()
            .service(GreeterServer::new(HelloService {
                name: name.to_owned(),
            }))
            .listen("tcp://127.0.0.1:0");
        let server =
            RegisteredServer::start(builder, registry.clone(), RegisterOptions::default()).await?;
        println!(
            "server {name} listening on {} and registered",
            server
                .server()
                .local_endpoint()
                .map(|e| e.to_string())
                .unwrap_or_default()
        );
        servers.push((name, server));
    }

    // The service's name and version come from `#[service]` on the trait, as the servers'
    // registrations did.
    let greeter = GreeterClient::discover(registry.clone());
    anyhow::ensure!(
        greeter.caller().wait_for(3, Duration::from_secs(5)).await,
        "the three servers did not show up in the registry"
    );

    println!(
        "\nphase 1: {} calls of hello() by service name, weighted random over 3 instances",
        args.calls
    );
    let (counts, failed) = spread(&greeter, args.calls).await;
    report(&counts, failed);
    anyhow::ensure!(
        failed == 0 && counts.len() == 3,
        "expected calls on all three servers"
    );

    println!("\nphase 2: stopping beta while calls are in flight");
    let mut calls = tokio::spawn({
        let greeter = greeter.clone();
        let n = args.calls;
        async move { spread(&greeter, n).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let index = servers.iter().position(|(n, _)| *n == "beta").unwrap_or(1);
    let (_, beta) = servers.remove(index);
    beta.shutdown(Duration::from_secs(2)).await;
    println!("beta withdrew its registration and shut down gracefully");
    let (counts, failed) = (&mut calls).await?;
    report(&counts, failed);
    anyhow::ensure!(failed == 0, "{failed} calls failed");

    println!("\nphase 3: {} more calls", args.calls);
    let (counts, failed) = spread(&greeter, args.calls).await;
    report(&counts, failed);
    anyhow::ensure!(
        failed == 0 && !counts.contains_key("beta"),
        "beta still got calls"
    );
    println!("\nevery call succeeded; beta's share moved to the others");
    for (_, server) in servers {
        server.shutdown(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Makes `n` calls, 32 at a time; counts answers per server and failures.
async fn spread(greeter: &GreeterClient<Discovery>, n: usize) -> (BTreeMap<String, usize>, usize) {
    let mut counts = BTreeMap::new();
    let mut failed = 0;
    let mut pending = futures::stream::FuturesUnordered::new();
    use futures::StreamExt;
    for i in 0..n {
        let greeter = greeter.clone();
        pending.push(async move { greeter.hello(format!("caller {i}")).await });
        if pending.len() >= 32 {
            tally(pending.next().await, &mut counts, &mut failed);
        }
    }
    while let Some(result) = pending.next().await {
        tally(Some(result), &mut counts, &mut failed);
    }
    (counts, failed)
}

fn tally(
    result: Option<Result<String, rpc_core::RpcError>>,
    counts: &mut BTreeMap<String, usize>,
    failed: &mut usize,
) {
    match result {
        Some(Ok(greeting)) => {
            let server = greeting.rsplit("from ").next().unwrap_or("?").to_owned();
            *counts.entry(server).or_default() += 1;
        }
        Some(Err(e)) => {
            eprintln!("call failed: {e}");
            *failed += 1;
        }
        None => {}
    }
}

fn report(counts: &BTreeMap<String, usize>, failed: usize) {
    let total: usize = counts.values().sum::<usize>() + failed;
    for (server, n) in counts {
        println!(
            "  {server:<6} {n:>6} calls ({:.1}%)",
            *n as f64 * 100.0 / total.max(1) as f64
        );
    }
    println!("  failed {failed:>6}");
}
