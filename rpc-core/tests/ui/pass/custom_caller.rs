//! The client is generic over `Caller`: here one that refuses every call, to see that the
//! generated methods go through it with the right target.

#![deny(warnings)]

use std::sync::{Arc, Mutex};

use rpc_core::{CallOptions, Caller, MethodTarget, RawStream, Response, RpcError};
use serde::Serialize;

#[rpc_core::service(name = "svc", version = "3")]
trait Svc {
    #[rpc(idempotent, name = "wire")]
    async fn get(&self, key: String) -> Result<u8, String>;
    #[rpc(oneway)]
    async fn fire(&self);
}

/// Records the targets it was asked to call, and refuses.
#[derive(Clone, Default)]
struct Refuse(Arc<Mutex<Vec<String>>>);

impl Refuse {
    fn record(&self, target: &MethodTarget<'_>, options: &CallOptions) {
        self.0.lock().unwrap().push(format!(
            "{}/{}/{}/{}/{:?}",
            target.service, target.version, target.method, target.idempotent, options.timeout
        ));
    }
}

impl Caller for Refuse {
    async fn call_unary<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        _args: &A,
    ) -> Result<Response, RpcError> {
        self.record(target, options);
        Err(RpcError::Unavailable("refused".into()))
    }

    async fn call_one_way<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        _args: &A,
    ) -> Result<(), RpcError> {
        self.record(target, options);
        Ok(())
    }

    async fn call_stream<A: Serialize + Sync + ?Sized>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        _args: &A,
    ) -> Result<RawStream, RpcError> {
        self.record(target, options);
        Err(RpcError::Unavailable("refused".into()))
    }
}

fn main() {
    let caller = Refuse::default();
    let client = SvcClient::new(caller.clone()).with_timeout(std::time::Duration::from_secs(3));
    let got = futures::executor::block_on(client.get("k".into()));
    assert_eq!(got, Err(RpcError::Unavailable("refused".into())));
    futures::executor::block_on(client.fire()).unwrap();
    assert_eq!(
        *caller.0.lock().unwrap(),
        ["svc/3/wire/true/Some(3s)", "svc/3/fire/false/Some(3s)"]
    );
}
