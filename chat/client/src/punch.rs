//! Hole punching: opening a direct path to a peer whose advertised endpoint cannot be reached,
//! as behind a NAT.
//!
//! Every client learns the address its NAT gives its peer socket (the one QUIC uses) from the
//! server's STUN service, through that very socket. To reach a peer, a client sends it, through
//! the server (`punch`), its candidates: the socket's own address and that public one. The peer
//! sends a few probes to each of them from its own peer socket, which opens its NAT toward the
//! requester, and answers with its own candidates; the requester then connects over QUIC to
//! each of those at once, and the first that completes carries the messages. The probes and
//! the STUN messages share the socket with QUIC (`rpc_core::transport::quic::Datagrams`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chat_api::{MAX_PUNCH_CANDIDATES, PunchRequest};
use rpc_core::transport::quic::{DatagramSender, Datagrams};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, trace};
use uuid::Uuid;

use crate::nat::{binding_request, binding_response};

/// What a probe starts with: not QUIC (its first byte is below 0x40), and recognisable; the
/// attempt's id (16 bytes) follows.
const PROBE: &[u8] = b"\x01chat-punch-probe";

/// Probes sent to each candidate before answering, this far apart.
const PROBE_ROUNDS: usize = 3;
const PROBE_GAP: Duration = Duration::from_millis(15);

/// After answering, probes go on this often, for this long: a requester whose NAT filters by
/// address opens it only when its first QUIC packets leave, and the probes that come after
/// show it the port this side's NAT really uses toward it (a symmetric NAT's), where it then
/// connects.
const PROBE_AFTER_EVERY: Duration = Duration::from_millis(100);
const PROBE_AFTER_FOR: Duration = Duration::from_secs(2);

/// How long a STUN Binding request waits for its answer, and how many times it is sent.
const STUN_WAIT: Duration = Duration::from_millis(300);
const STUN_TRIES: usize = 3;

/// A user's requests are answered at most this often; others are ignored.
const ANSWER_EVERY: Duration = Duration::from_millis(500);

/// Beyond this many entries a table starts again from empty.
const MAX_ENTRIES: usize = 256;

/// The hole-punching side of a client's peer socket.
#[derive(Debug)]
pub(crate) struct Puncher {
    sender: DatagramSender,
    local: SocketAddr,
    /// The public address of the peer socket, as the server's STUN service saw it.
    reflexive: Mutex<Option<SocketAddr>>,
    stun_waiters: Mutex<HashMap<[u8; 12], oneshot::Sender<SocketAddr>>>,
    /// Attempts of this client waiting for the peer's answer.
    answers: Mutex<HashMap<Uuid, oneshot::Sender<Vec<SocketAddr>>>>,
    /// Attempts of this client, told where the peer's probes come from.
    sources: Mutex<HashMap<Uuid, mpsc::UnboundedSender<SocketAddr>>>,
    /// When each user's request was last answered.
    answered: Mutex<HashMap<Uuid, Instant>>,
}

impl Puncher {
    /// Takes the peer socket's datagrams; a task reads them while the puncher lives.
    pub(crate) fn start(datagrams: Datagrams, local: SocketAddr) -> Arc<Puncher> {
        let puncher = Arc::new(Puncher {
            sender: datagrams.sender(),
            local,
            reflexive: Mutex::new(None),
            stun_waiters: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
        });
        tokio::spawn(read(Arc::downgrade(&puncher), datagrams));
        puncher
    }

    /// Asks the STUN server at `stun` for the peer socket's public address, and keeps it.
    pub(crate) async fn learn_reflexive(&self, stun: SocketAddr) -> Option<SocketAddr> {
        for _ in 0..STUN_TRIES {
            let id: [u8; 12] = std::array::from_fn(|_| fastrand::u8(..));
            let request = binding_request(id)?;
            let (tx, rx) = oneshot::channel();
            {
                let mut waiters = lock(&self.stun_waiters);
                if waiters.len() >= MAX_ENTRIES {
                    waiters.clear();
                }
                waiters.insert(id, tx);
            }
            if let Err(e) = self.sender.send_to(&request, stun).await {
                debug!(%stun, "STUN request not sent: {e}");
            }
            let answer = tokio::time::timeout(STUN_WAIT, rx).await;
            lock(&self.stun_waiters).remove(&id);
            if let Ok(Ok(mapped)) = answer {
                *lock(&self.reflexive) = Some(mapped);
                return Some(mapped);
            }
        }
        None
    }

