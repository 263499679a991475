#[rpc_core::service]
trait Svc {
    #[rpc(oneway)]
    async fn fire(&self, line: String) -> bool;
}

fn main() {}
