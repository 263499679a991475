//! Typed services in the registry: the key and the discovery-aware client of a service, taken
//! from the identity `#[service]` gives its generated types, so the name is never spelled twice.

use std::sync::Arc;

use rpc_core::{NamedService, ServiceClient};

use crate::discovery::{Discovery, DiscoveryConfig};
use crate::model::ServiceKey;
use crate::registry::Registry;

impl ServiceKey {
    /// The key of a typed service (its generated client or server), in the default group: the
    /// key [`RegisteredServer`](crate::RegisteredServer) registers the server's instances under.
    ///
    /// ```
    /// use rpc_registry::ServiceKey;
    ///
    /// #[rpc_core::service(name = "demo.Greeter", version = "1")]
    /// trait Greeter {
    ///     async fn hello(&self, name: String) -> String;
    /// }
    ///
    /// let key = ServiceKey::of::<GreeterClient>();
    /// assert_eq!(key, ServiceKey::new("demo.Greeter").with_version("1"));
    /// ```
    pub fn of<S: NamedService>() -> ServiceKey {
        ServiceKey::new(S::SERVICE).with_version(S::VERSION)
    }
}

/// Typed clients that find their service through a registry: with this trait in scope,
/// `GreeterClient::discover(registry)` is a client of every registered instance of the
/// service, balanced and failed over by a [`Discovery`] (reached through the client's
/// `caller()`).
///
/// It is implemented for every generated client over a [`Discovery`]. A service with a method
/// named `discover` shadows it; call `<GreeterClient<_> as DiscoverClient>::discover` then.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use rpc_core::Server;
/// use rpc_registry::{DiscoverClient, MemoryRegistry, RegisterOptions, RegisteredServer};
///
/// #[rpc_core::service(name = "demo.Greeter", version = "1")]
/// trait Greeter {
///     async fn hello(&self, name: String) -> String;
/// }
///
/// struct Polite;
///
/// impl Greeter for Polite {
///     async fn hello(&self, name: String) -> String {
///         format!("hello, {name}")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Arc::new(MemoryRegistry::new());
/// let builder = Server::builder()
///     .service(GreeterServer::new(Polite))
///     .listen("mem://discover-client-doc");
/// let server = RegisteredServer::start(builder, registry.clone(), RegisterOptions::default())
///     .await?;
///
/// let greeter = GreeterClient::discover(registry);
/// assert!(greeter.caller().wait_for(1, Duration::from_secs(5)).await);
/// assert_eq!(greeter.hello("world".into()).await?, "hello, world");
/// server.shutdown(Duration::from_secs(1)).await;
/// # Ok(()) }
/// ```
pub trait DiscoverClient: ServiceClient<Caller = Discovery> {
    /// A client of the service's instances in `registry` (default group), with the default
    /// settings. Needs a Tokio runtime.
    fn discover(registry: Arc<dyn Registry>) -> Self {
        Self::discover_with(registry, DiscoveryConfig::default())
    }

    /// A client of the service's instances in `registry` (default group). Needs a Tokio
    /// runtime. For another group, build the [`Discovery`] with
    /// `ServiceKey::of::<Self>().with_group(..)` and give it to the client's `new`.
    fn discover_with(registry: Arc<dyn Registry>, config: DiscoveryConfig) -> Self {
        Self::from_caller(Discovery::with_config(
            registry,
            ServiceKey::of::<Self>(),
            config,
        ))
    }
}

impl<T: ServiceClient<Caller = Discovery>> DiscoverClient for T {}
