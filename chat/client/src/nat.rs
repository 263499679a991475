//! NAT behaviour discovery (RFC 5780) against a STUN server that supports it, such as the chat
//! server's (`chat-server --stun`).
//!
//! Two sockets are used, so that the tests of one cannot open the NAT for the other:
//!
//! - **Mapping** (RFC 5780 §4.3), on the socket given: test I to the primary address gives the
//!   public address and the server's OTHER-ADDRESS; then test II (the alternate IP with the
//!   primary port) and test III (the alternate IP and port) are sent together. The same mapped
//!   address in I and II is an endpoint-independent mapping; otherwise the same in II and III
//!   is address-dependent, and a third one address-and-port-dependent.
//! - **Filtering** (§4.4), on a second socket bound to the same IP: test I to the primary
//!   address, and at the same time requests with CHANGE-REQUEST "change IP and port" and
//!   "change port", which reach only the primary address. An answer to the first (from the
//!   other IP) means endpoint-independent filtering; else an answer to the second (from the
//!   other port) address-dependent; neither, address-and-port-dependent.
//!
//! With a server that has one address (its OTHER-ADDRESS has the primary IP), test II goes to
//! the alternate port instead and "change IP" is refused: an address-dependent mapping or
//! filtering then looks endpoint-independent (only address-and-port dependence shows). A
//! server that does not give OTHER-ADDRESS, or that answers a CHANGE-REQUEST from the address
//! asked, gets [`NatBehaviour::Unknown`].
//!
//! Each request is sent again after [`NatTimeouts::rto`], doubling (RFC 8489 §6.2.1), until
//! [`NatTimeouts::transaction`] has passed; the mapping tests take two such rounds and the
//! filtering tests one, alongside, so a classification takes at most twice
//! [`NatTimeouts::transaction`] (2.8 s by default), however many datagrams are lost.
//!
//! Requests are encoded and responses decoded with [`stun_codec`]; CHANGE-REQUEST's flags are
//! encoded right by it (its decoder reads them one bit off, which only a server would use).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytecodec::{DecodeExt, EncodeExt};
use chat_api::{NatBehaviour, NatReport};
use stun_codec::rfc5389::attributes::{ErrorCode, MappedAddress, XorMappedAddress};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5780::attributes::{ChangeRequest, OtherAddress};
use stun_codec::{Message, MessageClass, MessageDecoder, MessageEncoder, TransactionId};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How long STUN transactions wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatTimeouts {
    /// The first retransmission timeout; each next one is twice the last. Default: 500 ms
    /// (RFC 8489's).
    pub rto: Duration,
    /// How long one round of requests waits for its answers. Default: 1.4 s (a request is
    /// sent at 0 and 500 ms).
    pub transaction: Duration,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        NatTimeouts {
            rto: Duration::from_millis(500),
            transaction: Duration::from_millis(1400),
        }
    }
}

impl NatTimeouts {
    /// When a request is sent, from the start of its transaction: at 0, then after `rto`,
    /// `2 rto`, … while before `transaction`.
    pub fn schedule(&self) -> Vec<Duration> {
        let mut at = Duration::ZERO;
        let mut rto = self.rto.max(Duration::from_millis(1));
        let mut sends = Vec::new();
        while at < self.transaction && sends.len() < 16 {
            sends.push(at);
            at += rto;
            rto = rto.saturating_mul(2);
        }
        sends
    }
}

/// Binds two UDP sockets on `bind` (port 0 for any) and classifies the NAT between them and
/// the STUN server at `stun`.
pub async fn discover(
    bind: SocketAddr,
    stun: SocketAddr,
    timeouts: NatTimeouts,
) -> io::Result<NatReport> {
    let socket = UdpSocket::bind(bind).await?;
    discover_on(&socket, stun, timeouts).await
}

/// Classifies the NAT, with `socket` for the mapping tests (so the public address found is
/// its own) and a second socket bound to its IP for the filtering tests.
pub async fn discover_on(
    socket: &UdpSocket,
    stun: SocketAddr,
    timeouts: NatTimeouts,
) -> io::Result<NatReport> {
    let local = socket.local_addr()?;
    let filtering_socket = UdpSocket::bind(SocketAddr::new(local.ip(), 0)).await?;
    let (mapping, filtering) = tokio::join!(
        mapping_tests(socket, stun, timeouts),
        filtering_tests(&filtering_socket, stun, timeouts)
    );
    Ok(NatReport {
        mapping: mapping.behaviour,
        filtering,
        public: mapping.public.map(|a| a.to_string()),
    })
}

/// What the mapping tests found.
#[derive(Debug)]
struct Mapping {
    behaviour: NatBehaviour,
    public: Option<SocketAddr>,
}

