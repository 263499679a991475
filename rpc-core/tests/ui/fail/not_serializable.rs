// Argument and result types must be serde types; the errors point at them.

struct Plain;

#[rpc_core::service]
trait Svc {
    async fn get(&self, arg: Plain) -> u8;
    async fn put(&self) -> Plain;
}

fn main() {}
