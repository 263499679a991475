//! What `docs/PROTOCOL.md` says a server does, checked with a client written by hand from the
//! page: frames are built and read byte by byte over a real TCP connection to 127.0.0.1, so a
//! client in another language written from the page would see the same.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{
    Client, Endpoint, Format, MethodTarget, RpcError, Server, ServerBuilder, ServerConfig,
    ServerError, ServerHandle, ServerStream, Status,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use support::{ECHO, Echo};

/// How long a read may wait before the test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(10);

// Frame kinds (section 3).
const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;
const ONE_WAY: u8 = 3;
const PING: u8 = 4;
const PONG: u8 = 5;
const CANCEL: u8 = 6;
const STREAM_ITEM: u8 = 7;
const STREAM_END: u8 = 8;
const GO_AWAY: u8 = 9;
const STREAM_CREDIT: u8 = 10;

// Serializer ids (section 7).
const NO_SERIALIZER: u8 = 0;
const MSGPACK: u8 = 1;
const POSTCARD: u8 = 2;
const JSON: u8 = 3;

// Status codes (section 6).
const OK: u8 = 0;
const METHOD_NOT_FOUND: u8 = 3;
const SERVER_BUSY: u8 = 6;
const APPLICATION_ERROR: u8 = 7;
const INTERNAL_ERROR: u8 = 8;
const UNSUPPORTED_SERIALIZER: u8 = 9;

/// The request id the barrier's pings use; no call uses it.
const BARRIER_ID: u64 = 0xB0B;

/// One frame as read off the wire.
#[derive(Debug, Clone, PartialEq)]
struct Frame {
    kind: u8,
    serializer: u8,
    status: u8,
    id: u64,
    body: Vec<u8>,
    /// The frame's bytes exactly as they arrived.
    wire: Vec<u8>,
}

