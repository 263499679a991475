//! Metrics: a server and a client record into one registry, served over HTTP and scraped with a
//! plain TCP stream. Real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rpc_core::metrics::Metrics;
use rpc_core::{Client, MethodTarget, RpcError, Server};
use serde_bytes::ByteBuf;
use support::{ECHO, Echo, target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as is and reads the whole answer.
async fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8(answer).unwrap()
}

/// The body of `GET /metrics`, checking the status line.
async fn scrape(addr: SocketAddr) -> String {
    let answer = http(addr, b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.to_owned()
}

/// The value of the series `name` with exactly `labels`, or `None` if there is none.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.strip_suffix('}')?)),
                None => (series, Vec::new()),
            };
            let mut wanted: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            wanted.sort();
            (series_name == name && series_labels == wanted).then(|| value.parse().unwrap())
        })
}

/// `a="x",b="y"` as sorted pairs (the test's values hold no quotes or commas).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = text
        .split("\",")
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once("=\"").unwrap();
            (k.to_owned(), v.trim_end_matches('"').to_owned())
        })
        .collect();
    labels.sort();
    labels
}

fn calls(text: &str, side: &str, service: &str, method: &str, status: &str) -> f64 {
    let name = format!("rpc_{side}_calls_total");
    let labels = [("service", service), ("method", method), ("status", status)];
    value(text, &name, &labels).unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_with_calls() {
    let metrics = Metrics::new();
    let server = Server::builder()
        .service(Echo::default())
        .metrics(&metrics)
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().clone();
    let client = Client::builder()
        .metrics(&metrics)
        .connect(endpoint)
        .await
        .unwrap();
    let http_server = metrics.serve("127.0.0.1:0").await.unwrap();
    let addr = http_server.local_addr();

    let before = scrape(addr).await;
    // The server's routes have their series from the start.
    assert_eq!(calls(&before, "server", ECHO, "echo", "ok"), 0.0);

    for _ in 0..3 {
        let bytes: ByteBuf = client
            .call(&target("echo"), &(ByteBuf::from(vec![1u8; 100]),))
            .await
            .unwrap();
        assert_eq!(bytes.len(), 100);
    }
    let failed = client.call::<_, ()>(&target("fail"), &("no",)).await;
    assert!(
        matches!(failed, Err(RpcError::Application(_))),
        "{failed:?}"
    );
    let panicked = client.call::<_, ()>(&target("panic"), &()).await;
    assert!(
        matches!(panicked, Err(RpcError::Internal(_))),
        "{panicked:?}"
    );
    let unknown = client.call::<_, ()>(&target("nope"), &()).await;
    assert!(
        matches!(unknown, Err(RpcError::MethodNotFound(_))),
        "{unknown:?}"
    );
    let no_service = MethodTarget {
        service: "no.Such",
        version: "",
        method: "thing",
        idempotent: true,
    };
    let missing = client.call::<_, ()>(&no_service, &()).await;
    assert!(
        matches!(missing, Err(RpcError::ServiceNotFound(_))),
        "{missing:?}"
    );

    let after = scrape(addr).await;
    assert_eq!(calls(&after, "server", ECHO, "echo", "ok"), 3.0, "{after}");
    assert_eq!(
        calls(&after, "server", ECHO, "fail", "application error"),
        1.0
    );
    assert_eq!(
        calls(&after, "server", ECHO, "panic", "internal error"),
        1.0
    );
    assert_eq!(
        calls(&after, "client", ECHO, "panic", "internal error"),
        1.0
    );
    // Names the server does not route are not labels.
    assert_eq!(calls(&after, "server", ECHO, "", "method not found"), 1.0);
    assert_eq!(calls(&after, "server", "", "", "service not found"), 1.0);
    let server_lines: Vec<&str> = after
        .lines()
        .filter(|l| l.contains("rpc_server_"))
        .collect();
    assert!(
        !server_lines
            .iter()
            .any(|l| l.contains("nope") || l.contains("no.Such"))
    );
    let echo = [("service", ECHO), ("method", "echo")];
    assert_eq!(
        value(&after, "rpc_server_call_duration_seconds_count", &echo),
        Some(3.0)
    );
    assert_eq!(value(&after, "rpc_server_in_flight_calls", &[]), Some(0.0));
    assert_eq!(value(&after, "rpc_server_connections", &[]), Some(1.0));
    assert_eq!(
        value(&after, "rpc_server_connections_accepted_total", &[]),
        Some(1.0)
    );
    assert!(value(&after, "rpc_server_bytes_read_total", &[]).unwrap() > 300.0);
    assert!(value(&after, "rpc_server_bytes_written_total", &[]).unwrap() > 300.0);

    // The client labels what it called, and errors by kind.
    assert_eq!(calls(&after, "client", ECHO, "echo", "ok"), 3.0);
    assert_eq!(
        calls(&after, "client", ECHO, "fail", "application error"),
        1.0
    );
    assert_eq!(
        calls(&after, "client", ECHO, "nope", "method not found"),
        1.0
    );
    assert_eq!(
        calls(&after, "client", "no.Such", "thing", "service not found"),
        1.0
    );
    assert_eq!(
        value(&after, "rpc_client_call_duration_seconds_count", &echo),
        Some(3.0)
    );
    assert_eq!(value(&after, "rpc_client_in_flight_calls", &[]), Some(0.0));
    assert_eq!(value(&after, "rpc_client_reconnects_total", &[]), Some(0.0));
    assert!(value(&after, "rpc_client_bytes_read_total", &[]).unwrap() > 300.0);
    assert!(value(&after, "rpc_client_bytes_written_total", &[]).unwrap() > 300.0);

    // A client that cannot connect counts the error by its kind.
    drop(client);
    server.shutdown(Duration::from_secs(1)).await;
    let lazy = Client::builder()
        .metrics(&metrics)
        .wait_for_reconnect(false)
        .connect_lazy(server.local_endpoint().unwrap().clone())
        .unwrap();
    let refused = lazy.call::<_, ()>(&target("echo"), &()).await;
    assert!(
        matches!(refused, Err(RpcError::Connect { .. })),
        "{refused:?}"
    );
    let last = scrape(addr).await;
    assert_eq!(calls(&last, "client", ECHO, "echo", "connect failed"), 1.0);
    assert_eq!(value(&last, "rpc_server_connections", &[]), Some(0.0));
}

#[tokio::test]
async fn reconnects_are_counted() {
    let metrics = Metrics::new();
    let start = |endpoint: rpc_core::Endpoint| {
        Server::builder()
            .service(Echo::default())
            .listen(endpoint)
            .start()
    };
    let server = start("tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let endpoint = server.local_endpoint().unwrap().clone();
    let client = Client::builder()
        .metrics(&metrics)
        .reconnect(rpc_core::Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ))
        .connect(endpoint.clone())
        .await
        .unwrap();
    let mut state = client.watch_state();
    server.abort().await;
    state
        .wait_for(|s| !matches!(s, rpc_core::ConnectionState::Connected))
        .await
        .unwrap();
    let _server = start(endpoint).await.unwrap();
    state
        .wait_for(|s| matches!(s, rpc_core::ConnectionState::Connected))
        .await
        .unwrap();
    let text = metrics.encode();
    assert_eq!(value(&text, "rpc_client_reconnects_total", &[]), Some(1.0));
}

#[tokio::test]
async fn endpoint_answers_other_paths_and_survives_junk() {
    let metrics = Metrics::new();
    metrics.register_gauge_fn("answer", "The answer", || 42);
    metrics.register_gauge_family_fn("by_kind", "Things by kind", "kind", || {
        vec![("a".to_owned(), 1), ("b".to_owned(), 2)]
    });
    let http_server = metrics.serve("127.0.0.1:0").await.unwrap();
    let addr = http_server.local_addr();

    let not_found = http(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    let not_allowed = http(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(not_allowed.starts_with("HTTP/1.1 405 "), "{not_allowed}");
    let junk = http(addr, b"\x00\xff\x13 junk junk junk\r\n\r\n").await;
    assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
    let huge = vec![b'a'; 20_000];
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server stops reading after 8 KiB and answers (or closes); either way it carries on.
    let _ = stream.write_all(&huge).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    drop(stream);
    // A scraper that connects and leaves.
    drop(TcpStream::connect(addr).await.unwrap());

    let text = scrape(addr).await;
    assert_eq!(value(&text, "answer", &[]), Some(42.0));
    assert_eq!(value(&text, "by_kind", &[("kind", "b")]), Some(2.0));
}
