//! The reflection service over real TCP sockets: what a server lists about its services, and a
//! server that turned it off.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use rpc_core::{
    ArgDescriptor, CallContext, Client, Format, MethodDescriptor, ReflectionClient, RpcError,
    Server, ServerHandle, ServerStream, ServiceDescriptor, SignatureDescriptor,
};
use serde::{Deserialize, Serialize};

/// Why a division failed.
#[derive(Debug, Serialize, Deserialize)]
pub enum DivError {
    /// The divisor was zero.
    ByZero,
}

/// Arithmetic, with every method kind.
#[rpc_core::service(name = "test.Math", version = "2")]
pub trait Math {
    /// Divides.
    #[rpc(idempotent)]
    async fn div(&self, a: i64, b: i64) -> Result<i64, DivError>;
    /// Counts down.
    async fn countdown(&self, ctx: CallContext, from: u32) -> ServerStream<u32>;
    /// Remembers a note.
    #[rpc(oneway)]
    async fn note(&self, text: String);
    /// Sums the values of a map.
    async fn sum(&self, values: BTreeMap<String, Vec<(u8, i32)>>) -> i64;
}

/// An unversioned service.
#[rpc_core::service(name = "test.Clock")]
pub trait Clock {
    /// The time.
    async fn now(&self) -> u64;
}

struct Imp;

impl Math for Imp {
    async fn div(&self, a: i64, b: i64) -> Result<i64, DivError> {
        a.checked_div(b).ok_or(DivError::ByZero)
    }
    async fn countdown(&self, _ctx: CallContext, from: u32) -> ServerStream<u32> {
        ServerStream::iter((1..=from).rev())
    }
    async fn note(&self, _text: String) {}
    async fn sum(&self, values: BTreeMap<String, Vec<(u8, i32)>>) -> i64 {
        values.values().flatten().map(|(_, v)| i64::from(*v)).sum()
    }
}

impl Clock for Imp {
    async fn now(&self) -> u64 {
        7
    }
}

async fn serve(reflection: bool) -> (ServerHandle, Client) {
    let server = Server::builder()
        .service(MathServer::new(Imp))
        .service(ClockServer::new(Imp))
        .reflection(reflection)
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let endpoint = server.local_endpoint().unwrap().clone();
    let client = Client::builder()
        .format(Format::Json)
        .connect(endpoint)
        .await
        .unwrap();
    (server, client)
}

fn signature(args: &[(&str, &str)], result: &str, error: Option<&str>) -> SignatureDescriptor {
    SignatureDescriptor {
        args: args
            .iter()
            .map(|(name, ty)| ArgDescriptor {
                name: (*name).to_owned(),
                ty: (*ty).to_owned(),
            })
            .collect(),
        result: result.to_owned(),
        error: error.map(str::to_owned),
    }
}

fn method(name: &str, kind: &str, idempotent: bool, sig: SignatureDescriptor) -> MethodDescriptor {
    MethodDescriptor {
        name: name.to_owned(),
        kind: kind.to_owned(),
        idempotent,
        signature: Some(sig),
    }
}

#[tokio::test]
async fn lists_every_service_with_kinds_and_types() {
    let (server, client) = serve(true).await;
    let listed = ReflectionClient::new(client).services().await.unwrap();
    let names: Vec<_> = listed
        .iter()
        .map(|s| (s.name.as_str(), s.version.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("rpc.Reflection", "1"),
            ("test.Clock", ""),
            ("test.Math", "2")
        ]
    );
    assert_eq!(
        listed[2],
        ServiceDescriptor {
            name: "test.Math".to_owned(),
            version: "2".to_owned(),
            methods: vec![
                method(
                    "div",
                    "unary",
                    true,
                    signature(&[("a", "i64"), ("b", "i64")], "i64", Some("DivError")),
                ),
                method(
                    "countdown",
                    "stream",
                    false,
                    signature(&[("from", "u32")], "u32", None),
                ),
                method(
                    "note",
                    "one-way",
                    false,
                    signature(&[("text", "String")], "()", None),
                ),
                method(
                    "sum",
                    "unary",
                    false,
                    signature(
                        &[("values", "BTreeMap<String, Vec<(u8, i32)>>")],
                        "i64",
                        None,
                    ),
                ),
            ],
        }
    );
    assert_eq!(
        listed[1].methods,
        [method("now", "unary", false, signature(&[], "u64", None))]
    );
    let own = &listed[0].methods;
    assert_eq!(
        own,
        &[method(
            "services",
            "unary",
            true,
            signature(&[], "Vec<ServiceDescriptor>", None)
        )]
    );
    // Reflection is routed but not one of the services a registry should learn about.
    assert_eq!(server.services(), [("test.Clock", ""), ("test.Math", "2")]);
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn hand_written_services_are_listed_without_signatures() {
    let server = Server::builder()
        .service(support::Echo::default())
        .listen("tcp://127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let client = Client::connect(server.local_endpoint().unwrap().clone())
        .await
        .unwrap();
    let listed = ReflectionClient::new(client).services().await.unwrap();
    let echo = listed.iter().find(|s| s.name == support::ECHO).unwrap();
    assert_eq!(echo.methods.len(), support::METHODS.len());
    assert!(echo.methods.iter().all(|m| m.signature.is_none()));
    assert_eq!(echo.method("count").unwrap().kind, "stream");
    assert_eq!(echo.method("note").unwrap().kind, "one-way");
    server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn turned_off_it_is_an_unknown_service() {
    let (server, client) = serve(false).await;
    match ReflectionClient::new(client.clone()).services().await {
        Err(RpcError::ServiceNotFound(message)) => assert!(message.contains("rpc.Reflection")),
        other => panic!("expected service not found, got {other:?}"),
    }
    // The other services are still served.
    assert_eq!(ClockClient::new(client).now().await.unwrap(), 7);
    assert_eq!(server.services(), [("test.Clock", ""), ("test.Math", "2")]);
    server.shutdown(Duration::from_secs(1)).await;
}
