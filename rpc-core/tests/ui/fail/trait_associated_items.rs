#[rpc_core::service]
trait Svc {
    type Item;
    const LIMIT: usize;
    async fn get(&self) -> u8;
}

fn main() {}
