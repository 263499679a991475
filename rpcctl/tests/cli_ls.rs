//! `rpcctl ls` against a server in this process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use rpc_core::ServiceDescriptor;
use support::{rpcctl, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_services_methods_kinds_and_signatures() {
    let (server, endpoint, _) = serve(true).await;
    let out = rpcctl(&["ls", &endpoint]).await;
    assert_eq!(
        out.ok(),
        "\
rpc.Reflection version 1
  services   unary    idempotent  () -> Vec<ServiceDescriptor>
test.Greeter version 1
  hello      unary                (name: String) -> String
  add        unary    idempotent  (a: i64, b: i64) -> Result<i64, MathError>
  countdown  stream               (from: u32) -> stream u32
  note       one-way              (text: String)
  card       unary                () -> Card
  whoami     unary                () -> Option<String>
  sleep      unary                (ms: u64) -> u64
  breaks     stream               () -> stream u32
  first      unary                (values: Vec<u32>) -> Option<u32>
"
    );
    let one = rpcctl(&["ls", &endpoint, "test.Greeter"]).await;
    assert!(one.ok().starts_with("test.Greeter version 1\n"), "{one:?}");
    assert!(!one.ok().contains("rpc.Reflection"));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_the_reflection_services_answer() {
    let (server, endpoint, _) = serve(true).await;
    let out = rpcctl(&["ls", "--json", &endpoint]).await;
    let listed: Vec<ServiceDescriptor> = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(listed.len(), 2);
    let greeter = &listed[1];
    let add = greeter.method("add").unwrap();
    assert_eq!(add.kind, "unary");
    let signature = add.signature.as_ref().unwrap();
    assert_eq!(signature.error.as_deref(), Some("MathError"));
    assert_eq!(signature.args[1].name, "b");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn says_so_when_reflection_is_off_or_the_service_unknown() {
    let (server, endpoint, _) = serve(false).await;
    let out = rpcctl(&["ls", &endpoint]).await;
    assert!(
        out.failed(1)
            .contains("does not serve the reflection service"),
        "{out:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;

    let (server, endpoint, _) = serve(true).await;
    let out = rpcctl(&["ls", &endpoint, "test.Nope"]).await;
    assert_eq!(
        out.failed(1),
        format!(
            "rpcctl: unknown service \"test.Nope\"; {endpoint} serves rpc.Reflection version 1, \
             test.Greeter version 1"
        )
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_unreachable_endpoints_are_one_line_errors() {
    let out = rpcctl(&["ls", "bogus://x"]).await;
    assert!(
        out.failed(2)
            .starts_with("rpcctl: invalid endpoint \"bogus://x\""),
        "{out:?}"
    );
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = rpcctl(&["ls", &format!("127.0.0.1:{port}")]).await;
    assert!(
        out.failed(1)
            .starts_with("rpcctl: unreachable: could not connect to tcp://127.0.0.1:"),
        "{out:?}"
    );
}

#[tokio::test]
async fn prints_completions() {
    let out = rpcctl(&["completions", "bash"]).await;
    let script = out.ok();
    assert!(script.contains("_rpcctl()"), "{script}");
    assert!(script.contains("registry"));
}

/// A `tls://` server with a self-signed certificate: refused without `--tls-ca`, listed with it,
/// and pinged with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoints_trust_the_given_ca() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("rpcctl-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("cert.pem");
    std::fs::write(&ca, cert.pem()).unwrap();
    let server = rpc_core::Server::builder()
        .service(support::GreeterServer::new(
            support::Imp(Default::default()),
        ))
        .tls(
            rpc_core::tls::ServerTls::from_pem(
                cert.pem().as_bytes(),
                key.serialize_pem().as_bytes(),
            )
            .unwrap(),
        )
        .listen("tls://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().to_string();
    assert!(endpoint.starts_with("tls://"), "{endpoint}");
    let ca = ca.to_str().unwrap();

    let untrusted = rpcctl(&["ls", &endpoint]).await;
    assert!(untrusted.failed(1).contains("certificate"), "{untrusted:?}");
    let listed = rpcctl(&["ls", "--tls-ca", ca, &endpoint]).await;
    assert!(listed.ok().contains("test.Greeter version 1"), "{listed:?}");
    let called = rpcctl(&[
        "call",
        "--tls-ca",
        ca,
        &endpoint,
        "test.Greeter/hello",
        "\"tls\"",
    ])
    .await;
    assert_eq!(called.ok().trim(), r#""hello, tls""#);
    let pinged = rpcctl(&["ping", "--tls-ca", ca, "--count", "1", &endpoint]).await;
    assert!(pinged.ok().contains("connected to tls://"), "{pinged:?}");
    let missing = rpcctl(&["ls", "--tls-ca", "/nonexistent/ca.pem", &endpoint]).await;
    assert!(missing.failed(2).contains("--tls-ca"), "{missing:?}");

    server.shutdown(Duration::from_secs(1)).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
