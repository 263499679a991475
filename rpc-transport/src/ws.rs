//! WebSocket (`ws://host:port/path`): the framework's byte stream carried in binary WebSocket
//! messages, so that a browser can reach every service.
//!
//! A connection's stream turns a WebSocket into a byte stream: the bytes written between two
//! flushes go out as one binary message (rpc-core's writer flushes once per batch of frames, so
//! a batch is one message), and the payloads of the binary messages read are one byte stream, in
//! which a frame may span messages and a message may hold several frames; the framing layer
//! above does not see message boundaries.
//!
//! A text message from the peer is a protocol error: the connection is closed with code 1003
//! (unsupported data) and the read fails with [`io::ErrorKind::InvalidData`]. A message larger
//! than [`MAX_MESSAGE`] is refused the same way with code 1009 (too big). Pings are answered,
//! and a close from the peer is the end of the stream.
//!
//! A WebSocket has no half-close: shutting down the write half sends a close frame, the peer
//! answers it at once, and that ends both directions. So a side shuts down once it has written
//! all it means to and expects nothing more; bytes written after the peer's close fail with
//! [`io::ErrorKind::BrokenPipe`].
//!
//! `wss://host:port/path` is the same over TLS (feature `tls`): the TLS handshake of
//! [`tls`](crate::tls), then the upgrade; the timeout covers both.
//!
//! The listener accepts TCP connections in a task of its own and runs each WebSocket handshake
//! in a task of its own too, with [`HANDSHAKE_TIMEOUT`] and at most [`MAX_HANDSHAKES`] at once,
//! so that a client that connects and never sends its upgrade request delays nobody.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

use crate::handshake::HandshakeAcceptor;
use crate::{Connection, Endpoint, PeerAddr, tcp};

/// The WebSocket subprotocol of the framework. A client may offer it in
/// `Sec-WebSocket-Protocol`; the server then names it in its answer. A client that offers none is
/// accepted too. The built-in client offers it and fails a handshake whose answer does not name
/// it, as browsers do.
pub const SUBPROTOCOL: &str = "dubbo-rs.v1";

/// The largest WebSocket message (and WebSocket frame) accepted, and the largest one sent:
/// 8 MiB and 18 bytes, one frame of the framework at its default maximum body
/// (docs/PROTOCOL.md §2) with its header. A browser client that sends each frame in a message of
/// its own can thus send any frame a server accepts by default. Larger frames still travel: the
/// framework's frames may span messages, and this side splits what it writes at this size.
pub const MAX_MESSAGE: usize = 8 * 1024 * 1024 + 18;

/// How long a server waits for a client's upgrade request (and, for `wss://`, its TLS
/// handshake before it) and its own answer to be written.
pub const HANDSHAKE_TIMEOUT: Duration = crate::handshake::HANDSHAKE_TIMEOUT;

/// How many handshakes (and handshaken connections not yet accepted) a listener holds at once;
/// past that, TCP connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = crate::handshake::MAX_HANDSHAKES;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Connects over TCP (`TCP_NODELAY`) and upgrades to a WebSocket at `path`, offering
/// [`SUBPROTOCOL`].
pub(crate) async fn connect(host: &str, port: u16, path: &str) -> io::Result<Connection> {
    let (stream, addr) = tcp::connect_stream(host, port).await?;
    let ws = upgrade_client(stream, host, port, path, false).await?;
    Ok(Connection::new(ws, PeerAddr::Ws(addr)))
}

/// The client side of the upgrade, over `stream` (TCP, or TLS for `wss://`), offering
/// [`SUBPROTOCOL`].
pub(crate) async fn upgrade_client<S>(
    stream: S,
    host: &str,
    port: u16,
    path: &str,
    secure: bool,
) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let scheme = if secure { "wss" } else { "ws" };
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "{scheme}://{authority}{path}"
    ))
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
            .await
            .map_err(|e| handshake_error("websocket upgrade", e))?;
    Ok(WsStream::new(ws))
}

fn handshake_error(what: &str, error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::Http(response) => io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("{what} refused with HTTP {}", response.status()),
        ),
        other => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} failed: {other}"),
        ),
    }
}

