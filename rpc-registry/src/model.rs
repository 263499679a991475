//! The registry's model: service keys, instances, leases, snapshots and changes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a client discovers by: a service name, a version and a group (Dubbo's three
/// coordinates). Empty version and group are values like any other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    /// The service's name, e.g. `demo.Greeter`.
    pub service: String,
    /// The service's version; empty for none.
    #[serde(default)]
    pub version: String,
    /// A group that separates deployments of the same service (tenants, environments); empty
    /// for the default group.
    #[serde(default)]
    pub group: String,
}

impl ServiceKey {
    /// A key with no version and the default group.
    pub fn new(service: impl Into<String>) -> Self {
        ServiceKey {
            service: service.into(),
            version: String::new(),
            group: String::new(),
        }
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the group.
    pub fn with_group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.service)?;
        if !self.version.is_empty() {
            write!(f, ":{}", self.version)?;
        }
        if !self.group.is_empty() {
            write!(f, "@{}", self.group)?;
        }
        Ok(())
    }
}

/// One instance of a service: where it listens and how much traffic it should get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The service it serves.
    pub key: ServiceKey,
    /// Unique among the instances of its key; by default its endpoint.
    pub id: String,
    /// Where to connect, e.g. `tcp://10.0.0.7:7000`.
    pub endpoint: String,
    /// Relative share of traffic for weighted balancers; 0 takes none. Default: 100.
    pub weight: u32,
    /// Free-form labels (zone, build, …).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Whether it takes traffic; unhealthy instances are listed but not picked.
    pub healthy: bool,
}

impl Instance {
    /// The default weight.
    pub const DEFAULT_WEIGHT: u32 = 100;

    /// A healthy instance with the default weight whose id is its endpoint.
    pub fn new(key: ServiceKey, endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        Instance {
            key,
            id: endpoint.clone(),
            endpoint,
            weight: Self::DEFAULT_WEIGHT,
            metadata: BTreeMap::new(),
            healthy: true,
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a metadata label.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the health flag.
    pub fn with_health(mut self, healthy: bool) -> Self {
        self.healthy = healthy;
        self
    }
}

/// A lease's id, granted by [`Registry::grant`](crate::Registry::grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LeaseId(pub i64);

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// A lease: instances registered under it live while it is kept alive, and are removed (and
/// their watchers told) when it expires or is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The lease's id.
    pub id: LeaseId,
    /// How long it lives without a keep-alive.
    #[serde(with = "duration_ms")]
    pub ttl: Duration,
}

/// The instances of one key at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The registry's revision when the snapshot was taken.
    pub revision: u64,
    /// The instances, ordered by id.
    pub instances: Vec<Instance>,
}

/// One change to the instances of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A new instance.
    Insert(Instance),
    /// An instance registered again with different data.
    Update(Instance),
    /// An instance removed (deregistered, or its lease expired or was revoked); the value is the
    /// instance as it was last known.
    Remove(Instance),
}

impl Change {
    /// The instance the change is about.
    pub fn instance(&self) -> &Instance {
        match self {
            Change::Insert(i) | Change::Update(i) | Change::Remove(i) => i,
        }
    }
}

/// What a watch yields: first a snapshot (or, when resuming, the changes missed), then each
/// change as it happens. A snapshot in the middle of a watch replaces everything known before
/// (the registry could not replay the changes missed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchEvent {
    /// The full state at a revision.
    Snapshot(Snapshot),
    /// One change, at its revision.
    Change {
        /// The revision the change created.
        revision: u64,
        /// The change.
        change: Change,
    },
}

impl WatchEvent {
    /// The revision the event brings the watcher to.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Snapshot(s) => s.revision,
            WatchEvent::Change { revision, .. } => *revision,
        }
    }
}

/// Why a registry operation failed. Travels over RPC as the application error of the registry
/// service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RegistryError {
    /// The lease does not exist: it expired, was revoked, or the registry restarted.
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    /// The request was not valid (an empty service name, a zero TTL, …).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The registry could not be reached or failed; the operation may be retried.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
}

impl From<rpc_core::RpcError<RegistryError>> for RegistryError {
    fn from(e: rpc_core::RpcError<RegistryError>) -> Self {
        match e {
            rpc_core::RpcError::Application(e) => e,
            other => RegistryError::Unavailable(other.report().to_string()),
        }
    }
}

impl From<rpc_core::RpcError> for RegistryError {
    fn from(e: rpc_core::RpcError) -> Self {
        RegistryError::Unavailable(e.report().to_string())
    }
}

pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
