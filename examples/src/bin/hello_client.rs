//! Calls the hello service: a greeting, a typed error, a stream, and the blocking style.

use std::time::Duration;

use clap::Parser;
use examples::hello::{GreeterClient, MathError};
use examples::tls_args::ClientTlsArgs;
use futures::StreamExt;
use rpc_core::{BlockingClient, Client, ClientBuilder, Endpoint, Format, RpcError};

/// Calls `hello.Greeter` on a server started with `hello-server`, printing each step.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The server's endpoint: tcp://host:port, tls://host:port, ws://host:port/path,
    /// wss://host:port/path, quic://host:port, unix:///path or mem://name.
    #[arg(long, default_value = "tcp://127.0.0.1:7000")]
    endpoint: Endpoint,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// The serializer for this connection: msgpack, postcard or json.
    #[arg(long, default_value = "msgpack")]
    format: Format,
    /// The name to greet.
    #[arg(long, default_value = "world")]
    name: String,
    /// Make the calls from plain synchronous code instead of async.
    #[arg(long)]
    blocking: bool,
}

fn main() -> anyhow::Result<()> {
    examples::init_logging();
    let args = Args::parse();
    if args.blocking {
        return blocking(&args);
    }
    tokio::runtime::Runtime::new()?.block_on(asynchronous(&args))
}

async fn asynchronous(args: &Args) -> anyhow::Result<()> {
    println!("connecting to {} with {}", args.endpoint, args.format);
    let client = builder(args)?
        .timeout(Duration::from_secs(5))
        .connect(&args.endpoint)
        .await?;
    let greeter = GreeterClient::new(client);

    println!(
        "hello({:?}) -> {:?}",
        args.name,
        greeter.hello(args.name.clone()).await?
    );
    println!("add(2, 40) -> {:?}", greeter.add(2, 40).await?);
    match greeter.add(i64::MAX, 1).await {
        Err(RpcError::Application(MathError::Overflow)) => {
            println!("add(i64::MAX, 1) -> the server's typed error: Overflow")
        }
        other => anyhow::bail!("expected an overflow error, got {other:?}"),
    }
    let mut countdown = greeter.countdown(3).await?;
    print!("countdown(3) ->");
    while let Some(n) = countdown.next().await {
        print!(" {}", n?);
    }
    println!();
    Ok(())
}

/// A client builder with the format and TLS flags.
fn builder(args: &Args) -> anyhow::Result<ClientBuilder> {
    let mut builder = Client::builder().format(args.format.clone());
    if let Some(tls) = args.tls.client_tls()? {
        builder = builder.tls(tls);
    }
    Ok(builder)
}

fn blocking(args: &Args) -> anyhow::Result<()> {
    println!(
        "connecting to {} with {} (blocking calls)",
        args.endpoint, args.format
    );
    let client = BlockingClient::connect_with(builder(args)?, &args.endpoint)?;
    let greeter = GreeterClient::new(client.client().clone());
    let greeting = client.block_on(greeter.hello(args.name.clone()))?;
    println!("hello({:?}) -> {greeting:?}", args.name);
    println!("add(2, 40) -> {:?}", client.block_on(greeter.add(2, 40))?);
    Ok(())
}
