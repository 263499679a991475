//! The WebSocket transport end to end on loopback: bytes both ways, message boundaries, and
//! what a misbehaving peer gets. Raw peers are tokio-tungstenite clients.
#![cfg(feature = "ws")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rpc_transport::ws::{MAX_MESSAGE, SUBPROTOCOL};
use rpc_transport::{Connection, Endpoint, Listener, PeerAddr, connect, listen};
use support::exchange_then_close;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

const TIMEOUT: Duration = Duration::from_secs(5);

type RawClient = WebSocketStream<TcpStream>;

async fn ws_listener(path: &str) -> (Listener, Endpoint) {
    let listener = listen(&format!("ws://127.0.0.1:0{path}").parse().unwrap())
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();
    (listener, endpoint)
}

fn url(endpoint: &Endpoint) -> String {
    endpoint.to_string()
}

/// A plain WebSocket client (as a browser would be), with limits large enough to send what the
/// server must refuse.
async fn raw_client(endpoint: &Endpoint, subprotocol: Option<&str>) -> RawClient {
    let mut request = url(endpoint).into_client_request().unwrap();
    if let Some(name) = subprotocol {
        request
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_PROTOCOL, name.parse().unwrap());
    }
    let Endpoint::Ws { port, .. } = endpoint else {
        panic!("{endpoint:?}")
    };
    let tcp = TcpStream::connect(("127.0.0.1", *port)).await.unwrap();
    let config = WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (client, response) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
            .await
            .unwrap();
    let echoed = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
    match subprotocol {
        Some(SUBPROTOCOL) => assert_eq!(echoed.unwrap(), SUBPROTOCOL),
        _ => assert!(echoed.is_none(), "{echoed:?}"),
    }
    client
}

/// The next message that is not a ping or pong.
async fn next_message(client: &mut RawClient) -> Option<Message> {
    loop {
        match tokio::time::timeout(TIMEOUT, client.next()).await.unwrap() {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(error)) => panic!("{error}"),
            None => return None,
        }
    }
}

async fn expect_close(client: &mut RawClient, code: CloseCode) {
    match next_message(client).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, code, "{frame:?}"),
        other => panic!("expected a close with {code}, got {other:?}"),
    }
}

async fn accept(listener: &mut Listener) -> Connection {
    tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("accept timed out")
        .unwrap()
}

