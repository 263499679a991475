//! `rpcctl ping` and the registry commands, against servers in this process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{Server, ServerHandle};
use rpc_registry::{
    Instance, MemoryRegistry, Registry, RegistryApiServer, RegistryService, ServiceKey,
};
use support::{rpcctl, serve};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_measures_the_connection_and_round_trips() {
    let (server, endpoint, _) = serve(true).await;
    let out = rpcctl(&["ping", "-c", "2", "--interval", "10ms", &endpoint]).await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 3, "{out:?}");
    assert!(
        lines[0].starts_with(&format!("connected to {endpoint} in ")),
        "{out:?}"
    );
    assert!(
        lines[1].starts_with(&format!("pong 1 from {endpoint}: ")),
        "{out:?}"
    );
    assert!(
        lines[2].starts_with(&format!("pong 2 from {endpoint}: ")),
        "{out:?}"
    );
    assert!(lines[2].ends_with(" ms"));
    server.shutdown(Duration::from_secs(1)).await;

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = rpcctl(&["ping", &format!("tcp://127.0.0.1:{port}")]).await;
    assert!(
        out.failed(1)
            .starts_with("rpcctl: unreachable: tcp://127.0.0.1:"),
        "{out:?}"
    );
}

/// A registry server in this process, its endpoint, and the registry behind it.
async fn registry_server() -> (ServerHandle, String, Arc<MemoryRegistry>) {
    let registry = Arc::new(MemoryRegistry::new());
    let server = Server::builder()
        .service(RegistryApiServer::new(RegistryService::new(
            registry.clone(),
        )))
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().to_string();
    (server, endpoint, registry)
}

async fn register(registry: &MemoryRegistry, endpoint: &str, weight: u32) {
    let key = ServiceKey::new("test.Greeter").with_version("1");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    let instance = Instance::new(key, endpoint).with_weight(weight);
    registry.register(instance, lease.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_ls_lists_a_services_instances_and_call_finds_one() {
    let (greeter, endpoint, _) = serve(true).await;
    let (server, registry_endpoint, registry) = registry_server().await;
    register(&registry, &endpoint, 100).await;
    // An instance that takes no traffic is listed but never called.
    register(&registry, "tcp://127.0.0.1:9", 0).await;

    let out = rpcctl(&[
        "registry",
        "ls",
        &registry_endpoint,
        "test.Greeter",
        "--version",
        "1",
    ])
    .await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert!(
        lines[0].starts_with("test.Greeter version 1 at revision "),
        "{out:?}"
    );
    assert!(lines[0].ends_with(": 2 instances"), "{out:?}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["ID", "ENDPOINT", "WEIGHT", "HEALTHY", "METADATA"]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [&endpoint, &endpoint, "100", "yes"]),
        "{out:?}"
    );

    let out = rpcctl(&[
        "registry",
        "ls",
        "--json",
        &registry_endpoint,
        "test.Greeter",
        "--version",
        "1",
    ])
    .await;
    let snapshot: rpc_registry::Snapshot = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(snapshot.instances.len(), 2);

    let out = rpcctl(&["registry", "ls", &registry_endpoint, "test.Greeter"]).await;
    assert!(out.ok().ends_with(": 0 instances\n"), "{out:?}");

    for _ in 0..5 {
        let out = rpcctl(&[
            "call",
            "--registry",
            &registry_endpoint,
            "--version",
            "1",
            "test.Greeter/add",
            "[1, 2]",
        ])
        .await;
        assert_eq!(out.ok(), "3\n");
    }
    let out = rpcctl(&[
        "call",
        "--registry",
        &registry_endpoint,
        "test.Greeter/add",
        "[1, 2]",
    ])
    .await;
    assert!(
        out.failed(1)
            .contains("has no healthy instance of \"test.Greeter\" version \"\""),
        "{out:?}"
    );
    let out = rpcctl(&[
        "call",
        "--registry",
        &registry_endpoint,
        &endpoint,
        "test.Greeter/add",
        "[1, 2]",
    ])
    .await;
    assert_eq!(
        out.failed(2),
        "rpcctl: with --registry give <SERVICE/METHOD> [ARGS], without an endpoint"
    );
    server.shutdown(Duration::from_secs(1)).await;
    greeter.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_watch_prints_the_snapshot_then_changes() {
    let (server, registry_endpoint, registry) = registry_server().await;
    register(&registry, "tcp://127.0.0.1:7001", 100).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpcctl"))
        .args([
            "registry",
            "watch",
            &registry_endpoint,
            "test.Greeter",
            "--version",
            "1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line within 10 s")
            .unwrap()
            .expect("rpcctl still running")
    };
    assert!(next().await.ends_with(": 1 instance"));
    assert!(next().await.starts_with("ID"));
    assert!(next().await.starts_with("tcp://127.0.0.1:7001"));
    register(&registry, "tcp://127.0.0.1:7002", 50).await;
    let change = next().await;
    assert!(change.starts_with("revision "), "{change}");
    assert!(
        change.ends_with(": insert tcp://127.0.0.1:7002 tcp://127.0.0.1:7002 weight 50"),
        "{change}"
    );
    child.kill().await.unwrap();
    server.shutdown(Duration::from_secs(1)).await;
}
