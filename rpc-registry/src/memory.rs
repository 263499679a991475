//! The embedded, in-memory registry: the default, with leases on Tokio's clock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::model::{
    Change, Instance, Lease, LeaseId, RegistryError, ServiceKey, Snapshot, WatchEvent,
};
use crate::page::{Page, PageRequest};
use crate::registry::{Registry, WatchStream};

/// Settings of a [`MemoryRegistry`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// How many recent changes are kept so that watches can resume from a revision; a watch
    /// resuming from further back gets a snapshot. Default: 65,536.
    pub history: usize,
    /// How many changes one watcher may fall behind before it is sent a fresh snapshot instead.
    /// Default: 1,024.
    pub watch_buffer: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            history: 65_536,
            watch_buffer: 1024,
        }
    }
}

/// The embedded registry: in memory, in process, zero setup. The default backend.
///
/// Leases expire on Tokio's clock, so tests can drive expiry with `tokio::time::pause()`.
/// Cheap to clone; all clones share one store. Must be created inside a Tokio runtime (it runs
/// a task that expires leases; the task stops when the last clone is dropped).
#[derive(Debug, Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
    _guard: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    config: MemoryConfig,
    /// Woken when the earliest lease deadline may have moved earlier.
    rearm: Notify,
}

#[derive(Debug)]
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[derive(Debug, Default)]
struct State {
    revision: u64,
    next_lease: i64,
    leases: HashMap<LeaseId, LeaseState>,
    /// Lease deadlines in order, for expiry.
    deadlines: BTreeSet<(Instant, LeaseId)>,
    services: HashMap<ServiceKey, ServiceState>,
    history: VecDeque<(u64, ServiceKey, Change)>,
}

#[derive(Debug)]
struct LeaseState {
    ttl: Duration,
    deadline: Instant,
    instances: HashSet<(ServiceKey, String)>,
}

#[derive(Debug)]
struct ServiceState {
    instances: BTreeMap<String, (Instance, LeaseId)>,
    /// The revision of the last change to `instances`.
    changed: u64,
    /// Created on the first watch: a broadcast channel allocates its whole buffer up front.
    watchers: Option<broadcast::Sender<Arc<(u64, Change)>>>,
}

impl MemoryRegistry {
    /// An empty registry with the default settings.
    pub fn new() -> Self {
        Self::with_config(MemoryConfig::default())
    }

