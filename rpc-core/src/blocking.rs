//! Calls from synchronous code (Dubbo's async-to-sync): a client that owns a small runtime and
//! blocks the calling thread until each answer arrives.

use std::future::Future;
use std::sync::Arc;

use rpc_transport::IntoEndpoint;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::runtime::Runtime;

use crate::caller::{CallOptions, Caller, MethodTarget};
use crate::client::{Client, ClientBuilder};
use crate::error::RpcError;

/// A client for synchronous code. It owns a Tokio runtime with one worker thread that runs the
/// connection; each call blocks the calling thread until its answer arrives. Cheap to clone and
/// usable from many threads at once.
///
/// Generated clients work through [`BlockingClient::block_on`]:
///
/// ```no_run
/// # #[rpc_core::service] trait Greeter { async fn hello(&self, name: String) -> String; }
/// use rpc_core::BlockingClient;
///
/// let client = BlockingClient::connect("tcp://127.0.0.1:7000")?;
/// let greeter = GreeterClient::new(client.client().clone());
/// let reply = client.block_on(greeter.hello("sync world".into()))?;
/// # Ok::<(), rpc_core::RpcError>(())
/// ```
///
/// Calling it from inside an async runtime would block that runtime's thread; it refuses to,
/// with an error, instead of panicking or deadlocking.
#[derive(Debug, Clone)]
pub struct BlockingClient {
    runtime: Arc<Runtime>,
    client: Client,
}

impl BlockingClient {
    /// Connects with default settings to an endpoint such as `"tcp://127.0.0.1:7000"`.
    pub fn connect(endpoint: impl IntoEndpoint) -> Result<BlockingClient, RpcError> {
        Self::connect_with(ClientBuilder::new(), endpoint)
    }

    /// Connects with the settings of `builder`.
    pub fn connect_with(
        builder: ClientBuilder,
        endpoint: impl IntoEndpoint,
    ) -> Result<BlockingClient, RpcError> {
        refuse_inside_runtime()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("rpc-blocking")
            .enable_all()
            .build()
            .map_err(|e| RpcError::Internal(format!("could not start a runtime: {e}")))?;
        let client = runtime.block_on(builder.connect(endpoint))?;
        Ok(BlockingClient {
            runtime: Arc::new(runtime),
            client,
        })
    }

    /// The asynchronous client underneath, for building generated clients.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Calls a method and waits for its result.
    pub fn call<A, T>(&self, target: &MethodTarget<'_>, args: &A) -> Result<T, RpcError>
    where
        A: Serialize + Sync + ?Sized,
        T: DeserializeOwned,
    {
        self.call_with(target, &CallOptions::default(), args)
    }

    /// Calls a method with options and waits for its result.
    pub fn call_with<A, T>(
        &self,
        target: &MethodTarget<'_>,
        options: &CallOptions,
        args: &A,
    ) -> Result<T, RpcError>
    where
        A: Serialize + Sync + ?Sized,
        T: DeserializeOwned,
    {
        refuse_inside_runtime()?;
        self.runtime
            .block_on(self.client.call_unary(target, options, args))?
            .decode()
    }

    /// Runs any future (a generated client's call, say) to completion on this client's
    /// runtime, blocking the thread. Fails if called from inside an async runtime.
    pub fn block_on<T, E>(
        &self,
        future: impl Future<Output = Result<T, RpcError<E>>>,
    ) -> Result<T, RpcError<E>> {
        refuse_inside_runtime().map_err(RpcError::cast)?;
        self.runtime.block_on(future)
    }
}

fn refuse_inside_runtime() -> Result<(), RpcError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(RpcError::Internal(
            "a blocking call was made from inside an async runtime; use the async client".into(),
        ));
    }
    Ok(())
}
