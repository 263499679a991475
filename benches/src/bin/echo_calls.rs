//! A fixed number of echo calls, one at a time, over TCP on loopback, in one thread: for
//! counting instructions per call with `valgrind --tool=callgrind`, which counts the same
//! whatever else the machine runs. Run it with `N` and `2N` calls; the difference of the two
//! totals divided by `N` is the cost of one call, without the start and the end.
//!
//! With `--items N`, it reads `N` items of one server stream instead of making calls: the same
//! difference then gives the cost of one stream item. With `--raw`, the calls go to the raw
//! multiplexed reference instead (`benches::raw`), for the same count on the bar's baseline.
//!
//! ```text
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p target/release/echo-calls --calls 200 --bytes 65536
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p target/release/echo-calls --items 20000
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p target/release/echo-calls --calls 200 --raw
//! ```

use std::time::Instant;

use anyhow::Context;
use benches::echo::{EchoClient, EchoImpl, EchoServer};
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use rpc_core::{Client, Format, Server};

/// Makes `--calls` echo calls of `--bytes` bytes, one after the other.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// How many calls.
    #[arg(long, default_value_t = 1000)]
    calls: u32,
    /// The payload's size in bytes.
    #[arg(long, default_value_t = 32)]
    bytes: usize,
    /// The format: postcard or msgpack.
    #[arg(long, default_value = "postcard")]
    format: Format,
    /// Reads this many items of one server stream of `--bytes` items instead of making calls.
    #[arg(long)]
    items: Option<u64>,
    /// Calls the raw multiplexed reference instead of the framework.
    #[arg(long, conflicts_with_all = ["items", "format"])]
    raw: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let payload = Bytes::from(vec![7u8; args.bytes]);
        if args.raw {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            benches::raw::serve(listener);
            let client = benches::raw::RawClient::connect(addr).await?;
            let started = Instant::now();
            for _ in 0..args.calls {
                let back = client.echo(payload.clone()).await.context("an echo")?;
                anyhow::ensure!(back.len() == payload.len(), "a short echo");
            }
            report(&args, "raw", started);
            return Ok(());
        }
        let server = Server::builder()
            .service(EchoServer::new(EchoImpl))
            .listen("tcp://127.0.0.1:0")
            .start()
            .await
            .context("the server starts")?;
        let endpoint = server.local_endpoint().context("an endpoint")?.clone();
        let client = EchoClient::new(
            Client::builder()
                .format(args.format.clone())
                .connect(&endpoint)
                .await?,
        );
        if let Some(items) = args.items {
            let started = Instant::now();
            let mut stream = client.stream(payload.clone(), items).await?;
            let mut got = 0u64;
            while let Some(item) = stream.next().await {
                anyhow::ensure!(item?.len() == payload.len(), "a short item");
                got += 1;
            }
            anyhow::ensure!(got == items, "{got} items of {items}");
            let took = started.elapsed();
            println!(
                "{items} stream items of {} B ({}): {:.3} µs per item",
                args.bytes,
                args.format,
                took.as_secs_f64() * 1e6 / items as f64
            );
            server.shutdown(std::time::Duration::from_millis(100)).await;
            return Ok(());
        }
        let started = Instant::now();
        for _ in 0..args.calls {
            let back = client.echo(payload.clone()).await?;
            anyhow::ensure!(back.len() == payload.len(), "a short echo");
        }
        report(&args, &args.format.to_string(), started);
        server.shutdown(std::time::Duration::from_millis(100)).await;
        Ok(())
    })
}

fn report(args: &Args, system: &str, started: Instant) {
    println!(
        "{} calls of {} B ({system}): {:.1} µs per call",
        args.calls,
        args.bytes,
        started.elapsed().as_secs_f64() * 1e6 / f64::from(args.calls)
    );
}