    /// An empty registry.
    pub fn with_config(config: MemoryConfig) -> Self {
        let stop = CancellationToken::new();
        // Lease ids start at a random point so that a client holding a lease of an earlier
        // registry (before a restart) cannot renew someone else's lease by accident.
        let state = State {
            next_lease: fastrand::i64(1..(i64::MAX >> 2)),
            ..State::default()
        };
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            config,
            rearm: Notify::new(),
        });
        tokio::spawn(expire_leases(inner.clone(), stop.clone()));
        MemoryRegistry {
            inner,
            _guard: Arc::new(StopOnDrop(stop)),
        }
    }

    /// How many instances are registered, over all keys.
    pub fn instance_count(&self) -> usize {
        self.inner
            .lock()
            .services
            .values()
            .map(|s| s.instances.len())
            .sum()
    }

    /// How many instances are registered under each service name (over its versions and
    /// groups), for names with any; sorted by name.
    pub fn instances_by_service(&self) -> Vec<(String, usize)> {
        let state = self.inner.lock();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (key, service) in &state.services {
            if !service.instances.is_empty() {
                *counts.entry(key.service.as_str()).or_default() += service.instances.len();
            }
        }
        counts
            .into_iter()
            .map(|(name, n)| (name.to_owned(), n))
            .collect()
    }

    /// How many leases are live (granted, and neither expired nor revoked).
    pub fn lease_count(&self) -> usize {
        self.inner.lock().leases.len()
    }

    /// How many watches are open, over all keys.
    pub fn watcher_count(&self) -> usize {
        self.inner
            .lock()
            .services
            .values()
            .filter_map(|s| s.watchers.as_ref())
            .map(|w| w.receiver_count())
            .sum()
    }

    /// The current revision.
    pub fn revision(&self) -> u64 {
        self.inner.lock().revision
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way later
        // operations would trip on (every mutation is a single insert or remove), so a
        // poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn record(&mut self, key: &ServiceKey, change: Change, history: usize) -> u64 {
        self.revision += 1;
        let revision = self.revision;
        if history > 0 {
            if self.history.len() == history {
                self.history.pop_front();
            }
            self.history
                .push_back((revision, key.clone(), change.clone()));
        }
        if let Some(service) = self.services.get_mut(key) {
            service.changed = revision;
            // No receivers is not an error: nobody is watching.
            if let Some(watchers) = &service.watchers {
                let _ = watchers.send(Arc::new((revision, change)));
            }
        }
        revision
    }

    fn service(&mut self, key: &ServiceKey) -> &mut ServiceState {
        self.services
            .entry(key.clone())
            .or_insert_with(|| ServiceState {
                instances: BTreeMap::new(),
                changed: 0,
                watchers: None,
            })
    }

    /// Drops a key's state once it has neither instances nor watchers.
    fn tidy(&mut self, key: &ServiceKey) {
        if let Some(s) = self.services.get(key) {
            let watched = s.watchers.as_ref().is_some_and(|w| w.receiver_count() > 0);
            if s.instances.is_empty() && !watched {
                self.services.remove(key);
            }
        }
    }

    fn remove_instance(&mut self, key: &ServiceKey, id: &str, history: usize) -> Option<u64> {
        let (instance, lease) = self.services.get_mut(key)?.instances.remove(id)?;
        if let Some(l) = self.leases.get_mut(&lease) {
            l.instances.remove(&(key.clone(), id.to_owned()));
        }
        let revision = self.record(key, Change::Remove(instance), history);
        self.tidy(key);
        Some(revision)
    }

    fn drop_lease(&mut self, lease: LeaseId, history: usize) -> bool {
        let Some(state) = self.leases.remove(&lease) else {
            return false;
        };
        self.deadlines.remove(&(state.deadline, lease));
        for (key, id) in state.instances {
            self.remove_instance(&key, &id, history);
        }
        true
    }

    fn snapshot(&self, key: &ServiceKey) -> Snapshot {
        Snapshot {
            revision: self.revision,
            instances: self
                .services
                .get(key)
                .map(|s| s.instances.values().map(|(i, _)| i.clone()).collect())
                .unwrap_or_default(),
        }
    }

    fn page(&self, key: &ServiceKey, request: &PageRequest) -> Page {
        let Some(service) = self.services.get(key) else {
            // A key without state has no instances. Its last change, if it had any, is no
            // later than now, and a key's state is only dropped by a change.
            return Page::take([], request, self.revision, self.revision);
        };
        let start = match &request.after {
            Some(after) => Bound::Excluded(after.as_str()),
            None => Bound::Unbounded,
        };
        let following = service
            .instances
            .range::<str, _>((start, Bound::Unbounded))
            .map(|(_, (instance, _))| instance);
        Page::take(following, request, self.revision, service.changed)
    }
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    async fn grant(&self, ttl: Duration) -> Result<Lease, RegistryError> {
        if ttl.is_zero() {
            return Err(RegistryError::Invalid("lease TTL must be positive".into()));
        }
        let mut state = self.inner.lock();
        state.next_lease += 1;
        let id = LeaseId(state.next_lease);
        let deadline = expiry(Instant::now(), ttl);
        state.leases.insert(
            id,
            LeaseState {
                ttl,
                deadline,
                instances: HashSet::new(),
            },
        );
        state.deadlines.insert((deadline, id));
        drop(state);
        self.inner.rearm.notify_one();
        Ok(Lease { id, ttl })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Lease, RegistryError> {
        let mut state = self.inner.lock();
        let state = &mut *state;
        let l = state
            .leases
            .get_mut(&lease)
            .ok_or(RegistryError::LeaseNotFound(lease))?;
        state.deadlines.remove(&(l.deadline, lease));
        l.deadline = expiry(Instant::now(), l.ttl);
        state.deadlines.insert((l.deadline, lease));
        Ok(Lease {
            id: lease,
            ttl: l.ttl,
        })
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), RegistryError> {
        let history = self.inner.config.history;
        if self.inner.lock().drop_lease(lease, history) {
            Ok(())
        } else {
            Err(RegistryError::LeaseNotFound(lease))
        }
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
        let config = &self.inner.config;
        let mut state = self.inner.lock();
        if !state.leases.contains_key(&lease) {
            return Err(RegistryError::LeaseNotFound(lease));
        }
        let key = instance.key.clone();
        let id = instance.id.clone();
        let previous = state
            .service(&key)
            .instances
            .insert(id.clone(), (instance.clone(), lease));
        let unchanged = matches!(&previous, Some((old, _)) if *old == instance);
        if let Some((_, old_lease)) = &previous
            && *old_lease != lease
            && let Some(l) = state.leases.get_mut(old_lease)
        {
            l.instances.remove(&(key.clone(), id.clone()));
        }
        if let Some(l) = state.leases.get_mut(&lease) {
            l.instances.insert((key.clone(), id.clone()));
        }
        if unchanged {
            // Registering the same data again (a re-registration) is not a change.
            return Ok(state.revision);
        }
        let change = match previous {
            Some(_) => Change::Update(instance),
            None => Change::Insert(instance),
        };
        Ok(state.record(&key, change, config.history))
    }

    async fn deregister(&self, key: &ServiceKey, id: &str) -> Result<u64, RegistryError> {
        let history = self.inner.config.history;
        let mut state = self.inner.lock();
        Ok(state
            .remove_instance(key, id, history)
            .unwrap_or(state.revision))
    }

    async fn discover(&self, key: &ServiceKey) -> Result<Snapshot, RegistryError> {
        Ok(self.inner.lock().snapshot(key))
    }

    async fn discover_page(
        &self,
        key: &ServiceKey,
        request: &PageRequest,
    ) -> Result<Page, RegistryError> {
        Ok(self.inner.lock().page(key, request))
    }

    async fn watch(
        &self,
        key: &ServiceKey,
        after: Option<u64>,
    ) -> Result<WatchStream, RegistryError> {
        let config = &self.inner.config;
        let mut state = self.inner.lock();
        // Subscribing and reading the state under one lock: no change falls between them.
        let receiver = state
            .service(key)
            .watchers
            .get_or_insert_with(|| broadcast::channel(config.watch_buffer.max(1)).0)
            .subscribe();
        let oldest = state.history.front().map(|(r, _, _)| *r);
        let can_replay = match after {
            Some(rev) if rev == state.revision => true,
            // The history must reach back to the first change after `rev`.
            Some(rev) if rev < state.revision => oldest.is_some_and(|o| o <= rev + 1),
            // No revision, or one from the future (the registry restarted): start over.
            _ => false,
        };
        let first: Vec<WatchEvent> = match after {
            Some(rev) if can_replay => state
                .history
                .iter()
                .filter(|(r, k, _)| *r > rev && k == key)
                .map(|(revision, _, change)| WatchEvent::Change {
                    revision: *revision,
                    change: change.clone(),
                })
                .collect(),
            _ => vec![WatchEvent::Snapshot(state.snapshot(key))],
        };
        // Everything up to the current revision is covered above; the receiver, subscribed under
        // the same lock, only sees later changes.
        let seen = state.revision;
        drop(state);
        let inner = self.inner.clone();
        let key = key.clone();
        let live = futures::stream::unfold(
            (receiver, inner, key, seen),
            |(mut receiver, inner, key, mut seen)| async move {
                loop {
                    match receiver.recv().await {
                        Ok(event) => {
                            let (revision, change) = (event.0, event.1.clone());
                            if revision <= seen {
                                continue;
                            }
                            seen = revision;
                            let event = WatchEvent::Change { revision, change };
                            return Some((Ok(event), (receiver, inner, key, seen)));
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            debug!(%key, missed, "watcher fell behind; sending a snapshot");
                            let snapshot = inner.lock().snapshot(&key);
                            // Changes still queued up to the snapshot's revision are in it.
                            seen = snapshot.revision;
                            let event = WatchEvent::Snapshot(snapshot);
                            return Some((Ok(event), (receiver, inner, key, seen)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        );
        Ok(Box::pin(
            futures::stream::iter(first.into_iter().map(Ok)).chain(live),
        ))
    }
}

/// Expires leases at their deadlines until the registry is dropped.
async fn expire_leases(inner: Arc<Inner>, stop: CancellationToken) {
    loop {
        let next = {
            let mut state = inner.lock();
            let now = Instant::now();
            let due: Vec<LeaseId> = state
                .deadlines
                .iter()
                .take_while(|(deadline, _)| *deadline <= now)
                .map(|(_, id)| *id)
                .collect();
            for id in due {
                debug!(lease = %id, "lease expired");
                state.drop_lease(id, inner.config.history);
            }
            state.deadlines.first().map(|(deadline, _)| *deadline)
        };
        let sleep = async {
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = inner.rearm.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}
/// When a lease of `ttl` granted or renewed `now` expires. A TTL too long for the clock (say
/// `Duration::MAX`) is held at thirty years, which no process outlives, rather than overflowing.
fn expiry(now: Instant, ttl: Duration) -> Instant {
    const LONGEST: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    now.checked_add(ttl.min(LONGEST)).unwrap_or(now)
}
