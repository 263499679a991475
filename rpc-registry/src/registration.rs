//! Keeping instances registered: lease renewal, and registering again when the registry lost
//! the lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::model::{Instance, LeaseId, RegistryError};
use crate::registry::Registry;

/// Where a [`Registration`] stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationState {
    /// The instances are registered under a live lease.
    Registered {
        /// The lease they are bound to.
        lease: LeaseId,
    },
    /// The registry cannot be reached or refused; the registration is retried.
    Retrying {
        /// Why the last attempt failed.
        reason: String,
    },
    /// The registration was withdrawn.
    Withdrawn,
}

/// Keeps instances registered for as long as it lives.
///
/// It grants a lease, registers the instances under it and renews the lease at a third of its
/// TTL. When the registry has lost the lease (it expired during a partition, or the registry
/// restarted) it grants a new one and registers everything again, so a registry restart heals
/// without the application doing anything (as Nacos 2 clients do). [`Registration::withdraw`]
/// revokes the lease, removing the instances at once; dropping the registration stops renewing
/// and lets the lease expire.
#[derive(Debug)]
pub struct Registration {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    state: watch::Receiver<RegistrationState>,
    registry: Arc<dyn Registry>,
}

impl Registration {
    /// Registers `instances` under a lease of `ttl`, failing if the first attempt fails.
    pub async fn start(
        registry: Arc<dyn Registry>,
        instances: Vec<Instance>,
        ttl: Duration,
    ) -> Result<Registration, RegistryError> {
        let lease = register_all(&*registry, &instances, ttl).await?;
        info!(lease = %lease, count = instances.len(), "registered");
        let (tx, rx) = watch::channel(RegistrationState::Registered { lease });
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_registered(
            registry.clone(),
            instances,
            ttl,
            lease,
            tx,
            stop.clone(),
        ));
        Ok(Registration {
            stop,
            task: Some(task),
            state: rx,
            registry,
        })
    }

    /// The registration's state now.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every change of state.
    pub fn watch_state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Stops renewing and revokes the lease, so the instances disappear at once.
    pub async fn withdraw(mut self) -> Result<(), RegistryError> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        // Read before the match: a guard held across the revoke would make this future !Send.
        let state = self.state.borrow().clone();
        match state {
            RegistrationState::Registered { lease } => {
                match self.registry.revoke(lease).await {
                    // Already gone is what was wanted.
                    Ok(()) | Err(RegistryError::LeaseNotFound(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn register_all(
    registry: &dyn Registry,
    instances: &[Instance],
    ttl: Duration,
) -> Result<LeaseId, RegistryError> {
    let lease = registry.grant(ttl).await?;
    for instance in instances {
        if let Err(e) = registry.register(instance.clone(), lease.id).await {
            let _ = registry.revoke(lease.id).await;
            return Err(e);
        }
    }
    Ok(lease.id)
}

async fn keep_registered(
    registry: Arc<dyn Registry>,
    instances: Vec<Instance>,
    ttl: Duration,
    lease: LeaseId,
    state: watch::Sender<RegistrationState>,
    stop: CancellationToken,
) {
    let renew_every = (ttl / 3).max(Duration::from_millis(10));
    let first_retry = (renew_every / 4).max(Duration::from_millis(10));
    // `None` once the registry has said the lease is gone: register anew.
    let mut lease = Some(lease);
    let mut wait = renew_every;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        let outcome = match lease {
            Some(id) => match registry.keep_alive(id).await {
                Ok(_) => Ok(id),
                Err(RegistryError::LeaseNotFound(_)) => {
                    debug!(lease = %id, "lease lost; registering again");
                    register_all(&*registry, &instances, ttl).await
                }
                Err(e) => Err(e),
            },
            None => register_all(&*registry, &instances, ttl).await,
        };
        match outcome {
            Ok(id) => {
                if lease != Some(id) {
                    info!(lease = %id, count = instances.len(), "registered again");
                }
                lease = Some(id);
                wait = renew_every;
                state.send_if_modified(|s| {
                    let next = RegistrationState::Registered { lease: id };
                    let changed = *s != next;
                    *s = next;
                    changed
                });
            }
            Err(e) => {
                warn!(error = %e, "could not keep the registration; retrying");
                // An unreachable registry may still hold the lease: keep renewing it. Any other
                // failure means registering anew.
                if !matches!(e, RegistryError::Unavailable(_)) {
                    lease = None;
                }
                wait = if wait >= renew_every {
                    first_retry
                } else {
                    (wait * 2).min(renew_every)
                };
                state.send_replace(RegistrationState::Retrying {
                    reason: e.to_string(),
                });
            }
        }
    }
}
