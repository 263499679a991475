#[rpc_core::service]
trait Svc<T> {
    async fn get(&self) -> u8;
}

fn main() {}