async fn mapping_tests(socket: &UdpSocket, stun: SocketAddr, timeouts: NatTimeouts) -> Mapping {
    let [first] = transact(socket, [Request::plain(stun)], timeouts).await;
    let Some(first) = first.filter(Reply::is_success) else {
        return Mapping {
            behaviour: NatBehaviour::Unknown,
            public: None,
        };
    };
    let public = first.mapped;
    let Some(other) = first.other else {
        return Mapping {
            behaviour: NatBehaviour::Unknown,
            public,
        };
    };
    let behaviour = if other.ip() == stun.ip() {
        // One address: the other port is all there is to compare with.
        let [second] = transact(
            socket,
            [Request::plain(SocketAddr::new(stun.ip(), other.port()))],
            timeouts,
        )
        .await;
        let second = second.filter(Reply::is_success).and_then(|r| r.mapped);
        classify_mapping(public, second, second)
    } else {
        let [second, third] = transact(
            socket,
            [
                Request::plain(SocketAddr::new(other.ip(), stun.port())),
                Request::plain(other),
            ],
            timeouts,
        )
        .await;
        let mapped = |r: Option<Reply>| r.filter(Reply::is_success).and_then(|r| r.mapped);
        classify_mapping(public, mapped(second), mapped(third))
    };
    Mapping { behaviour, public }
}

/// RFC 5780 §4.3 from the mapped addresses of tests I, II and III.
fn classify_mapping(
    first: Option<SocketAddr>,
    second: Option<SocketAddr>,
    third: Option<SocketAddr>,
) -> NatBehaviour {
    match (first, second, third) {
        (Some(a), Some(b), _) if a == b => NatBehaviour::EndpointIndependent,
        (Some(_), Some(b), Some(c)) if b == c => NatBehaviour::AddressDependent,
        (Some(_), Some(_), Some(_)) => NatBehaviour::AddressAndPortDependent,
        _ => NatBehaviour::Unknown,
    }
}

async fn filtering_tests(
    socket: &UdpSocket,
    stun: SocketAddr,
    timeouts: NatTimeouts,
) -> NatBehaviour {
    let [first, both, port] = transact(
        socket,
        [
            Request::plain(stun),
            Request::change(stun, true, true),
            Request::change(stun, false, true),
        ],
        timeouts,
    )
    .await;
    classify_filtering(stun, first.as_ref(), both.as_ref(), port.as_ref())
}

/// RFC 5780 §4.4 from the answers to test I, "change IP and port" and "change port".
fn classify_filtering(
    stun: SocketAddr,
    first: Option<&Reply>,
    both: Option<&Reply>,
    port: Option<&Reply>,
) -> NatBehaviour {
    let Some(other) = first.filter(|r| r.is_success()).and_then(|r| r.other) else {
        return NatBehaviour::Unknown;
    };
    let two_addresses = other.ip() != stun.ip();
    if two_addresses {
        match both {
            // It came from elsewhere: the NAT let it in.
            Some(r) if r.is_success() && r.source.ip() != stun.ip() => {
                return NatBehaviour::EndpointIndependent;
            }
            // A server that ignored the request, or refused it: the test says nothing.
            Some(_) => return NatBehaviour::Unknown,
            None => {}
        }
    }
    match port {
        Some(r) if r.is_success() && r.source.port() != stun.port() => {
            if two_addresses {
                NatBehaviour::AddressDependent
            } else {
                // Without a second address, address dependence cannot show.
                NatBehaviour::EndpointIndependent
            }
        }
        Some(_) => NatBehaviour::Unknown,
        None => NatBehaviour::AddressAndPortDependent,
    }
}

/// A Binding request for `id`, encoded: to learn the address a NAT maps a socket to.
pub(crate) fn binding_request(id: [u8; 12]) -> Option<Vec<u8>> {
    Request::plain(SocketAddr::from(([0, 0, 0, 0], 0))).encode(TransactionId::new(id))
}

/// The transaction and mapped address of a successful Binding response, if `datagram` is one.
pub(crate) fn binding_response(
    datagram: &[u8],
    source: SocketAddr,
) -> Option<([u8; 12], SocketAddr)> {
    let (id, reply) = Reply::parse(datagram, source)?;
    if !reply.is_success() {
        return None;
    }
    Some((*id.as_bytes(), reply.mapped?))
}

/// A Binding request to send.
#[derive(Debug, Clone, Copy)]
struct Request {
    to: SocketAddr,
    change: Option<(bool, bool)>,
}

impl Request {
    fn plain(to: SocketAddr) -> Self {
        Request { to, change: None }
    }

    fn change(to: SocketAddr, ip: bool, port: bool) -> Self {
        Request {
            to,
            change: Some((ip, port)),
        }
    }

