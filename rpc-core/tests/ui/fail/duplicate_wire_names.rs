#[rpc_core::service]
trait Svc {
    async fn get(&self) -> u8;
    #[rpc(name = "get")]
    async fn fetch(&self) -> u8;
}

fn main() {}
