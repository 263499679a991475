//! Every server program drains and exits cleanly when stopped by SIGTERM, as it does on Ctrl-C:
//! each runs as a separate process on 127.0.0.1, answers a real call, is sent the signal with
//! `kill`, and must exit by itself with success and say that it drained and stopped. (The
//! `chat-server` program's test is in its own crate, `chat-server`.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../chat/server/tests/support/mod.rs"]
mod support;

use std::time::Duration;

use examples::hello::GreeterClient;
use futures::StreamExt;
use rpc_core::Client;
use rpc_registry::{Instance, Registry, RemoteRegistry, ServiceKey};
use support::{Running, free_port};

/// Enough items that the server must still be sending most of them after the signal: a stream
/// runs at most a credit window (a few hundred items) ahead of what the client has read.
const COUNT: u32 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_server_on_sigterm_finishes_a_stream_in_flight_and_exits_cleanly() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Running::start(
        env!("CARGO_BIN_EXE_hello-server"),
        &["--listen", &endpoint],
        "serving hello.Greeter",
    );
    let greeter = GreeterClient::new(Client::connect(&endpoint).await.unwrap());
    assert_eq!(
        greeter.hello("tester".into()).await.unwrap(),
        "hello, tester, from hello-server"
    );
    let mut countdown = greeter.countdown(COUNT).await.unwrap();
    assert_eq!(countdown.next().await.unwrap().unwrap(), COUNT);

    server.process.signal("TERM");
    // The call in flight goes on to its end.
    let mut expected = COUNT - 1;
    while let Some(item) = tokio::time::timeout(Running::WAIT, countdown.next())
        .await
        .expect("the stream goes on after SIGTERM")
    {
        assert_eq!(item.expect("no error in the stream"), expected);
        expected -= 1;
    }
    assert_eq!(expected, 0, "the stream ended early");
    drop(countdown);
    server.expect_clean_exit("TERM", "hello-server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_server_on_ctrl_c_drains_and_exits_cleanly() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Running::start(
        env!("CARGO_BIN_EXE_hello-server"),
        &["--listen", &endpoint],
        "serving hello.Greeter",
    );
    let greeter = GreeterClient::new(Client::connect(&endpoint).await.unwrap());
    assert_eq!(greeter.add(2, 40).await.unwrap(), 42);
    server.stop_with("INT", "hello-server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_server_on_sigterm_drains_and_exits_cleanly() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Running::start(
        env!("CARGO_BIN_EXE_registry-server"),
        &["--listen", &endpoint],
        "listening on",
    );
    let registry = RemoteRegistry::connect_lazy(&endpoint).unwrap();
    let key = ServiceKey::new("test.Echo");
    let lease = registry.grant(Duration::from_secs(60)).await.unwrap();
    registry
        .register(Instance::new(key.clone(), "tcp://127.0.0.1:9"), lease.id)
        .await
        .unwrap();
    assert_eq!(registry.discover(&key).await.unwrap().instances.len(), 1);
    server.stop_with("TERM", "registry-server");
}
