//! A service without methods, a private trait with default name and version.

#![deny(warnings)]

use rpc_core::Service;

#[rpc_core::service]
trait Empty {}

struct Nothing;

impl Empty for Nothing {}

fn main() {
    let server = EmptyServer::new(Nothing);
    assert_eq!(server.name(), "Empty");
    assert_eq!(server.version(), "");
    assert!(server.methods().is_empty());
    assert_eq!(EmptyClient::<rpc_core::Client>::SERVICE, "Empty");
}