/// A frame's bytes, built as section 2 draws them.
fn frame(kind: u8, serializer: u8, id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xda, 0xb0, 0x01, kind, serializer, 0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A Request or OneWay frame with the preamble of section 4: no deadline, no metadata.
fn request(
    kind: u8,
    serializer: u8,
    id: u64,
    (service, version, method): (&str, &str, &str),
    args: &[u8],
) -> Vec<u8> {
    let mut body = Vec::new();
    for text in [service, version, method] {
        body.push(text.len() as u8);
        body.extend_from_slice(text.as_bytes());
    }
    body.extend_from_slice(&[0, 0, 0, 0]); // no deadline
    body.push(0); // no metadata
    body.extend_from_slice(args);
    frame(kind, serializer, id, &body)
}

/// A request to a method of the test service, arguments in MessagePack.
fn echo_request(id: u64, method: &str, args: &impl Serialize) -> Vec<u8> {
    let args = Format::MessagePack.to_bytes(args).unwrap();
    request(REQUEST, MSGPACK, id, (ECHO, "", method), &args)
}

fn encode(format: &Format, value: &impl Serialize) -> Vec<u8> {
    format.to_bytes(value).unwrap().to_vec()
}

fn credit(id: u64, items: u32) -> Vec<u8> {
    frame(STREAM_CREDIT, NO_SERIALIZER, id, &items.to_be_bytes())
}

fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// The message and detail of an error body (section 5).
fn error_body(body: &[u8]) -> (String, Vec<u8>) {
    assert!(body.len() >= 2, "an error body has a length: {body:?}");
    let len = u16::from_be_bytes([body[0], body[1]]) as usize;
    let message = String::from_utf8(body[2..2 + len].to_vec()).expect("the message is UTF-8");
    (message, body[2 + len..].to_vec())
}

/// A client that writes and reads frames by hand.
struct Raw {
    io: BufReader<TcpStream>,
}

impl Raw {
    fn new(stream: TcpStream) -> Raw {
        stream.set_nodelay(true).unwrap();
        Raw {
            io: BufReader::new(stream),
        }
    }

    async fn connect(server: &ServerHandle) -> Raw {
        let Some(Endpoint::Tcp { host, port }) = server.local_endpoint() else {
            panic!("the test servers listen on TCP");
        };
        Raw::new(TcpStream::connect((host.as_str(), *port)).await.unwrap())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` once the server has closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(PATIENCE, self.read_frame())
            .await
            .expect("the server sends a frame or closes the connection")
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        let mut header = [0u8; 18];
        let mut filled = 0;
        while filled < header.len() {
            match self.io.read(&mut header[filled..]).await {
                Ok(0) if filled == 0 => return None,
                Ok(0) => panic!("the connection ended inside a header"),
                Ok(n) => filled += n,
                // A close with data unread on the server's side arrives as a reset.
                Err(e) if e.kind() == ErrorKind::ConnectionReset && filled == 0 => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
        assert_eq!(header[..3], [0xda, 0xb0, 0x01], "magic and version");
        let len = u32::from_be_bytes(header[14..18].try_into().unwrap()) as usize;
        let mut body = vec![0; len];
        self.io.read_exact(&mut body).await.expect("a whole body");
        let mut wire = header.to_vec();
        wire.extend_from_slice(&body);
        Some(Frame {
            kind: header[3],
            serializer: header[4],
            status: header[5],
            id: u64::from_be_bytes(header[6..14].try_into().unwrap()),
            body,
            wire,
        })
    }

    async fn frame(&mut self) -> Frame {
        self.next()
            .await
            .expect("a frame, not the end of the connection")
    }

    /// The next frame with request id `id`; frames of other calls are skipped.
    async fn frame_for(&mut self, id: u64) -> Frame {
        loop {
            let frame = self.frame().await;
            if frame.id == id {
                return frame;
            }
        }
    }

    /// Reads frames until each of the streams `ids` has sent an item.
    async fn started(&mut self, ids: &[u64]) {
        let mut waiting = ids.to_vec();
        while !waiting.is_empty() {
            let frame = self.frame().await;
            if frame.kind == STREAM_ITEM {
                waiting.retain(|&id| id != frame.id);
            }
        }
    }

    /// Reads `n` frames, each a StreamItem of call `id`.
    async fn items(&mut self, id: u64, n: usize) {
        for i in 0..n {
            let frame = self.frame().await;
            assert_eq!(
                (frame.kind, frame.id),
                (STREAM_ITEM, id),
                "frame {i} of {n}: {frame:?}"
            );
        }
    }

    /// Sends a Ping and returns every frame that arrived before its Pong. The server answers a
    /// Ping as soon as it reads it, so what comes before the Pong is what it had already sent.
    async fn barrier(&mut self) -> Vec<Frame> {
        self.send(&frame(PING, NO_SERIALIZER, BARRIER_ID, &[]))
            .await;
        let mut before = Vec::new();
        loop {
            let frame = self.frame().await;
            if (frame.kind, frame.id) == (PONG, BARRIER_ID) {
                return before;
            }
            before.push(frame);
        }
    }

    /// Reads until the server closes the connection.
    async fn expect_closed(&mut self) {
        while self.next().await.is_some() {}
    }

    /// Checks that the connection still works: a Ping is answered.
    async fn expect_open(&mut self) {
        self.barrier().await;
    }
}

/// Why `add` failed; the same type as the example service's.
#[derive(Debug, Serialize, Deserialize)]
enum MathError {
    /// The sum does not fit.
    Overflow,
}

/// The `add` method of the example `hello.Greeter`, for the page's byte example.
#[rpc_core::service(name = "hello.Greeter", version = "1")]
trait Greeter {
    /// Adds, failing on overflow.
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
}

struct Adder;

impl Greeter for Adder {
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }
}

/// Streams the hand-written test service does not have.
#[rpc_core::service(name = "test.Streams")]
trait Streams {
    /// `n` items, then an internal error.
    async fn broken(&self, n: u32) -> ServerStream<u32>;
    /// Endless items, the first held back until the test opens the gate.
    async fn gated(&self) -> ServerStream<u64>;
}

/// The gate of `gated`: `polled` gets a permit when the first item is asked for, `open` lets
/// it through.
struct Gate {
    polled: Semaphore,
    open: Semaphore,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            polled: Semaphore::new(0),
            open: Semaphore::new(0),
        })
    }
}

struct StreamsImpl {
    gate: Arc<Gate>,
}

impl Streams for StreamsImpl {
    async fn broken(&self, n: u32) -> ServerStream<u32> {
        let error = ServerError::new(Status::INTERNAL_ERROR, "broken on purpose");
        ServerStream::try_new(futures::stream::iter(
            (0..n).map(Ok).chain(std::iter::once(Err(error))),
        ))
    }

    async fn gated(&self) -> ServerStream<u64> {
        let gate = self.gate.clone();
        ServerStream::new(futures::stream::unfold(0u64, move |n| {
            let gate = gate.clone();
            async move {
                if n == 0 {
                    gate.polled.add_permits(1);
                    gate.open.acquire().await.ok()?.forget();
                }
                Some((n, n + 1))
            }
        }))
    }
}

/// Every test service, so that any test can call any of them.
fn builder(echo: &Echo, gate: &Arc<Gate>) -> ServerBuilder {
    Server::builder()
        .service(echo.clone())
        .service(GreeterServer::new(Adder))
        .service(StreamsServer::new(StreamsImpl { gate: gate.clone() }))
        .listen("tcp://127.0.0.1:0")
}

/// A server with the default configuration, and the probe of its `test.Echo`.
async fn serve() -> (ServerHandle, Echo) {
    let echo = Echo::default();
    let server = builder(&echo, &Gate::new()).start().await.unwrap();
    (server, echo)
}

// Section 3: the serializer byte.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_the_request_serializer_whatever_their_status() {
    let (server, _) = serve().await;
    let mut raw = Raw::connect(&server).await;
    for (serializer, format) in [(POSTCARD, Format::Postcard), (JSON, Format::Json)] {
        // An OK Response.
        let echo = encode(&format, &(ByteBuf::from(b"hi".to_vec()),));
        raw.send(&request(REQUEST, serializer, 1, (ECHO, "", "echo"), &echo))
            .await;
        let ok = raw.frame_for(1).await;
        assert_eq!(
            (ok.kind, ok.status, ok.serializer),
            (RESPONSE, OK, serializer)
        );
        // Error Responses: no such method, and an application error.
        raw.send(&request(REQUEST, serializer, 2, (ECHO, "", "nope"), &echo))
            .await;
        let missing = raw.frame_for(2).await;
        assert_eq!(
            (missing.kind, missing.status, missing.serializer),
            (RESPONSE, METHOD_NOT_FOUND, serializer)
        );
        let why = encode(&format, &("no",));
        raw.send(&request(REQUEST, serializer, 3, (ECHO, "", "fail"), &why))
            .await;
        let failed = raw.frame_for(3).await;
        assert_eq!(
            (failed.kind, failed.status, failed.serializer),
            (RESPONSE, APPLICATION_ERROR, serializer)
        );
        // Stream items, then an error StreamEnd.
        let two = encode(&format, &(2u32,));
        let streams = ("test.Streams", "", "broken");
        raw.send(&request(REQUEST, serializer, 4, streams, &two))
            .await;
        for _ in 0..2 {
            let item = raw.frame_for(4).await;
            assert_eq!(
                (item.kind, item.status, item.serializer),
                (STREAM_ITEM, OK, serializer)
            );
        }
        let end = raw.frame_for(4).await;
        assert_eq!(
            (end.kind, end.status, end.serializer),
            (STREAM_END, INTERNAL_ERROR, serializer)
        );
    }
    // An unknown serializer id comes back in the UNSUPPORTED_SERIALIZER answer.
    raw.send(&request(REQUEST, 77, 5, (ECHO, "", "echo"), b"?"))
        .await;
    let unknown = raw.frame_for(5).await;
    assert_eq!(
        (unknown.kind, unknown.status, unknown.serializer),
        (RESPONSE, UNSUPPORTED_SERIALIZER, 77)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ok_stream_end_carries_the_request_serializer() {
    let (server, _) = serve().await;
    let mut raw = Raw::connect(&server).await;
    for (serializer, format) in [
        (MSGPACK, Format::MessagePack),
        (POSTCARD, Format::Postcard),
        (JSON, Format::Json),
    ] {
        let args = format.to_bytes(&(1u64,)).unwrap();
        raw.send(&request(REQUEST, serializer, 1, (ECHO, "", "count"), &args))
            .await;
        raw.items(1, 1).await;
        let end = raw.frame_for(1).await;
        assert_eq!(
            (end.kind, end.status, end.serializer, end.body.len()),
            (STREAM_END, OK, serializer, 0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_outside_calls_carry_serializer_zero() {
    let echo = Echo::default();
    let server = builder(&echo, &Gate::new())
        .heartbeat_interval(Duration::from_millis(100))
        .idle_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap();
    let mut raw = Raw::connect(&server).await;

    // The server's own Ping, sent once the connection has been silent for an interval.
    let ping = raw.frame().await;
    assert_eq!(
        (
            ping.kind,
            ping.serializer,
            ping.status,
            ping.id,
            ping.body.len()
        ),
        (PING, NO_SERIALIZER, OK, 0, 0)
    );
    raw.send(&frame(PONG, NO_SERIALIZER, ping.id, &[])).await;

    // The Pong to the client's Ping.
    raw.send(&frame(PING, NO_SERIALIZER, 9, &[])).await;
    let pong = raw.frame_for(9).await;
    assert_eq!(
        (pong.kind, pong.serializer, pong.status, pong.body.len()),
        (PONG, NO_SERIALIZER, OK, 0)
    );

    // GoAway, when the server starts draining.
    let server = Arc::new(server);
    let draining = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown(PATIENCE).await }
    });
    let go_away = loop {
        let frame = raw.frame().await;
        if frame.kind == GO_AWAY {
            break frame;
        }
        assert_eq!(frame.kind, PING, "only pings come before the GoAway");
    };
    assert_eq!(
        (go_away.serializer, go_away.status, go_away.id),
        (NO_SERIALIZER, OK, 0)
    );
    assert!(String::from_utf8(go_away.body).is_ok(), "a UTF-8 reason");
    drop(raw);
    draining.await.unwrap();
}

// Section 3.1: frames a server does not expect.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_credit_whose_body_is_not_four_bytes_closes_the_connection() {
    let (server, _) = serve().await;
    let mut bystander = Raw::connect(&server).await;
    for body in [&b""[..], b"\0\0\x01", b"\0\0\0\x01\0"] {
        // For a request id with no call…
        let mut raw = Raw::connect(&server).await;
        raw.send(&frame(STREAM_CREDIT, NO_SERIALIZER, 1, body))
            .await;
        raw.expect_closed().await;
        // …and for an open stream.
        let mut raw = Raw::connect(&server).await;
        raw.send(&echo_request(1, "ticks", &())).await;
        raw.items(1, 1).await;
        raw.send(&frame(STREAM_CREDIT, NO_SERIALIZER, 1, body))
            .await;
        raw.expect_closed().await;
        bystander.expect_open().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_credit_for_no_open_call_are_ignored() {
    let (server, _) = serve().await;
    let mut raw = Raw::connect(&server).await;
    // Ids that never had a call.
    raw.send(&frame(CANCEL, NO_SERIALIZER, 99, &[])).await;
    raw.send(&credit(99, 10)).await;
    raw.expect_open().await;
    // The id of a stream that has just ended.
    raw.send(&echo_request(1, "count", &(1u64,))).await;
    raw.items(1, 1).await;
    assert_eq!(raw.frame().await.kind, STREAM_END);
    raw.send(&credit(1, 10)).await;
    raw.send(&frame(CANCEL, NO_SERIALIZER, 1, &[])).await;
    raw.expect_open().await;
    // Calls still work.
    raw.send(&echo_request(2, "echo", &(ByteBuf::from(vec![7u8]),)))
        .await;
    let answer = raw.frame_for(2).await;
    assert_eq!((answer.kind, answer.status), (RESPONSE, OK));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_ping_pong_and_cancel_are_ignored() {
    let (server, echo) = serve().await;
    let mut raw = Raw::connect(&server).await;
    // A Ping with a body is answered with an empty Pong of the same id.
    raw.send(&frame(PING, NO_SERIALIZER, 42, b"are you there?"))
        .await;
    let pong = raw.frame_for(42).await;
    assert_eq!((pong.kind, pong.body.len()), (PONG, 0));
    // A Pong with a body changes nothing.
    raw.send(&frame(PONG, NO_SERIALIZER, 43, b"yes")).await;
    raw.expect_open().await;
    // A Cancel with a body still cancels.
    raw.send(&echo_request(1, "ticks", &())).await;
    raw.items(1, 1).await;
    raw.send(&frame(CANCEL, NO_SERIALIZER, 1, b"no longer needed"))
        .await;
    tokio::time::timeout(PATIENCE, echo.probe.wait_producer_dropped())
        .await
        .expect("the cancelled stream's producer is dropped");
    raw.expect_open().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_only_servers_send_close_the_connection() {
    let (server, _) = serve().await;
    let mut bystander = Raw::connect(&server).await;
    for (kind, body) in [
        (RESPONSE, &b"\xc0"[..]),
        (STREAM_ITEM, b"\xc0"),
        (STREAM_END, b""),
        (GO_AWAY, b"bye"),
    ] {
        let mut raw = Raw::connect(&server).await;
        raw.send(&frame(kind, NO_SERIALIZER, 1, body)).await;
        raw.expect_closed().await;
        bystander.expect_open().await;
    }
    bystander
        .send(&echo_request(1, "echo", &(ByteBuf::from(vec![1u8]),)))
        .await;
    assert_eq!(bystander.frame_for(1).await.status, OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closes_the_connection_when_a_server_sends_a_frame_only_clients_send() {
    for kind in [REQUEST, ONE_WAY, CANCEL, STREAM_CREDIT] {
        // A listener of its own each time: the previous client may be reconnecting.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::tcp(listener.local_addr().unwrap());
        let client = Client::builder().connect(&endpoint).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut server = Raw::new(stream);
        let target = MethodTarget {
            idempotent: false,
            ..support::target("echo")
        };
        let call = tokio::spawn(async move {
            client
                .call::<_, ByteBuf>(&target, &(ByteBuf::from(vec![1u8]),))
                .await
        });
        let request = server.frame().await;
        assert_eq!(request.kind, REQUEST);
        let body = if kind == STREAM_CREDIT {
            &[0, 0, 0, 1][..]
        } else {
            &[]
        };
        server
            .send(&frame(kind, NO_SERIALIZER, request.id, body))
            .await;
        server.expect_closed().await;
        let outcome = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
        assert!(
            matches!(outcome, Err(RpcError::ConnectionLost(_))),
            "{outcome:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_the_id_of_an_open_call_closes_the_connection() {
    let (server, _) = serve().await;
    let mut bystander = Raw::connect(&server).await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&echo_request(1, "ticks", &())).await;
    raw.items(1, 1).await;
    raw.send(&echo_request(1, "echo", &(ByteBuf::from(vec![1u8]),)))
        .await;
    raw.expect_closed().await;
    bystander.expect_open().await;
}

// Section 5: methods that return `Result<T, E>`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_methods_answer_the_bare_value_or_an_application_error() {
    let (server, _) = serve().await;
    let mut raw = Raw::connect(&server).await;
    // The page's bytes, MessagePack.
    let preamble = "0d 68 65 6c 6c 6f 2e 47 72 65 65 74 65 72 01 31 03 61 64 64 00 00 00 00 00";
    raw.send(&unhex(&format!(
        "da b0 01 01 01 00 00 00 00 00 00 00 00 01 00 00 00 1c {preamble} 92 02 28"
    )))
    .await;
    assert_eq!(
        raw.frame().await.wire,
        unhex("da b0 01 02 01 00 00 00 00 00 00 00 00 01 00 00 00 01 2a")
    );
    raw.send(&unhex(&format!(
        "da b0 01 01 01 00 00 00 00 00 00 00 00 02 00 00 00 24 {preamble} \
         92 cf 7f ff ff ff ff ff ff ff 01"
    )))
    .await;
    assert_eq!(
        raw.frame().await.wire,
        unhex(
            "da b0 01 02 01 07 00 00 00 00 00 00 00 02 00 00 00 13 \
             00 08 4f 76 65 72 66 6c 6f 77 a8 4f 76 65 72 66 6c 6f 77"
        )
    );

    // The same in JSON and postcard.
    let add = ("hello.Greeter", "1", "add");
    for (serializer, ok_args, ok_body, err_args, err_detail) in [
        (
            JSON,
            &b"[2,40]"[..],
            &b"42"[..],
            &b"[9223372036854775807,1]"[..],
            &b"\"Overflow\""[..],
        ),
        (
            POSTCARD,
            &[0x04, 0x50][..],
            &[0x54][..],
            &unhex("fe ff ff ff ff ff ff ff ff 01 02")[..],
            &[0x00][..],
        ),
    ] {
        raw.send(&request(REQUEST, serializer, 3, add, ok_args))
            .await;
        let ok = raw.frame().await;
        assert_eq!((ok.status, &ok.body[..]), (OK, ok_body));
        raw.send(&request(REQUEST, serializer, 4, add, err_args))
            .await;
        let failed = raw.frame().await;
        assert_eq!(failed.status, APPLICATION_ERROR);
        assert_eq!(
            error_body(&failed.body),
            ("Overflow".to_owned(), err_detail.to_vec())
        );
    }
}

// Section 8: limits.

#[test]
fn the_default_limits_are_the_pages() {
    let config = ServerConfig::default();
    assert_eq!(
        (config.max_concurrent_per_connection, config.max_concurrent),
        (1024, 65_536)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_connection_limit_are_busy_and_open_streams_count() {
    let echo = Echo::default();
    let server = builder(&echo, &Gate::new())
        .max_concurrent_per_connection(2)
        .start()
        .await
        .unwrap();
    let mut raw = Raw::connect(&server).await;
    // Two streams the client does not read past their first items.
    raw.send(&echo_request(1, "ticks", &())).await;
    raw.send(&echo_request(2, "ticks", &())).await;
    raw.started(&[1, 2]).await;

    // A third call, unary or streaming, is answered SERVER_BUSY with a Response.
    raw.send(&echo_request(3, "echo", &(ByteBuf::from(vec![1u8]),)))
        .await;
    let busy = raw.frame_for(3).await;
    assert_eq!(
        (busy.kind, busy.status, busy.serializer),
        (RESPONSE, SERVER_BUSY, MSGPACK)
    );
    let (message, detail) = error_body(&busy.body);
    assert!(!message.is_empty() && detail.is_empty(), "{message:?}");
    raw.send(&echo_request(4, "count", &(5u64,))).await;
    let busy = raw.frame_for(4).await;
    assert_eq!((busy.kind, busy.status), (RESPONSE, SERVER_BUSY));

    // Once one stream is cancelled, its place is free again.
    raw.send(&frame(CANCEL, NO_SERIALIZER, 1, &[])).await;
    tokio::time::timeout(PATIENCE, echo.probe.wait_producer_dropped())
        .await
        .expect("the cancelled stream's producer is dropped");
    // The place is released as the stream's task ends, just after its producer is dropped.
    let retry = async {
        for id in 5.. {
            raw.send(&echo_request(id, "echo", &(ByteBuf::from(vec![1u8]),)))
                .await;
            let answer = raw.frame_for(id).await;
            if answer.status == OK {
                return;
            }
            assert_eq!(answer.status, SERVER_BUSY);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(PATIENCE, retry)
        .await
        .expect("a call succeeds once a stream is cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_limit_spans_connections() {
    let echo = Echo::default();
    let server = builder(&echo, &Gate::new())
        .max_concurrent(2)
        .start()
        .await
        .unwrap();
    let mut first = Raw::connect(&server).await;
    let mut second = Raw::connect(&server).await;
    for raw in [&mut first, &mut second] {
        raw.send(&echo_request(1, "ticks", &())).await;
        raw.started(&[1]).await;
    }
    let mut third = Raw::connect(&server).await;
    third
        .send(&echo_request(1, "echo", &(ByteBuf::from(vec![1u8]),)))
        .await;
    let busy = third.frame_for(1).await;
    assert_eq!((busy.kind, busy.status), (RESPONSE, SERVER_BUSY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_one_way_call_counts_toward_the_limit() {
    let echo = Echo::default();
    let server = builder(&echo, &Gate::new())
        .max_concurrent_per_connection(1)
        .start()
        .await
        .unwrap();
    let mut raw = Raw::connect(&server).await;
    let args = Format::MessagePack.to_bytes(&(60_000u64,)).unwrap();
    raw.send(&request(ONE_WAY, MSGPACK, 1, (ECHO, "", "sleep"), &args))
        .await;
    raw.send(&echo_request(2, "echo", &(ByteBuf::from(vec![1u8]),)))
        .await;
    let busy = raw.frame_for(2).await;
    assert_eq!((busy.kind, busy.status), (RESPONSE, SERVER_BUSY));
}

// Section 8: stream flow control.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_starts_with_256_items_of_credit_and_each_grant_adds_its_count() {
    let (server, _) = serve().await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&echo_request(1, "ticks", &())).await;
    raw.items(1, 256).await;
    assert_eq!(raw.barrier().await, vec![], "nothing beyond the first 256");
    raw.send(&credit(1, 10)).await;
    raw.items(1, 10).await;
    assert_eq!(raw.barrier().await, vec![], "nothing beyond the 10 granted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_beyond_1024_unused_items_is_dropped() {
    let (server, _) = serve().await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&echo_request(1, "ticks", &())).await;
    raw.items(1, 256).await;
    assert_eq!(raw.barrier().await, vec![]);
    // Every credit is used: a grant of u32::MAX is worth 1,024 items.
    raw.send(&credit(1, u32::MAX)).await;
    raw.items(1, 1024).await;
    assert_eq!(raw.barrier().await, vec![], "nothing beyond 1,024");
    // What was dropped is not remembered; a new grant counts again.
    raw.send(&credit(1, 3)).await;
    raw.items(1, 3).await;
    assert_eq!(raw.barrier().await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_initial_credit_counts_toward_the_ceiling() {
    let gate = Gate::new();
    let server = builder(&Echo::default(), &gate).start().await.unwrap();
    let mut raw = Raw::connect(&server).await;
    raw.send(&request(
        REQUEST,
        MSGPACK,
        1,
        ("test.Streams", "", "gated"),
        &[0xc0],
    ))
    .await;
    // The first item is in production; it takes its credit only once it is made, so all 256
    // initial items are unused when the grant arrives.
    tokio::time::timeout(PATIENCE, gate.polled.acquire())
        .await
        .expect("the stream starts")
        .unwrap()
        .forget();
    raw.send(&credit(1, u32::MAX)).await;
    // Once the Pong is back, the server has applied the grant (it reads frames in order).
    assert_eq!(raw.barrier().await, vec![]);
    gate.open.add_permits(1);
    // The grant topped the unused 256 up to 1,024: the item in production and 1,023 more.
    raw.items(1, 1024).await;
    assert_eq!(raw.barrier().await, vec![], "nothing beyond 1,024");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_end_needs_no_credit() {
    let (server, _) = serve().await;
    let mut raw = Raw::connect(&server).await;
    raw.send(&echo_request(1, "count", &(256u64,))).await;
    raw.items(1, 256).await;
    // The last item used the last credit; the end comes all the same.
    let end = raw.frame().await;
    assert_eq!((end.kind, end.id, end.status), (STREAM_END, 1, OK));
}

// Section 8: Cancel and StreamCredit right behind their Request.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_the_same_write_as_its_request_stops_a_unary_call() {
    let (server, echo) = serve().await;
    let mut raw = Raw::connect(&server).await;
    let mut write = echo_request(1, "sleep", &(60_000u64,));
    write.extend(frame(CANCEL, NO_SERIALIZER, 1, &[]));
    raw.send(&write).await;
    tokio::time::timeout(PATIENCE, echo.probe.wait_dropped(1))
        .await
        .expect("the handler is dropped");
    assert_eq!(raw.barrier().await, vec![], "no answer to a cancelled call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_in_the_same_write_as_its_request_applies_to_the_stream() {
    let (server, _) = serve().await;
    let mut raw = Raw::connect(&server).await;
    let mut write = echo_request(1, "ticks", &());
    write.extend(credit(1, u32::MAX));
    raw.send(&write).await;
    // All 256 initial items are unused when the grant arrives: it tops them up to 1,024.
    raw.items(1, 1024).await;
    assert_eq!(raw.barrier().await, vec![], "nothing beyond 1,024");
}
