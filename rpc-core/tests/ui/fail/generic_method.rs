#[rpc_core::service]
trait Svc {
    async fn by_type<T: serde::Serialize>(&self, value: T) -> u8;
    async fn by_const<const N: usize>(&self, value: [u8; N]) -> u8;
    async fn by_impl(&self, value: impl serde::Serialize) -> u8;
    async fn by_where(&self, value: u8) -> u8
    where
        u8: Copy;
}

fn main() {}
