//! Helpers shared by the tests that run the programs as processes, which include this file by
//! its path.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus};
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
