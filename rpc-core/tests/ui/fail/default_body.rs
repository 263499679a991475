#[rpc_core::service]
trait Svc {
    async fn get(&self) -> u8 {
        1
    }
}

fn main() {}
