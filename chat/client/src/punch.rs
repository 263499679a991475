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
//!
//! A NAT whose mapping depends on the destination's address and port ("symmetric") gives the
//! peer socket a new public port toward every peer, which nobody can predict; when the other
//! side's NAT also filters by address and port, neither side's probes reach the other. Then
//! the two meet by the birthday paradox, as Tailscale describes: the symmetric side sprays from
//! [`SPRAY_SOCKETS`] fresh sockets toward the other side's public address, which opens as many
//! random ports on its NAT, while the other side probes [`RANDOM_PROBES`] random ports of the
//! symmetric side's public address from its peer socket; with 256 ports open out of about 64,000,
//! 2,048 probes find one with a chance of 99.97 %. The spraying socket that a probe reaches
//! becomes a splice: it carries datagrams between the other side and this side's peer socket,
//! so QUIC runs through it as through any path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use chat_api::{MAX_PUNCH_CANDIDATES, NatBehaviour, NatReport, PunchRequest};
use rpc_core::transport::quic::{DatagramSender, Datagrams};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, mpsc, oneshot};
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

/// A user's requests are answered at most this often (later ones wait their turn, as long as
/// no more than [`MAX_ANSWER_DELAY`] is queued; beyond, they are ignored): what a client sends
/// for others is bounded, as the candidates are theirs to name.
const ANSWER_EVERY: Duration = Duration::from_millis(500);
const MAX_ANSWER_DELAY: Duration = Duration::from_secs(1);

/// Beyond this many entries a table starts again from empty.
const MAX_ENTRIES: usize = 256;

/// What a spray packet starts with (the attempt's id follows): it only opens the NAT.
const SPRAY: &[u8] = b"\x02chat-punch-spray";
/// Sockets a symmetric side sprays from, each a random port on its NAT.
pub(crate) const SPRAY_SOCKETS: usize = 256;
/// Spray packets leave every socket this many times, this far apart (the mapping lasts from
/// the first; the others make up for losses), and the sockets wait for a probe this long.
const SPRAY_ROUNDS: u32 = 3;
const SPRAY_EVERY: Duration = Duration::from_millis(500);
const SPRAY_FOR: Duration = Duration::from_secs(3);
/// Public candidates sprayed toward, at most.
const MAX_SPRAY_TARGETS: usize = 2;
/// Random ports probed on a symmetric side's address, this many at a time, this far apart:
/// 2,048 in about 0.8 s.
pub(crate) const RANDOM_PROBES: usize = 2048;
const RANDOM_BURST: usize = 64;
const RANDOM_BURST_GAP: Duration = Duration::from_millis(25);
/// A splice with no datagram either way for this long ends (QUIC's keep-alives cross it every
/// 10 s while its connection lives).
const SPLICE_IDLE: Duration = Duration::from_secs(60);

/// How a side helps a hole open, from what both sides' NATs are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tactic {
    /// Probes to the other side's candidates are enough (or nothing more can help).
    Plain,
    /// This side's mapping is symmetric and the other side filters by address and port: spray
    /// from many sockets toward it.
    Spray,
    /// The other side's mapping is symmetric and this side filters by address and port: probe
    /// random ports of the other side's address.
    RandomPorts,
}

/// Why no hole can be punched between NATs `own` and `theirs`, when that is known.
pub(crate) fn why_no_hole(
    own: Option<&NatReport>,
    theirs: Option<&NatReport>,
) -> Option<&'static str> {
    let (own, theirs) = (own?, theirs?);
    (own.mapping == NatBehaviour::AddressAndPortDependent
        && theirs.mapping == NatBehaviour::AddressAndPortDependent)
        .then_some(
            "both NATs give a new public port toward every peer (symmetric), so neither side \
             can find the other's",
        )
}

