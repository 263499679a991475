#[rpc_core::service]
trait Svc {
    async fn by_value(self) -> u8;
    async fn by_mut(&mut self) -> u8;
    async fn boxed(self: Box<Self>) -> u8;
    async fn missing(value: u8) -> u8;
}

fn main() {}