    fn encode(&self, id: TransactionId) -> Option<Vec<u8>> {
        let mut message = Message::<Attribute>::new(MessageClass::Request, BINDING, id);
        if let Some((ip, port)) = self.change {
            message.add_attribute(ChangeRequest::new(ip, port));
        }
        MessageEncoder::new().encode_into_bytes(message).ok()
    }
}

/// What a server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    /// Where the answer came from.
    source: SocketAddr,
    /// The error code, for an error response.
    error: Option<u16>,
    /// XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS.
    mapped: Option<SocketAddr>,
    /// OTHER-ADDRESS.
    other: Option<SocketAddr>,
}

impl Reply {
    fn is_success(&self) -> bool {
        self.error.is_none() && self.mapped.is_some()
    }

    /// Reads a datagram: the answer to transaction `id`, or `None`.
    fn parse(datagram: &[u8], source: SocketAddr) -> Option<(TransactionId, Reply)> {
        let message = MessageDecoder::<Attribute>::new()
            .decode_from_bytes(datagram)
            .ok()?
            .ok()?;
        if message.method() != BINDING {
            return None;
        }
        let error = match message.class() {
            MessageClass::SuccessResponse => None,
            MessageClass::ErrorResponse => Some(
                message
                    .get_attribute::<ErrorCode>()
                    .map_or(500, ErrorCode::code),
            ),
            _ => return None,
        };
        let mapped = message
            .get_attribute::<XorMappedAddress>()
            .map(XorMappedAddress::address)
            .or_else(|| {
                message
                    .get_attribute::<MappedAddress>()
                    .map(MappedAddress::address)
            });
        let reply = Reply {
            source,
            error,
            mapped,
            other: message
                .get_attribute::<OtherAddress>()
                .map(OtherAddress::address),
        };
        Some((message.transaction_id(), reply))
    }
}

/// Sends the requests together, each again on [`NatTimeouts::schedule`], and collects the
/// answers until all came or the round's time is up. Answers are told by their transaction ids
/// (96 random bits), not by where they come from: the filtering tests expect answers from
/// addresses they did not send to.
async fn transact<const N: usize>(
    socket: &UdpSocket,
    requests: [Request; N],
    timeouts: NatTimeouts,
) -> [Option<Reply>; N] {
    let mut replies: [Option<Reply>; N] = std::array::from_fn(|_| None);
    let ids: [TransactionId; N] =
        std::array::from_fn(|_| TransactionId::new(std::array::from_fn(|_| fastrand::u8(..))));
    let datagrams: [Option<Vec<u8>>; N] = std::array::from_fn(|i| requests[i].encode(ids[i]));
    let start = Instant::now();
    let deadline = start + timeouts.transaction;
    let mut sends = timeouts
        .schedule()
        .into_iter()
        .map(|at| start + at)
        .peekable();
    let mut buf = vec![0u8; 1500];
    loop {
        if replies.iter().all(Option::is_some) || Instant::now() >= deadline {
            return replies;
        }
        if sends.next_if(|at| *at <= Instant::now()).is_some() {
            for (i, datagram) in datagrams.iter().enumerate() {
                if let (None, Some(datagram)) = (&replies[i], datagram) {
                    // A failed send is a lost datagram: the next send or the deadline follows.
                    let _ = socket.send_to(datagram, requests[i].to).await;
                }
            }
            continue;
        }
        let wake = sends.peek().copied().unwrap_or(deadline).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            received = socket.recv_from(&mut buf) => {
                let Ok((len, source)) = received else { continue };
                let Some((id, reply)) = buf.get(..len).and_then(|d| Reply::parse(d, source)) else {
                    continue;
                };
                if let Some(i) = ids.iter().position(|known| *known == id) {
                    replies[i].get_or_insert(reply);
                }
            }
        }
    }
}

/// The attributes the client reads and writes.
#[allow(unreachable_pub, missing_docs)]
mod attributes {
    use stun_codec::define_attribute_enums;
    use stun_codec::rfc5389::attributes::{
        ErrorCode, Fingerprint, MappedAddress, Software, UnknownAttributes, XorMappedAddress,
    };
    use stun_codec::rfc5780::attributes::{ChangeRequest, OtherAddress, ResponseOrigin};

    define_attribute_enums!(
        Attribute,
        AttributeDecoder,
        AttributeEncoder,
        [
            MappedAddress,
            ErrorCode,
            UnknownAttributes,
            XorMappedAddress,
            Software,
            Fingerprint,
            ChangeRequest,
            ResponseOrigin,
            OtherAddress
        ]
    );
}

use attributes::Attribute;

