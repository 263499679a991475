#[rpc_core::service]
trait Svc {
    async fn hello(&self, name: &str) -> String;
    async fn name(&self) -> &'static str;
}

fn main() {}
