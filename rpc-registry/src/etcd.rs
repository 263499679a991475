//! The etcd backend: each instance is one etcd key, attached to an etcd lease.
//!
//! See [`EtcdRegistry`] for the key layout and how the registry model maps onto etcd.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, Event, GetOptions, KeyValue, PutOptions,
    ResponseHeader, Txn, TxnOp, WatchOptions,
};
use tracing::{debug, warn};

use crate::model::{
    Change, Instance, Lease, LeaseId, RegistryError, ServiceKey, Snapshot, WatchEvent,
};
use crate::registry::{Registry, WatchStream};

/// HTTP/2 pings on open streams, so that a watch on a dead connection fails instead of hanging.
/// etcd refuses pings more frequent than every 5 s (`--grpc-keepalive-min-time`).
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a snapshot is read again from the start when etcd compacted the revision it
/// was being read at.
const SNAPSHOT_ATTEMPTS: usize = 3;

/// Settings of an [`EtcdRegistry`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// The client URLs of the etcd members, e.g. `http://10.0.0.1:2379` (`http://` is assumed
    /// when the scheme is missing); requests are balanced over them.
    /// Default: `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// The prefix of every key the registry writes. A `/` is appended when it does not end with
    /// one, so that two registries with different prefixes never share keys.
    /// Default: `/rpc/registry/`.
    pub prefix: String,
    /// How long to wait for a TCP connection to an endpoint, and for
    /// [`EtcdRegistry::connect`] to get its first answer. Default: 5 s.
    pub connect_timeout: Duration,
    /// How long one request may take before it fails with
    /// [`RegistryError::Unavailable`]. Watches are bounded only while they are set up.
    /// Default: 5 s.
    pub request_timeout: Duration,
    /// How many keys one read asks etcd for when the instances of a key are read (`discover`,
    /// a watch's snapshot): a key with more instances is read in several ranges, all at the
    /// revision of the first, so that no answer of etcd grows with the number of instances.
    /// Default: 1,000.
    pub range_limit: u32,
}

impl EtcdConfig {
    /// The default settings with other endpoints.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdConfig::default()
        }
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            prefix: "/rpc/registry/".to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            range_limit: 1000,
        }
    }
}

/// A registry stored in etcd (3.4 or later): instances are keys under a prefix, bound to etcd
/// leases, so they disappear when their server stops renewing.
///
/// Cheap to clone; clones share one connection.
///
/// ```no_run
/// use std::time::Duration;
///
/// use rpc_registry::{EtcdConfig, EtcdRegistry, Instance, Registry, ServiceKey};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), rpc_registry::RegistryError> {
/// let registry = EtcdRegistry::connect(EtcdConfig::new(["http://127.0.0.1:2379"])).await?;
/// let key = ServiceKey::new("demo.Greeter").with_version("1.0");
/// let lease = registry.grant(Duration::from_secs(10)).await?;
/// registry
///     .register(Instance::new(key.clone(), "tcp://10.0.0.7:7000"), lease.id)
///     .await?;
/// assert_eq!(registry.discover(&key).await?.instances.len(), 1);
/// # Ok(()) }
/// ```
///
/// # Layout
///
/// ```text
/// key   = {prefix}{service}/{version}/{group}/{id}     (each of the four segments escaped)
/// value = the Instance as JSON
///
/// /rpc/registry/demo.Greeter/1.0/blue/tcp:%2F%2F10.0.0.7:7000
/// /rpc/registry/demo.Greeter///tcp:%2F%2F10.0.0.7:7000          (no version, default group)
/// ```
///
/// Each of the four segments is escaped on its own: `%` becomes `%25`, `/` becomes `%2F`, and
/// the ASCII control bytes (0x00–0x1F, 0x7F) become `%XX` with two uppercase hex digits; every
/// other byte is kept as it is. An escaped segment therefore never contains `/`, so the instances
/// of one [`ServiceKey`] are exactly the keys under `{prefix}{service}/{version}/{group}/`, and
/// no other key's range overlaps it (empty versions and groups are empty segments). The JSON
/// value is the serde form of [`Instance`]; values that do not parse, or whose key and id do not
/// match the etcd key they are stored under, are skipped with a warning.
///
/// # How the model maps onto etcd
///
/// - Revisions are etcd's: every write bumps the store-wide revision, so consecutive changes of
///   one key can be more than 1 apart, and a revoke (or an expiry) removes all the instances of
///   its lease in *one* revision: several `Remove`s then carry the same revision.
/// - Leases are etcd leases. TTLs are whole seconds (rounded up); etcd may grant more than asked
///   (its minimum TTL, 2 s with the default election timeout), and [`Lease::ttl`] says what it
///   granted. Expired leases are removed by etcd, within about half a second of their deadline.
/// - Registering data identical to what is stored under the same lease writes nothing and
///   returns the current revision. Registering it under another lease must rewrite the key (to
///   move it to the new lease) and returns that write's revision; watchers do not see it,
///   because a put whose previous value holds the same instance is not a change.
/// - Reading a key's instances (`discover`, a watch's snapshot) takes ranges of
///   [`EtcdConfig::range_limit`] keys, all at the revision of the first, so the result is one
///   revision's state however many ranges it takes; if etcd compacts that revision meanwhile,
///   the read starts again. Watches ask etcd to fragment a revision that changes many keys. So
///   no answer of etcd grows with the number of instances past what its gRPC client accepts.
/// - A watch is an etcd watch on the key's range with `prev_kv`, so a `Remove` carries the
///   instance as it was. If etcd has compacted the revisions a watch needs (when resuming, or a
///   watcher fell that far behind), the watch sends a fresh snapshot and carries on from it.
///   If etcd no longer has the previous value of a deleted key, the `Remove` carries an instance
///   of which only the key and the id are known.
/// - Errors: etcd's "lease not found" is [`RegistryError::LeaseNotFound`] (so is lease id 0,
///   which etcd reads as "no lease"); every other failure, including a request that outlasts
///   [`EtcdConfig::request_timeout`], is [`RegistryError::Unavailable`]. A watch yields its first
///   error and then ends; resume it from the last revision seen.
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    config: EtcdConfig,
}

