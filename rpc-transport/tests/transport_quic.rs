//! QUIC end to end on 127.0.0.1: the built-in `quic://` endpoints, pinned keys both ways, many
//! connections from one socket, a peer that vanishes, and garbage datagrams.
#![cfg(feature = "quic")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rpc_transport::quic::{Identity, PeerAuth, QuicConfig, QuicEndpoint};
use rpc_transport::{Acceptor, Connection, Connector, Endpoint, PeerAddr, TransportError};
use support::exchange;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

const LOOPBACK: &str = "127.0.0.1:0";

fn endpoint(config: QuicConfig) -> QuicEndpoint {
    QuicEndpoint::bind(LOOPBACK.parse().unwrap(), config).unwrap()
}

fn config() -> (QuicConfig, [u8; 32]) {
    let identity = Identity::generate().unwrap();
    let key = identity.public_key();
    (QuicConfig::new(identity), key)
}

fn peer_key(connection: &Connection) -> Option<[u8; 32]> {
    match connection.peer() {
        PeerAddr::Quic { key, .. } => *key,
        other => panic!("not a QUIC peer: {other:?}"),
    }
}

/// The error and all its sources, as one line.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn echo_once(client: &mut Connection, server: &mut Connection, message: &[u8]) {
    client.write_all(message).await.unwrap();
    let mut buf = vec![0; message.len()];
    server.read_exact(&mut buf).await.unwrap();
    server.write_all(&buf).await.unwrap();
    let mut back = vec![0; message.len()];
    client.read_exact(&mut back).await.unwrap();
    assert_eq!(back, message);
}

