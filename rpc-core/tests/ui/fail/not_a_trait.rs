#[rpc_core::service]
struct Svc;

fn main() {}
