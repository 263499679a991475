//! The generated items take the trait's visibility: here `pub(crate)` inside a module, used
//! from outside it; and a private trait declared inside a function.

#![deny(warnings)]

mod store {
    use rpc_core::CallContext;

    #[rpc_core::service(name = "kv.Store")]
    pub(crate) trait Store {
        async fn put(&self, key: String, value: Vec<u8>) -> bool;
        async fn len(&self, ctx: CallContext) -> u64;
    }
}

use store::{Store, StoreClient, StoreServer};

struct Memory;

impl Store for Memory {
    async fn put(&self, _key: String, _value: Vec<u8>) -> bool {
        true
    }
    async fn len(&self, _ctx: rpc_core::CallContext) -> u64 {
        0
    }
}

#[allow(dead_code)]
async fn call(client: StoreClient) -> Result<u64, rpc_core::RpcError> {
    client.put("k".into(), vec![1]).await?;
    client.len().await
}

fn main() {
    let server = StoreServer::new(Memory);
    let _ = server.clone();
    let _ = call;

    #[rpc_core::service]
    trait Local {
        async fn local(&self) -> u8;
    }
    struct L;
    impl Local for L {
        async fn local(&self) -> u8 {
            7
        }
    }
    let _ = LocalServer::from_arc(std::sync::Arc::new(L));
}
