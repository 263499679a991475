//! `rpcctl call` against a server in this process: unary, application errors, streams,
//! one-way calls, metadata, deadlines and the errors of the command line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::time::Duration;

use support::{rpcctl, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_answers_are_printed_as_indented_json() {
    let (server, endpoint, _) = serve(true).await;
    let out = rpcctl(&["call", &endpoint, "test.Greeter/hello", "\"world\""]).await;
    assert_eq!(out.ok(), "\"hello, world\"\n");
    let out = rpcctl(&["call", &endpoint, "test.Greeter/add", "[2, 40]"]).await;
    assert_eq!(out.ok(), "42\n");
    // A struct's fields in the order the server wrote them, not sorted.
    let out = rpcctl(&["call", &endpoint, "test.Greeter/card"]).await;
    assert_eq!(out.ok(), "{\n  \"zeta\": 1,\n  \"alpha\": \"a\"\n}\n");
    let out = rpcctl(&["call", &endpoint, "test.Greeter/card", "[]"]).await;
    assert_eq!(out.ok(), "{\n  \"zeta\": 1,\n  \"alpha\": \"a\"\n}\n");
    // One argument that is an array is wrapped.
    let out = rpcctl(&["call", &endpoint, "test.Greeter/first", "[[7, 8]]"]).await;
    assert_eq!(out.ok(), "7\n");
    // The version given explicitly, and the endpoint without its scheme.
    let bare = endpoint.trim_start_matches("tcp://");
    let out = rpcctl(&[
        "call",
        "--version",
        "1",
        bare,
        "test.Greeter/add",
        "[-1, -2]",
    ])
    .await;
    assert_eq!(out.ok(), "-3\n");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_errors_go_to_stderr_with_their_detail() {
    let (server, endpoint, _) = serve(true).await;
    let max = i64::MAX.to_string();
    let out = rpcctl(&[
        "call",
        &endpoint,
        "test.Greeter/add",
        &format!("[{max}, 1]"),
    ])
    .await;
    assert_eq!(
        out.failed(1),
        "rpcctl: test.Greeter/add: application error (status 7): Overflow (detail: \"Overflow\")"
    );
    assert_eq!(out.stdout, "");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_items_are_json_lines() {
    let (server, endpoint, _) = serve(true).await;
    let out = rpcctl(&["call", &endpoint, "test.Greeter/countdown", "3"]).await;
    assert_eq!(out.ok(), "3\n2\n1\n");
    // Items before an error are printed; the error ends the command.
    let out = rpcctl(&["call", &endpoint, "test.Greeter/breaks"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert_eq!(out.stdout, "1\n");
    assert_eq!(
        out.stderr,
        "rpcctl: test.Greeter/breaks: internal server error: the disk caught fire\n"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reflection_the_kind_comes_from_the_flags() {
    let (server, endpoint, _) = serve(false).await;
    let out = rpcctl(&[
        "call",
        "--version",
        "1",
        "--stream",
        &endpoint,
        "test.Greeter/countdown",
        "2",
    ])
    .await;
    assert_eq!(out.ok(), "2\n1\n");
    let out = rpcctl(&[
        "call",
        "--version",
        "1",
        &endpoint,
        "test.Greeter/hello",
        "\"x\"",
    ])
    .await;
    assert_eq!(out.ok(), "\"hello, x\"\n");
    // Without reflection the server itself says the service is unknown.
    let out = rpcctl(&["call", &endpoint, "test.Greeter/hello", "\"x\""]).await;
    assert!(
        out.failed(1)
            .starts_with("rpcctl: test.Greeter/hello: service not found"),
        "{out:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_calls_reach_the_server() {
    let (server, endpoint, state) = serve(true).await;
    let out = rpcctl(&["call", &endpoint, "test.Greeter/note", "\"remember\""]).await;
    assert_eq!(out.ok(), "");
    assert_eq!(state.wait_note().await.as_deref(), Some("remember"));
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_and_deadlines_travel_with_the_call() {
    let (server, endpoint, _) = serve(true).await;
    let out = rpcctl(&[
        "call",
        "-m",
        "user=ann",
        "--metadata",
        "x=1",
        &endpoint,
        "test.Greeter/whoami",
    ])
    .await;
    assert_eq!(out.ok(), "\"ann\"\n");
    let out = rpcctl(&["call", &endpoint, "test.Greeter/whoami"]).await;
    assert_eq!(out.ok(), "null\n");
    let out = rpcctl(&[
        "call",
        "--deadline",
        "100ms",
        &endpoint,
        "test.Greeter/sleep",
        "3000",
    ])
    .await;
    // The client's timer or the server's answer (status 4, with the server's words) may come
    // first; either way the call failed on its deadline.
    let failed = out.failed(1);
    assert!(
        failed.starts_with("rpcctl: test.Greeter/sleep: deadline exceeded"),
        "{failed}"
    );
    let out = rpcctl(&[
        "call",
        "--deadline",
        "5s",
        &endpoint,
        "test.Greeter/sleep",
        "1",
    ])
    .await;
    assert_eq!(out.ok(), "1\n");
    let out = rpcctl(&[
        "call",
        "--metadata",
        "novalue",
        &endpoint,
        "test.Greeter/whoami",
    ])
    .await;
    assert_eq!(
        out.failed(2),
        "rpcctl: metadata \"novalue\" is not KEY=VALUE"
    );
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_are_one_line_errors() {
    let (server, endpoint, _) = serve(true).await;
    let out = rpcctl(&["call", &endpoint, "test.Nope/hello", "1"]).await;
    assert_eq!(
        out.failed(1),
        "rpcctl: unknown service \"test.Nope\"; the server serves rpc.Reflection version 1, \
         test.Greeter version 1"
    );
    let out = rpcctl(&["call", &endpoint, "test.Greeter/hullo", "1"]).await;
    assert_eq!(
        out.failed(1),
        "rpcctl: unknown method \"hullo\": test.Greeter has hello, add, countdown, note, card, \
         whoami, sleep, breaks, first"
    );
    let out = rpcctl(&[
        "call",
        "--version",
        "2",
        &endpoint,
        "test.Greeter/hello",
        "1",
    ])
    .await;
    assert!(
        out.failed(1)
            .starts_with("rpcctl: unknown service \"test.Greeter\" version \"2\""),
        "{out:?}"
    );
    let out = rpcctl(&["call", &endpoint, "test.Greeter/add", "[1,\n 2,]"]).await;
    assert_eq!(
        out.failed(2),
        "rpcctl: invalid JSON arguments: expected value at line 2 column 4"
    );
    let out = rpcctl(&["call", &endpoint, "test.Greeter/add", "[1]"]).await;
    assert_eq!(
        out.failed(2),
        "rpcctl: test.Greeter/add takes 2 arguments (a: i64, b: i64) -> Result<i64, MathError>, \
         got 1"
    );
    // Arguments of the wrong type: the server's answer.
    let out = rpcctl(&["call", &endpoint, "test.Greeter/add", "[\"a\", 1]"]).await;
    assert!(
        out.failed(1)
            .starts_with("rpcctl: test.Greeter/add: bad request (status 1): arguments:"),
        "{out:?}"
    );
    let out = rpcctl(&["call", &endpoint, "hello"]).await;
    assert_eq!(
        out.failed(2),
        "rpcctl: \"hello\" is not SERVICE/METHOD, e.g. hello.Greeter/hello"
    );
    let out = rpcctl(&["call", "nope://", "test.Greeter/hello", "1"]).await;
    assert!(
        out.failed(2)
            .starts_with("rpcctl: invalid endpoint \"nope://\""),
        "{out:?}"
    );
    server.shutdown(Duration::from_secs(1)).await;
}
