//! The datagrams of a QUIC endpoint's socket that are not QUIC: STUN, hole-punching probes.
//!
//! Every QUIC version 1 packet has its second-highest bit (the "fixed bit") set, and an
//! endpoint with [`Datagrams`] does not allow its peers to clear it (it does not advertise
//! `grease_quic_bit`, RFC 9287). A datagram whose first byte is below `0x40` is therefore not
//! QUIC: STUN messages start with two zero bits (RFC 8489 §5), and so must an application's
//! own datagrams. Those are handed to [`Datagrams`] instead of to QUIC; the rest go to QUIC as
//! before.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::mpsc;

/// How many diverted datagrams wait for [`Datagrams::recv`] before more are dropped.
const QUEUE: usize = 256;

/// Whether a datagram is not QUIC (its fixed bit is clear).
pub(crate) fn is_not_quic(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|b| *b < 0x40)
}

/// Sends and receives the datagrams of a [`QuicEndpoint`](super::QuicEndpoint)'s socket that
/// are not QUIC, from the socket's own port: STUN to learn the address a NAT gives that very
/// port, and probes that open a NAT's mapping toward a peer before QUIC connects. Made by
/// [`QuicEndpoint::bind_with_datagrams`](super::QuicEndpoint::bind_with_datagrams).
///
/// A datagram received is one whose first byte is below `0x40` (see the module's notes); what
/// an application sends should start so too, or the peer's QUIC will take it (and drop it).
/// When datagrams come faster than they are read, the newest are dropped.
pub struct Datagrams {
    socket: Arc<tokio::net::UdpSocket>,
    received: mpsc::Receiver<(Vec<u8>, SocketAddr)>,
}

/// Sends datagrams from a QUIC endpoint's port, as [`Datagrams::send_to`] does; cheap to clone,
/// for tasks other than the one that reads.
#[derive(Clone)]
pub struct DatagramSender(Arc<tokio::net::UdpSocket>);

impl DatagramSender {
    /// Sends `datagram` to `to` from the QUIC endpoint's port.
    pub async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.0.send_to(datagram, to).await.map(drop)
    }
}

impl fmt::Debug for DatagramSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatagramSender")
            .field(&self.0.local_addr().ok())
            .finish()
    }
}

impl Datagrams {
    /// Sends `datagram` to `to` from the QUIC endpoint's port.
    pub async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(datagram, to).await.map(drop)
    }

    /// A sender for other tasks.
    pub fn sender(&self) -> DatagramSender {
        DatagramSender(self.socket.clone())
    }

    /// The next datagram that is not QUIC, with its source; `None` once the endpoint is gone.
    pub async fn recv(&mut self) -> Option<(Vec<u8>, SocketAddr)> {
        self.received.recv().await
    }

    /// A datagram already waiting, if any.
    pub fn try_recv(&mut self) -> Option<(Vec<u8>, SocketAddr)> {
        self.received.try_recv().ok()
    }

    /// The address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl fmt::Debug for Datagrams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Datagrams")
            .field("local_addr", &self.socket.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// The endpoint's socket as QUIC sees it: datagrams that are not QUIC are taken out of what it
/// receives and queued for [`Datagrams`].
pub(crate) struct Demux {
    inner: Arc<dyn AsyncUdpSocket>,
    diverted: mpsc::Sender<(Vec<u8>, SocketAddr)>,
}

impl fmt::Debug for Demux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Demux")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Wraps `socket` for QUIC, and makes the [`Datagrams`] that take what is not QUIC.
pub(crate) fn demux(
    socket: std::net::UdpSocket,
    runtime: &dyn quinn::Runtime,
) -> io::Result<(Arc<dyn AsyncUdpSocket>, Datagrams)> {
    let sender = socket.try_clone()?;
    sender.set_nonblocking(true)?;
    let sender = tokio::net::UdpSocket::from_std(sender)?;
    let inner = runtime.wrap_udp_socket(socket)?;
    let (diverted, received) = mpsc::channel(QUEUE);
    Ok((
        Arc::new(Demux { inner, diverted }),
        Datagrams {
            socket: Arc::new(sender),
            received,
        },
    ))
}

impl Demux {
    fn divert(&self, data: &[u8], stride: usize, from: SocketAddr) {
        let stride = stride.max(1);
        for datagram in data.chunks(stride) {
            // A full queue drops the datagram, as a busy socket would.
            let _ = self.diverted.try_send((datagram.to_vec(), from));
        }
    }
}

impl AsyncUdpSocket for Demux {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let received = ready!(self.inner.poll_recv(cx, bufs, meta))?;
            let mut kept = 0;
            for i in 0..received {
                let len = meta[i].len;
                if is_not_quic(&bufs[i][..len]) {
                    self.divert(&bufs[i][..len], meta[i].stride, meta[i].addr);
                    continue;
                }
                if kept != i {
                    let (front, back) = bufs.split_at_mut(i);
                    front[kept][..len].copy_from_slice(&back[0][..len]);
                    meta[kept] = meta[i];
                }
                kept += 1;
            }
            if kept > 0 || received == 0 {
                return Poll::Ready(Ok(kept));
            }
            // Everything was diverted: read on (the socket registers the waker when empty).
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_packets_have_the_fixed_bit() {
        // STUN: two zero bits first (a Binding request is 0x0001).
        assert!(is_not_quic(&[0x00, 0x01, 0, 0]));
        assert!(is_not_quic(&[0x3f]));
        // QUIC long and short headers.
        assert!(!is_not_quic(&[0xc0, 0, 0, 0, 1]));
        assert!(!is_not_quic(&[0x40]));
        assert!(!is_not_quic(&[]));
    }
}