/// Listens for WebSocket clients at `path`; see [`HandshakeAcceptor`].
pub(crate) async fn bind(host: &str, port: u16, path: &str) -> io::Result<HandshakeAcceptor> {
    let listener = TcpListener::bind((host, port)).await?;
    let addr = listener.local_addr()?;
    let local = Endpoint::Ws {
        host: addr.ip().to_string(),
        port: addr.port(),
        path: path.to_owned(),
    };
    let path: Arc<str> = path.into();
    Ok(HandshakeAcceptor::spawn(
        listener,
        local,
        HANDSHAKE_TIMEOUT,
        move |stream: TcpStream, peer| {
            let path = path.clone();
            async move {
                stream.set_nodelay(true)?;
                let ws = upgrade_server(stream, &path).await?;
                Ok(Connection::new(ws, PeerAddr::Ws(peer)))
            }
        },
    ))
}

/// The server side of the upgrade: the request's path must be the listener's (else 404), and
/// [`SUBPROTOCOL`] is named in the answer when the client offers it. Any `Origin` is accepted.
pub(crate) async fn upgrade_server<S>(stream: S, path: &str) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The callback's signature is tungstenite's; the size of its error is not ours to choose.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, mut response: Response| {
        if request.uri().path() != path {
            let mut refusal = ErrorResponse::new(Some(format!(
                "no websocket endpoint at {}\n",
                request.uri().path()
            )));
            *refusal.status_mut() = StatusCode::NOT_FOUND;
            return Err(refusal);
        }
        let offered = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|name| name.trim() == SUBPROTOCOL);
        if offered {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config()))
        .await
        .map_err(|e| handshake_error("websocket handshake", e))?;
    Ok(WsStream::new(ws))
}

/// A byte stream over a WebSocket; see the [module](self) documentation.
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// What is left of the binary message being read.
    reading: Bytes,
    read_state: ReadState,
    /// The bytes written since the last message was sent.
    writing: Vec<u8>,
    /// The peer's close frame has arrived: the WebSocket is over, and a TLS stream under it
    /// may end without its own close (`close_notify`), which is then no error.
    close_received: bool,
}

