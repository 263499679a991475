//! TCP: connect (every resolved address in turn, `TCP_NODELAY`) and listen.

use std::io;

use tokio::net::{TcpListener, TcpStream};

use crate::{Connection, Endpoint};

/// Resolves `host` and tries each address in turn, returning the last failure if none connects.
pub(crate) async fn connect(host: &str, port: u16) -> io::Result<Connection> {
    let (stream, addr) = connect_stream(host, port).await?;
    Ok(Connection::tcp(stream, addr))
}

/// [`connect`], for a transport over TCP: the stream (with `TCP_NODELAY`) and the address it
/// reached.
pub(crate) async fn connect_stream(
    host: &str,
    port: u16,
) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr)
            .await
            .and_then(refuse_self_connection)
        {
            Ok(stream) => {
                // Frames are written whole; Nagle's algorithm would only delay small calls.
                stream.set_nodelay(true)?;
                return Ok((stream, addr));
            }
            Err(error) => {
                tracing::debug!(%addr, %error, "tcp connect attempt failed");
                last_error = Some(error);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolved to no addresses"),
        )
    }))
}

/// Fails a connection that reached itself.
///
/// Connecting to a port of this host that nobody listens on, from a source port the kernel
/// happened to pick equal to it, completes a TCP simultaneous open with itself: the connect
/// "succeeds", every frame written comes back, and the port stays taken for the server that
/// should own it. It happens to reconnecting clients whose server port lies in the ephemeral
/// range. Such a connection is dropped (freeing the port) and reported as refused.
fn refuse_self_connection(stream: TcpStream) -> io::Result<TcpStream> {
    let local = stream.local_addr()?;
    if local == stream.peer_addr()? {
        // Reset rather than close: a closed connection would hold the port in TIME_WAIT.
        stream.set_zero_linger()?;
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("connected to itself at {local}: nothing listens there"),
        ));
    }
    Ok(stream)
}

/// A bound TCP listener and the address it actually bound (the real port when asked for 0).
#[derive(Debug)]
pub(crate) struct TcpAcceptor {
    listener: TcpListener,
    local: Endpoint,
}

impl TcpAcceptor {
    pub(crate) async fn bind(host: &str, port: u16) -> io::Result<Self> {
        let listener = TcpListener::bind((host, port)).await?;
        let local = Endpoint::tcp(listener.local_addr()?);
        Ok(TcpAcceptor { listener, local })
    }

    pub(crate) async fn accept(&mut self) -> io::Result<Connection> {
        let (stream, peer) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok(Connection::tcp(stream, peer))
    }

    pub(crate) fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::PeerAddr;

    #[tokio::test]
    async fn a_connection_to_itself_is_refused_and_frees_its_port() {
        // Bind a port, then connect to that same port from it: the TCP simultaneous open that a
        // reconnecting client meets when the kernel picks the server's port as its source port.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let stream = socket.connect(addr).await.unwrap();
        assert_eq!(stream.local_addr().unwrap(), stream.peer_addr().unwrap());

        let error = refuse_self_connection(stream).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        assert!(error.to_string().contains("connected to itself"), "{error}");
        // The port is free again for the server that should own it.
        let listener = TcpListener::bind(addr).await.unwrap();
        drop(listener);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(
            refuse_self_connection(stream).is_ok(),
            "an ordinary connection passes"
        );
    }

    #[tokio::test]
    async fn port_zero_reports_the_bound_port_and_both_sides_connect() {
        let mut acceptor = TcpAcceptor::bind("127.0.0.1", 0).await.unwrap();
        let Endpoint::Tcp { host, port } = acceptor.local_endpoint().clone() else {
            panic!("tcp listener reported {:?}", acceptor.local_endpoint());
        };
        assert_eq!(host, "127.0.0.1");
        assert_ne!(port, 0);

        let (client, server) = tokio::join!(connect("localhost", port), acceptor.accept());
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        let PeerAddr::Tcp(server_addr) = client.peer() else {
            panic!("{:?}", client.peer())
        };
        assert_eq!(server_addr.port(), port);
        assert!(matches!(server.peer(), PeerAddr::Tcp(addr) if addr.ip().is_loopback()));

        client.write_all(b"hi").await.unwrap();
        let mut buf = [0; 2];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
    }
}