/// The name of a behaviour in JSON and text: `endpoint-independent`, `address-dependent`,
/// `address-and-port-dependent` or `unknown`.
pub fn behaviour_name(behaviour: NatBehaviour) -> &'static str {
    match behaviour {
        NatBehaviour::EndpointIndependent => "endpoint-independent",
        NatBehaviour::AddressDependent => "address-dependent",
        NatBehaviour::AddressAndPortDependent => "address-and-port-dependent",
        NatBehaviour::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn reply(source: &str, mapped: Option<&str>, other: Option<&str>) -> Reply {
        Reply {
            source: addr(source),
            error: None,
            mapped: mapped.map(addr),
            other: other.map(addr),
        }
    }

    #[test]
    fn the_schedule_doubles_and_fits_the_transaction() {
        let timeouts = NatTimeouts::default();
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(timeouts.schedule(), ms(&[0, 500]));
        let timeouts = NatTimeouts {
            rto: Duration::from_millis(100),
            transaction: Duration::from_millis(1600),
        };
        assert_eq!(timeouts.schedule(), ms(&[0, 100, 300, 700, 1500]));
        // Two rounds fit in 3 s.
        assert!(NatTimeouts::default().transaction * 2 <= Duration::from_secs(3));
    }

    #[test]
    fn mapping_is_classified_as_rfc_5780_says() {
        let (a, b, c) = (
            Some(addr("203.0.113.9:4000")),
            Some(addr("203.0.113.9:4001")),
            Some(addr("203.0.113.9:4002")),
        );
        assert_eq!(classify_mapping(a, a, b), NatBehaviour::EndpointIndependent);
        assert_eq!(classify_mapping(a, b, b), NatBehaviour::AddressDependent);
        assert_eq!(
            classify_mapping(a, b, c),
            NatBehaviour::AddressAndPortDependent
        );
        assert_eq!(classify_mapping(a, None, c), NatBehaviour::Unknown);
        assert_eq!(classify_mapping(None, a, a), NatBehaviour::Unknown);
    }

    #[test]
    fn filtering_is_classified_as_rfc_5780_says() {
        let stun = addr("192.0.2.1:3478");
        let first = reply(
            "192.0.2.1:3478",
            Some("203.0.113.9:4000"),
            Some("192.0.2.2:3479"),
        );
        let both = reply("192.0.2.2:3479", Some("203.0.113.9:4000"), None);
        let port = reply("192.0.2.1:3479", Some("203.0.113.9:4000"), None);
        let f = |b: Option<&Reply>, p: Option<&Reply>| classify_filtering(stun, Some(&first), b, p);
        assert_eq!(
            f(Some(&both), Some(&port)),
            NatBehaviour::EndpointIndependent
        );
        assert_eq!(f(None, Some(&port)), NatBehaviour::AddressDependent);
        assert_eq!(f(None, None), NatBehaviour::AddressAndPortDependent);
        // A server that answers from where it was asked is no evidence.
        let ignored = reply("192.0.2.1:3478", Some("203.0.113.9:4000"), None);
        assert_eq!(f(Some(&ignored), None), NatBehaviour::Unknown);
        assert_eq!(f(None, Some(&ignored)), NatBehaviour::Unknown);
        // No test I, or no OTHER-ADDRESS: unknown.
        assert_eq!(
            classify_filtering(stun, None, Some(&both), Some(&port)),
            NatBehaviour::Unknown
        );
        let plain = reply("192.0.2.1:3478", Some("203.0.113.9:4000"), None);
        assert_eq!(
            classify_filtering(stun, Some(&plain), Some(&both), Some(&port)),
            NatBehaviour::Unknown
        );
        // One address: "change IP" is refused, "change port" decides.
        let single = reply(
            "192.0.2.1:3478",
            Some("203.0.113.9:4000"),
            Some("192.0.2.1:3479"),
        );
        let refused = Reply {
            error: Some(420),
            ..reply("192.0.2.1:3478", None, None)
        };
        let g = |p: Option<&Reply>| classify_filtering(stun, Some(&single), Some(&refused), p);
        assert_eq!(g(Some(&port)), NatBehaviour::EndpointIndependent);
        assert_eq!(g(None), NatBehaviour::AddressAndPortDependent);
    }

    #[tokio::test]
    async fn an_unanswered_round_ends_at_its_deadline() {
        // A socket nobody answers: the round gives up on time (in real time, but short).
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let timeouts = NatTimeouts {
            rto: Duration::from_millis(20),
            transaction: Duration::from_millis(150),
        };
        let started = std::time::Instant::now();
        let to = silent.local_addr().unwrap();
        let [reply] = transact(&socket, [Request::plain(to)], timeouts).await;
        assert!(reply.is_none());
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(150) && elapsed < Duration::from_secs(2));
        // Sent at 0, 20, 60 and 140 ms.
        let mut buf = [0u8; 100];
        let mut count = 0;
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(10), silent.recv_from(&mut buf)).await
        {
            count += 1;
        }
        assert_eq!(count, 4);
    }
}
