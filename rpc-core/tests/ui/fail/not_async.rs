#[rpc_core::service]
trait Svc {
    fn hello(&self, name: String) -> String;
}

fn main() {}