enum ReadState {
    Open,
    /// Sending the close frame that refuses what the peer sent; the read fails once it is out.
    Refusing(io::ErrorKind, String),
    /// The peer closed the connection: reads return end of stream.
    Ended,
    /// The connection failed; every read fails.
    Failed(io::ErrorKind, String),
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsStream<S> {
    fn new(ws: WebSocketStream<S>) -> Self {
        WsStream {
            ws,
            reading: Bytes::new(),
            read_state: ReadState::Open,
            writing: Vec::new(),
            close_received: false,
        }
    }

    /// Starts closing with `code` because of what the peer sent; the read fails with `kind` and
    /// `message` once the close frame is out.
    fn refuse(&mut self, code: CloseCode, kind: io::ErrorKind, message: String) {
        tracing::debug!(%message, "closing the websocket with code {code}");
        let frame = CloseFrame {
            code,
            reason: match code {
                CloseCode::Unsupported => "binary messages only".into(),
                CloseCode::Size => "message too big".into(),
                _ => "protocol error".into(),
            },
        };
        // Queues the close frame (sending as much as the socket takes now); the rest goes out
        // in `poll_read`'s flush.
        let _ = Pin::new(&mut self.ws).start_send(Message::Close(Some(frame)));
        self.read_state = ReadState::Refusing(kind, message);
    }

    /// Sends what was written since the last message as one binary message.
    fn poll_send_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.writing.is_empty() {
            return Poll::Ready(Ok(()));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(write_error)?;
        let message = Message::Binary(Bytes::from(std::mem::take(&mut self.writing)));
        Pin::new(&mut self.ws)
            .start_send(message)
            .map_err(write_error)?;
        Poll::Ready(Ok(()))
    }
}

fn write_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the websocket is closed")
        }
        tungstenite::Error::Protocol(tungstenite::error::ProtocolError::SendAfterClosing) => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the websocket is closing")
        }
        other => io::Error::other(format!("websocket: {other}")),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.reading.is_empty() {
                let n = this.reading.len().min(buf.remaining());
                buf.put_slice(&this.reading.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match &this.read_state {
                ReadState::Open => {}
                ReadState::Refusing(kind, message) => {
                    let (kind, message) = (*kind, message.clone());
                    // The read fails once the close frame is out (or cannot be sent).
                    let _ = ready!(Pin::new(&mut this.ws).poll_flush(cx));
                    this.read_state = ReadState::Failed(kind, message.clone());
                    return Poll::Ready(Err(io::Error::new(kind, message)));
                }
                ReadState::Ended => return Poll::Ready(Ok(())),
                ReadState::Failed(kind, message) => {
                    return Poll::Ready(Err(io::Error::new(*kind, message.clone())));
                }
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(payload))) => this.reading = payload,
                Some(Ok(Message::Text(_))) => this.refuse(
                    CloseCode::Unsupported,
                    io::ErrorKind::InvalidData,
                    "the peer sent a websocket text message; the framework's frames travel in \
                     binary messages only"
                        .into(),
                ),
                Some(Ok(Message::Ping(_))) => {
                    // Tungstenite queued the pong; send it now rather than with the next write
                    // or read. A socket that is not writable leaves it for later.
                    if let Poll::Ready(Err(error)) = Pin::new(&mut this.ws).poll_flush(cx) {
                        tracing::debug!(%error, "websocket pong not sent");
                    }
                }
                // Answered by tungstenite; the next read sends its reply and ends the stream.
                Some(Ok(Message::Close(_))) => this.close_received = true,
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(tungstenite::Error::Io(_))) if this.close_received => {
                    this.read_state = ReadState::Ended;
                }
                // The peer left without a close frame (a process that exited): the frames
                // inside carry their own lengths, so this ends the stream like TCP's FIN does.
                Some(Err(tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ))) => this.read_state = ReadState::Ended,
                Some(Err(tungstenite::Error::Capacity(error))) => this.refuse(
                    CloseCode::Size,
                    io::ErrorKind::InvalidData,
                    format!(
                        "websocket message refused: {error} (the limit is {MAX_MESSAGE} bytes)"
                    ),
                ),
                Some(Err(tungstenite::Error::Protocol(error))) => this.refuse(
                    CloseCode::Protocol,
                    io::ErrorKind::InvalidData,
                    format!("websocket protocol error: {error}"),
                ),
                Some(Err(tungstenite::Error::Io(error))) => {
                    this.read_state = ReadState::Failed(error.kind(), error.to_string());
                    return Poll::Ready(Err(error));
                }
                Some(Err(error)) => {
                    let message = format!("websocket: {error}");
                    this.read_state =
                        ReadState::Failed(io::ErrorKind::InvalidData, message.clone());
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, message)));
                }
                None => this.read_state = ReadState::Ended,
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.writing.len() >= MAX_MESSAGE {
            ready!(this.poll_send_written(cx))?;
        }
        let n = buf.len().min(MAX_MESSAGE - this.writing.len());
        this.writing.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.writing.len() >= MAX_MESSAGE {
            ready!(this.poll_send_written(cx))?;
        }
        let mut written = 0;
        for buf in bufs {
            let n = buf.len().min(MAX_MESSAGE - this.writing.len());
            this.writing.extend_from_slice(&buf[..n]);
            written += n;
            if n < buf.len() {
                break;
            }
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        // Slices are copied into the message being built, so several at once cost nothing more.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_written(cx))?;
        Pin::new(&mut this.ws).poll_flush(cx).map_err(write_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_written(cx))?;
        // Sends a close frame (code 1000); reading goes on until the peer's close arrives.
        match ready!(Pin::new(&mut this.ws).poll_close(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            // The peer's close came first and was answered: the close handshake is done.
            Err(
                tungstenite::Error::Protocol(tungstenite::error::ProtocolError::SendAfterClosing)
                | tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed,
            ) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(write_error(error))),
        }
    }
}
