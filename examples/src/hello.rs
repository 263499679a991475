//! The smallest service: a greeting, a call that can fail with a typed error, and a stream.

use rpc_core::ServerStream;
use serde::{Deserialize, Serialize};

/// Why [`Greeter::add`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// The sum does not fit in an `i64`.
    Overflow,
}

/// Greets people and does a little arithmetic.
#[rpc_core::service(name = "hello.Greeter", version = "1")]
pub trait Greeter {
    /// Returns a greeting for `name`.
    async fn hello(&self, name: String) -> String;
    /// Adds two numbers, failing on overflow.
    #[rpc(idempotent)]
    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError>;
    /// Counts down from `from` to 1, one item at a time.
    async fn countdown(&self, from: u32) -> ServerStream<u32>;
}

/// The greeter the examples serve; `name` tells instances apart.
#[derive(Debug, Clone)]
pub struct HelloService {
    /// Shown in greetings, so a caller can see which instance answered.
    pub name: String,
}

impl Greeter for HelloService {
    async fn hello(&self, name: String) -> String {
        format!("hello, {name}, from {}", self.name)
    }

    async fn add(&self, a: i64, b: i64) -> Result<i64, MathError> {
        a.checked_add(b).ok_or(MathError::Overflow)
    }

    async fn countdown(&self, from: u32) -> ServerStream<u32> {
        ServerStream::iter((1..=from).rev())
    }
}
