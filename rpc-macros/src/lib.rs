//! The `#[service]` attribute of the framework: a trait of `async fn`s becomes a service the
//! server can route calls to and a typed client to call it with.
//!
//! Use it through `rpc_core::service` (re-exported there, with a runnable example in
//! `rpc_core`'s documentation); the generated code refers to `::rpc_core` and to the serde it
//! re-exports, so a crate using the macro needs no other dependency.
//!
//! # What it generates
//!
//! For `pub trait Greeter` (every item has the trait's visibility):
//!
//! - **The trait**, with `Send + Sync + 'static` added as supertraits and each
//!   `async fn m(&self, ..) -> T` turned into `fn m(&self, ..) -> impl Future<Output = T> + Send`.
//!   Implementations still write `async fn`; the futures they return must be `Send`, because
//!   the server runs calls on a multi-threaded runtime. Attributes and doc comments are kept.
//! - **`GreeterServer<T>`**, which implements `rpc_core::Service` for any `T: Greeter`:
//!   `GreeterServer::new(implementation)` or `GreeterServer::from_arc(arc)` is what
//!   `ServerBuilder::service` takes. Each call decodes the arguments, calls the method and
//!   encodes what it returns in the format the caller used. Its `methods()` describe each
//!   method (`rpc_core::MethodInfo`): wire name, kind, idempotence and signature, the argument
//!   names and the argument, result and error types as written in the trait (whitespace
//!   normalized), which the server's reflection service lists. It implements
//!   `rpc_core::NamedService`, whose name and version are the ones `Service` routes and
//!   registers by.
//! - **`GreeterClient<C = rpc_core::Client>`**, generic over any `rpc_core::Caller`: `new(caller)`,
//!   the per-call settings `with_options`, `with_timeout` and `with_metadata` (each returns a
//!   configured copy), `caller()`, the constants `SERVICE` and `VERSION`, and one `async fn` per
//!   method with the same name and arguments, returning `Result<_, rpc_core::RpcError>`. It
//!   implements `rpc_core::NamedService` (the same name and version as the server) and
//!   `rpc_core::ServiceClient` (`from_caller`), so code that makes callers, such as
//!   `rpc_registry`'s discovery, can build it knowing only its type.
//!
//! # Options
//!
//! - `#[service(name = "demo.Greeter", version = "1.0")]`: the service's name on the wire
//!   (default: the trait's name) and version (default: none). Both are optional.
//! - `#[rpc(name = "wire_name")]` on a method: its name on the wire (default: the method's).
//! - `#[rpc(idempotent)]`: running the method twice has the effect of running it once, so a
//!   balancing caller may retry it on another instance after a connection error.
//! - `#[rpc(oneway)]`: the caller sends the request and gets no answer; the method returns `()`.
//!
//! # Method shapes
//!
//! | declared in the trait                            | client method returns                |
//! |--------------------------------------------------|--------------------------------------|
//! | `async fn m(&self, a: A, b: B) -> T`             | `Result<T, RpcError>`                |
//! | `async fn m(&self) -> Result<T, E>`              | `Result<T, RpcError<E>>`             |
//! | `async fn m(&self) -> ServerStream<T>`           | `Result<RpcStream<T>, RpcError>`     |
//! | `#[rpc(oneway)] async fn m(&self, a: A)`         | `Result<(), RpcError>`, once sent    |
//! | `async fn m(&self, ctx: CallContext, a: A) -> T` | `Result<T, RpcError>`, without `ctx` |
//!
//! - The arguments travel as one tuple in declaration order: `()`, `(a,)`, `(a, b)`, and so on.
//!   They must be owned `Serialize + DeserializeOwned` types, at most 16 of them.
//! - A return type whose last path segment is `Result` with two type arguments carries an
//!   application error `E` (`Serialize + DeserializeOwned + Debug`); the caller gets it back
//!   as `RpcError::Application(e)`. Any other type is a plain value.
//! - A return type whose last path segment is `ServerStream` streams its items.
//! - A first argument whose type's last path segment is `CallContext` is not sent: the server
//!   passes the call's context (metadata, deadline, peer), and the client method omits it.
//! - An argument, result or success whose type is written `Bytes`, `bytes::Bytes` or
//!   `::bytes::Bytes` is decoded as a slice of the frame it arrived in, without a copy, and
//!   from 4 KiB on is sent from its own buffer instead of being copied into the frame (with
//!   postcard and MessagePack; see `rpc_core::SharedBytes` and `rpc_core::Lend`). Another
//!   crate's type named `Bytes`
//!   must be written with its path (`other::Bytes`), or it is taken for `bytes::Bytes`.
//!
//! # Rules
//!
//! Each of these is a compile error pointing at the offending tokens; all of them are
//! reported at once, next to as much of the expansion as could still be generated:
//!
//! - the trait: no generics, `where` clause, supertraits, associated types, constants or macros,
//!   and not `unsafe`;
//! - each method: `async fn` with `&self` as receiver, no generics or `impl Trait`, no default
//!   body, no references in arguments or results, arguments named by plain identifiers (no
//!   patterns, not even `mut x`: an implementation may still declare its argument `mut`);
//! - names: `new`, `with_options`, `with_timeout`, `with_metadata`, `caller`, `from_arc`,
//!   `SERVICE`, `VERSION` and names starting with `__` are taken by the generated types (keep
//!   such a wire name with `#[rpc(name = "new")]` on a differently named method); two methods
//!   cannot share a wire name;
//! - `#[rpc(oneway)]` only on methods returning `()`, so never on a streaming method; no
//!   options other than those above.
//!
//! # Example
//!
//! ```ignore
//! use rpc_core::{CallContext, ServerStream};
//!
//! #[derive(Debug, serde::Serialize, serde::Deserialize)]
//! pub enum MathError {
//!     DivideByZero,
//! }
//!
//! #[rpc_core::service(name = "demo.Greeter", version = "1.0")]
//! pub trait Greeter {
//!     /// Says hello.
//!     async fn hello(&self, name: String) -> String;
//!     async fn divide(&self, a: i32, b: i32) -> Result<i32, MathError>;
//!     async fn whoami(&self, ctx: CallContext) -> String;
//!     #[rpc(oneway)]
//!     async fn log(&self, line: String);
//!     #[rpc(idempotent)]
//!     async fn get(&self, key: String) -> Option<String>;
//!     #[rpc(name = "count_up")]
//!     async fn count(&self, n: u32) -> ServerStream<u32>;
//! }
//!
//! // Server side: implement the trait with `async fn`s and serve `GreeterServer::new(imp)`.
//! // Client side:
//! let greeter = GreeterClient::new(rpc_core::Client::connect("tcp://127.0.0.1:7000").await?);
//! assert_eq!(greeter.hello("world".into()).await?, "hello, world");
//! let traced = greeter.with_metadata("trace-id", "42")?;
//! match traced.divide(1, 0).await {
//!     Err(rpc_core::RpcError::Application(MathError::DivideByZero)) => {}
//!     other => panic!("{other:?}"),
//! }
//! ```

mod attrs;
mod client;
mod errors;
mod expand;
mod parse;
mod server;

use proc_macro::TokenStream;

/// Turns a trait of `async fn`s into a service: the trait itself (with `Send` futures), a
/// `…Server<T>` adapter implementing `rpc_core::Service`, and a typed `…Client<C>`.
///
/// See the [crate documentation](crate) for the generated items, the options and the rules.
#[proc_macro_attribute]
pub fn service(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::service(args.into(), item.into()).into()
}
