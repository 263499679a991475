//! Zero and sixteen arguments, raw identifiers, wire-name overrides (also of reserved names),
//! and argument names that generated code also uses.

#![deny(warnings)]

use rpc_core::Service;

#[rpc_core::service]
trait Names {
    async fn zero(&self) -> u8;
    #[allow(clippy::too_many_arguments)]
    async fn sixteen(
        &self,
        a: u8,
        b: u8,
        c: u8,
        d: u8,
        e: u8,
        f: u8,
        g: u8,
        h: u8,
        i: u8,
        j: u8,
        k: u8,
        l: u8,
        m: u8,
        n: u8,
        o: u8,
        p: u8,
    ) -> u32;
    async fn r#type(&self, r#fn: String) -> String;
    #[rpc(name = "new")]
    async fn create(&self) -> u8;
    #[rpc(name = "with.dots/and-dashes")]
    async fn odd(&self) -> u8;
    async fn shadowing(&self, call: u8, inner: u8, method: u8, out: u8, args: u8, e: u8) -> u8;
}

struct Impl;

impl Names for Impl {
    async fn zero(&self) -> u8 {
        0
    }
    async fn sixteen(
        &self,
        a: u8,
        b: u8,
        c: u8,
        d: u8,
        e: u8,
        f: u8,
        g: u8,
        h: u8,
        i: u8,
        j: u8,
        k: u8,
        l: u8,
        m: u8,
        n: u8,
        o: u8,
        p: u8,
    ) -> u32 {
        [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p]
            .iter()
            .map(|&x| u32::from(x))
            .sum()
    }
    async fn r#type(&self, r#fn: String) -> String {
        r#fn
    }
    async fn create(&self) -> u8 {
        1
    }
    async fn odd(&self) -> u8 {
        2
    }
    async fn shadowing(&self, call: u8, inner: u8, method: u8, out: u8, args: u8, e: u8) -> u8 {
        call + inner + method + out + args + e
    }
}

#[allow(dead_code)]
async fn calls(client: NamesClient) -> Result<(), rpc_core::RpcError> {
    client.zero().await?;
    client
        .sixteen(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
        .await?;
    client.r#type("t".into()).await?;
    client.create().await?;
    client.shadowing(1, 2, 3, 4, 5, 6).await?;
    Ok(())
}

fn main() {
    let server = NamesServer::new(Impl);
    let names: Vec<_> = server.methods().iter().map(|m| m.name).collect();
    assert_eq!(
        names,
        [
            "zero",
            "sixteen",
            "type",
            "new",
            "with.dots/and-dashes",
            "shadowing"
        ]
    );
    let _ = calls;
}
