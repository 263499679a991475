use rpc_core::ServerStream;

#[rpc_core::service]
trait Svc {
    #[rpc(oneway)]
    async fn fire(&self) -> ServerStream<u8>;
}

fn main() {}