/// The tactic of a side whose NAT is `own` toward a side whose NAT is `theirs`.
pub(crate) fn tactic(own: Option<&NatReport>, theirs: Option<&NatReport>) -> Tactic {
    use NatBehaviour::{AddressAndPortDependent as Apd, AddressDependent, EndpointIndependent};
    let (Some(own), Some(theirs)) = (own, theirs) else {
        return Tactic::Plain;
    };
    let predictable = |mapping| matches!(mapping, EndpointIndependent | AddressDependent);
    if own.mapping == Apd && predictable(theirs.mapping) && theirs.filtering == Apd {
        Tactic::Spray
    } else if theirs.mapping == Apd && predictable(own.mapping) && own.filtering == Apd {
        Tactic::RandomPorts
    } else {
        Tactic::Plain
    }
}

/// The hole-punching side of a client's peer socket.
#[derive(Debug)]
pub(crate) struct Puncher {
    sender: DatagramSender,
    local: SocketAddr,
    /// The public address of the peer socket, as the server's STUN service saw it.
    reflexive: Mutex<Option<SocketAddr>>,
    stun_waiters: Mutex<HashMap<[u8; 12], oneshot::Sender<SocketAddr>>>,
    /// Attempts of this client waiting for the peer's answer.
    answers: Mutex<HashMap<Uuid, oneshot::Sender<Answer>>>,
    /// Attempts of this client, told where the peer's probes come from.
    sources: Mutex<HashMap<Uuid, mpsc::UnboundedSender<SocketAddr>>>,
    /// When each user's request was last answered.
    answered: Mutex<HashMap<Uuid, Instant>>,
    /// One spray at a time (each holds [`SPRAY_SOCKETS`] sockets).
    spraying: Semaphore,
    /// Probes and spray packets sent, in all.
    sent: AtomicU64,
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
            spraying: Semaphore::new(1),
            sent: AtomicU64::new(0),
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
        let probe = tagged(PROBE, attempt);
        for addr in to {
            self.sent.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = self.sender.send_to(&probe, *addr).await {
                trace!(%addr, "probe not sent: {e}");
            }
        }
    }

    /// Probes and spray packets this client has sent, in all.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Probes [`RANDOM_PROBES`] random ports of each address in `ips` (a symmetric side's public
    /// addresses), in bursts, from the peer socket: each probe opens this side's NAT toward
    /// that port, and the one that meets a port the other side sprayed from gets through.
    pub(crate) async fn probe_random_ports(&self, attempt: Uuid, ips: &[IpAddr]) {
        if ips.is_empty() {
            return;
        }
        let probe = tagged(PROBE, attempt);
        let mut sent = 0;
        while sent < RANDOM_PROBES {
            if sent > 0 {
                tokio::time::sleep(RANDOM_BURST_GAP).await;
            }
            for _ in 0..RANDOM_BURST {
                for ip in ips {
                    let addr = SocketAddr::new(*ip, fastrand::u16(1024..));
                    self.sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.sender.send_to(&probe, addr).await {
                        trace!(%addr, "probe not sent: {e}");
                    }
                }
            }
            sent += RANDOM_BURST;
        }
        debug!(%attempt, probes = sent * ips.len(), "random ports probed");
    }

    /// Sprays toward `targets` (the other side's candidates) from [`SPRAY_SOCKETS`] fresh
    /// sockets for [`SPRAY_FOR`], in a task of its own. The first socket that a probe of the
    /// attempt reaches answers it with a probe (so that the other side learns the port) and
    /// becomes a splice to the peer socket, whose address as the peer socket sees it goes to
    /// the attempt's sources when it is this client's own. Does nothing while another spray
    /// runs.
    pub(crate) fn spray(self: &Arc<Self>, attempt: Uuid, candidates: Vec<SocketAddr>) {
        // Toward the public candidates only: a private address is not where the other side's
        // NAT is.
        let targets: Vec<SocketAddr> = public_candidates(&candidates)
            .iter()
            .take(MAX_SPRAY_TARGETS)
            .copied()
            .collect();
        if targets.is_empty() {
            return;
        }
        let puncher = self.clone();
        tokio::spawn(async move {
            let Ok(permit) = puncher.spraying.try_acquire() else {
                debug!(%attempt, "a spray is already running");
                return;
            };
            let Some((socket, remote)) = spray(&puncher, attempt, &targets).await else {
                return;
            };
            // The other sockets are closed: the next spray may start.
            drop(permit);
            splice(socket, remote, reachable_local(puncher.local)).await;
        });
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
            let _ = tx.send(Answer {
                candidates: parse_candidates(&answer.candidates),
                nat: answer.nat.clone(),
            });
        }
    }

    /// When a request from `user` is answered: after this delay (zero at once), so that one
    /// user's requests are answered at most one every [`ANSWER_EVERY`]; `None` (ignored) when
    /// more than [`MAX_ANSWER_DELAY`] of that user's requests wait already.
    pub(crate) fn answer_delay(&self, user: Uuid) -> Option<Duration> {
        let mut answered = lock(&self.answered);
        let now = Instant::now();
        let at = match answered.get(&user) {
            Some(last) => (*last + ANSWER_EVERY).max(now),
            None => now,
        };
        let delay = at.duration_since(now);
        if delay > MAX_ANSWER_DELAY {
            return None;
        }
        if answered.len() >= MAX_ENTRIES {
            answered.clear();
        }
        answered.insert(user, at);
        Some(delay)
    }
}

