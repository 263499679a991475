#[rpc_core::service]
trait Svc {
    async fn new(&self) -> u8;
    async fn with_options(&self) -> u8;
    async fn with_timeout(&self) -> u8;
    async fn with_metadata(&self) -> u8;
    async fn caller(&self) -> u8;
    async fn from_arc(&self) -> u8;
    async fn __hidden(&self) -> u8;
}

fn main() {}