async fn read_exactly(connection: &mut Connection, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    tokio::time::timeout(TIMEOUT, connection.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_round_trip() {
    let (mut listener, endpoint) = ws_listener("/rpc").await;
    let Endpoint::Ws {
        ref host,
        port,
        ref path,
    } = endpoint
    else {
        panic!("{endpoint:?}")
    };
    assert_eq!((host.as_str(), path.as_str()), ("127.0.0.1", "/rpc"));
    assert_ne!(
        port, 0,
        "port 0 must be reported as the port actually bound"
    );

    let (client, server) = tokio::join!(connect(&endpoint, TIMEOUT), listener.accept());
    let (client, server) = (client.unwrap(), server.unwrap());
    let PeerAddr::Ws(server_addr) = *client.peer() else {
        panic!("{:?}", client.peer())
    };
    assert_eq!(server_addr.port(), port);
    assert_eq!(client.peer().to_string(), format!("ws://127.0.0.1:{port}"));
    assert!(matches!(server.peer(), PeerAddr::Ws(addr) if addr.ip().is_loopback()));

    exchange_then_close(client, server).await;
}

#[tokio::test]
async fn bytes_written_between_flushes_are_one_binary_message() {
    let (mut listener, endpoint) = ws_listener("/").await;
    let mut client = raw_client(&endpoint, Some(SUBPROTOCOL)).await;
    let mut server = accept(&mut listener).await;

    server.write_all(b"frame one|").await.unwrap();
    server.write_all(b"frame two|").await.unwrap();
    let slices = [io::IoSlice::new(b"three"), io::IoSlice::new(b"|four")];
    let written = server.write_vectored(&slices).await.unwrap();
    assert_eq!(written, 10, "vectored writes take every slice");
    server.flush().await.unwrap();
    server.write_all(b"next").await.unwrap();
    server.flush().await.unwrap();
    assert_eq!(
        next_message(&mut client).await,
        Some(Message::Binary(Bytes::from_static(
            b"frame one|frame two|three|four"
        )))
    );
    assert_eq!(
        next_message(&mut client).await,
        Some(Message::Binary(Bytes::from_static(b"next")))
    );

    // Reading, message boundaries vanish: one message holding two pieces, and one piece spread
    // over three messages.
    client
        .send(Message::Binary(Bytes::from_static(b"abcdef")))
        .await
        .unwrap();
    for part in [&b"gh"[..], b"ij", b"kl"] {
        client
            .send(Message::Binary(Bytes::copy_from_slice(part)))
            .await
            .unwrap();
    }
    assert_eq!(read_exactly(&mut server, 3).await, b"abc");
    assert_eq!(read_exactly(&mut server, 9).await, b"defghijkl");
}

#[tokio::test]
async fn the_subprotocol_is_named_only_when_offered() {
    let (mut listener, endpoint) = ws_listener("/").await;
    // `raw_client` checks the answer's Sec-WebSocket-Protocol header.
    let _offered = raw_client(&endpoint, Some(SUBPROTOCOL)).await;
    let _other = raw_client(&endpoint, None).await;
    accept(&mut listener).await;
    accept(&mut listener).await;
}

#[tokio::test]
async fn pings_are_answered_and_a_close_is_the_end_of_the_stream() {
    let (mut listener, endpoint) = ws_listener("/").await;
    let mut client = raw_client(&endpoint, None).await;
    let mut server = accept(&mut listener).await;
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        received
    });

    client
        .send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    match tokio::time::timeout(TIMEOUT, client.next()).await.unwrap() {
        Some(Ok(Message::Pong(payload))) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    client
        .send(Message::Binary(Bytes::from_static(b"last words")))
        .await
        .unwrap();
    client.close(None).await.unwrap();
    let received = tokio::time::timeout(TIMEOUT, reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, b"last words");
    assert_eq!(
        next_message(&mut client).await,
        Some(Message::Close(None)),
        "the close is answered"
    );
    assert_eq!(next_message(&mut client).await, None);
}

#[tokio::test]
async fn a_text_message_closes_that_connection_with_1003_and_no_other() {
    let (mut listener, endpoint) = ws_listener("/").await;
    let mut rude = raw_client(&endpoint, None).await;
    let mut rude_server_side = accept(&mut listener).await;
    let mut good = connect(&endpoint, TIMEOUT).await.unwrap();
    let mut good_server_side = accept(&mut listener).await;

    rude.send(Message::text("hello?")).await.unwrap();
    let mut buf = [0; 8];
    let error = tokio::time::timeout(TIMEOUT, rude_server_side.read(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(error.to_string().contains("text message"), "{error}");
    expect_close(&mut rude, CloseCode::Unsupported).await;
    // Reading again fails again rather than reporting a clean end.
    assert!(rude_server_side.read(&mut buf).await.is_err());

    good.write_all(b"still here").await.unwrap();
    good.flush().await.unwrap();
    assert_eq!(read_exactly(&mut good_server_side, 10).await, b"still here");
    good_server_side.write_all(b"yes").await.unwrap();
    good_server_side.flush().await.unwrap();
    assert_eq!(read_exactly(&mut good, 3).await, b"yes");
}

#[tokio::test]
async fn an_oversized_message_is_refused_with_1009() {
    let (mut listener, endpoint) = ws_listener("/").await;
    let client = raw_client(&endpoint, None).await;
    let mut server = accept(&mut listener).await;
    let (mut sink, mut client) = client.split();

    // The largest message passes; one byte more does not. The server stops reading at the
    // oversized message's header, so the client never finishes sending it.
    let sender = tokio::spawn(async move {
        sink.send(Message::binary(vec![7; MAX_MESSAGE]))
            .await
            .unwrap();
        let _ = sink.send(Message::binary(vec![8; MAX_MESSAGE + 1])).await;
    });
    let mut buf = vec![0; MAX_MESSAGE];
    tokio::time::timeout(TIMEOUT, server.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf.iter().all(|&b| b == 7));
    let mut more = [0; 1];
    let error = tokio::time::timeout(TIMEOUT, server.read(&mut more))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert!(
        error
            .to_string()
            .contains(&format!("the limit is {MAX_MESSAGE} bytes")),
        "{error}"
    );
    let closed = loop {
        match tokio::time::timeout(TIMEOUT, client.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.unwrap().code, CloseCode::Size);
    sender.abort();
}

#[tokio::test]
async fn another_path_is_answered_404() {
    let (_listener, endpoint) = ws_listener("/rpc").await;
    let Endpoint::Ws { port, .. } = endpoint else {
        panic!("{endpoint:?}")
    };
    let wrong: Endpoint = format!("ws://127.0.0.1:{port}/other").parse().unwrap();
    let error = connect(&wrong, TIMEOUT).await.unwrap_err();
    assert_eq!(
        error.io_kind(),
        Some(io::ErrorKind::ConnectionRefused),
        "{error:?}"
    );
    let source = std::error::Error::source(&error).unwrap().to_string();
    assert!(source.contains("HTTP 404"), "{source}");

    // Raw, as a browser sees it.
    let request = format!("ws://127.0.0.1:{port}/other")
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::client_async(
        request,
        TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
    )
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected a 404, got {other:?}"),
    }
}

#[tokio::test]
async fn a_client_that_never_upgrades_blocks_no_other() {
    let (mut listener, endpoint) = ws_listener("/").await;
    let Endpoint::Ws { port, .. } = endpoint else {
        panic!("{endpoint:?}")
    };
    // Connected over TCP, silent: its handshake waits (up to the handshake timeout).
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    // A half-sent upgrade request, too.
    silent[0]
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();

    let (client, server) = tokio::time::timeout(Duration::from_secs(2), async {
        tokio::join!(connect(&endpoint, TIMEOUT), listener.accept())
    })
    .await
    .expect("a silent client held up the good one");
    let (mut client, mut server) = (client.unwrap(), server.unwrap());
    client.write_all(b"ok").await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(read_exactly(&mut server, 2).await, b"ok");
}

#[tokio::test]
async fn a_refused_connection_fails_to_connect() {
    let (listener, endpoint) = ws_listener("/").await;
    drop(listener);
    // The port is freed when the listener's task ends, on the runtime's next turn.
    tokio::task::yield_now().await;
    let error = connect(&endpoint, TIMEOUT).await.unwrap_err();
    assert_eq!(
        error.io_kind(),
        Some(io::ErrorKind::ConnectionRefused),
        "{error:?}"
    );
}
