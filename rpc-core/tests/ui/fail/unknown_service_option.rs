#[rpc_core::service(name = "svc", namespace = "x")]
trait Svc {
    async fn get(&self) -> u8;
}

fn main() {}
