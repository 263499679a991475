//! A connector over several endpoints of one service: it keeps to the one that last worked and
//! moves on to the next when that one cannot be reached.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::builtin::connect;
use crate::{Connection, Connector, Endpoint, TransportError};

type Source = dyn Fn() -> Vec<Endpoint> + Send + Sync;

/// Connects to one of several endpoints: the one that last answered first, then the others in
/// order, wrapping around; the first connection made wins. A client built on it moves to
/// another node when its node dies (its reconnect asks this connector again), and comes back to
/// none of the dead ones while another answers.
///
/// The endpoints are a fixed list ([`Failover::new`]) or asked for at every connect
/// ([`Failover::from_fn`]), e.g. from a registry's current view of a service.
///
/// ```
/// use std::time::Duration;
/// use rpc_transport::{Connector, Endpoint, Failover};
///
/// let nodes: Vec<Endpoint> = vec![
///     "tcp://127.0.0.1:7300".parse().unwrap(),
///     "tcp://127.0.0.1:7301".parse().unwrap(),
/// ];
/// let connector = Failover::new(nodes, Duration::from_secs(1));
/// assert_eq!(connector.describe(), "any of [tcp://127.0.0.1:7300, tcp://127.0.0.1:7301]");
/// ```
#[derive(Clone)]
pub struct Failover {
    source: Arc<Source>,
    /// The endpoint that answered last, as it was listed then (an index into the list, which
    /// may have changed since: it is only where trying starts).
    current: Arc<AtomicUsize>,
    timeout: Duration,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ClientTls>,
}

impl Failover {
    /// Over a fixed list of endpoints, each connect giving up after `timeout`.
    pub fn new(endpoints: Vec<Endpoint>, timeout: Duration) -> Self {
        Failover::from_fn(move || endpoints.clone(), timeout)
    }

    /// Over the endpoints `source` gives at each connect.
    pub fn from_fn(
        source: impl Fn() -> Vec<Endpoint> + Send + Sync + 'static,
        timeout: Duration,
    ) -> Self {
        Failover {
            source: Arc::new(source),
            current: Arc::new(AtomicUsize::new(0)),
            timeout,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Connects to `tls://` and `wss://` endpoints with these settings; see
    /// [`connect_tls`](crate::connect_tls).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The endpoints as they are now.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        (self.source)()
    }
}

impl fmt::Debug for Failover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failover")
            .field("endpoints", &self.endpoints())
            .field("current", &self.current.load(Ordering::Relaxed))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[async_trait::async_trait]
impl Connector for Failover {
    async fn connect(&self) -> Result<Connection, TransportError> {
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return Err(TransportError::Connect {
                endpoint: self.describe(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no endpoint to connect to",
                ),
            });
        }
        let start = self.current.load(Ordering::Relaxed) % endpoints.len();
        let mut last = None;
        for step in 0..endpoints.len() {
            let index = (start + step) % endpoints.len();
            #[cfg(feature = "tls")]
            let attempt = match &self.tls {
                Some(tls) => {
                    crate::builtin::connect_tls(&endpoints[index], self.timeout, tls).await
                }
                None => connect(&endpoints[index], self.timeout).await,
            };
            #[cfg(not(feature = "tls"))]
            let attempt = connect(&endpoints[index], self.timeout).await;
            match attempt {
                Ok(connection) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(connection);
                }
                Err(e) => last = Some(e),
            }
        }
        // Every endpoint was tried; the list is not empty, so there is an error to give.
        Err(last.unwrap_or_else(|| TransportError::Connect {
            endpoint: self.describe(),
            source: std::io::ErrorKind::NotFound.into(),
        }))
    }

    fn describe(&self) -> String {
        let list: Vec<String> = self.endpoints().iter().map(ToString::to_string).collect();
        format!("any of [{}]", list.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use super::*;
    use crate::listen;

    fn mem(name: &str) -> Endpoint {
        format!("mem://failover-{name}").parse().unwrap()
    }

    #[tokio::test]
    async fn keeps_to_the_endpoint_that_answered_and_moves_on_when_it_dies() {
        let (a, b) = (mem("a"), mem("b"));
        let connector = Failover::new(vec![a.clone(), b.clone()], Duration::from_secs(1));
        // Only b listens: the first connect skips a.
        let listener_b = listen(&b).await.unwrap();
        connector.connect().await.unwrap();
        assert_eq!(connector.current.load(Ordering::Relaxed), 1);
        // Both listen now; b answered last, so b is tried first.
        let listener_a = listen(&a).await.unwrap();
        connector.connect().await.unwrap();
        assert_eq!(connector.current.load(Ordering::Relaxed), 1);
        // b dies: the next connect goes to a, and stays there.
        drop(listener_b);
        connector.connect().await.unwrap();
        assert_eq!(connector.current.load(Ordering::Relaxed), 0);
        drop(listener_a);
    }

    #[tokio::test]
    async fn when_none_answers_the_last_failure_is_given() {
        let connector = Failover::new(vec![mem("none-1"), mem("none-2")], Duration::from_secs(1));
        let error = connector.connect().await.unwrap_err();
        assert!(
            matches!(&error, TransportError::Connect { endpoint, .. } if endpoint == "mem://failover-none-2"),
            "{error:?}"
        );
        let empty = Failover::new(Vec::new(), Duration::from_secs(1));
        let error = empty.connect().await.unwrap_err();
        assert!(error.to_string().contains("any of []"), "{error}");
    }

    #[tokio::test]
    async fn a_source_is_asked_at_every_connect() {
        let list = Arc::new(Mutex::new(vec![mem("src-a")]));
        let connector = {
            let list = list.clone();
            Failover::from_fn(move || list.lock().unwrap().clone(), Duration::from_secs(1))
        };
        let _b = listen(&mem("src-b")).await.unwrap();
        assert!(connector.connect().await.is_err());
        list.lock().unwrap().push(mem("src-b"));
        connector.connect().await.unwrap();
    }
}
