//! `tls://` and `wss://`: round trips over real sockets, certificates checked both ways, and
//! the mistakes people make (an untrusted certificate, a plain client at a TLS port, a missing
//! client certificate) failing with errors that say so.

#![cfg(all(feature = "tls", feature = "ws"))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "support/certs.rs"]
mod certs;
mod support;

use std::io;
use std::time::Duration;

use certs::TestCa;
use rpc_transport::tls::{ClientTls, ServerTls};
use rpc_transport::{
    Endpoint, Listener, PeerAddr, TransportError, connect, connect_tls, listen, listen_tls,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(5);

/// An error with its sources, as `anyhow`'s `{:#}` shows it.
fn full(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn server_tls(ca: &TestCa) -> ServerTls {
    let leaf = ca.server(&["localhost", "127.0.0.1"]);
    ServerTls::from_pem(leaf.cert.as_bytes(), leaf.key.as_bytes()).unwrap()
}

fn client_tls(ca: &TestCa) -> ClientTls {
    ClientTls::with_ca_pem(ca.pem().as_bytes()).unwrap()
}

async fn accept(listener: &mut Listener) -> rpc_transport::Connection {
    tokio::time::timeout(TIMEOUT, listener.accept())
        .await
        .expect("no connection accepted")
        .unwrap()
}

fn cert_of(peer: &PeerAddr) -> Option<&[u8]> {
    match peer {
        PeerAddr::Tls { cert, .. } | PeerAddr::Wss { cert, .. } => cert.as_deref(),
        other => panic!("not a TLS peer: {other:?}"),
    }
}

#[tokio::test]
async fn tls_carries_bytes_both_ways_and_names_the_peers() {
    let ca = TestCa::new("tls test CA");
    let mut listener = listen_tls(&"tls://127.0.0.1:0".parse().unwrap(), &server_tls(&ca))
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();
    let Endpoint::Tls { port, .. } = endpoint else {
        panic!("{endpoint:?}")
    };
    assert_ne!(port, 0);

    // By address and by name: the certificate names both.
    for host in ["127.0.0.1", "localhost"] {
        let endpoint: Endpoint = format!("tls://{host}:{port}").parse().unwrap();
        let tls = client_tls(&ca);
        let (client, server) =
            tokio::join!(connect_tls(&endpoint, TIMEOUT, &tls), accept(&mut listener));
        let client = client.unwrap();
        assert!(
            cert_of(client.peer()).is_some(),
            "the client sees the server's certificate"
        );
        assert_eq!(
            cert_of(server.peer()),
            None,
            "no client certificate was asked for"
        );
        assert!(server.peer().to_string().starts_with("tls://127.0.0.1:"));
        support::exchange(client, server).await;
    }
}

#[tokio::test]
async fn wss_carries_bytes_both_ways() {
    let ca = TestCa::new("wss test CA");
    let mut listener = listen_tls(&"wss://127.0.0.1:0/rpc".parse().unwrap(), &server_tls(&ca))
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();
    assert!(matches!(&endpoint, Endpoint::Wss { path, .. } if path == "/rpc"));
    let tls = client_tls(&ca);
    let (client, server) =
        tokio::join!(connect_tls(&endpoint, TIMEOUT, &tls), accept(&mut listener));
    let client = client.unwrap();
    assert!(matches!(client.peer(), PeerAddr::Wss { cert: Some(_), .. }));
    assert!(server.peer().to_string().starts_with("wss://127.0.0.1:"));
    support::exchange_then_close(client, server).await;
}

/// A peer that exits drops its TCP connection without TLS's `close_notify`; the other side
/// reads the bytes that came and then a clean end of stream, not an error.
#[tokio::test]
async fn a_peer_that_leaves_without_close_notify_ends_the_stream_cleanly() {
    let ca = TestCa::new("eof test CA");
    for url in ["tls://127.0.0.1:0", "wss://127.0.0.1:0/rpc"] {
        let mut listener = listen_tls(&url.parse().unwrap(), &server_tls(&ca))
            .await
            .unwrap();
        let endpoint = listener.local_endpoint();
        let tls = client_tls(&ca);
        let (client, server) =
            tokio::join!(connect_tls(&endpoint, TIMEOUT, &tls), accept(&mut listener));
        let (mut client_read, mut client_write) = client.unwrap().into_split();
        let (mut server_read, mut server_write) = server.into_split();
        // The client reads everything the server sent (its session tickets too), so that its
        // leaving is a plain FIN rather than a reset for unread bytes.
        server_write.write_all(b"hello").await.unwrap();
        server_write.flush().await.unwrap();
        let mut hello = [0; 5];
        client_read.read_exact(&mut hello).await.unwrap();
        client_write.write_all(b"last words").await.unwrap();
        client_write.flush().await.unwrap();
        // Dropped, not shut down: no close_notify (nor WebSocket close) goes out.
        drop(client_write);
        drop(client_read);

        let mut received = Vec::new();
        let read = tokio::time::timeout(TIMEOUT, server_read.read_to_end(&mut received))
            .await
            .expect("the end of the stream never came");
        assert!(read.is_ok(), "{url}: {read:?}");
        assert_eq!(received, b"last words", "{url}");
    }
}

#[tokio::test]
async fn an_untrusted_or_misnamed_certificate_is_refused() {
    let ca = TestCa::new("private CA");
    let other_ca = TestCa::new("another CA");
    let listener = listen_tls(&"tls://127.0.0.1:0".parse().unwrap(), &server_tls(&ca))
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();

    // The default client trusts public CAs only.
    let error = connect(&endpoint, TIMEOUT).await.unwrap_err();
    let message = full(&error);
    assert!(
        message.contains("invalid peer certificate")
            && message.contains("give the CA that signed it"),
        "{}",
        message
    );
    // Another CA's trust does not help either.
    let error = connect_tls(&endpoint, TIMEOUT, &client_tls(&other_ca))
        .await
        .unwrap_err();
    assert!(full(&error).contains("UnknownIssuer"), "{}", full(&error));

    // A certificate for other names: refused for this one, accepted when the client checks the
    // name the certificate holds.
    let misnamed = ca.server(&["chat.example"]);
    let mut listener = listen_tls(
        &"tls://127.0.0.1:0".parse().unwrap(),
        &ServerTls::from_pem(misnamed.cert.as_bytes(), misnamed.key.as_bytes()).unwrap(),
    )
    .await
    .unwrap();
    let endpoint = listener.local_endpoint();
    let error = connect_tls(&endpoint, TIMEOUT, &client_tls(&ca))
        .await
        .unwrap_err();
    assert!(
        full(&error).contains("does not name the host connected to"),
        "{}",
        full(&error)
    );
    let renamed = client_tls(&ca).server_name("chat.example").unwrap();
    let (client, server) = tokio::join!(
        connect_tls(&endpoint, TIMEOUT, &renamed),
        accept(&mut listener)
    );
    support::exchange(client.unwrap(), server).await;
}

#[tokio::test]
async fn client_certificates_required_or_optional() {
    let ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let required = server_tls(&ca)
        .client_ca_pem(client_ca.pem().as_bytes(), "client CA", true)
        .unwrap();
    let mut listener = listen_tls(&"tls://127.0.0.1:0".parse().unwrap(), &required)
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();

    // Without a certificate: in TLS 1.3 the client finishes first, then the server's refusal
    // arrives as the connection's first read.
    match connect_tls(&endpoint, TIMEOUT, &client_tls(&ca)).await {
        Err(error) => assert!(full(&error).contains("TLS handshake"), "{}", full(&error)),
        Ok(mut client) => {
            let mut buf = [0; 1];
            let read = tokio::time::timeout(TIMEOUT, client.read(&mut buf))
                .await
                .expect("the refusal never came");
            let error = read.expect_err("a client without a certificate was let in");
            assert!(
                full(&error).contains("CertificateRequired"),
                "{}",
                full(&error)
            );
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), listener.accept())
            .await
            .is_err(),
        "the refused connection never reaches accept()"
    );

    // With one from another CA: refused too.
    let stranger = TestCa::new("stranger CA").client("mallory");
    let tls = client_tls(&ca)
        .identity_pem(stranger.cert.as_bytes(), stranger.key.as_bytes())
        .unwrap();
    if let Ok(mut client) = connect_tls(&endpoint, TIMEOUT, &tls).await {
        let mut buf = [0; 1];
        let read = tokio::time::timeout(TIMEOUT, client.read(&mut buf)).await;
        assert!(matches!(read, Ok(Err(_)) | Ok(Ok(0))), "{read:?}");
    }

    // With one the server trusts: in, and the server sees it.
    let alice = client_ca.client("alice");
    let tls = client_tls(&ca)
        .identity_pem(alice.cert.as_bytes(), alice.key.as_bytes())
        .unwrap();
    let (client, server) =
        tokio::join!(connect_tls(&endpoint, TIMEOUT, &tls), accept(&mut listener));
    let presented = cert_of(server.peer())
        .expect("the client's certificate")
        .to_vec();
    let expected = rustls_pki_types_der(&alice.cert);
    assert_eq!(presented, expected);
    support::exchange(client.unwrap(), server).await;

    // Optional: a client without a certificate is let in, and seen without one.
    let optional = server_tls(&ca)
        .client_ca_pem(client_ca.pem().as_bytes(), "client CA", false)
        .unwrap();
    let mut listener = listen_tls(&"tls://127.0.0.1:0".parse().unwrap(), &optional)
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();
    let tls = client_tls(&ca);
    let (client, server) =
        tokio::join!(connect_tls(&endpoint, TIMEOUT, &tls), accept(&mut listener));
    assert_eq!(cert_of(server.peer()), None);
    support::exchange(client.unwrap(), server).await;
}

/// The DER of the first certificate in `pem`.
fn rustls_pki_types_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn plain_and_tls_peers_that_meet_fail_clearly() {
    let ca = TestCa::new("mix CA");
    let mut tls_listener = listen_tls(&"tls://127.0.0.1:0".parse().unwrap(), &server_tls(&ca))
        .await
        .unwrap();
    let Endpoint::Tls { port, .. } = tls_listener.local_endpoint() else {
        unreachable!()
    };

    // A plain client at a TLS port: what comes back is a TLS alert, which the frame decoder
    // names (see rpc-codec), and the connection never reaches accept().
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain
        .write_all(b"\xda\xb0\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut answer))
        .await
        .expect("the server never answered")
        .unwrap();
    assert_eq!(&answer[..2], b"\x15\x03", "a TLS alert record: {answer:?}");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), tls_listener.accept())
            .await
            .is_err()
    );

    // A TLS client at a plain port: the plain server closes on the client hello (as rpc-core's
    // reader does on bad magic), and the client says what that likely means.
    let mut plain_listener = listen(&"tcp://127.0.0.1:0".parse().unwrap()).await.unwrap();
    let Endpoint::Tcp { port, .. } = plain_listener.local_endpoint() else {
        unreachable!()
    };
    let closer = tokio::spawn(async move {
        let mut connection = plain_listener.accept().await.unwrap();
        let mut hello = [0; 2];
        connection.read_exact(&mut hello).await.unwrap();
        hello
    });
    let endpoint: Endpoint = format!("tls://127.0.0.1:{port}").parse().unwrap();
    let error = connect_tls(&endpoint, TIMEOUT, &client_tls(&ca))
        .await
        .unwrap_err();
    assert_eq!(&closer.await.unwrap(), b"\x16\x03", "a TLS client hello");
    let message = full(&error);
    assert!(
        message.contains("TLS handshake with 127.0.0.1:")
            && message.contains("it may not speak TLS"),
        "{}",
        message
    );

    // tls:// at a wss:// port: the ALPN protocols differ, and the handshake says so.
    let mut wss_listener = listen_tls(&"wss://127.0.0.1:0/".parse().unwrap(), &server_tls(&ca))
        .await
        .unwrap();
    let Endpoint::Wss { port, .. } = wss_listener.local_endpoint() else {
        unreachable!()
    };
    let endpoint: Endpoint = format!("tls://127.0.0.1:{port}").parse().unwrap();
    let error = connect_tls(&endpoint, TIMEOUT, &client_tls(&ca))
        .await
        .unwrap_err();
    assert!(
        full(&error).contains("wss:// and tls:// do not mix"),
        "{}",
        full(&error)
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), wss_listener.accept())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_tls_endpoint_without_a_certificate_does_not_listen() {
    for text in ["tls://127.0.0.1:0", "wss://127.0.0.1:0/"] {
        let error = listen(&text.parse().unwrap()).await.unwrap_err();
        let TransportError::Bind { source, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::InvalidInput);
        assert!(
            full(&error).contains("needs a certificate and key"),
            "{}",
            full(&error)
        );
    }
}

#[tokio::test]
async fn certificate_files_are_read_and_bad_ones_named() {
    let ca = TestCa::new("file CA");
    let leaf = ca.server(&["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca_file) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, &leaf.cert).unwrap();
    std::fs::write(&key, &leaf.key).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let server = ServerTls::from_pem_files(&cert, &key).unwrap();
    let client = ClientTls::with_ca_pem_file(&ca_file).unwrap();
    let mut listener = listen_tls(&"tls://127.0.0.1:0".parse().unwrap(), &server)
        .await
        .unwrap();
    let endpoint = listener.local_endpoint();
    let (client, server) = tokio::join!(
        connect_tls(&endpoint, TIMEOUT, &client),
        accept(&mut listener)
    );
    support::exchange(client.unwrap(), server).await;

    // The key file given as the certificate, and a missing file: each error names the file.
    let error = ServerTls::from_pem_files(&key, &key)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("{}: no CERTIFICATE section", key.display())),
        "{error}"
    );
    let missing = dir.path().join("missing.pem");
    let error = ClientTls::with_ca_pem_file(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("cannot read {}", missing.display())),
        "{error}"
    );
}
