//! Registering a server's services on start and withdrawing them on shutdown, in one call each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::{ServerBuilder, ServerHandle, StartError};

use crate::model::{Instance, RegistryError, ServiceKey};
use crate::registration::Registration;
use crate::registry::Registry;

/// How a server's instances are announced. Every field's default is in its description.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegisterOptions {
    /// The endpoint clients should connect to. Default: the server's first local endpoint
    /// (set it when listening on `0.0.0.0` or behind NAT).
    pub advertise: Option<String>,
    /// The group the instances join. Default: the default (empty) group.
    pub group: String,
    /// The instances' weight. Default: 100.
    pub weight: u32,
    /// Labels for every instance. Default: none.
    pub metadata: BTreeMap<String, String>,
    /// The lease TTL; the registration renews it at a third of this. Default: 10 s.
    pub ttl: Duration,
}

impl Default for RegisterOptions {
    fn default() -> Self {
        RegisterOptions {
            advertise: None,
            group: String::new(),
            weight: Instance::DEFAULT_WEIGHT,
            metadata: BTreeMap::new(),
            ttl: Duration::from_secs(10),
        }
    }
}

/// Why a registered server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The server did not start (an invalid setting, or an endpoint that could not be bound).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// A running server whose services are registered for as long as it runs.
///
/// ```no_run
/// # async fn demo(svc: impl rpc_core::Service) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
///
/// use rpc_registry::{MemoryRegistry, RegisterOptions, RegisteredServer};
///
/// let registry = Arc::new(MemoryRegistry::new());
/// let builder = rpc_core::Server::builder()
///     .service(svc)
///     .listen("tcp://127.0.0.1:0");
/// let server = RegisteredServer::start(builder, registry, RegisterOptions::default()).await?;
/// // ... serve ...
/// server.shutdown(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RegisteredServer {
    server: ServerHandle,
    registration: Registration,
}

impl RegisteredServer {
    /// Starts the server and registers one instance per service it serves.
    pub async fn start(
        builder: ServerBuilder,
        registry: Arc<dyn Registry>,
        options: RegisterOptions,
    ) -> Result<RegisteredServer, ServeError> {
        let server = builder.start().await?;
        let endpoint = match (&options.advertise, server.local_endpoint()) {
            (Some(advertised), _) => advertised.clone(),
            (None, Some(local)) => local.to_string(),
            (None, None) => {
                server.abort().await;
                return Err(RegistryError::Invalid("the server listens nowhere".into()).into());
            }
        };
        let instances = server
            .services()
            .into_iter()
            .map(|(name, version)| {
                let key = ServiceKey::new(name)
                    .with_version(version)
                    .with_group(options.group.clone());
                let mut instance = Instance::new(key, endpoint.clone()).with_weight(options.weight);
                instance.metadata = options.metadata.clone();
                instance
            })
            .collect();
        match Registration::start(registry, instances, options.ttl).await {
            Ok(registration) => Ok(RegisteredServer {
                server,
                registration,
            }),
            Err(e) => {
                server.abort().await;
                Err(e.into())
            }
        }
    }

    /// The server.
    pub fn server(&self) -> &ServerHandle {
        &self.server
    }

    /// The registration.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// Withdraws the instances (so clients stop picking this server), then shuts the server
    /// down gracefully within `grace`.
    pub async fn shutdown(self, grace: Duration) {
        if let Err(e) = self.registration.withdraw().await {
            tracing::warn!(error = %e, "could not withdraw the registration; it will expire");
        }
        self.server.shutdown(grace).await;
    }
}
