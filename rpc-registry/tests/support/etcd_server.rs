//! A real, single-member etcd for tests: started on free loopback ports in a temporary data
//! directory, killed and removed on drop.
//!
//! Needs the `etcd` binary (3.4 or later) on `PATH` or at `/usr/bin/etcd`; on Debian and Ubuntu,
//! `apt-get install etcd-server`. Without it the tests fail: they never skip silently.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long etcd gets to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running etcd, killed (and its data removed) when dropped.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    client: SocketAddr,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts etcd and waits until it serves clients.
    ///
    /// Blocking (it polls `/health` over plain HTTP), so it can be called from a sync test or at
    /// the top of a `#[tokio::test]`.
    ///
    /// # Panics
    ///
    /// If the `etcd` binary is missing, or it does not become healthy within 10 s.
    pub fn start() -> EtcdServer {
        let (client, peer) = free_ports();
        Self::start_on(client, peer)
    }

    /// Starts etcd serving clients at `client`, a free address chosen beforehand (to start etcd
    /// where a program already expects it), and waits until it serves them.
    ///
    /// # Panics
    ///
    /// As [`EtcdServer::start`], and if `client` is taken.
    pub fn start_at(client: SocketAddr) -> EtcdServer {
        let peer = loop {
            let (peer, _) = free_ports();
            if peer != client {
                break peer;
            }
        };
        Self::start_on(client, peer)
    }

    fn start_on(client: SocketAddr, peer: SocketAddr) -> EtcdServer {
        let binary = find_binary();
        let dir = tempfile::Builder::new()
            .prefix("rpc-registry-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        let client_url = format!("http://{client}");
        let peer_url = format!("http://{peer}");
        let log = File::create(dir.path().join("etcd.log")).expect("create etcd's log file");
        let child = Command::new(&binary)
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            // A subdirectory: etcd creates it with the permissions it insists on (0700).
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("test={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate the log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start {}: {e}", binary.display()));
        let mut server = EtcdServer { child, client, dir };
        server.wait_healthy();
        server
    }

    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the etcd process") {
                panic!(
                    "etcd exited with {status} while starting:\n{}",
                    self.log_tail()
                );
            }
            if healthy(self.client) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "etcd did not become healthy within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        // Already exited is fine; the temporary directory is removed after this.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `etcd` from `PATH`, else `/usr/bin/etcd`.
fn find_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("etcd"))
            .find(|candidate| candidate.is_file())
    });
    let fallback = Path::new("/usr/bin/etcd");
    match on_path {
        Some(binary) => binary,
        None if fallback.is_file() => fallback.to_path_buf(),
        None => panic!(
            "the etcd tests need the `etcd` binary (3.4 or later) on PATH or at /usr/bin/etcd; \
             install it with `apt-get install etcd-server` (Debian/Ubuntu) or from \
             https://github.com/etcd-io/etcd/releases"
        ),
    }
}

/// Two distinct free ports on 127.0.0.1. Both listeners are held until both are chosen, so the
/// ports differ; another process may still take one before etcd binds it, which then fails the
/// start loudly.
fn free_ports() -> (SocketAddr, SocketAddr) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (
        a.local_addr().expect("local address"),
        b.local_addr().expect("local address"),
    )
}

/// Whether etcd answers `GET /health` with `"health":"true"` (it does once it has a leader and
/// serves reads).
fn healthy(client: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&client, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let request = format!("GET /health HTTP/1.0\r\nHost: {client}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.") && response.contains(r#""health":"true""#)
}
