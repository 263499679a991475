//! The byte stream of a QUIC connection: its one bidirectional stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a closed write half waits for the peer to acknowledge what was written, before the
/// QUIC connection is closed anyway.
const LINGER: Duration = Duration::from_secs(5);

/// A connection's bidirectional QUIC stream, both halves.
pub(crate) struct QuicStream {
    read: QuicRead,
    write: QuicWrite,
}

impl QuicStream {
    pub(crate) fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        QuicStream {
            read: QuicRead { recv },
            write: QuicWrite { send: Some(send) },
        }
    }

    pub(crate) fn into_split(self) -> (QuicRead, QuicWrite) {
        (self.read, self.write)
    }
}

/// The receiving half. Dropping it before the peer finished asks the peer to stop sending.
pub(crate) struct QuicRead {
    recv: quinn::RecvStream,
}

/// The sending half. Shutting it down or dropping it finishes the stream; once both halves are
/// gone the QUIC connection closes, after the peer acknowledged all that was written (or
/// after [`LINGER`]).
pub(crate) struct QuicWrite {
    /// `None` only while being dropped.
    send: Option<quinn::SendStream>,
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}

impl AsyncRead for QuicRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl QuicWrite {
    fn send(&mut self) -> io::Result<&mut quinn::SendStream> {
        self.send
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "stream closed"))
    }
}

impl AsyncWrite for QuicWrite {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.send() {
            Ok(send) => Pin::new(send).poll_write(cx, buf).map_err(Into::into),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // quinn sends as soon as congestion control allows; there is no buffer to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Finishing twice is not an error for a byte stream: the first shutdown did it.
        let _ = self.send()?.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for QuicWrite {
    fn drop(&mut self) {
        let Some(mut send) = self.send.take() else {
            return;
        };
        let _ = send.finish();
        // The stream holds the connection open; keep it until the peer has everything, so that
        // the close that follows cannot overtake the last bytes. Without a runtime (dropped
        // outside one) quinn closes at once.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(LINGER, send.stopped()).await;
            });
        }
    }
}
