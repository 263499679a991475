#[rpc_core::service]
trait Svc {
    #[rpc(one_way)]
    async fn fire(&self);
    #[rpc(idempotent, retries = 3)]
    async fn get(&self) -> u8;
}

fn main() {}
