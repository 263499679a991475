use rpc_core::CallContext;

#[rpc_core::service]
trait Svc {
    async fn get(&self, key: String, ctx: CallContext) -> u8;
}

fn main() {}
