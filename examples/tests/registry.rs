//! The registry example programs, as separate processes on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

#[path = "../../chat/server/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Killed, free_port};

#[test]
fn registry_demo_spreads_calls_and_survives_a_stopped_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_registry-demo"))
        .args(["--calls", "600"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("every call succeeded"), "{stdout}");
}

#[test]
fn registry_demo_works_against_a_registry_server() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", &endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Killed(server);
    assert!(line.contains("listening on"), "{line}");

    let out = Command::new(env!("CARGO_BIN_EXE_registry-demo"))
        .args(["--registry", &endpoint, "--calls", "600"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("using the registry server"), "{stdout}");
    assert!(stdout.contains("every call succeeded"), "{stdout}");
}

#[test]
fn registry_server_help_explains_backends_and_ttls() {
    let out = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--backend",
        "memory",
        "etcd",
        "--min-ttl-secs",
        "--max-ttl-secs",
        "--listen",
        "--backend-wait-secs",
        "--max-frame-bytes",
        "--max-page-len",
        "--max-page-bytes",
        "exits with status 2",
    ] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}

#[test]
fn registry_server_refuses_bad_flags_with_status_2() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--min-ttl-secs", "100", "--max-ttl-secs", "1"],
            "--min-ttl-secs (100) must not be greater than --max-ttl-secs (1)",
        ),
        (
            &["--max-frame-bytes", "65536", "--max-page-bytes", "40000"],
            "--max-page-bytes (40000) must be at most half of --max-frame-bytes (65536)",
        ),
        (&["--min-ttl-secs", "0"], "--min-ttl-secs"),
        (&["--max-frame-bytes", "1000"], "--max-frame-bytes"),
        (&["--backend-wait-secs", "100000"], "--backend-wait-secs"),
    ];
    for (flags, message) in cases {
        // Were the flags accepted, it would serve here until killed.
        let endpoint = format!("tcp://127.0.0.1:{}", free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_registry-server"))
            .args(["--listen", &endpoint])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut server = Killed(child);
        let status = server.exit_status(Duration::from_secs(30));
        let mut stderr = String::new();
        std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{flags:?}: {stderr}");
    }
}

#[test]
fn a_small_frame_limit_gets_a_fitting_page_size() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut server = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", &endpoint, "--max-frame-bytes", "65536"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Killed(server);
    assert!(line.contains("listening on"), "{line}");
}

#[cfg(feature = "etcd")]
#[path = "../../rpc-registry/tests/support/etcd_server.rs"]
mod etcd_server;

#[cfg(feature = "etcd")]
#[test]
fn registry_server_waits_for_etcd_to_come_up() {
    use std::net::SocketAddr;
    use std::sync::mpsc::channel;

    use rpc_registry::{Instance, Registry, RemoteRegistry, ServiceKey};

    let etcd_at: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_registry-server"))
        .args(["--listen", &endpoint, "--backend", "etcd"])
        .args(["--etcd-endpoint", &format!("http://{etcd_at}")])
        .args(["--backend-wait-secs", "120"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = support::lines_of(&mut child);
    let stderr = {
        let pipe = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let _server = Killed(child);

    // Nothing listens there yet: the server says it waits.
    let waiting = format!("waiting for etcd at http://{etcd_at}, retrying in");
    loop {
        let line = stderr
            .recv_timeout(Duration::from_secs(30))
            .expect("registry-server says it waits for etcd");
        if line.contains(&waiting) {
            break;
        }
    }
    let _etcd = etcd_server::EtcdServer::start_at(etcd_at);
    let ready = stdout
        .recv_timeout(Duration::from_secs(60))
        .expect("registry-server becomes ready once etcd is up");
    assert!(ready.contains("(Etcd backend) listening on"), "{ready}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = rpc_core::Client::builder()
            .connect(endpoint.as_str())
            .await
            .unwrap();
        let registry = RemoteRegistry::new(client);
        let key = ServiceKey::new("waited.Service");
        let lease = registry.grant(Duration::from_secs(30)).await.unwrap();
        let instance = Instance::new(key.clone(), "tcp://127.0.0.1:9");
        registry.register(instance.clone(), lease.id).await.unwrap();
        assert_eq!(registry.discover(&key).await.unwrap().instances, [instance]);
    });
}