impl EtcdRegistry {
    /// Connects to etcd and checks that it answers within `connect_timeout`.
    pub async fn connect(mut config: EtcdConfig) -> Result<Self, RegistryError> {
        if config.endpoints.is_empty() {
            return Err(RegistryError::Invalid("no etcd endpoints".into()));
        }
        if !config.prefix.ends_with('/') {
            config.prefix.push('/');
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(config.connect_timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT);
        let limit = config.connect_timeout;
        let connecting = async {
            Client::connect(&config.endpoints, Some(options))
                .await
                .map_err(unavailable)
        };
        let client = within(limit, connecting).await?;
        // The client connects lazily: only an answer proves that an endpoint is there.
        let mut kv = client.kv_client();
        let probe = async {
            let options = GetOptions::new().with_prefix().with_count_only();
            kv.get(config.prefix.as_str(), Some(options))
                .await
                .map_err(unavailable)
        };
        within(limit, probe).await?;
        debug!(endpoints = ?config.endpoints, prefix = %config.prefix, "connected to etcd");
        Ok(EtcdRegistry {
            inner: Arc::new(Inner { client, config }),
        })
    }

    /// The settings it was connected with (the prefix as used, ending with `/`).
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.inner.config.endpoints)
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Registry for EtcdRegistry {
    async fn grant(&self, ttl: Duration) -> Result<Lease, RegistryError> {
        if ttl.is_zero() {
            return Err(RegistryError::Invalid("lease TTL must be positive".into()));
        }
        let seconds = ttl
            .as_secs()
            .saturating_add(u64::from(ttl.subsec_nanos() > 0));
        let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
        let mut leases = self.inner.client.lease_client();
        let granting = async { leases.grant(seconds, None).await.map_err(unavailable) };
        let granted = self.inner.within(granting).await?;
        if !granted.error().is_empty() {
            return Err(RegistryError::Unavailable(granted.error().to_owned()));
        }
        Ok(Lease {
            id: LeaseId(granted.id()),
            ttl: seconds_to_duration(granted.ttl()),
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Lease, RegistryError> {
        if lease.0 <= 0 {
            return Err(RegistryError::LeaseNotFound(lease));
        }
        let mut leases = self.inner.client.lease_client();
        let renewing = async {
            // The client reads the first answer itself and only tells whether the lease exists;
            // a second renewal on the same stream tells its TTL.
            let (mut keeper, mut answers) = leases
                .keep_alive(lease.0)
                .await
                .map_err(|e| lease_error(e, lease))?;
            keeper.keep_alive().await.map_err(unavailable)?;
            match answers.message().await.map_err(unavailable)? {
                Some(answer) if answer.ttl() > 0 => Ok(answer.ttl()),
                Some(_) => Err(RegistryError::LeaseNotFound(lease)),
                None => Err(RegistryError::Unavailable(
                    "etcd closed the keep-alive stream".into(),
                )),
            }
        };
        let ttl = self.inner.within(renewing).await?;
        Ok(Lease {
            id: lease,
            ttl: seconds_to_duration(ttl),
        })
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), RegistryError> {
        if lease.0 <= 0 {
            return Err(RegistryError::LeaseNotFound(lease));
        }
        let mut leases = self.inner.client.lease_client();
        let revoking = async {
            leases
                .revoke(lease.0)
                .await
                .map_err(|e| lease_error(e, lease))
        };
        self.inner.within(revoking).await?;
        Ok(())
    }

    async fn register(&self, instance: Instance, lease: LeaseId) -> Result<u64, RegistryError> {
        if instance.key.service.is_empty() {
            return Err(RegistryError::Invalid(
                "service name must not be empty".into(),
            ));
        }
        if instance.id.is_empty() {
            return Err(RegistryError::Invalid(
                "instance id must not be empty".into(),
            ));
        }
        // Lease 0 is etcd's "no lease": the key would never expire.
        if lease.0 <= 0 {
            return Err(RegistryError::LeaseNotFound(lease));
        }
        let key = instance_key(&self.inner.config.prefix, &instance.key, &instance.id);
        let value = serde_json::to_vec(&instance)
            .map_err(|e| RegistryError::Invalid(format!("instance does not serialize: {e}")))?;
        // Write only when the data or the lease differ, so that registering again is not a change.
        // A value comparison fails when the key does not exist.
        let txn = Txn::new()
            .when([
                Compare::value(key.clone(), CompareOp::Equal, value.clone()),
                Compare::lease(key.clone(), CompareOp::Equal, lease.0),
            ])
            .or_else([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease.0)),
            )]);
        let mut kv = self.inner.client.kv_client();
        let writing = async { kv.txn(txn).await.map_err(|e| lease_error(e, lease)) };
        let written = self.inner.within(writing).await?;
        Ok(header_revision(written.header()))
    }

    async fn deregister(&self, key: &ServiceKey, id: &str) -> Result<u64, RegistryError> {
        let key = instance_key(&self.inner.config.prefix, key, id);
        let mut kv = self.inner.client.kv_client();
        let deleting = async { kv.delete(key, None).await.map_err(unavailable) };
        let deleted = self.inner.within(deleting).await?;
        Ok(header_revision(deleted.header()))
    }

    async fn discover(&self, key: &ServiceKey) -> Result<Snapshot, RegistryError> {
        self.inner.snapshot(key).await
    }

    async fn watch(
        &self,
        key: &ServiceKey,
        after: Option<u64>,
    ) -> Result<WatchStream, RegistryError> {
        let mut watch = Watch {
            range: key_prefix(&self.inner.config.prefix, key),
            inner: self.inner.clone(),
            key: key.clone(),
            stream: None,
            pending: VecDeque::new(),
        };
        match after {
            None => watch.resync().await?,
            Some(after) => {
                let current = watch.open(after.saturating_add(1)).await?;
                if after > current {
                    // A revision from the future: etcd was replaced or restored from a backup.
                    // The changes after it cannot be told apart, so start over.
                    debug!(%key, after, current, "watch resumes from a future revision");
                    watch.resync().await?;
                }
            }
        }
        let events = futures::stream::unfold(watch, |mut watch| async move {
            let event = watch.next().await?;
            Some((event, watch))
        });
        Ok(Box::pin(events))
    }
}

impl Inner {
    /// Runs one request, failing it after the request timeout.
    async fn within<T>(
        &self,
        request: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        within(self.config.request_timeout, request).await
    }

