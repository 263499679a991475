//! Listeners whose connections need a handshake after TCP's (TLS, WebSocket): a task accepts
//! TCP connections and runs each handshake in a task of its own, with a timeout and a bound on
//! how many run at once, so that a client that connects and never finishes its handshake
//! delays nobody.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::{Connection, Endpoint};

/// How long a server waits for a client's handshake (TLS, WebSocket upgrade, or both) to finish.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes (and finished connections not yet accepted) a listener holds at once;
/// past that, TCP connections wait in the kernel's backlog.
pub(crate) const MAX_HANDSHAKES: usize = 64;

/// Accepts TCP connections and hands out the ones whose handshake finished.
#[derive(Debug)]
pub(crate) struct HandshakeAcceptor {
    connections: mpsc::Receiver<io::Result<Connection>>,
    local: Endpoint,
    task: tokio::task::JoinHandle<()>,
}

impl HandshakeAcceptor {
    /// Starts accepting on `listener`, which is reported as `local`; `handshake` turns each
    /// accepted TCP stream into a connection (or fails, and the stream is dropped).
    pub(crate) fn spawn<F, Fut>(
        listener: TcpListener,
        local: Endpoint,
        timeout: Duration,
        handshake: F,
    ) -> Self
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<Connection>> + Send + 'static,
    {
        let (tx, connections) = mpsc::channel(MAX_HANDSHAKES);
        let task = tokio::spawn(accept_loop(listener, tx, timeout, handshake));
        HandshakeAcceptor {
            connections,
            local,
            task,
        }
    }

    pub(crate) async fn accept(&mut self) -> io::Result<Connection> {
        match self.connections.recv().await {
            Some(accepted) => accepted,
            None => Err(io::Error::other("the listener's task ended")),
        }
    }

    pub(crate) fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }
}

impl Drop for HandshakeAcceptor {
    fn drop(&mut self) {
        // Stops accepting and, with the task's `JoinSet`, every handshake in flight.
        self.task.abort();
    }
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    tx: mpsc::Sender<io::Result<Connection>>,
    timeout: Duration,
    handshake: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<Connection>> + Send + 'static,
{
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        if handshakes.len() >= MAX_HANDSHAKES {
            tokio::select! {
                _ = handshakes.join_next() => continue,
                () = tx.closed() => return,
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = handshakes.join_next() => continue,
            () = tx.closed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let tx = tx.clone();
                let handshake = handshake(stream, peer);
                handshakes.spawn(async move {
                    match tokio::time::timeout(timeout, handshake).await {
                        Ok(Ok(connection)) => {
                            // Fails only when the listener is gone.
                            let _ = tx.send(Ok(connection)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "handshake failed");
                        }
                        Err(_elapsed) => {
                            tracing::debug!(%peer, ?timeout, "handshake timed out");
                        }
                    }
                });
            }
            // Out of file descriptors, say: the server logs it and backs off.
            Err(error) => {
                if tx.send(Err(error)).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::time::Instant;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_handshake_that_takes_too_long_is_dropped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let timeout = Duration::from_secs(3);
        // A handshake that waits for a byte that never comes.
        let mut acceptor = HandshakeAcceptor::spawn(
            listener,
            Endpoint::tcp(addr),
            timeout,
            |mut stream: TcpStream, peer| async move {
                let mut byte = [0; 1];
                stream.read_exact(&mut byte).await?;
                Ok(Connection::tcp(stream, peer))
            },
        );

        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut buf = [0; 1];
        // The server drops the connection when the handshake times out: end of stream.
        let read = tokio::time::timeout(Duration::from_secs(60), silent.read(&mut buf));
        assert_eq!(
            read.await.expect("the handshake never timed out").unwrap(),
            0
        );
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        let accepted = tokio::time::timeout(Duration::from_millis(1), acceptor.accept()).await;
        assert!(accepted.is_err(), "nothing reaches accept()");
    }
}
