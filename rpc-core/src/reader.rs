//! The frame-reading loop both sides of a connection run: decode frames, handle everything one
//! read brought in as one burst, keep the heartbeat, and pause while the peer does not read its
//! answers. What a frame means is the side's business ([`ReadHandler`]).

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures::{FutureExt, StreamExt};
use rpc_codec::{Frame, FrameCodec, FrameError};
use rpc_transport::BoxRead;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use crate::deadlines::{DeadlineTimer, Deadlines};
use crate::heartbeat::{Heartbeat, HeartbeatAction};
use crate::poll_on_wake::PollOnWake;
use crate::writer::Backlog;

/// What a connection's read buffer starts with; it grows (doubling, or to a frame's size) when
/// the traffic needs more.
const INITIAL_READ_BUFFER: usize = 8 * 1024;
/// A read buffer grown past this is given back when a burst leaves it empty, so an idle
/// connection holds at most this much for its reads.
const MAX_IDLE_READ_BUFFER: usize = 256 * 1024;

/// What the reading loop needs to know.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReaderConfig {
    pub(crate) heartbeat_interval: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_body_len: usize,
}

impl ReaderConfig {
    /// The settings both sides' configurations give: an idle timeout not set is three
    /// heartbeat intervals. Fails, naming the setting, when they do not make sense together.
    pub(crate) fn new(
        heartbeat_interval: Duration,
        idle_timeout: Option<Duration>,
        max_body_len: usize,
    ) -> Result<Self, String> {
        let idle_timeout = effective_idle_timeout(heartbeat_interval, idle_timeout);
        if heartbeat_interval.is_zero() {
            return Err("heartbeat_interval must be more than zero".to_owned());
        }
        if idle_timeout < heartbeat_interval {
            return Err(format!(
                "idle_timeout ({idle_timeout:?}) must be at least heartbeat_interval \
                 ({heartbeat_interval:?})"
            ));
        }
        if max_body_len == 0 || max_body_len > u32::MAX as usize {
            return Err(format!(
                "max_frame_len must be between 1 and {} bytes, not {max_body_len}",
                u32::MAX
            ));
        }
        Ok(ReaderConfig {
            heartbeat_interval,
            idle_timeout,
            max_body_len,
        })
    }
}

/// The idle timeout in force: the one set, or three heartbeat intervals.
pub(crate) fn effective_idle_timeout(heartbeat: Duration, idle: Option<Duration>) -> Duration {
    idle.unwrap_or_else(|| heartbeat.saturating_mul(3))
}

/// Stop reading while more than `limit` bytes of answers wait to be written to a peer that does
/// not read them, or while the whole server holds more than its own limit; read again once they
/// are down to half.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadPause<'a> {
    pub(crate) backlog: &'a Backlog,
    pub(crate) limit: usize,
    pub(crate) server: &'a Backlog,
    pub(crate) server_limit: usize,
}

impl ReadPause<'_> {
    fn is_over(&self) -> bool {
        self.backlog.bytes() > self.limit || self.server.bytes() > self.server_limit
    }

    async fn wait(&self) {
        tokio::join!(
            self.backlog.wait_below(self.limit / 2),
            self.server.wait_below(self.server_limit / 2)
        );
    }
}