    /// The instances of `key` at one revision, read in ranges of `range_limit` keys.
    async fn snapshot(&self, key: &ServiceKey) -> Result<Snapshot, RegistryError> {
        let mut attempt = 1;
        loop {
            match self.read_snapshot(key).await {
                Err(Ranged::Compacted(e)) if attempt < SNAPSHOT_ATTEMPTS => {
                    debug!(%key, error = %e, "the snapshot's revision was compacted; reading again");
                    attempt += 1;
                }
                Err(Ranged::Compacted(e) | Ranged::Failed(e)) => return Err(e),
                Ok(snapshot) => return Ok(snapshot),
            }
        }
    }

    async fn read_snapshot(&self, key: &ServiceKey) -> Result<Snapshot, Ranged> {
        let range = key_prefix(&self.config.prefix, key);
        let end = range_end(&range);
        // etcd is trusted to bound its values (`--max-request-bytes`); a range of large values
        // may still be more than the gRPC client's default limit of 4 MiB per answer.
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(usize::MAX);
        let mut start = range.clone().into_bytes();
        let mut revision = None;
        let mut instances = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(i64::from(self.config.range_limit.max(1)));
            if let Some(revision) = revision {
                options = options.with_revision(revision);
            }
            let reading = async {
                kv.get(start.clone(), Some(options))
                    .await
                    .map_err(unavailable)
            };
            let read = self.within(reading).await.map_err(Ranged::classify)?;
            let read_at =
                *revision.get_or_insert_with(|| read.header().map_or(0, |h| h.revision()));
            instances.extend(read.kvs().iter().filter_map(|kv| decode(key, &range, kv)));
            match read.kvs().last() {
                Some(last) if read.more() => {
                    // The next range starts right after the last key read.
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => {
                    // etcd orders by escaped key, which is not the order of the ids.
                    instances.sort_by(|a, b| a.id.cmp(&b.id));
                    return Ok(Snapshot {
                        revision: u64::try_from(read_at).unwrap_or(0),
                        instances,
                    });
                }
            }
        }
    }
}

/// Why a ranged read failed: the revision it was pinned to was compacted (read again), or
/// anything else.
enum Ranged {
    Compacted(RegistryError),
    Failed(RegistryError),
}

impl Ranged {
    fn classify(e: RegistryError) -> Ranged {
        // etcd's ErrGRPCCompacted: "etcdserver: mvcc: required revision has been compacted".
        match &e {
            RegistryError::Unavailable(message) if message.contains("has been compacted") => {
                Ranged::Compacted(e)
            }
            _ => Ranged::Failed(e),
        }
    }
}

/// The state of one watch: an etcd watch stream on the key's range and the events decoded from
/// it that are not yet delivered.
struct Watch {
    inner: Arc<Inner>,
    key: ServiceKey,
    /// `{prefix}{service}/{version}/{group}/`.
    range: String,
    /// `None` once the watch has failed.
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<WatchEvent>,
}

impl Watch {
    /// Starts an etcd watch from `start` (inclusive) and waits until etcd confirms it; returns
    /// etcd's revision at that moment.
    async fn open(&mut self, start: u64) -> Result<u64, RegistryError> {
        self.stream = None;
        // Fragmented, a revision that changes many keys (a revoke of a lease with many
        // instances) comes in answers of etcd's request size limit instead of one that can be
        // more than the gRPC client accepts. Every event is handled on its own, so the
        // fragments need no putting together.
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_fragment()
            .with_start_revision(i64::try_from(start).unwrap_or(i64::MAX));
        let mut watches = self.inner.client.watch_client();
        let range = self.range.clone();
        let opening = async {
            let mut stream = watches
                .watch(range, Some(options))
                .await
                .map_err(unavailable)?;
            let created = stream.message().await.map_err(unavailable)?;
            Ok((stream, created))
        };
        let (stream, created) = self.inner.within(opening).await?;
        match created {
            Some(created) if created.created() && !created.canceled() => {
                self.stream = Some(stream);
                Ok(header_revision(created.header()))
            }
            Some(refused) => Err(RegistryError::Unavailable(format!(
                "etcd refused the watch: {}",
                refused.cancel_reason()
            ))),
            None => Err(RegistryError::Unavailable(
                "etcd closed the watch before confirming it".into(),
            )),
        }
    }

