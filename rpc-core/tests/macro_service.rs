//! `#[service]` end to end: every method shape, through the generated client and server, over
//! the memory transport, in every built-in format.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::{
    ArgInfo, CallContext, Client, Endpoint, Format, MethodInfo, MethodKind, MethodSignature,
    MethodTarget, NamedService, RpcError, Server, ServerHandle, ServerStream, Service,
    ServiceClient,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The application error of [`Greeter::divide`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MathError {
    /// The divisor was zero.
    DivideByZero,
    /// The quotient does not fit.
    Overflow {
        /// The dividend.
        a: i32,
    },
}

/// Every method shape the macro supports.
#[rpc_core::service(name = "demo.Greeter", version = "1.0")]
pub trait Greeter {
    /// Says hello.
    async fn hello(&self, name: String) -> String;
    /// Divides, failing with a typed error.
    async fn divide(&self, a: i32, b: i32) -> Result<i32, MathError>;
    /// Who is calling, from the call's metadata.
    async fn whoami(&self, ctx: CallContext) -> String;
    /// The context and wire arguments together.
    async fn tagged(&self, ctx: CallContext, suffix: String) -> String;
    /// Records a line; nobody waits for it.
    #[rpc(oneway)]
    async fn log(&self, line: String);
    /// Looks a key up.
    #[rpc(idempotent)]
    async fn get(&self, key: String) -> Option<String>;
    /// Streams `1..=n`.
    #[rpc(name = "count_up")]
    async fn count(&self, n: u32) -> ServerStream<u32>;
    /// No arguments, no result.
    async fn ping(&self);
    /// Many arguments of many types.
    #[allow(clippy::too_many_arguments)]
    async fn many(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: i64,
        f: f64,
        g: String,
        h: Vec<u8>,
    ) -> String;
    /// A keyword as a method name.
    async fn r#match(&self, pattern: String) -> bool;
    /// Answers after `ms` milliseconds.
    async fn slow(&self, ms: u64) -> u64;
}

struct Impl {
    lines: mpsc::UnboundedSender<String>,
}

impl Greeter for Impl {
    async fn hello(&self, name: String) -> String {
        format!("hello, {name}")
    }

    async fn divide(&self, a: i32, b: i32) -> Result<i32, MathError> {
        match b {
            0 => Err(MathError::DivideByZero),
            _ => a.checked_div(b).ok_or(MathError::Overflow { a }),
        }
    }

    async fn whoami(&self, ctx: CallContext) -> String {
        let user = ctx.metadata().get("user").unwrap_or("anonymous");
        format!("{}/{}: {user}", ctx.service(), ctx.method())
    }

    async fn tagged(&self, ctx: CallContext, suffix: String) -> String {
        format!("{}{suffix}", ctx.method())
    }

    async fn log(&self, line: String) {
        let _ = self.lines.send(line);
    }

    async fn get(&self, key: String) -> Option<String> {
        (key == "k").then(|| "v".to_owned())
    }

    async fn count(&self, n: u32) -> ServerStream<u32> {
        ServerStream::iter(1..=n)
    }

    async fn ping(&self) {}

    async fn many(
        &self,
        a: u8,
        b: u16,
        c: u32,
        d: u64,
        e: i64,
        f: f64,
        g: String,
        h: Vec<u8>,
    ) -> String {
        format!("{a} {b} {c} {d} {e} {f} {g} {h:?}")
    }

    async fn r#match(&self, pattern: String) -> bool {
        pattern == "yes"
    }

    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

async fn serve(name: &str) -> (ServerHandle, Endpoint, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let endpoint: Endpoint = format!("mem://macro-service-{name}").parse().unwrap();
    let server = Server::builder()
        .service(GreeterServer::from_arc(Arc::new(Impl { lines: tx })))
        .listen(endpoint.clone())
        .start()
        .await
        .expect("server starts");
    (server, endpoint, rx)
}

async fn connect(endpoint: &Endpoint, format: Format) -> GreeterClient {
    let client = Client::builder()
        .format(format)
        .connect(endpoint)
        .await
        .expect("client connects");
    GreeterClient::new(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_shape_in_every_format() {
    let (server, endpoint, mut lines) = serve("shapes").await;
    for format in [Format::MessagePack, Format::Postcard, Format::Json] {
        let name = format.name().to_owned();
        let client = connect(&endpoint, format).await;

        assert_eq!(
            client.hello("world".into()).await.unwrap(),
            "hello, world",
            "{name}"
        );

        assert_eq!(client.divide(7, 2).await, Ok(3), "{name}");
        assert_eq!(
            client.divide(1, 0).await,
            Err(RpcError::Application(MathError::DivideByZero)),
            "{name}"
        );
        assert_eq!(
            client.divide(i32::MIN, -1).await,
            Err(RpcError::Application(MathError::Overflow { a: i32::MIN })),
            "{name}"
        );

        assert_eq!(
            client.whoami().await.unwrap(),
            "demo.Greeter/whoami: anonymous",
            "{name}"
        );
        let alice = client.with_metadata("user", "alice").unwrap();
        assert_eq!(
            alice.whoami().await.unwrap(),
            "demo.Greeter/whoami: alice",
            "{name}"
        );
        assert_eq!(
            client.tagged("!".into()).await.unwrap(),
            "tagged!",
            "{name}"
        );

        client.log(format!("line in {name}")).await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(5), lines.recv())
            .await
            .expect("the one-way call reaches the handler")
            .unwrap();
        assert_eq!(line, format!("line in {name}"));

        assert_eq!(
            client.get("k".into()).await.unwrap(),
            Some("v".into()),
            "{name}"
        );
        assert_eq!(client.get("x".into()).await.unwrap(), None, "{name}");

        let items: Vec<u32> = client
            .count(5)
            .await
            .unwrap()
            .map(|item| item.unwrap())
            .collect()
            .await;
        assert_eq!(items, [1, 2, 3, 4, 5], "{name}");
        let empty = client.count(0).await.unwrap().collect::<Vec<_>>().await;
        assert!(empty.is_empty(), "{name}");

        client.ping().await.unwrap();
        let many = client
            .many(1, 2, 3, 4, -5, 6.5, "g".into(), vec![8, 9])
            .await
            .unwrap();
        assert_eq!(many, "1 2 3 4 -5 6.5 g [8, 9]", "{name}");
        assert!(client.r#match("yes".into()).await.unwrap(), "{name}");
        assert!(!client.r#match("no".into()).await.unwrap(), "{name}");
    }
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_options_apply_per_copy() {
    let (server, endpoint, _lines) = serve("options").await;
    let client = connect(&endpoint, Format::default()).await;

    let hurried = client.with_timeout(Duration::from_millis(50));
    assert_eq!(hurried.slow(10_000).await, Err(RpcError::DeadlineExceeded));
    // The original keeps the client's default timeout.
    assert_eq!(client.slow(1).await, Ok(1));

    let bob = client.with_metadata("user", "bob").unwrap();
    assert_eq!(bob.whoami().await.unwrap(), "demo.Greeter/whoami: bob");
    assert_eq!(
        client.whoami().await.unwrap(),
        "demo.Greeter/whoami: anonymous"
    );
    assert!(client.with_metadata("", "empty key").is_err());

    assert_eq!(GreeterClient::<Client>::SERVICE, "demo.Greeter");
    assert_eq!(GreeterClient::<Client>::VERSION, "1.0");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_describes_the_service() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = GreeterServer::new(Impl { lines: tx });
    assert_eq!(server.name(), "demo.Greeter");
    assert_eq!(server.version(), "1.0");
    let methods = server.methods();
    let info = |name: &str| *methods.iter().find(|m| m.name == name).expect(name);
    assert_eq!(methods.len(), 11);
    assert_eq!(
        info("hello"),
        MethodInfo {
            name: "hello",
            kind: MethodKind::Unary,
            idempotent: false,
            signature: Some(MethodSignature {
                args: &[ArgInfo {
                    name: "name",
                    ty: "String"
                }],
                result: "String",
                error: None,
            }),
        }
    );
    let signature = |name: &str| info(name).signature.expect(name);
    let divide = signature("divide");
    let args: Vec<_> = divide.args.iter().map(|a| (a.name, a.ty)).collect();
    assert_eq!(args, [("a", "i32"), ("b", "i32")]);
    assert_eq!((divide.result, divide.error), ("i32", Some("MathError")));
    // The context does not travel, so it is no argument; one-way and unit results are `()`.
    assert!(signature("whoami").args.is_empty());
    assert_eq!(signature("tagged").args.len(), 1);
    assert_eq!(signature("log").result, "()");
    assert_eq!(signature("ping").result, "()");
    // A stream's result is its item.
    assert_eq!(signature("count_up").result, "u32");
    assert_eq!(signature("get").result, "Option<String>");
    assert_eq!(signature("many").args[7].ty, "Vec<u8>");
    assert_eq!(signature("match").args[0].name, "pattern");
    assert_eq!(info("log").kind, MethodKind::OneWay);
    assert!(info("get").idempotent);
    assert_eq!(info("count_up").kind, MethodKind::ServerStream);
    assert_eq!(info("match").kind, MethodKind::Unary);
    assert!(methods.iter().all(|m| m.name != "count"));
    assert!(format!("{server:?}").contains("demo.Greeter"));
    let _copy = server.clone();
}

/// The name and version written once in the attribute, as every side sees them.
fn identity<S: NamedService>() -> (&'static str, &'static str) {
    (S::SERVICE, S::VERSION)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_share_one_identity() {
    assert_eq!(identity::<GreeterClient>(), ("demo.Greeter", "1.0"));
    assert_eq!(identity::<GreeterServer<Impl>>(), ("demo.Greeter", "1.0"));
    let (tx, _rx) = mpsc::unbounded_channel();
    let server = GreeterServer::new(Impl { lines: tx });
    assert_eq!(
        (server.name(), server.version()),
        identity::<GreeterServer<Impl>>()
    );

    // Code that only knows the client's type can build one over a caller.
    let (server, endpoint, _lines) = serve("from-caller").await;
    let caller = Client::builder().connect(&endpoint).await.unwrap();
    let client = typed::<GreeterClient>(caller);
    assert_eq!(client.hello("you".into()).await.unwrap(), "hello, you");
    server.shutdown(Duration::from_secs(1)).await;
}

fn typed<T: ServiceClient<Caller = Client>>(caller: Client) -> T {
    T::from_caller(caller)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_calls_are_refused() {
    let (server, endpoint, _lines) = serve("wrong").await;
    let client = connect(&endpoint, Format::Json).await;
    let caller = client.caller();
    let target = |method| MethodTarget {
        service: "demo.Greeter",
        version: "1.0",
        method,
        idempotent: false,
    };

    // The stream's wire name is `count_up`; the Rust name is not routed.
    let missing: Result<u32, RpcError> = caller.call(&target("count"), &(3u32,)).await;
    assert!(
        matches!(missing, Err(RpcError::MethodNotFound(_))),
        "{missing:?}"
    );

    // Arguments that do not decode as the method's tuple are a bad request.
    let bad: Result<String, RpcError> = caller.call(&target("hello"), &(1u32, 2u32)).await;
    assert!(matches!(bad, Err(RpcError::BadRequest(_))), "{bad:?}");
    server.shutdown(Duration::from_secs(1)).await;
}