/// What one side does with what it reads.
pub(crate) trait ReadHandler {
    /// Handles one frame; an error ends the connection.
    fn frame(&mut self, frame: Frame, now: Instant) -> Result<(), Disconnect>;
    /// Every frame that one read brought in has been handled (or reading paused in its middle).
    fn burst_done(&mut self) -> Result<(), Disconnect>;
    /// Nothing was read for the heartbeat interval: send a ping.
    fn ping(&mut self);
    /// The earliest deadline noted in the loop's [`Deadlines`] has come: fail the calls whose
    /// deadline passed (after [`Deadlines::take`]) and note the others' again.
    fn deadlines_passed(&mut self, _now: Instant) {}
}

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Disconnect {
    /// The peer closed the connection between frames.
    PeerClosed,
    /// Nothing was read for the idle timeout.
    Idle(Duration),
    /// The peer sent bytes that are not frames.
    Malformed(FrameError),
    /// The peer sent frames that break the protocol.
    Protocol(String),
    /// Reading from the connection failed.
    ReadFailed(io::Error),
    /// Writing to the connection failed.
    WriteFailed(io::Error),
    /// A draining server's connection has no call left (client side).
    Drained,
    /// This side closed it.
    Local(&'static str),
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::PeerClosed => f.write_str("the peer closed the connection"),
            Disconnect::Idle(after) => write!(f, "nothing read for {after:?}"),
            Disconnect::Malformed(_) => f.write_str("malformed frame"),
            Disconnect::Protocol(reason) => write!(f, "protocol violation: {reason}"),
            Disconnect::ReadFailed(e) | Disconnect::WriteFailed(e)
                if e.kind() == io::ErrorKind::ConnectionReset =>
            {
                f.write_str("connection reset by the peer")
            }
            Disconnect::ReadFailed(_) => f.write_str("read failed"),
            Disconnect::WriteFailed(_) => f.write_str("write failed"),
            Disconnect::Drained => {
                f.write_str("the server is draining and every call on the connection is answered")
            }
            Disconnect::Local(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Disconnect {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Disconnect::Malformed(e) => Some(e),
            // A reset says all there is to say.
            Disconnect::ReadFailed(e) | Disconnect::WriteFailed(e)
                if e.kind() != io::ErrorKind::ConnectionReset =>
            {
                Some(e)
            }
            _ => None,
        }
    }
}

impl Disconnect {
    /// Whether the connection ended in an ordinary way, not worth a warning.
    pub(crate) fn is_orderly(&self) -> bool {
        match self {
            Disconnect::PeerClosed | Disconnect::Drained | Disconnect::Local(_) => true,
            Disconnect::ReadFailed(e) | Disconnect::WriteFailed(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            Disconnect::Idle(_) | Disconnect::Malformed(_) | Disconnect::Protocol(_) => false,
        }
    }
}

/// Reads frames until the connection ends (for a reason the handler, the heartbeat or `stop`
/// gives) and says why.
pub(crate) async fn read_frames(
    io: BoxRead,
    config: ReaderConfig,
    handler: &mut impl ReadHandler,
    pause: Option<ReadPause<'_>>,
    deadlines: Option<&Deadlines>,
    stop: impl Future<Output = Disconnect>,
) -> Disconnect {
    let mut frames = FramedRead::with_capacity(
        io,
        FrameCodec::with_max_body_len(config.max_body_len),
        INITIAL_READ_BUFFER,
    );
    let mut heartbeat = Heartbeat::new(
        config.heartbeat_interval,
        config.idle_timeout,
        Instant::now(),
    );
    let sleep = tokio::time::sleep_until(heartbeat.next_wakeup());
    // Polled on every turn of the loop otherwise, and rarely ready.
    let stop = PollOnWake::new(stop);
    tokio::pin!(sleep, stop);
    let mut timer = deadlines.map(DeadlineTimer::new);
    let over = |p: &ReadPause<'_>| p.is_over();
    loop {
        // A peer that does not read its answers is not read from either: its requests wait in
        // the socket (TCP pushes back on it) until its answers drain.
        let paused = pause.as_ref().is_some_and(over);
        tokio::select! {
            biased;
            reason = &mut stop => return reason,
            () = wait_below_half(pause), if paused => {}
            // Before the frames, so that a peer that always has more to read cannot starve it.
            () = poll_fn(|cx| poll_deadlines(&mut timer, cx)) => {
                handler.deadlines_passed(Instant::now());
            }
            frame = frames.next(), if !paused => {
                // One clock read per burst, not per frame. Everything one read brought in is
                // handled before the handler is told the burst is done (the server then sends
                // its answers in one message to its writer), unless the pause limit is passed
                // in its middle: the rest waits, decoded later from the buffer.
                let now = Instant::now();
                heartbeat.on_read(now);
                let mut next = Some(frame);
                let mut large = false;
                while let Some(frame) = next.take() {
                    let handled = match frame {
                        Some(Ok(frame)) => {
                            large |= frame.body.len() > MAX_IDLE_READ_BUFFER / 2;
                            handler.frame(frame, now)
                        }
                        Some(Err(FrameError::Io(e))) => Err(Disconnect::ReadFailed(e)),
                        Some(Err(e)) => Err(Disconnect::Malformed(e)),
                        None => Err(Disconnect::PeerClosed),
                    };
                    if let Err(reason) = handled {
                        let _ = handler.burst_done();
                        return reason;
                    }
                    if pause.as_ref().is_some_and(over) {
                        break;
                    }
                    next = frames.next().now_or_never();
                }
                if let Err(reason) = handler.burst_done() {
                    return reason;
                }
                // A large frame grew the buffer to its size (what is left of it after the frame
                // was split off is all `capacity` shows); an idle connection gives that back.
                let buffer = frames.read_buffer_mut();
                if buffer.is_empty() && (large || buffer.capacity() > MAX_IDLE_READ_BUFFER) {
                    *buffer = BytesMut::with_capacity(INITIAL_READ_BUFFER);
                }
            }
            () = &mut sleep => {
                match heartbeat.poll(Instant::now()) {
                    HeartbeatAction::Wait => {}
                    HeartbeatAction::Ping => handler.ping(),
                    HeartbeatAction::Dead => return Disconnect::Idle(config.idle_timeout),
                }
                sleep.as_mut().reset(heartbeat.next_wakeup());
            }
        }
    }
}

fn poll_deadlines(timer: &mut Option<DeadlineTimer<'_>>, cx: &mut Context<'_>) -> Poll<()> {
    match timer {
        Some(timer) => timer.poll_passed(cx),
        None => Poll::Pending,
    }
}

async fn wait_below_half(pause: Option<ReadPause<'_>>) {
    if let Some(p) = pause {
        p.wait().await;
    }
}