    /// Reads a snapshot, queues it, and watches from the revision after it.
    async fn resync(&mut self) -> Result<(), RegistryError> {
        self.stream = None;
        let snapshot = self.inner.snapshot(&self.key).await?;
        self.open(snapshot.revision.saturating_add(1)).await?;
        self.pending.push_back(WatchEvent::Snapshot(snapshot));
        Ok(())
    }

    /// The next event; after an error, the end of the watch.
    async fn next(&mut self) -> Option<Result<WatchEvent, RegistryError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            let stream = self.stream.as_mut()?;
            let response = match stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    self.stream = None;
                    let closed = "etcd closed the watch".to_owned();
                    return Some(Err(RegistryError::Unavailable(closed)));
                }
                Err(e) => {
                    self.stream = None;
                    return Some(Err(unavailable(e)));
                }
            };
            if response.compact_revision() != 0 {
                // etcd cancels a watch whose next revision it has compacted away.
                debug!(
                    key = %self.key,
                    compacted = response.compact_revision(),
                    "watch fell behind a compaction; sending a snapshot"
                );
                if let Err(e) = self.resync().await {
                    self.stream = None;
                    return Some(Err(e));
                }
                continue;
            }
            if response.canceled() {
                self.stream = None;
                let reason = format!("etcd cancelled the watch: {}", response.cancel_reason());
                return Some(Err(RegistryError::Unavailable(reason)));
            }
            for event in response.events() {
                if let Some(event) = self.change(event) {
                    self.pending.push_back(event);
                }
            }
        }
    }

    /// The change an etcd event makes to the key's instances, if any.
    fn change(&self, event: &Event) -> Option<WatchEvent> {
        let kv = event.kv()?;
        let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
        // `Event::event_type` panics on a type it does not know. etcd resets a key's version to
        // zero when it deletes it, and only then, so the version tells a delete from a put.
        let change = if kv.version() == 0 {
            let removed = match event.prev_kv() {
                // A value that did not parse was never delivered, so its removal is not either.
                Some(prev) => decode(&self.key, &self.range, prev)?,
                None => self.placeholder(kv)?,
            };
            Change::Remove(removed)
        } else {
            let instance = decode(&self.key, &self.range, kv)?;
            match event.prev_kv() {
                Some(prev) => match decode(&self.key, &self.range, prev) {
                    // Registered again, under another lease: not a change.
                    Some(previous) if previous == instance => return None,
                    Some(_) => Change::Update(instance),
                    // The watcher never got the previous value: to it, this is new.
                    None => Change::Insert(instance),
                },
                // The previous value was compacted away; it existed if this is not version 1.
                None if kv.version() > 1 => Change::Update(instance),
                None => Change::Insert(instance),
            }
        };
        Some(WatchEvent::Change { revision, change })
    }

    /// The instance a deleted key held, when etcd no longer has its value: only the key and the
    /// id (from the etcd key) are known.
    fn placeholder(&self, kv: &KeyValue) -> Option<Instance> {
        let id = kv
            .key()
            .strip_prefix(self.range.as_bytes())
            .and_then(|id| std::str::from_utf8(id).ok())
            .and_then(unescape);
        let Some(id) = id else {
            let etcd_key = String::from_utf8_lossy(kv.key());
            warn!(key = %self.key, %etcd_key, "skipping the removal of a malformed key");
            return None;
        };
        warn!(key = %self.key, %id, "the removed instance's value was compacted away");
        Some(Instance::new(self.key.clone(), String::new()).with_id(id))
    }
}

