//! Nothing imported: types named by full paths, no `serde` or `rpc_core` items in scope, and
//! an implementation returning explicit `Send` futures instead of writing `async fn`.

#![deny(warnings)]

#[rpc_core::service(version = "2")]
pub trait Paths {
    async fn ctx(&self, ctx: ::rpc_core::CallContext) -> ::std::string::String;
    async fn stream(&self) -> rpc_core::ServerStream<u8>;
    async fn result(&self, x: u8) -> ::std::result::Result<u8, ::std::string::String>;
    #[rpc(oneway)]
    async fn fire(&self, x: ::std::vec::Vec<u8>) -> ();
}

struct Impl;

impl Paths for Impl {
    fn ctx(&self, ctx: rpc_core::CallContext) -> impl std::future::Future<Output = String> + Send {
        async move { ctx.service().to_owned() }
    }
    fn stream(&self) -> impl std::future::Future<Output = rpc_core::ServerStream<u8>> + Send {
        std::future::ready(rpc_core::ServerStream::iter([1, 2]))
    }
    async fn result(&self, x: u8) -> Result<u8, String> {
        x.checked_add(1).ok_or_else(|| "overflow".to_owned())
    }
    async fn fire(&self, _x: Vec<u8>) {}
}

fn main() {
    let _ = PathsServer::new(Impl);
    assert_eq!(PathsClient::<rpc_core::Client>::VERSION, "2");
}