    /// Whether the public address is known (the server has STUN, and it answered).
    pub(crate) fn has_reflexive(&self) -> bool {
        lock(&self.reflexive).is_some()
    }

    /// Where peers may reach the peer socket: its own address and its public one.
    pub(crate) fn candidates(&self) -> Vec<String> {
        let mut candidates = Vec::with_capacity(2);
        if !self.local.ip().is_unspecified() {
            candidates.push(self.local.to_string());
        }
        if let Some(reflexive) = *lock(&self.reflexive)
            && reflexive != self.local
        {
            candidates.push(reflexive.to_string());
        }
        candidates
    }

    /// Sends a few probes for `attempt` to each of `to` from the peer socket.
    pub(crate) async fn probe(&self, attempt: Uuid, to: &[SocketAddr]) {
        for round in 0..PROBE_ROUNDS {
            if round > 0 {
                tokio::time::sleep(PROBE_GAP).await;
            }
            self.probe_once(attempt, to).await;
        }
    }

    /// Goes on probing `to` for a while (see [`PROBE_AFTER_FOR`]).
    pub(crate) async fn keep_probing(&self, attempt: Uuid, to: &[SocketAddr]) {
        let until = Instant::now() + PROBE_AFTER_FOR;
        while Instant::now() < until {
            tokio::time::sleep(PROBE_AFTER_EVERY).await;
            self.probe_once(attempt, to).await;
        }
    }

    async fn probe_once(&self, attempt: Uuid, to: &[SocketAddr]) {
        let mut probe = PROBE.to_vec();
        probe.extend_from_slice(attempt.as_bytes());
        for addr in to {
            if let Err(e) = self.sender.send_to(&probe, *addr).await {
                trace!(%addr, "probe not sent: {e}");
            }
        }
    }

    /// Registers `attempt`: its answer, and where the peer's probes for it come from.
    pub(crate) fn expect_answer(&self, attempt: Uuid) -> Attempt {
        let (tx, answer) = oneshot::channel();
        let (source_tx, sources) = mpsc::unbounded_channel();
        let mut answers = lock(&self.answers);
        let mut all_sources = lock(&self.sources);
        if answers.len() >= MAX_ENTRIES || all_sources.len() >= MAX_ENTRIES {
            answers.clear();
            all_sources.clear();
        }
        answers.insert(attempt, tx);
        all_sources.insert(attempt, source_tx);
        Attempt { answer, sources }
    }

    /// Forgets an attempt that ended.
    pub(crate) fn forget(&self, attempt: Uuid) {
        lock(&self.answers).remove(&attempt);
        lock(&self.sources).remove(&attempt);
    }

    /// Takes an answer to one of this client's attempts.
    pub(crate) fn take_answer(&self, answer: &PunchRequest) {
        if let Some(tx) = lock(&self.answers).remove(&answer.attempt) {
            let _ = tx.send(parse_candidates(&answer.candidates));
        }
    }

    /// Whether a request from `user` is answered now (at most one every [`ANSWER_EVERY`]).
    pub(crate) fn may_answer(&self, user: Uuid) -> bool {
        let mut answered = lock(&self.answered);
        let now = Instant::now();
        if answered
            .get(&user)
            .is_some_and(|at| now.duration_since(*at) < ANSWER_EVERY)
        {
            return false;
        }
        if answered.len() >= MAX_ENTRIES {
            answered.clear();
        }
        answered.insert(user, now);
        true
    }
}