/// Fails `request` with [`RegistryError::Unavailable`] if it takes longer than `limit`.
async fn within<T>(
    limit: Duration,
    request: impl Future<Output = Result<T, RegistryError>>,
) -> Result<T, RegistryError> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result,
        Err(_) => Err(RegistryError::Unavailable(format!(
            "etcd did not answer within {limit:?}"
        ))),
    }
}

fn unavailable(e: etcd_client::Error) -> RegistryError {
    RegistryError::Unavailable(e.to_string())
}

/// Maps etcd's "lease not found" answers to [`RegistryError::LeaseNotFound`].
fn lease_error(e: etcd_client::Error, lease: LeaseId) -> RegistryError {
    let not_found = match &e {
        // etcd's ErrGRPCLeaseNotFound: "etcdserver: requested lease not found".
        etcd_client::Error::GRpcStatus(status) => status.message().contains("lease not found"),
        // The client's own error for a keep-alive answered with TTL 0.
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    };
    if not_found {
        RegistryError::LeaseNotFound(lease)
    } else {
        unavailable(e)
    }
}

fn header_revision(header: Option<&ResponseHeader>) -> u64 {
    header
        .and_then(|h| u64::try_from(h.revision()).ok())
        .unwrap_or(0)
}

fn seconds_to_duration(seconds: i64) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Parses a stored instance, or warns and skips it.
fn decode(expected: &ServiceKey, range: &str, kv: &KeyValue) -> Option<Instance> {
    let etcd_key = String::from_utf8_lossy(kv.key());
    let instance: Instance = match serde_json::from_slice(kv.value()) {
        Ok(instance) => instance,
        Err(e) => {
            warn!(%etcd_key, error = %e, "skipping a value that is not an instance");
            return None;
        }
    };
    let mut id = String::new();
    escape_into(&instance.id, &mut id);
    if instance.key != *expected || kv.key().strip_prefix(range.as_bytes()) != Some(id.as_bytes()) {
        let (key, id) = (&instance.key, &instance.id);
        warn!(%etcd_key, %key, %id, "skipping an instance stored under another key");
        return None;
    }
    Some(instance)
}