/// One of this client's attempts: the peer's answer, and the sources of its probes.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) answer: oneshot::Receiver<Answer>,
    pub(crate) sources: mpsc::UnboundedReceiver<SocketAddr>,
}

/// The peer's answer to an attempt.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Where its peer socket may be reached.
    pub(crate) candidates: Vec<SocketAddr>,
    /// Its NAT, as it reported it.
    pub(crate) nat: Option<NatReport>,
}

/// The public addresses among a peer's candidates (all but its socket's own, the first, when
/// there are others), once each and at most [`MAX_SPRAY_TARGETS`]: where a symmetric NAT's
/// random ports are.
pub(crate) fn public_ips(candidates: &[SocketAddr]) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in public_candidates(candidates) {
        if !ips.contains(&addr.ip()) && ips.len() < MAX_SPRAY_TARGETS {
            ips.push(addr.ip());
        }
    }
    ips
}

/// A peer's candidates but its socket's own address (the first) when there are others.
fn public_candidates(candidates: &[SocketAddr]) -> &[SocketAddr] {
    match candidates {
        [_, public @ ..] if !public.is_empty() => public,
        all => all,
    }
}

/// `prefix` followed by the attempt's 16 bytes.
fn tagged(prefix: &[u8], attempt: Uuid) -> Vec<u8> {
    let mut packet = prefix.to_vec();
    packet.extend_from_slice(attempt.as_bytes());
    packet
}

/// Where the peer socket receives what a local socket sends it: its own address, or the
/// loopback address of its family when it listens on every address.
fn reachable_local(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// See [`Puncher::spray`]: the socket a probe met, and the prober's address.
async fn spray(
    puncher: &Arc<Puncher>,
    attempt: Uuid,
    targets: &[SocketAddr],
) -> Option<(Arc<UdpSocket>, SocketAddr)> {
    // The spraying sockets listen where the peer socket does, so that the peer socket can
    // reach them and their packets leave by the same route.
    let bind = SocketAddr::new(puncher.local.ip(), 0);
    let mut sockets = Vec::with_capacity(SPRAY_SOCKETS);
    for _ in 0..SPRAY_SOCKETS {
        match UdpSocket::bind(bind).await {
            Ok(socket) => sockets.push(Arc::new(socket)),
            Err(e) => {
                debug!(%bind, opened = sockets.len(), "spraying socket not opened: {e}");
                break;
            }
        }
    }
    let (hit_tx, mut hits) = mpsc::unbounded_channel();
    let mut readers = tokio::task::JoinSet::new();
    for (index, socket) in sockets.iter().enumerate() {
        let (socket, hit_tx, targets) = (socket.clone(), hit_tx.clone(), targets.to_vec());
        readers.spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let is_probe = buf[..len]
                    .strip_prefix(PROBE)
                    .is_some_and(|id| id == attempt.as_bytes());
                if is_probe && targets.iter().any(|t| t.ip() == from.ip()) {
                    let _ = hit_tx.send((index, from));
                    return;
                }
            }
        });
    }
    drop(hit_tx);
    let packet = tagged(SPRAY, attempt);
    let until = Instant::now() + SPRAY_FOR;
    let mut rounds = 0;
    let hit = loop {
        if rounds < SPRAY_ROUNDS {
            rounds += 1;
            for socket in &sockets {
                for target in targets {
                    puncher.sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = socket.send_to(&packet, *target).await {
                        trace!(%target, "spray not sent: {e}");
                    }
                }
            }
        }
        let next = (Instant::now() + SPRAY_EVERY).min(until);
        tokio::select! {
            hit = hits.recv() => break hit,
            () = tokio::time::sleep_until(next) => if next >= until { break None },
        }
    };
    readers.shutdown().await;
    let Some((index, remote)) = hit else {
        debug!(%attempt, sockets = sockets.len(), "no probe met the spray");
        return None;
    };
    let socket = sockets.swap_remove(index);
    drop(sockets);
    // Tells the other side the port its probe found (its probes' sources are candidates).
    let _ = socket.send_to(&tagged(PROBE, attempt), remote).await;
    let splice = socket.local_addr().map(reachable_local).ok()?;
    debug!(%attempt, %remote, %splice, "a probe met the spray");
    if let Some(sources) = lock(&puncher.sources).get(&attempt) {
        let _ = sources.send(splice);
    }
    Some((socket, remote))
}

