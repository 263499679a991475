//! Helpers shared by the tests that run the programs as processes: those of `chat-server`, and
//! those of `chat-client` and `examples`, which include this file by its path.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Kills the child process when the test ends, pass or fail.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Killed {
    /// Sends the child a signal by name (`TERM`, `INT`) with `kill`, as a service manager or a
    /// terminal would.
    pub fn signal(&self, name: &str) {
        let pid = self.0.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("`kill` runs");
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// Waits up to `wait` for the child to exit by itself and returns how it exited; fails the
    /// test if it is still running then (and the drop kills it).
    pub fn exit_status(&mut self, wait: Duration) -> ExitStatus {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.0.try_wait().expect("the child can be waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {wait:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Reads the child's (piped) stdout line by line on a thread until it closes, so the child can
/// print for as long as it runs without filling or losing its pipe.
pub fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs a program with arguments that must be refused at startup; returns what it said.
pub fn refused_at_startup(program: &str, args: &[&str]) -> String {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Killed(child);
    let status = child.exit_status(Duration::from_secs(10));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{program} {args:?}: {stderr}");
    stderr
}

/// The program `name` of another package of the workspace, `package`, for the tests that run
/// it: `env!("CARGO_BIN_EXE_<name>")` names only the programs of the test's own package.
///
/// Cargo puts the programs it builds in the directory above the test's own (`deps`), and builds
/// a package's programs when it builds that package's tests: test `package` in the same run
/// (`cargo test --workspace` does), or the program found is missing or out of date. Panics,
/// saying so, when it is missing.
pub fn program_of(package: &str, name: &str) -> PathBuf {
    let test = std::env::current_exe().expect("the test's own path");
    let dir = test
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let program = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        program.is_file(),
        "{} is missing: build it with `cargo build -p {package}`, or test `-p {package}` in \
         the same run",
        program.display()
    );
    program
}

/// A server program, running, to be stopped by a signal.
pub struct Running {
    pub process: Killed,
    /// Its stdout, line by line.
    pub lines: Receiver<String>,
}

impl Running {
    /// How long anything that should happen may take before the test gives up.
    pub const WAIT: Duration = Duration::from_secs(20);

    /// The servers' grace period, in seconds: longer than `WAIT`, so a server that exits within
    /// `WAIT` did so because its drain completed (its clients closed their connections after the
    /// go-away), not because the grace period ran out.
    pub const GRACE: &str = "60";

    /// Starts `bin` with `args` and waits for its first line, which must contain `ready`.
    pub fn start(bin: &str, args: &[&str], ready: &str) -> Running {
        let mut child = Command::new(bin)
            .args(args)
            .args(["--grace", Self::GRACE])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server program starts");
        let lines = lines_of(&mut child);
        let process = Killed(child);
        let line = lines
            .recv_timeout(Self::WAIT)
            .expect("the server says where it listens");
        assert!(line.contains(ready), "{line}");
        Running { process, lines }
    }

    /// Sends `signal` (`TERM` or `INT`) and expects a clean exit.
    pub fn stop_with(&mut self, signal: &str, name: &str) {
        self.process.signal(signal);
        self.expect_clean_exit(signal, name);
    }

    /// Waits for the process, sent `signal`, to exit; checks that it succeeded and said it
    /// drained and stopped.
    pub fn expect_clean_exit(&mut self, signal: &str, name: &str) {
        let status = self.process.exit_status(Self::WAIT);
        // It exited, so its stdout is closed and the reader ends after the last line.
        let said: Vec<String> = self.lines.iter().collect();
        assert!(status.success(), "{name} exited with {status}: {said:?}");
        assert!(
            said.iter()
                .any(|l| l.starts_with(&format!("SIG{signal}: draining"))),
            "{name} did not say it was draining: {said:?}"
        );
        assert_eq!(
            said.last().map(String::as_str),
            Some(format!("{name} stopped").as_str()),
            "{said:?}"
        );
    }
}

/// `GET /metrics` from a program started with `--metrics addr`: the body, after checking the
/// answer is a 200.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the metrics endpoint answers");
    stream
        .set_read_timeout(Some(Running::WAIT))
        .expect("a read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("the request is sent");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("the answer is read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_owned()
}

/// The value of the series `name` with exactly `labels` in scraped text (whose label values
/// hold no quotes or commas), if there is one.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, mut series_labels) = match series.split_once('{') {
                Some((n, rest)) => (
                    n,
                    rest.strip_suffix('}')?
                        .split(',')
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                ),
                None => (series, Vec::new()),
            };
            series_labels.retain(|l| !l.is_empty());
            series_labels.sort();
            (series_name == name && series_labels == wanted).then(|| value.parse().ok())?
        })
}
