//! Calls over TLS (`tls://`) and WebSocket over TLS (`wss://`), beside plain TCP on one
//! server, and what a client at the wrong kind of port is told.
#![cfg(all(feature = "tls", feature = "ws"))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use futures::StreamExt;
use rpc_core::tls::{ClientTls, ServerTls};
use rpc_core::{
    CallOptions, Caller, Client, Endpoint, Format, RpcError, RpcStream, Server, StartError,
};
use serde_bytes::ByteBuf;
use support::{Echo, target};

/// A self-signed certificate for 127.0.0.1 and localhost, as an operator would make one with
/// `openssl req -x509`, and the client settings that trust it.
fn self_signed() -> (ServerTls, ClientTls) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (
        ServerTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap(),
        ClientTls::with_ca_pem(cert.pem().as_bytes()).unwrap(),
    )
}

/// The error with its sources.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tls_and_wss_beside_tcp() {
    support::init_tracing();
    let (server_tls, client_tls) = self_signed();
    let server = Server::builder()
        .service(Echo::default())
        .tls(server_tls)
        .listen("tcp://127.0.0.1:0")
        .listen("tls://127.0.0.1:0")
        .listen("wss://127.0.0.1:0/rpc")
        .start()
        .await
        .unwrap();
    let endpoints = server.local_endpoints().to_vec();
    let schemes: Vec<_> = endpoints.iter().map(Endpoint::scheme).collect();
    assert_eq!(schemes, ["tcp", "tls", "wss"]);

    for endpoint in &endpoints {
        for format in [Format::MessagePack, Format::Postcard, Format::Json] {
            let client = Client::builder()
                .format(format.clone())
                .tls(client_tls.clone())
                .connect(endpoint)
                .await
                .unwrap();
            let payload = ByteBuf::from(vec![7u8; 100_000]);
            let back: ByteBuf = client
                .call(&target("echo"), &(payload.clone(),))
                .await
                .unwrap();
            assert_eq!(back, payload, "{endpoint} {format:?}");
            let raw = client
                .call_stream(&target("count"), &CallOptions::new(), &(1000u64,))
                .await
                .unwrap();
            let mut stream = RpcStream::<u64>::new(raw);
            let mut expected = 0u64;
            while let Some(item) = stream.next().await {
                assert_eq!(item.unwrap(), expected);
                expected += 1;
            }
            assert_eq!(expected, 1000, "{endpoint} {format:?}");
        }
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_at_the_wrong_kind_of_port_is_told_so() {
    support::init_tracing();
    let (server_tls, client_tls) = self_signed();
    let server = Server::builder()
        .service(Echo::default())
        .tls(server_tls)
        .listen("tcp://127.0.0.1:0")
        .listen("tls://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let [
        Endpoint::Tcp { port: tcp_port, .. },
        Endpoint::Tls { port: tls_port, .. },
    ] = server.local_endpoints()
    else {
        panic!("{:?}", server.local_endpoints())
    };

    // A plain client at the TLS port: TCP connects, and the first call fails with what came
    // back, a TLS alert.
    let plain = Client::builder()
        .timeout(Duration::from_secs(5))
        .connect(format!("tcp://127.0.0.1:{tls_port}"))
        .await;
    let error = match plain {
        Err(error) => error,
        Ok(client) => client
            .call::<_, ByteBuf>(&target("echo"), &(ByteBuf::from(vec![1u8]),))
            .await
            .unwrap_err(),
    };
    let message = full(&error);
    assert!(
        message.contains("the peer speaks TLS; use a tls:// endpoint"),
        "{message}"
    );

    // A TLS client at the plain port: the handshake fails, and says why it likely did.
    let error = Client::builder()
        .tls(client_tls.clone())
        .connect(format!("tls://127.0.0.1:{tcp_port}"))
        .await
        .unwrap_err();
    assert!(matches!(error, RpcError::Connect { .. }), "{error:?}");
    let message = full(&error);
    assert!(
        message.contains("TLS handshake with 127.0.0.1:") && message.contains("not speak TLS"),
        "{message}"
    );

    // A client that does not trust the certificate.
    let error = Client::connect(format!("tls://127.0.0.1:{tls_port}"))
        .await
        .unwrap_err();
    let message = full(&error);
    assert!(message.contains("give the CA that signed it"), "{message}");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_tls_endpoint_without_certificates_does_not_start() {
    let error = Server::builder()
        .service(Echo::default())
        .listen("tls://127.0.0.1:0")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(error, StartError::Transport(_)), "{error:?}");
    assert!(
        full(&error).contains("needs a certificate and key"),
        "{}",
        full(&error)
    );
}
