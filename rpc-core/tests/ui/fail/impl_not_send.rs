// The trait promises `Send` futures so that the server can spawn calls; an implementation
// holding an `Rc` across an `.await` is refused where it is written.

use std::rc::Rc;

#[rpc_core::service]
trait Svc {
    async fn get(&self) -> u8;
}

struct Impl;

impl Svc for Impl {
    async fn get(&self) -> u8 {
        let rc = Rc::new(1);
        std::future::ready(()).await;
        *rc
    }
}

fn main() {}
