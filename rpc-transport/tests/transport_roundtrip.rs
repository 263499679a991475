//! The built-in transports end to end: TCP on loopback, Unix sockets in a temporary directory,
//! and in-process memory pipes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::io;
use std::time::Duration;

use rpc_transport::{
    Acceptor, Connector, Endpoint, EndpointConnector, PeerAddr, TransportError, connect, listen,
};
use support::exchange;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(10);

fn assert_io_error(result: Result<impl std::fmt::Debug, TransportError>, kind: io::ErrorKind) {
    let err = result.expect_err("expected a failure");
    assert_eq!(err.io_kind(), Some(kind), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_round_trip() {
    let mut listener = listen(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let endpoint = listener.local_endpoint();
    let Endpoint::Tcp { ref host, port } = endpoint else {
        panic!("{endpoint:?}")
    };
    assert_eq!(host, "127.0.0.1");
    assert_ne!(
        port, 0,
        "port 0 must be reported as the port actually bound"
    );

    let (client, server) = tokio::join!(connect(&endpoint, TIMEOUT), listener.accept());
    let (client, server) = (client.unwrap(), server.unwrap());
    let PeerAddr::Tcp(server_addr) = *client.peer() else {
        panic!("{:?}", client.peer())
    };
    assert_eq!(Endpoint::tcp(server_addr), endpoint);
    let PeerAddr::Tcp(client_addr) = *server.peer() else {
        panic!("{:?}", server.peer())
    };
    assert!(client_addr.ip().is_loopback());

    exchange(client, server).await;
}

#[tokio::test]
async fn tcp_round_trip_over_ipv6_loopback() {
    let mut listener = match listen(&"tcp://[::1]:0".parse().unwrap()).await {
        Ok(listener) => listener,
        Err(err) => {
            // Some containers have no IPv6 loopback; nothing to test there.
            eprintln!("skipping: {err} ({:?})", err.io_kind());
            return;
        }
    };
    let endpoint = listener.local_endpoint();
    assert!(
        endpoint.to_string().starts_with("tcp://[::1]:"),
        "{endpoint}"
    );

    let (client, server) = tokio::join!(connect(&endpoint, TIMEOUT), listener.accept());
    let (client, server) = (client.unwrap(), server.unwrap());
    assert!(matches!(client.peer(), PeerAddr::Tcp(addr) if addr.is_ipv6()));
    exchange(client, server).await;
}

#[tokio::test]
async fn tcp_connect_to_a_closed_port_is_refused() {
    let listener = listen(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let endpoint = listener.local_endpoint();
    drop(listener);

    let result = connect(&endpoint, TIMEOUT).await;
    assert!(
        matches!(&result, Err(TransportError::Connect { endpoint: e, .. }) if *e == endpoint.to_string())
    );
    assert_io_error(result, io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn tcp_listen_on_a_port_in_use_fails() {
    let listener = listen(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let result = listen(&listener.local_endpoint()).await;
    assert!(matches!(result, Err(TransportError::Bind { .. })));
    assert_io_error(result, io::ErrorKind::AddrInUse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_round_trip_and_socket_file_removed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpc.sock");
    let endpoint = Endpoint::unix(&path);
    let mut listener = listen(&endpoint).await.unwrap();
    assert_eq!(listener.local_endpoint(), endpoint);
    assert!(path.exists());

    let (client, server) = tokio::join!(connect(&endpoint, TIMEOUT), listener.accept());
    let (client, server) = (client.unwrap(), server.unwrap());
    assert_eq!(client.peer(), &PeerAddr::Unix(Some(path.clone())));
    assert_eq!(server.peer(), &PeerAddr::Unix(None));
    exchange(client, server).await;

    drop(listener);
    assert!(
        !path.exists(),
        "dropping the listener removes its socket file"
    );
}

#[tokio::test]
async fn unix_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.sock");
    // A listener that went away without cleaning up leaves its file behind.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let endpoint = Endpoint::unix(&path);
    let mut listener = listen(&endpoint).await.unwrap();
    let (client, server) = tokio::join!(connect(&endpoint, TIMEOUT), listener.accept());
    exchange(client.unwrap(), server.unwrap()).await;
}

#[tokio::test]
async fn unix_live_socket_is_not_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::unix(dir.path().join("live.sock"));
    let mut first = listen(&endpoint).await.unwrap();

    assert_io_error(listen(&endpoint).await, io::ErrorKind::AddrInUse);

    // The first listener still owns the path and accepts on it. The second listen's probe
    // reaches it as a connection closed without data, so skip empty connections.
    let client = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            let mut client = connect(&endpoint, TIMEOUT).await.unwrap();
            client.write_all(b"still here").await.unwrap();
            client.shutdown().await.unwrap();
        }
    });
    let mut empty = 0;
    let received = loop {
        let mut server = first.accept().await.unwrap();
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        if !received.is_empty() {
            break received;
        }
        empty += 1;
        assert!(empty <= 1, "only the probe connection may be empty");
    };
    assert_eq!(received, b"still here");
    client.await.unwrap();
}

#[tokio::test]
async fn unix_connect_to_a_missing_path_fails() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Endpoint::unix(dir.path().join("nobody.sock"));
    let result = connect(&endpoint, TIMEOUT).await;
    assert!(matches!(result, Err(TransportError::Connect { .. })));
    assert_io_error(result, io::ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_round_trip() {
    let endpoint: Endpoint = "mem://roundtrip-memory".parse().unwrap();
    let mut listener = listen(&endpoint).await.unwrap();
    assert_eq!(listener.local_endpoint(), endpoint);

    let client = connect(&endpoint, TIMEOUT).await.unwrap();
    let server = listener.accept().await.unwrap();
    let PeerAddr::Memory(number) = *client.peer() else {
        panic!("{:?}", client.peer())
    };
    assert_eq!(server.peer(), &PeerAddr::Memory(number));

    let second = connect(&endpoint, TIMEOUT).await.unwrap();
    assert_ne!(
        second.peer(),
        client.peer(),
        "each connection has its own number"
    );

    exchange(client, server).await;
}

#[tokio::test(start_paused = true)]
async fn memory_round_trip_under_paused_time() {
    let endpoint = Endpoint::memory("roundtrip-paused");
    let mut listener = listen(&endpoint).await.unwrap();
    let client = connect(&endpoint, TIMEOUT).await.unwrap();
    let server = listener.accept().await.unwrap();
    exchange(client, server).await;
}

#[tokio::test(start_paused = true)]
async fn memory_connect_times_out_when_nobody_accepts() {
    let endpoint = Endpoint::memory("roundtrip-timeout");
    let _listener = listen(&endpoint).await.unwrap();

    // Connections queue until the backlog is full; the next one waits and times out.
    let mut queued = Vec::new();
    let err = loop {
        match connect(&endpoint, Duration::from_secs(3)).await {
            Ok(connection) => queued.push(connection),
            Err(err) => break err,
        }
        assert!(queued.len() < 10_000, "the backlog never filled");
    };
    assert!(!queued.is_empty());
    match err {
        TransportError::Timeout { endpoint, after } => {
            assert_eq!(endpoint, "mem://roundtrip-timeout");
            assert_eq!(after, Duration::from_secs(3));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn memory_connect_to_an_unknown_name_is_refused() {
    let result = connect(&Endpoint::memory("roundtrip-nobody"), TIMEOUT).await;
    assert!(matches!(result, Err(TransportError::Connect { .. })));
    assert_io_error(result, io::ErrorKind::ConnectionRefused);
}

#[tokio::test]
async fn memory_listener_drop_frees_the_name_for_a_new_listener() {
    let endpoint = Endpoint::memory("roundtrip-rebind");
    let first = listen(&endpoint).await.unwrap();
    assert_io_error(listen(&endpoint).await, io::ErrorKind::AddrInUse);
    drop(first);

    assert_io_error(
        connect(&endpoint, TIMEOUT).await,
        io::ErrorKind::ConnectionRefused,
    );
    let mut second = listen(&endpoint).await.unwrap();
    let client = connect(&endpoint, TIMEOUT).await.unwrap();
    let server = second.accept().await.unwrap();
    exchange(client, server).await;
}

#[tokio::test]
async fn endpoint_connector_and_listener_as_trait_objects() {
    let mut acceptor: Box<dyn Acceptor> =
        Box::new(listen(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap());
    let endpoint = acceptor.local_endpoint();
    let connector: Box<dyn Connector> = Box::new(EndpointConnector::new(endpoint.clone(), TIMEOUT));
    assert_eq!(connector.describe(), endpoint.to_string());

    let (client, server) = tokio::join!(connector.connect(), acceptor.accept());
    exchange(client.unwrap(), server.unwrap()).await;
}