/// Carries datagrams between `remote` and `peer_socket` through `socket` until neither sends
/// for [`SPLICE_IDLE`]; anything from elsewhere is dropped.
async fn splice(socket: Arc<UdpSocket>, remote: SocketAddr, peer_socket: SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = match tokio::time::timeout(SPLICE_IDLE, socket.recv_from(&mut buf)).await
        {
            Err(_) => {
                debug!(%remote, "splice idle; closed");
                return;
            }
            // An ICMP error reported on the socket: the next datagram may still come.
            Ok(Err(e)) => {
                trace!(%remote, "splice: {e}");
                continue;
            }
            Ok(Ok(received)) => received,
        };
        let to = if from == remote {
            peer_socket
        } else if from == peer_socket {
            remote
        } else {
            continue;
        };
        if let Err(e) = socket.send_to(&buf[..len], to).await {
            trace!(%to, "splice: {e}");
        }
    }
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
            nat: None,
        });
        let answer = rx.await.unwrap();
        assert_eq!(answer.candidates, ["127.0.0.1:9".parse().unwrap()]);
        assert_eq!(answer.nat, None);
        // The peer's probes for the attempt tell where they come from.
        let (peer, peer_endpoint) = self::puncher();
        peer.probe(attempt, &[_endpoint.local_addr().unwrap()])
            .await;
        assert_eq!(
            sources.recv().await,
            Some(peer_endpoint.local_addr().unwrap())
        );
        tokio::time::pause();
        let user = Uuid::new_v4();
        assert_eq!(puncher.answer_delay(user), Some(Duration::ZERO));
        assert_eq!(puncher.answer_delay(user), Some(ANSWER_EVERY));
        assert_eq!(puncher.answer_delay(user), Some(ANSWER_EVERY * 2));
        assert_eq!(
            puncher.answer_delay(user),
            None,
            "more than a second queued"
        );
        assert_eq!(puncher.answer_delay(Uuid::new_v4()), Some(Duration::ZERO));
        tokio::time::advance(ANSWER_EVERY * 3).await;
        assert_eq!(puncher.answer_delay(user), Some(Duration::ZERO));
    }

    fn nat(mapping: NatBehaviour, filtering: NatBehaviour) -> Option<NatReport> {
        Some(NatReport {
            mapping,
            filtering,
            public: None,
        })
    }

    #[test]
    fn the_tactic_follows_both_nats() {
        use NatBehaviour::{
            AddressAndPortDependent as Apd, AddressDependent as Ad, EndpointIndependent as Ei,
            Unknown,
        };
        let symmetric = nat(Apd, Apd);
        let port_restricted = nat(Ei, Apd);
        let address_restricted = nat(Ei, Ad);
        let open = nat(Ei, Ei);
        let t = |own: &Option<NatReport>, theirs: &Option<NatReport>| {
            tactic(own.as_ref(), theirs.as_ref())
        };
        assert_eq!(t(&symmetric, &port_restricted), Tactic::Spray);
        assert_eq!(t(&port_restricted, &symmetric), Tactic::RandomPorts);
        // The other side's filtering lets the symmetric side's probes through already.
        assert_eq!(t(&symmetric, &address_restricted), Tactic::Plain);
        assert_eq!(t(&address_restricted, &symmetric), Tactic::Plain);
        assert_eq!(t(&symmetric, &open), Tactic::Plain);
        assert_eq!(t(&open, &symmetric), Tactic::Plain);
        // Two symmetric NATs: nothing to find by chance; the relay carries the messages.
        assert_eq!(t(&symmetric, &symmetric), Tactic::Plain);
        assert_eq!(t(&port_restricted, &port_restricted), Tactic::Plain);
        assert_eq!(t(&symmetric, &None), Tactic::Plain);
        assert_eq!(t(&symmetric, &nat(Unknown, Apd)), Tactic::Plain);
    }

    #[test]
    fn public_ips_skip_the_sockets_own_address() {
        let candidates: Vec<SocketAddr> =
            ["192.0.2.2:5000", "203.0.113.12:40000", "203.0.113.12:1"]
                .iter()
                .map(|c| c.parse().unwrap())
                .collect();
        assert_eq!(
            public_ips(&candidates),
            ["203.0.113.12".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            public_ips(&candidates[..1]),
            ["192.0.2.2".parse::<IpAddr>().unwrap()]
        );
        assert!(public_ips(&[]).is_empty());
    }

    /// A spray that a probe meets turns into a splice between the prober and the peer socket.
    #[tokio::test]
    async fn a_probe_that_meets_the_spray_opens_a_splice_to_the_peer_socket() {
        let (puncher, endpoint) = puncher();
        let peer_socket = endpoint.local_addr().unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let attempt = Uuid::new_v4();
        let Attempt { mut sources, .. } = puncher.expect_answer(attempt);
        puncher.spray(attempt, vec![other.local_addr().unwrap()]);

        // Every spraying socket sends; the other side probes one of them.
        let mut buf = [0u8; 2048];
        let mut seen = std::collections::HashSet::new();
        while seen.len() < SPRAY_SOCKETS {
            let (len, from) = other.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..len], tagged(SPRAY, attempt));
            assert_ne!(from, peer_socket);
            seen.insert(from);
        }
        let sprayer = *seen.iter().nth(17).unwrap();
        other
            .send_to(&tagged(PROBE, attempt), sprayer)
            .await
            .unwrap();
        // The socket met answers with a probe, and the splice is a source of the attempt.
        let answer = loop {
            let (len, from) = other.recv_from(&mut buf).await.unwrap();
            if buf[..len].starts_with(PROBE) {
                assert_eq!(&buf[..len], tagged(PROBE, attempt));
                break from;
            }
        };
        assert_eq!(answer, sprayer);
        assert_eq!(sources.recv().await, Some(sprayer));

        // Through the splice, both ways: a probe of another attempt reaches the peer socket
        // (which sees it coming from the splice), and the peer socket's probe reaches the
        // other side from the splice.
        let second = Uuid::new_v4();
        let Attempt {
            sources: mut second_sources,
            ..
        } = puncher.expect_answer(second);
        other
            .send_to(&tagged(PROBE, second), sprayer)
            .await
            .unwrap();
        assert_eq!(second_sources.recv().await, Some(sprayer));
        puncher.probe(second, &[sprayer]).await;
        let from = loop {
            let (len, from) = other.recv_from(&mut buf).await.unwrap();
            if buf[..len] == tagged(PROBE, second) {
                break from;
            }
        };
        assert_eq!(from, sprayer);
        assert!(puncher.sent() >= SPRAY_SOCKETS as u64);
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
