#[rpc_core::service]
trait Svc: Clone {
    async fn get(&self) -> u8;
}

fn main() {}
