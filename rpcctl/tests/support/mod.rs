//! A service with every method shape, served in process on 127.0.0.1, and a way to run the
//! `rpcctl` binary against it.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::{CallContext, ServerError, ServerHandle, ServerStream, Status};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    Overflow,
}

/// Fields declared out of alphabetical order, to see that the printed answer keeps them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Card {
    pub zeta: u8,
    pub alpha: String,
}

#[rpc_core::service(name = "test.Greeter", version = "1")]
pub trait Greeter {
    async fn hello(&self, name: String) -> String;
    #[rpc(idempotent)]
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn countdown(&self, from: u32) -> ServerStream<u32>;
    #[rpc(oneway)]
    async fn note(&self, text: String);
    async fn card(&self) -> Card;
    async fn whoami(&self, ctx: CallContext) -> Option<String>;
    async fn sleep(&self, ms: u64) -> u64;
    async fn breaks(&self) -> ServerStream<u32>;
    async fn first(&self, values: Vec<u32>) -> Option<u32>;
}

#[derive(Debug, Default)]
pub struct State {
    pub notes: Mutex<Vec<String>>,
    pub noted: Notify,
}

impl State {
    /// Waits up to five seconds for a note to arrive.
    pub async fn wait_note(&self) -> Option<String> {
        let wait = async {
            loop {
                let noted = self.noted.notified();
                tokio::pin!(noted);
                noted.as_mut().enable();
                if let Some(note) = self.notes.lock().unwrap().first().cloned() {
                    return note;
                }
                noted.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .ok()
    }
}

pub struct Imp(pub Arc<State>);

impl Greeter for Imp {
    async fn hello(&self, name: String) -> String {
        format!("hello, {name}")
    }
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }
    async fn countdown(&self, from: u32) -> ServerStream<u32> {
        ServerStream::iter((1..=from).rev())
    }
    async fn note(&self, text: String) {
        self.0.notes.lock().unwrap().push(text);
        self.0.noted.notify_waiters();
    }
    async fn card(&self) -> Card {
        Card {
            zeta: 1,
            alpha: "a".to_owned(),
        }
    }
    async fn whoami(&self, ctx: CallContext) -> Option<String> {
        ctx.metadata().get("user").map(str::to_owned)
    }
    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
    async fn breaks(&self) -> ServerStream<u32> {
        ServerStream::try_new(futures::stream::iter([
            Ok(1),
            Err(ServerError::new(
                Status::INTERNAL_ERROR,
                "the disk caught fire",
            )),
        ]))
    }
    async fn first(&self, values: Vec<u32>) -> Option<u32> {
        values.first().copied()
    }
}

/// A server of `test.Greeter` on 127.0.0.1 (a free port), its endpoint and its state.
pub async fn serve(reflection: bool) -> (ServerHandle, String, Arc<State>) {
    let state = Arc::new(State::default());
    let server = rpc_core::Server::builder()
        .service(GreeterServer::new(Imp(state.clone())))
        .reflection(reflection)
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().to_string();
    (server, endpoint, state)
}

/// What a run of `rpcctl` did.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts a success and returns standard output.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        assert_eq!(self.stderr, "", "{self:#?}");
        &self.stdout
    }

    /// Asserts a failure with `code`, nothing on standard output and one line on standard
    /// error, and returns that line.
    pub fn failed(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self:#?}");
        assert_eq!(self.stderr.lines().count(), 1, "{self:#?}");
        self.stderr.trim_end()
    }
}

/// Runs `rpcctl` with `args` (at most 30 seconds).
pub async fn rpcctl(args: &[&str]) -> Run {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_rpcctl"))
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("rpcctl finished within 30 s")
    .expect("rpcctl ran");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}
