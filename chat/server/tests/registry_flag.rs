//! `chat-server --registry etcd://...`: a malformed list of members is refused, a build without
//! the `etcd` feature says how to get one, and one with it gives up on an etcd that does not
//! answer within `--registry-wait-secs`, naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Killed, free_port};

/// Runs the server with `--registry registry` (and `extra` flags); expects it to fail at
/// startup and returns what it said on stderr.
fn fails_with(registry: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--listen", "tcp://127.0.0.1:0", "--registry", registry])
        .arg("--data-dir")
        .arg(dir.path())
        .args(extra)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let status = child.exit_status(Duration::from_secs(20));
    let mut said = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut said).unwrap();
    assert!(!status.success(), "--registry {registry}: {said}");
    said
}

#[test]
fn an_etcd_registry_that_is_not_a_list_of_host_port_is_refused() {
    for registry in ["etcd://", "etcd://localhost", "etcd://127.0.0.1:2379,:2380"] {
        let said = fails_with(registry, &[]);
        assert!(
            said.contains("is not host:port") && said.contains("etcd://host:port"),
            "{registry}: {said}"
        );
    }
}

#[cfg(not(feature = "etcd"))]
#[test]
fn a_build_without_etcd_says_how_to_get_one() {
    let said = fails_with(&format!("etcd://127.0.0.1:{}", free_port()), &[]);
    assert!(
        said.contains("built without etcd") && said.contains("--features etcd"),
        "{said}"
    );
}

#[cfg(feature = "etcd")]
#[test]
fn an_etcd_that_does_not_answer_is_given_up_on_after_the_wait() {
    let registry = format!("etcd://127.0.0.1:{}", free_port());
    let said = fails_with(&registry, &["--registry-wait-secs", "1"]);
    assert!(
        said.contains(&format!("etcd at http://{}", &registry["etcd://".len()..]))
            && said.contains("did not answer within 1 s (--registry-wait-secs)"),
        "{said}"
    );
}
