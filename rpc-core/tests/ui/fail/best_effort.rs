// Two mistakes in one trait: both are reported, and nothing else. The implementation, the
// server and the client's valid method still compile, so no cascade of unrelated errors.

#[rpc_core::service(name = "svc")]
trait Svc {
    async fn good(&self, x: u8) -> u8;
    fn not_async(&self) -> u8;
    #[rpc(oneway)]
    async fn fire(&self) -> u8;
}

struct Impl;

impl Svc for Impl {
    async fn good(&self, x: u8) -> u8 {
        x
    }
    fn not_async(&self) -> u8 {
        1
    }
    async fn fire(&self) -> u8 {
        2
    }
}

async fn use_client(client: SvcClient) -> Result<u8, rpc_core::RpcError> {
    client.good(1).await
}

fn main() {
    let _ = SvcServer::new(Impl);
    let _ = use_client;
}
