//! A real PostgreSQL server for tests: a new cluster made with `initdb` in a temporary directory,
//! started with `pg_ctl` on a free loopback port, stopped (`pg_ctl stop -m immediate`) and
//! removed on drop.
//!
//! Needs Debian's `postgresql` (its programs are in `/usr/lib/postgresql/<version>/bin`), which
//! `scripts/system-packages.sh` installs. Without it the tests fail: they never skip silently.
//! `initdb` and `postgres` refuse to run as root, so as root the cluster belongs to the
//! `postgres` user the package creates, and its programs run as that user (`runuser`).

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long the server gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL cluster whose superuser `postgres` needs no password from loopback.
#[derive(Debug)]
pub struct PgServer {
    bin: PathBuf,
    dir: TempDir,
    port: u16,
    /// Whether its programs run as the `postgres` user (the tests run as root).
    as_postgres: bool,
    running: bool,
}

impl PgServer {
    /// Makes a cluster and starts it on a free port.
    ///
    /// # Panics
    ///
    /// If PostgreSQL is not installed, or does not start.
    pub fn start() -> PgServer {
        Self::start_on(free_port())
    }

    /// Makes a cluster and starts it on `port`, a free port chosen beforehand (to start the
    /// database where a program already expects it).
    pub fn start_on(port: u16) -> PgServer {
        let bin = find_bin_dir();
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("chat-postgres-")
            .tempdir()
            .expect("create a temporary directory for PostgreSQL");
        if as_postgres {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "chown postgres: {}: {status}",
                dir.path().display()
            );
        }
        let mut server = PgServer {
            bin,
            dir,
            port,
            as_postgres,
            running: false,
        };
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        server.start_again();
        server
    }

    /// The URL of database `db` (as the superuser).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name`.
    pub async fn create_database(&self, name: &str) {
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test PostgreSQL");
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create a database");
        drop(client);
        let _ = connection.await;
    }

    /// Stops the server at once, as a crash would (the cluster stays).
    pub fn stop(&mut self) {
        if self.running {
            self.running = false;
            let data = self.data();
            self.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-m".as_ref(),
                    "immediate".as_ref(),
                    "-w".as_ref(),
                    "stop".as_ref(),
                ],
            );
        }
    }

    /// Starts the cluster (again) on its port, and waits until it accepts connections.
    pub fn start_again(&mut self) {
        let data = self.data();
        let log = self.dir.path().join("postgres.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "30".as_ref(),
                "start".as_ref(),
            ],
        );
        self.running = true;
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL does not accept connections on {address}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when root) and checks that it succeeds.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("failed to run {}: {e}", path.display()));
        assert!(
            output.status.success(),
            "{program} failed with {}:\n{}{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        );
        output
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data();
            let mut command = if self.as_postgres {
                let mut command = Command::new("runuser");
                command
                    .args(["-u", "postgres", "--"])
                    .arg(self.bin.join("pg_ctl"));
                command
            } else {
                Command::new(self.bin.join("pg_ctl"))
            };
            // Already stopped is fine; the temporary directory is removed after this.
            let _ = command
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn find_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL store's tests need PostgreSQL's initdb and pg_ctl in \
             /usr/lib/postgresql/<version>/bin; install them with `scripts/system-packages.sh` \
             (Debian's `postgresql` package)"
        ),
    }
}

/// Whether the tests run as root (then PostgreSQL must run as another user).
fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("`id -u` runs");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}