#[tokio::test]
async fn builtin_endpoints_exchange_both_ways_and_report_keys() {
    let mut listener = rpc_transport::listen(&"quic://127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let local = listener.local_endpoint();
    let Endpoint::Quic { host, port } = &local else {
        panic!("{local:?}")
    };
    assert_eq!(host, "127.0.0.1");
    assert_ne!(*port, 0);

    let (client, server) = tokio::join!(
        rpc_transport::connect(&local, Duration::from_secs(5)),
        listener.accept()
    );
    let (client, server) = (client.unwrap(), server.unwrap());
    assert!(format!("{client:?}").contains("quic"));
    assert!(client.peer().to_string().starts_with("quic://127.0.0.1:"));
    // Both sides present an identity, and each sees the other's key.
    assert!(peer_key(&client).is_some());
    assert!(peer_key(&server).is_some());
    assert_ne!(peer_key(&client), peer_key(&server));
    // 256 KiB each way at once, each side shutting down its write half: EOF arrives cleanly.
    exchange(client, server).await;
}

#[test]
fn an_endpoint_outside_a_runtime_is_an_error_not_a_panic() {
    let err = QuicEndpoint::bind(LOOPBACK.parse().unwrap(), config().0).unwrap_err();
    assert!(matches!(err, TransportError::Bind { .. }), "{err:?}");
    assert!(chain(&err).contains("tokio runtime"), "{}", chain(&err));
}

#[tokio::test]
async fn builtin_connect_to_a_port_nobody_serves_fails_in_time() {
    let socket = std::net::UdpSocket::bind(LOOPBACK).unwrap();
    let endpoint = Endpoint::quic(socket.local_addr().unwrap());
    let err = rpc_transport::connect(&endpoint, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            TransportError::Timeout { .. } | TransportError::Connect { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_dropped_connection_is_read_to_its_end_by_the_peer() {
    let (server_config, _) = config();
    let mut server = endpoint(server_config);
    let client = endpoint(config().0);
    let mut to_server = client.connect(server.local_addr().unwrap()).await.unwrap();
    to_server.write_all(b"last words").await.unwrap();
    drop(to_server);
    drop(client);
    let mut from_client = server.accept().await.unwrap();
    let mut all = Vec::new();
    from_client.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"last words");
}

#[tokio::test]
async fn a_client_that_pins_the_server_key_connects_and_a_wrong_pin_is_refused() {
    let (server_config, server_key) = config();
    let mut server = endpoint(server_config);
    let addr = server.local_addr().unwrap();

    let (client_config, client_key) = config();
    let client = endpoint(client_config.peer(PeerAuth::pinned(server_key)));
    let mut to_server = client.connect(addr).await.unwrap();
    assert_eq!(peer_key(&to_server), Some(server_key));
    let mut from_client = server.accept().await.unwrap();
    assert_eq!(peer_key(&from_client), Some(client_key));
    echo_once(&mut to_server, &mut from_client, b"pinned").await;

    let stranger = Identity::generate().unwrap().public_key();
    let wrong = endpoint(config().0.peer(PeerAuth::Pinned(vec![stranger])));
    let err = wrong.connect(addr).await.unwrap_err();
    let text = chain(&err);
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert!(text.contains("not among the 1 pinned key(s)"), "{text}");
    assert!(text.contains(&hex(&server_key)), "{text}");

    // The same endpoint reaches the right server when told to expect its key.
    let mut again = wrong
        .connect_with(addr, &PeerAuth::pinned(server_key))
        .await
        .unwrap();
    let mut from_again = server.accept().await.unwrap();
    echo_once(&mut again, &mut from_again, b"connect_with").await;
}

/// A connector made from another for a second device: the same socket, its own pinned key.
#[tokio::test]
async fn a_connector_to_another_device_pins_that_devices_key() {
    let (a_config, a_key) = config();
    let mut a = endpoint(a_config);
    let (b_config, b_key) = config();
    let mut b = endpoint(b_config);
    let (client_config, _) = config();
    let client = endpoint(client_config);
    let template = client.connector(a.local_addr().unwrap());

    let to_b = template
        .to(b.local_addr().unwrap(), &PeerAuth::pinned(b_key))
        .unwrap();
    assert_eq!(to_b.remote(), b.local_addr().unwrap());
    let (mut to_b, mut from_client) = tokio::join!(to_b.connect(), b.accept());
    let (to_b, from_client) = (to_b.as_mut().unwrap(), from_client.as_mut().unwrap());
    assert_eq!(peer_key(to_b), Some(b_key));
    // From the template's socket.
    assert_eq!(
        from_client.peer().socket_addr(),
        Some(client.local_addr().unwrap())
    );
    echo_once(to_b, from_client, b"to b").await;

    // Pinned to a's key, b is refused.
    let wrong = template
        .to(b.local_addr().unwrap(), &PeerAuth::pinned(a_key))
        .unwrap();
    let err = wrong.connect().await.unwrap_err();
    assert!(chain(&err).contains("pinned"), "{err:?}");
    let right = template
        .to(a.local_addr().unwrap(), &PeerAuth::pinned(a_key))
        .unwrap();
    let (to_a, from_client) = tokio::join!(right.connect(), a.accept());
    echo_once(&mut to_a.unwrap(), &mut from_client.unwrap(), b"to a").await;
}

#[tokio::test]
async fn a_server_that_pins_client_keys_refuses_other_clients() {
    let (good_config, good_key) = config();
    let (server_config, _) = config();
    let mut server = endpoint(server_config.peer(PeerAuth::pinned(good_key)));
    let addr = server.local_addr().unwrap();

    // A client with another key: the server refuses it during the handshake. The client learns
    // it when connecting or on its first read, with the server's reason.
    let stranger = endpoint(config().0);
    let refused = async {
        let mut connection = stranger.connect(addr).await?;
        let mut buf = [0; 1];
        connection.read_exact(&mut buf).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let err = tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("the refusal arrives promptly")
        .expect_err("a client with an unpinned key is refused");
    let text = chain(err.as_ref());
    assert!(text.contains("not among the 1 pinned key(s)"), "{text}");

    // The refused client never reached `accept`: the next connection accepted is the good one.
    let good = endpoint(good_config);
    let mut to_server = good.connect(addr).await.unwrap();
    to_server.write_all(b"ok").await.unwrap();
    let mut from_good = tokio::time::timeout(Duration::from_secs(5), server.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(peer_key(&from_good), Some(good_key));
    let mut buf = [0; 2];
    from_good.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ok");
}

#[tokio::test]
async fn a_client_without_a_key_is_refused_when_the_server_requires_one() {
    let (server_config, _) = config();
    let server = endpoint(server_config.require_client_key(true));
    // Builtin clients present an ephemeral key, so build one that presents none: a bare quinn
    // client is the only kind that can.
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        keyless_client(server.local_addr().unwrap()),
    )
    .await
    .expect("the refusal arrives promptly")
    .expect_err("a keyless client is refused");
    assert!(err.contains("peer sent no certificates"), "{err}");
}

/// Connects without a client certificate and reads once; the error text if either fails.
async fn keyless_client(addr: SocketAddr) -> Result<(), String> {
    #[derive(Debug)]
    struct AcceptAny;
    impl rustls_danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls_danger::ServerCertVerified, rustls::Error> {
            Ok(rustls_danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls_danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls_danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls_danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls_danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            vec![rustls::SignatureScheme::ED25519]
        }
    }
    use rustls::client::danger as rustls_danger;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
    tls.alpn_protocols = vec![rpc_transport::quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::Endpoint::client(LOOPBACK.parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connection = client
        .connect(addr, "localhost")
        .unwrap()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| format!("{e:?}"))?;
    send.write_all(b"DRQ\x01")
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut buf = [0; 1];
    recv.read(&mut buf).await.map_err(|e| format!("{e:?}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_at_once_from_one_socket() {
    const CONNECTIONS: usize = 40;
    let (server_config, _) = config();
    let mut server = endpoint(server_config);
    let addr = server.local_addr().unwrap();
    let client = Arc::new(endpoint(config().0));
    let client_addr = client.local_addr().unwrap();

    let server_task = tokio::spawn(async move {
        let mut echoes = Vec::new();
        for _ in 0..CONNECTIONS {
            let connection = server.accept().await.unwrap();
            // Every connection left from the client's one socket.
            assert!(
                matches!(connection.peer(), PeerAddr::Quic { addr, .. } if *addr == client_addr),
                "{:?}",
                connection.peer()
            );
            echoes.push(tokio::spawn(async move {
                let (mut read, mut write) = connection.into_split();
                tokio::io::copy(&mut read, &mut write).await.unwrap();
                write.shutdown().await.unwrap();
            }));
        }
        for echo in echoes {
            echo.await.unwrap();
        }
    });

    let connector = client.connector(addr);
    let mut calls = Vec::new();
    for n in 0..CONNECTIONS {
        let connector = connector.clone();
        calls.push(tokio::spawn(async move {
            let connection = connector.connect().await.unwrap();
            let (mut read, mut write) = connection.into_split();
            let message = support::pattern(n as u8, 10_000 + n);
            write.write_all(&message).await.unwrap();
            write.shutdown().await.unwrap();
            let mut back = Vec::new();
            read.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, message, "connection {n}");
        }));
    }
    for call in calls {
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .unwrap()
            .unwrap();
    }
    server_task.await.unwrap();
    assert_eq!(connector.describe(), Endpoint::quic(addr).to_string());
}

#[tokio::test]
async fn the_endpoint_is_an_acceptor_naming_its_real_port() {
    let (server_config, _) = config();
    let server = endpoint(server_config);
    let addr = server.local_addr().unwrap();
    let mut acceptor: Box<dyn Acceptor> = Box::new(server);
    assert_eq!(acceptor.local_endpoint(), Endpoint::quic(addr));
    let client = endpoint(config().0);
    let connector: Box<dyn Connector> = Box::new(client.connector(addr));
    let (to_server, from_client) = tokio::join!(connector.connect(), acceptor.accept());
    exchange(to_server.unwrap(), from_client.unwrap()).await;
}

/// Forwards datagrams between one client and `server` until aborted: then the peers on either
/// side stop hearing from each other, as when a network path dies.
async fn relay(server: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = UdpSocket::bind(LOOPBACK).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut client = None;
        let mut buf = vec![0; 65_536];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await.unwrap();
            let to = if from == server {
                match client {
                    Some(client) => client,
                    None => continue,
                }
            } else {
                client = Some(from);
                server
            };
            let _ = socket.send_to(&buf[..len], to).await;
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_vanished_peer_is_an_error_within_the_idle_timeout() {
    const IDLE: Duration = Duration::from_millis(1000);
    let short = |config: QuicConfig| {
        config
            .idle_timeout(IDLE)
            .keep_alive_interval(Some(Duration::from_millis(200)))
    };
    let mut server = endpoint(short(config().0));
    let (relay_addr, relay_task) = relay(server.local_addr().unwrap()).await;
    let client = endpoint(short(config().0));
    let mut to_server = client.connect(relay_addr).await.unwrap();
    to_server.write_all(b"hi").await.unwrap();
    let mut from_client = server.accept().await.unwrap();
    let mut buf = [0; 2];
    from_client.read_exact(&mut buf).await.unwrap();

    // Quiet for longer than the idle timeout: keep-alives hold the connection open.
    tokio::time::sleep(IDLE * 2).await;
    echo_once(&mut to_server, &mut from_client, b"still here").await;

    relay_task.abort();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), to_server.read(&mut buf))
        .await
        .expect("the read fails rather than hangs")
        .expect_err("the peer is gone");
    let waited = started.elapsed();
    assert!(waited >= IDLE / 2, "failed after {waited:?}: {err}");
    assert!(waited < IDLE * 3, "failed after {waited:?}: {err}");
    assert!(chain(&err).contains("timed out"), "{err}");
    // The server's side fails the same way.
    let err = tokio::time::timeout(Duration::from_secs(5), from_client.read(&mut buf))
        .await
        .expect("the read fails rather than hangs");
    assert!(err.is_err(), "{err:?}");
}

#[tokio::test]
async fn garbage_datagrams_leave_connections_alone() {
    let (server_config, _) = config();
    let mut server = endpoint(server_config);
    let addr = server.local_addr().unwrap();
    let client = endpoint(config().0);
    let mut to_server = client.connect(addr).await.unwrap();
    to_server.write_all(b"x").await.unwrap();
    let mut from_client = server.accept().await.unwrap();
    let mut one = [0; 1];
    from_client.read_exact(&mut one).await.unwrap();

    let noise = UdpSocket::bind(LOOPBACK).await.unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for n in 0..500usize {
        let len = [1, 20, 1200, 1500][n % 4];
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        // Long-header Initial-looking packets as well as random short-header ones.
        let mut datagram = datagram;
        if n % 2 == 0 {
            datagram[0] |= 0xc0;
        }
        noise.send_to(&datagram, addr).await.unwrap();
        noise
            .send_to(&datagram, client.local_addr().unwrap())
            .await
            .unwrap();
    }

    echo_once(&mut to_server, &mut from_client, b"unharmed").await;
    // And the server still accepts.
    let mut second = client.connect(addr).await.unwrap();
    second.write_all(b"y").await.unwrap();
    let mut from_second = server.accept().await.unwrap();
    from_second.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"y");
}

fn hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// An endpoint with datagrams: what is not QUIC goes to `Datagrams`, what it sends leaves from
/// the endpoint's port, and QUIC carries on beside it.
#[tokio::test]
async fn datagrams_that_are_not_quic_share_the_socket_with_quic() {
    let (server_config, server_key) = config();
    let (mut server, mut datagrams) =
        QuicEndpoint::bind_with_datagrams(LOOPBACK.parse().unwrap(), server_config).unwrap();
    let addr = server.local_addr().unwrap();
    assert_eq!(datagrams.local_addr().unwrap(), addr);

    // In: a datagram that starts as STUN does.
    let other = UdpSocket::bind(LOOPBACK).await.unwrap();
    other
        .send_to(&[0x00, 0x01, 0, 0, 1, 2], addr)
        .await
        .unwrap();
    let (got, from) = tokio::time::timeout(Duration::from_secs(5), datagrams.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.as_slice(), from),
        (&[0x00, 0x01, 0, 0, 1, 2][..], other.local_addr().unwrap())
    );

    // Out: from the endpoint's own port.
    datagrams
        .send_to(b"\x01probe", other.local_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0; 64];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), other.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((&buf[..len], from), (&b"\x01probe"[..], addr));

    // QUIC beside it, with junk arriving all along.
    let junk = tokio::spawn(async move {
        for n in 0..200u32 {
            let _ = other.send_to(&[0x02, n as u8], addr).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let client = endpoint(config().0.peer(PeerAuth::pinned(server_key)));
    let (to_server, from_client) = tokio::join!(client.connect(addr), server.accept());
    echo_once(
        &mut to_server.unwrap(),
        &mut from_client.unwrap(),
        b"beside datagrams",
    )
    .await;
    junk.await.unwrap();
    let mut diverted = 0;
    while tokio::time::timeout(Duration::from_millis(200), datagrams.recv())
        .await
        .is_ok_and(|d| d.is_some())
    {
        diverted += 1;
    }
    assert!(
        diverted > 100,
        "only {diverted} of 200 datagrams came through"
    );
}
