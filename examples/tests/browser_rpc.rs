//! The JavaScript client (`web/rpc.js`) in headless Chromium, against a real `hello-server`
//! listening on TCP and WebSocket at once: calls, errors, streams longer than their credit,
//! deadlines, cancel, and a server restart that the client rides out by reconnecting.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../chat/server/tests/support/mod.rs"]
mod support;

#[path = "../../chat/server/tests/support/browser.rs"]
mod browser;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use browser::{Browser, WebFiles};
use serde_json::json;
use support::{Killed, free_port};

/// Starts `hello-server` on a TCP and a WebSocket endpoint.
fn start_server(tcp: &str, ws: &str) -> Killed {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hello-server"))
        .args(["--listen", tcp, "--listen", ws])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("serving hello.Greeter"), "{line}");
    Killed(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_calls_streams_cancels_and_reconnects_in_chromium() {
    let tcp = format!("tcp://127.0.0.1:{}", free_port());
    let ws_port = free_port();
    let ws = format!("ws://127.0.0.1:{ws_port}/");
    let server = start_server(&tcp, &ws);
    let Some(browser) = Browser::start().await else {
        return;
    };
    let files = WebFiles::serve().await;
    browser.open(&files.url("test/rpc.html")).await;

    let results = browser
        .run("return await rpcTests.run(arguments[0]);", vec![json!(ws)])
        .await;
    assert_eq!(results["framing"], "ok", "{results}");
    assert_eq!(results["hello"], "hello, browser, from hello-server");
    assert_eq!(results["add"], 42);
    assert_eq!(results["concurrent"], 200);
    assert_eq!(results["streamed"], 3000);
    assert_eq!(results["afterCancel"], 2);
    // Opened once, never lost, closed at the end.
    assert_eq!(results["states"], json!(["open", "closed"]), "{results}");

    // The same server also answers on TCP at the same time: the hello client over TCP.
    let out = Command::new(env!("CARGO_BIN_EXE_hello-client"))
        .args(["--endpoint", &tcp, "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A restart of the server: the client reconnects by itself and calls again.
    let first = browser
        .run(
            "return await rpcTests.beforeRestart(arguments[0]);",
            vec![json!(ws)],
        )
        .await;
    assert_eq!(first, 21);
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _server = start_server(&tcp, &ws);
    let after = browser
        .run("return await rpcTests.afterRestart();", vec![])
        .await;
    assert_eq!(after["result"], 42, "{after}");
    let states: Vec<&str> = after["states"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(states.first(), Some(&"open"), "{after}");
    assert!(states.contains(&"reconnecting"), "{after}");
    assert_eq!(states.last(), Some(&"closed"), "{after}");
    assert_eq!(
        states.iter().filter(|s| **s == "open").count(),
        2,
        "{after}"
    );
    browser.close().await;
}