/// `{prefix}{service}/{version}/{group}/`, each segment escaped.
fn key_prefix(prefix: &str, key: &ServiceKey) -> String {
    let mut out = String::with_capacity(prefix.len() + key.service.len() + 8);
    out.push_str(prefix);
    for segment in [&key.service, &key.version, &key.group] {
        escape_into(segment, &mut out);
        out.push('/');
    }
    out
}

/// The end of the range of keys that start with `range` (which ends with `/`): the same bytes
/// with the last one increased.
fn range_end(range: &str) -> Vec<u8> {
    let mut end = range.as_bytes().to_vec();
    // `range` ends with `/` (0x2F), so the last byte never overflows.
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// `{prefix}{service}/{version}/{group}/{id}`, each segment escaped.
fn instance_key(prefix: &str, key: &ServiceKey, id: &str) -> String {
    let mut out = key_prefix(prefix, key);
    escape_into(id, &mut out);
    out
}

/// Appends `segment` with `%`, `/` and the ASCII control characters percent-encoded.
fn escape_into(segment: &str, out: &mut String) {
    for c in segment.chars() {
        if c == '%' || c == '/' || c.is_ascii_control() {
            // Writing to a `String` cannot fail. Every escaped character is ASCII, one byte.
            let _ = write!(out, "%{:02X}", u32::from(c));
        } else {
            out.push(c);
        }
    }
}

/// Reverses [`escape_into`]; `None` if `segment` is not an escaped segment.
fn unescape(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => return None,
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn service_key() -> impl Strategy<Value = ServiceKey> {
        ("[a-z/%.]{1,6}", "[0-9/%.]{0,4}", "[a-z/%\n]{0,4}")
            .prop_map(|(s, v, g)| ServiceKey::new(s).with_version(v).with_group(g))
    }

    #[test]
    fn layout_is_readable() {
        let key = ServiceKey::new("demo.Greeter").with_version("1.0");
        assert_eq!(
            instance_key("/rpc/registry/", &key, "tcp://10.0.0.7:7000"),
            "/rpc/registry/demo.Greeter/1.0//tcp:%2F%2F10.0.0.7:7000"
        );
        assert_eq!(key_prefix("/p/", &ServiceKey::new("a%b")), "/p/a%25b///");
    }

    #[test]
    fn a_ranges_end_follows_every_key_in_it() {
        let range = key_prefix("/p/", &ServiceKey::new("a"));
        let end = range_end(&range);
        assert_eq!(end, b"/p/a//0");
        let key = instance_key("/p/", &ServiceKey::new("a"), "\u{10FFFF}");
        assert!(range.as_bytes() <= key.as_bytes() && key.as_bytes() < end.as_slice());
    }

    #[test]
    fn unescape_rejects_malformed_segments() {
        assert_eq!(unescape("a%2"), None);
        assert_eq!(unescape("a%zz"), None);
        assert_eq!(unescape("a/b"), None);
        assert_eq!(unescape("a%2Fb").as_deref(), Some("a/b"));
    }

    proptest! {
        #[test]
        fn escaping_round_trips(segment in any::<String>()) {
            let mut escaped = String::new();
            escape_into(&segment, &mut escaped);
            prop_assert!(!escaped.contains('/'));
            prop_assert_eq!(unescape(&escaped), Some(segment));
        }

        #[test]
        fn ranges_of_different_keys_are_disjoint(
            a in service_key(),
            b in service_key(),
            id in ".{1,5}",
        ) {
            let range_a = key_prefix("/p/", &a);
            let key_b = instance_key("/p/", &b, &id);
            prop_assert_eq!(key_b.starts_with(&range_a), a == b);
            prop_assert_eq!(unescape(&key_b[key_prefix("/p/", &b).len()..]), Some(id));
        }
    }
}
