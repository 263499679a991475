//! `rpcctl ping`: how long a connection takes to open, and a heartbeat's round trip.
//!
//! It speaks frames directly rather than through a `Client`: a Ping frame answered by a Pong
//! with the same request id (docs/PROTOCOL.md §9) is the whole exchange, and no call is made.

use std::time::{Duration, Instant};

use clap::Args;
use futures::{SinkExt, StreamExt};
use rpc_core::codec::{Frame, FrameCodec, FrameKind};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::connect;
use crate::fail::{Failure, one_line};
use crate::output;

/// Pings a server.
#[derive(Args, Debug)]
pub(crate) struct PingArgs {
    /// The server, e.g. tcp://127.0.0.1:7000.
    endpoint: String,
    /// How many pings to send.
    #[arg(long, short = 'c', default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// The pause between two pings: 200ms, 1s…
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// How long to wait for the connection, and for each pong: 500ms, 5s…
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(crate) async fn run(args: PingArgs) -> Result<(), Failure> {
    let endpoint = connect::endpoint(&args.endpoint)?;
    let started = Instant::now();
    let connection = connect::connection(&endpoint, args.timeout)
        .await
        .map_err(|e| {
            Failure::failed(format!(
                "unreachable: {endpoint}: {}",
                one_line(&e.to_string())
            ))
        })?;
    output::line(&format!(
        "connected to {endpoint} in {}",
        millis(started.elapsed())
    ))?;
    let (read, write) = connection.into_split();
    let mut frames = FramedRead::new(read, FrameCodec::new());
    let mut sink = FramedWrite::new(write, FrameCodec::new());
    for seq in 1..=args.count {
        let sent = Instant::now();
        sink.send(Frame::new(FrameKind::Ping, seq))
            .await
            .map_err(|e| Failure::failed(format!("{endpoint}: cannot send a ping: {e}")))?;
        let waited = tokio::time::timeout(args.timeout, pong(&mut frames, &mut sink, seq)).await;
        match waited {
            Ok(result) => result.map_err(|e| Failure::failed(format!("{endpoint}: {e}")))?,
            Err(_) => {
                return Err(Failure::failed(format!(
                    "{endpoint}: no pong within {}",
                    humantime::format_duration(args.timeout)
                )));
            }
        }
        output::line(&format!(
            "pong {seq} from {endpoint}: {}",
            millis(sent.elapsed())
        ))?;
        if seq < args.count {
            tokio::time::sleep(args.interval).await;
        }
    }
    Ok(())
}

/// Reads until the pong for `seq`, answering the server's own pings on the way.
async fn pong<R, W>(
    frames: &mut FramedRead<R, FrameCodec>,
    sink: &mut FramedWrite<W, FrameCodec>,
    seq: u64,
) -> Result<(), String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    loop {
        match frames.next().await {
            Some(Ok(frame)) if frame.kind == FrameKind::Pong && frame.request_id == seq => {
                return Ok(());
            }
            Some(Ok(frame)) if frame.kind == FrameKind::Ping => {
                sink.send(Frame::new(FrameKind::Pong, frame.request_id))
                    .await
                    .map_err(|e| format!("cannot answer a ping: {e}"))?;
            }
            Some(Ok(frame)) if frame.kind == FrameKind::GoAway => {
                return Err("the server is draining (go-away)".to_owned());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("bad frame: {}", one_line(&e.to_string()))),
            None => return Err("the server closed the connection".to_owned()),
        }
    }
}

/// `0.123 ms`.
fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}