/// One of this client's attempts: the peer's answer, and the sources of its probes.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) answer: oneshot::Receiver<Vec<SocketAddr>>,
    pub(crate) sources: mpsc::UnboundedReceiver<SocketAddr>,
}

/// The candidates that parse, at most [`MAX_PUNCH_CANDIDATES`].
pub(crate) fn parse_candidates(candidates: &[String]) -> Vec<SocketAddr> {
    candidates
        .iter()
        .filter_map(|c| c.parse().ok())
        .take(MAX_PUNCH_CANDIDATES)
        .collect()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the peer socket's datagrams that are not QUIC: STUN answers go to their waiters,
/// probes (which only open NATs) are dropped.
async fn read(puncher: Weak<Puncher>, mut datagrams: Datagrams) {
    while let Some((datagram, from)) = datagrams.recv().await {
        let Some(puncher) = puncher.upgrade() else {
            return;
        };
        if let Some((id, mapped)) = binding_response(&datagram, from) {
            if let Some(waiter) = lock(&puncher.stun_waiters).remove(&id) {
                let _ = waiter.send(mapped);
            }
        } else if let Some(id) = datagram.strip_prefix(PROBE) {
            trace!(%from, "probe");
            let Ok(attempt) = Uuid::from_slice(id) else {
                continue;
            };
            if let Some(sources) = lock(&puncher.sources).get(&attempt) {
                let _ = sources.send(from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpc_core::transport::quic::{Identity, QuicConfig, QuicEndpoint};

    fn puncher() -> (Arc<Puncher>, QuicEndpoint) {
        let identity = Identity::generate().unwrap();
        let (endpoint, datagrams) = QuicEndpoint::bind_with_datagrams(
            "127.0.0.1:0".parse().unwrap(),
            QuicConfig::new(identity),
        )
        .unwrap();
        let local = endpoint.local_addr().unwrap();
        (Puncher::start(datagrams, local), endpoint)
    }

    #[tokio::test]
    async fn probes_leave_from_the_peer_socket() {
        let (puncher, endpoint) = puncher();
        let other = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let attempt = Uuid::new_v4();
        puncher.probe(attempt, &[other.local_addr().unwrap()]).await;
        let mut buf = [0; 64];
        let (len, from) = other.recv_from(&mut buf).await.unwrap();
        assert_eq!(from, endpoint.local_addr().unwrap());
        assert_eq!(&buf[..PROBE.len()], PROBE);
        assert_eq!(&buf[PROBE.len()..len], attempt.as_bytes());
        assert_eq!(
            puncher.candidates(),
            [endpoint.local_addr().unwrap().to_string()]
        );
    }

    #[tokio::test]
    async fn answers_are_matched_to_attempts_and_requests_limited() {
        let (puncher, _endpoint) = puncher();
        let attempt = Uuid::new_v4();
        let Attempt {
            answer: rx,
            mut sources,
        } = puncher.expect_answer(attempt);
        puncher.take_answer(&PunchRequest {
            from: chat_api::Sender {
                id: Uuid::new_v4(),
                name: "bob".into(),
            },
            attempt,
            candidates: vec!["127.0.0.1:9".into(), "junk".into()],
            answer: true,
        });
        assert_eq!(rx.await.unwrap(), ["127.0.0.1:9".parse().unwrap()]);
        // The peer's probes for the attempt tell where they come from.
        let (peer, peer_endpoint) = self::puncher();
        peer.probe(attempt, &[_endpoint.local_addr().unwrap()])
            .await;
        assert_eq!(
            sources.recv().await,
            Some(peer_endpoint.local_addr().unwrap())
        );
        let user = Uuid::new_v4();
        assert!(puncher.may_answer(user));
        assert!(!puncher.may_answer(user));
        assert!(puncher.may_answer(Uuid::new_v4()));
    }

    #[tokio::test]
    async fn without_a_stun_answer_there_is_no_public_address() {
        let (puncher, _endpoint) = puncher();
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            puncher.learn_reflexive(silent.local_addr().unwrap()).await,
            None
        );
        assert!(!puncher.has_reflexive());
    }
}
