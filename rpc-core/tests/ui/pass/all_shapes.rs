//! Every method shape, with the lints a library would turn on: the generated items are
//! documented, debuggable and warning-free.

#![deny(warnings, missing_docs, missing_debug_implementations, unreachable_pub)]

use rpc_core::{CallContext, Client, RpcError, RpcStream, ServerStream, Service};
use serde::{Deserialize, Serialize};

/// An application error.
#[derive(Debug, Serialize, Deserialize)]
pub enum MathError {
    /// Division by zero.
    DivideByZero,
}

/// A service with every method shape.
#[rpc_core::service(name = "demo.Greeter", version = "1.0")]
pub trait Greeter {
    /// Says hello.
    async fn hello(&self, name: String) -> String;
    /// Divides.
    async fn divide(&self, a: i32, b: i32) -> Result<i32, MathError>;
    /// Who calls.
    async fn whoami(&self, ctx: CallContext) -> String;
    /// Logs a line.
    #[rpc(oneway)]
    async fn log(&self, line: String);
    /// Reads a key.
    #[rpc(idempotent)]
    async fn get(&self, key: String) -> Option<String>;
    /// Counts up.
    #[rpc(name = "count_up", idempotent)]
    async fn count(&self, n: u32) -> ServerStream<u32>;
    /// Nothing in, nothing out.
    async fn ping(&self);
    /// Explicit unit.
    async fn unit(&self) -> ();
    /// Context and arguments.
    async fn ctx_and_args(&self, ctx: CallContext, a: u8, b: Vec<String>) -> (u8, usize);
}

struct Impl;

impl Greeter for Impl {
    async fn hello(&self, name: String) -> String {
        name
    }
    async fn divide(&self, a: i32, b: i32) -> Result<i32, MathError> {
        a.checked_div(b).ok_or(MathError::DivideByZero)
    }
    async fn whoami(&self, ctx: CallContext) -> String {
        ctx.method().to_owned()
    }
    async fn log(&self, _line: String) {}
    async fn get(&self, _key: String) -> Option<String> {
        None
    }
    async fn count(&self, n: u32) -> ServerStream<u32> {
        ServerStream::iter(0..n)
    }
    async fn ping(&self) {}
    async fn unit(&self) {}
    // An implementation may declare its arguments `mut`.
    async fn ctx_and_args(&self, _ctx: CallContext, a: u8, mut b: Vec<String>) -> (u8, usize) {
        b.push(String::new());
        (a, b.len())
    }
}

fn assert_send<T: Send>(_: &T) {}

/// The client's signatures, checked by the compiler; never run.
#[allow(dead_code)]
async fn client_signatures(client: GreeterClient) -> Result<(), RpcError> {
    let hello = client.hello("x".to_owned());
    assert_send(&hello);
    let _: String = hello.await?;
    let _: Result<i32, RpcError<MathError>> = client.divide(1, 2).await;
    let _: String = client.whoami().await?;
    let _: () = client.log("line".to_owned()).await?;
    let _: Option<String> = client.get("k".to_owned()).await?;
    let _: RpcStream<u32> = client.count(3).await?;
    let _: () = client.ping().await?;
    let _: () = client.unit().await?;
    let _: (u8, usize) = client.ctx_and_args(1, vec![]).await?;
    let _: &Client = client.caller();
    let _copy: GreeterClient = client.with_timeout(std::time::Duration::from_secs(1));
    let _copy = client.with_options(rpc_core::CallOptions::default());
    let _copy = client
        .with_metadata("k", "v")
        .map_err(|e| RpcError::Internal(e.to_string()))?;
    Ok(())
}

fn main() {
    let server = GreeterServer::new(Impl);
    assert_eq!(server.name(), "demo.Greeter");
    assert_eq!(server.version(), "1.0");
    let names: Vec<_> = server.methods().iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        [
            "hello",
            "divide",
            "whoami",
            "log",
            "get",
            "count_up",
            "ping",
            "unit",
            "ctx_and_args"
        ]
    );
    assert!(server.methods()[5].idempotent);
    assert_eq!(GreeterClient::<Client>::SERVICE, "demo.Greeter");
    assert_eq!(GreeterClient::<Client>::VERSION, "1.0");
    let _ = client_signatures;
}
