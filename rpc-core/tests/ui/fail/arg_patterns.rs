#[rpc_core::service]
trait Svc {
    async fn tuple(&self, (a, b): (i32, i32)) -> i32;
    async fn wildcard(&self, _: i32) -> i32;
    async fn mutable(&self, mut x: i32) -> i32;
    async fn by_ref(&self, ref x: i32) -> i32;
}

fn main() {}
