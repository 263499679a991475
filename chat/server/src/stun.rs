//! The server's STUN service: Binding (RFC 8489) over UDP, with the NAT behaviour discovery
//! attributes of RFC 5780, so that clients learn their public address and how their NAT maps
//! and filters.
//!
//! It listens on two ports of the primary address (`P` and, by default, `P + 1`) and, when the
//! host has a second address, on the same two ports of that one: 2 or 4 sockets. A Binding
//! success response carries XOR-MAPPED-ADDRESS, MAPPED-ADDRESS (for clients of RFC 3489's
//! time), RESPONSE-ORIGIN (the socket that sent it), OTHER-ADDRESS (the socket a "change IP and
//! port" request would be answered from), SOFTWARE and FINGERPRINT.
//!
//! CHANGE-REQUEST is answered from the socket it asks for. With one address only, RFC 5780
//! (§7.2) has the server refuse a request it cannot honour: "change IP" gets a 420 (Unknown
//! Attribute) error naming CHANGE-REQUEST, from the socket that received it, while "change port"
//! alone is answered from the other port. OTHER-ADDRESS is then the same address with the
//! alternate port — where RFC 5780 (§6) wants a second address — so that clients can at least
//! compare two ports.
//!
//! Robustness: a datagram that is not a well-formed STUN Binding request with the magic cookie
//! (anything else, responses and indications included) is dropped without a word, and so is one
//! whose FINGERPRINT is wrong. Requests with a comprehension-required attribute the server does
//! not know (RESPONSE-PORT and PADDING among them: both would let a request make the server send
//! more, or elsewhere) get a 420 listing them. Each source address may make
//! [`PER_SOURCE_RATE`] requests a second (bursts of [`PER_SOURCE_BURST`]) and the service
//! answers [`TOTAL_RATE`] a second at most: what is over is dropped. A response to an IPv4
//! client is at most 100 bytes (5 times the smallest request), to an IPv6 one 148.
//!
//! The codec is [`stun_codec`]: it is maintained, small (bytecodec, crc, the hashes; no async
//! runtime), round-trips the RFC 5769 test vectors and, unlike webrtc-rs's `stun` (which has no
//! RFC 5780 attributes), has CHANGE-REQUEST, RESPONSE-ORIGIN and OTHER-ADDRESS typed
//! (`stun_codec::rfc5780`). `stun-rs` has them too, but pulls in PRECIS string profiles and
//! `rand` that a Binding server does not need. The header is checked here before the codec
//! sees a datagram, so non-STUN traffic costs a few comparisons. Its CHANGE-REQUEST decoder
//! reads the flags one bit off (0x2 as "change IP", 0x1 as "change port"; its encoder is
//! right), so the service reads that attribute's four bytes itself.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytecodec::{DecodeExt, EncodeExt};
use stun_codec::rfc5389::attributes::{
    ErrorCode, Fingerprint, MappedAddress, Software, UnknownAttributes, XorMappedAddress,
};
use stun_codec::rfc5389::methods::BINDING;
use stun_codec::rfc5780::attributes::{OtherAddress, ResponseOrigin};
use stun_codec::{
    Attribute as _, AttributeType, Message, MessageClass, MessageDecoder, MessageEncoder,
};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Requests a second one source IP address may make.
pub const PER_SOURCE_RATE: u32 = 50;
/// The burst one source IP address may send at once.
pub const PER_SOURCE_BURST: u32 = 100;
/// Requests a second the service answers in all.
pub const TOTAL_RATE: u32 = 20_000;
/// How many source addresses the rate limiter tracks at once; past it, sources it does not
/// track yet are refused until older ones have been quiet for a second.
const MAX_SOURCES: usize = 65_536;
/// The largest datagram read (a bigger one is cut and then fails the length check).
const MAX_DATAGRAM: usize = 1500;
/// The most unknown attributes a 420 lists (each costs the request 4 bytes, the answer 2).
const MAX_UNKNOWN_LISTED: usize = 16;
/// The STUN magic cookie (RFC 8489 §5).
const MAGIC_COOKIE: u32 = 0x2112_A442;
/// The type of a Binding request.
const BINDING_REQUEST: u16 = 0x0001;
/// CHANGE-REQUEST's attribute type (RFC 5780 §7.2).
const CHANGE_REQUEST: u16 = 0x0003;

/// Where the STUN service listens. See [`ChatServerConfig::stun`](crate::ChatServerConfig::stun).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StunConfig {
    /// The primary address and port `P`, e.g. `0.0.0.0:3478` (the standard port). An unspecified
    /// IP listens on every address, but then the service cannot say which address it answered
    /// from unless [`advertise`](Self::advertise) is an IP; give the host's addresses for RFC
    /// 5780's tests. Port 0 takes a free port.
    pub primary: SocketAddr,
    /// The alternate port. Default: `None`, `P + 1` (a free port when `P` is 0).
    pub alternate_port: Option<u16>,
    /// The host's second address, of the same family as the primary one (which must then not
    /// be unspecified). Default: `None`: the service has one address and refuses "change IP".
    pub alternate_ip: Option<IpAddr>,
    /// The host (name or IP) clients are told to send STUN to, with the primary port, in
    /// `rendezvous`. Default: `None`, the primary IP when it is not unspecified, else the host
    /// of the server's first advertised (or listening) TCP endpoint.
    pub advertise: Option<String>,
}

impl StunConfig {
    /// The standard STUN port.
    pub const DEFAULT_PORT: u16 = 3478;

    /// Listens on `primary` and the next port, with one address.
    pub fn new(primary: SocketAddr) -> Self {
        StunConfig {
            primary,
            alternate_port: None,
            alternate_ip: None,
            advertise: None,
        }
    }
}

/// The running STUN service: its sockets' tasks.
pub(crate) struct StunServer {
    /// The local addresses, indexed like [`Layout::origins`].
    addresses: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for StunServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StunServer")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}

impl StunServer {
    /// Binds the sockets and serves until `stop` is cancelled.
    pub(crate) async fn start(config: &StunConfig, stop: CancellationToken) -> io::Result<Self> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let primary_ip = config.primary.ip();
        if let Some(alt) = config.alternate_ip {
            if alt.is_ipv4() != primary_ip.is_ipv4() {
                return Err(invalid(format!(
                    "the STUN alternate address {alt} is not of the primary's family ({primary_ip})"
                )));
            }
            if primary_ip.is_unspecified() || alt.is_unspecified() {
                return Err(invalid(
                    "with an alternate STUN address, both addresses must be given (not 0.0.0.0 \
                     or ::)"
                        .to_owned(),
                ));
            }
            if alt == primary_ip {
                return Err(invalid(format!(
                    "the STUN alternate address is the primary one ({alt})"
                )));
            }
        }
        let primary = UdpSocket::bind(config.primary).await?;
        let p = primary.local_addr()?.port();
        let q = match config.alternate_port {
            Some(q) => q,
            None if config.primary.port() == 0 => 0,
            None => p.checked_add(1).ok_or_else(|| {
                invalid("the STUN port is 65535: give --stun-alt-port".to_owned())
            })?,
        };
        if q == p {
            return Err(invalid(format!(
                "the STUN alternate port is the primary one ({p})"
            )));
        }
        let alternate = UdpSocket::bind(SocketAddr::new(primary_ip, q)).await?;
        let q = alternate.local_addr()?.port();
        let mut sockets = vec![primary, alternate];
        if let Some(alt) = config.alternate_ip {
            sockets.push(UdpSocket::bind(SocketAddr::new(alt, p)).await?);
            sockets.push(UdpSocket::bind(SocketAddr::new(alt, q)).await?);
        }
        let addresses = sockets
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        // Bound to every address, a socket does not know which one a datagram came to: an
        // advertised IP stands for it.
        let stand_in = config
            .advertise
            .as_deref()
            .and_then(|host| host.parse::<IpAddr>().ok());
        let origins = addresses
            .iter()
            .map(|a| match (a.ip().is_unspecified(), stand_in) {
                (false, _) => Some(*a),
                (true, Some(ip)) => Some(SocketAddr::new(ip, a.port())),
                (true, None) => None,
            })
            .collect();
        let layout = Arc::new(Layout {
            origins,
            software: format!("chat-server {}", env!("CARGO_PKG_VERSION")),
        });
        let sockets: Arc<[UdpSocket]> = sockets.into();
        let limiter = Arc::new(Mutex::new(Limiter::new()));
        let tasks = (0..sockets.len())
            .map(|index| {
                tokio::spawn(serve(
                    sockets.clone(),
                    index,
                    layout.clone(),
                    limiter.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Ok(StunServer { addresses, tasks })
    }

    /// The local addresses: primary, alternate port, then (with a second address) the second
    /// address's primary and alternate ports.
    pub(crate) fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Waits for the sockets' tasks to end (after the stop token was cancelled).
    pub(crate) async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Receives on socket `index` and answers, until `stop`.
async fn serve(
    sockets: Arc<[UdpSocket]>,
    index: usize,
    layout: Arc<Layout>,
    limiter: Arc<Mutex<Limiter>>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = sockets[index].recv_from(&mut buf) => received,
        };
        let (len, from) = match received {
            Ok(received) => received,
            // An ICMP error for an earlier answer, on some systems: nothing to do.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                warn!("STUN socket {}: {e}", layout.describe(index));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(request) = buf.get(..len) else {
            continue;
        };
        if !looks_like_binding_request(request) {
            continue;
        }
        let allowed = limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(from.ip(), Instant::now());
        if !allowed {
            debug!(%from, "STUN request over the rate limit, dropped");
            continue;
        }
        let Some(answer) = layout.answer(request, from, index) else {
            continue;
        };
        let Some(socket) = sockets.get(answer.from) else {
            continue;
        };
        if let Err(e) = socket.send_to(&answer.bytes, from).await {
            debug!(%from, "STUN answer not sent: {e}");
        }
    }
}

/// Whether a datagram has the header of a STUN Binding request (RFC 8489 §5): type 0x0001,
/// the magic cookie, and a length that is a multiple of 4 and matches the datagram.
fn looks_like_binding_request(datagram: &[u8]) -> bool {
    let [t0, t1, l0, l1, c0, c1, c2, c3, ..] = *datagram else {
        return false;
    };
    datagram.len() >= 20
        && u16::from_be_bytes([t0, t1]) == BINDING_REQUEST
        && u32::from_be_bytes([c0, c1, c2, c3]) == MAGIC_COOKIE
        && usize::from(u16::from_be_bytes([l0, l1])) == datagram.len() - 20
        && datagram.len().is_multiple_of(4)
}

/// The flags of a CHANGE-REQUEST value (RFC 5780 §7.2): "change IP" is 0x4, "change port" 0x2.
fn change_request(value: &[u8]) -> Option<(bool, bool)> {
    let flags = u32::from_be_bytes(value.try_into().ok()?);
    Some((flags & 0x4 != 0, flags & 0x2 != 0))
}

/// The attributes the service decodes and encodes. CHANGE-REQUEST is not among them: it is read
/// from the raw attribute by [`change_request`] (see the module's documentation).
#[allow(unreachable_pub, missing_docs)]
mod attributes {
    use stun_codec::define_attribute_enums;
    use stun_codec::rfc5389::attributes::{
        AlternateServer, ErrorCode, Fingerprint, MappedAddress, MessageIntegrity, Nonce, Realm,
        Software, UnknownAttributes, Username, XorMappedAddress,
    };
    use stun_codec::rfc5780::attributes::{OtherAddress, ResponseOrigin};

    define_attribute_enums!(
        Attribute,
        AttributeDecoder,
        AttributeEncoder,
        [
            MappedAddress,
            Username,
            MessageIntegrity,
            ErrorCode,
            UnknownAttributes,
            Realm,
            Nonce,
            XorMappedAddress,
            Software,
            AlternateServer,
            Fingerprint,
            ResponseOrigin,
            OtherAddress
        ]
    );
}

use attributes::Attribute;

/// Where the sockets are, to answer from the right one.
#[derive(Debug)]
struct Layout {
    /// What each socket says it answers from (`None`: bound to every address, with nothing
    /// to stand for it): index 0 the primary, 1 the alternate port, 2 and 3 the same ports
    /// on the second address when there is one.
    origins: Vec<Option<SocketAddr>>,
    /// The SOFTWARE attribute.
    software: String,
}

/// An answer: the bytes, and which socket sends them.
#[derive(Debug)]
struct Answer {
    from: usize,
    bytes: Vec<u8>,
}

impl Layout {
    fn has_alternate_ip(&self) -> bool {
        self.origins.len() == 4
    }

    fn describe(&self, index: usize) -> String {
        match self.origins.get(index) {
            Some(Some(addr)) => addr.to_string(),
            _ => format!("#{index}"),
        }
    }

    /// The answer to a datagram received on socket `index` from `from`, if it gets one.
    fn answer(&self, request: &[u8], from: SocketAddr, index: usize) -> Option<Answer> {
        let mut decoder = MessageDecoder::<Attribute>::new();
        // Undecodable, or a broken attribute (a wrong FINGERPRINT among them): dropped.
        let message = decoder.decode_from_bytes(request).ok()?.ok()?;
        if message.class() != MessageClass::Request || message.method() != BINDING {
            return None;
        }
        let mut change = None;
        let mut unknown = Vec::new();
        for attribute in message.unknown_attributes() {
            let kind = attribute.get_type();
            if kind.as_u16() == CHANGE_REQUEST {
                // The first one counts (RFC 8489 §14); a malformed one drops the request.
                if change.is_none() {
                    change = Some(change_request(attribute.value())?);
                }
            } else if kind.is_comprehension_required() && unknown.len() < MAX_UNKNOWN_LISTED {
                unknown.push(kind);
            }
        }
        if !unknown.is_empty() {
            return self.unknown_attributes(&message, unknown, index);
        }
        let (change_ip, change_port) = change.unwrap_or((false, false));
        if change_ip && !self.has_alternate_ip() {
            // RFC 5780 §7.2: without an alternate address, refuse as if CHANGE-REQUEST were
            // unknown.
            let unknown = vec![AttributeType::new(CHANGE_REQUEST)];
            return self.unknown_attributes(&message, unknown, index);
        }
        let sender = index ^ usize::from(change_ip) << 1 ^ usize::from(change_port);
        // The socket a "change IP and port" request would come back from; with one address,
        // the other port.
        let other = if self.has_alternate_ip() {
            index ^ 0b11
        } else {
            index ^ 0b01
        };
        let mut response = Message::<Attribute>::new(
            MessageClass::SuccessResponse,
            BINDING,
            message.transaction_id(),
        );
        response.add_attribute(XorMappedAddress::new(from));
        response.add_attribute(MappedAddress::new(from));
        if let Some(Some(origin)) = self.origins.get(sender) {
            response.add_attribute(ResponseOrigin::new(*origin));
        }
        if let Some(Some(other)) = self.origins.get(other) {
            response.add_attribute(OtherAddress::new(*other));
        }
        self.finish(response, sender)
    }

    /// A 420 error listing `unknown`, from the socket that received the request.
    fn unknown_attributes(
        &self,
        request: &Message<Attribute>,
        unknown: Vec<AttributeType>,
        index: usize,
    ) -> Option<Answer> {
        let mut response = Message::<Attribute>::new(
            MessageClass::ErrorResponse,
            BINDING,
            request.transaction_id(),
        );
        response.add_attribute(ErrorCode::new(420, "Unknown Attribute".to_owned()).ok()?);
        response.add_attribute(UnknownAttributes::new(unknown));
        self.finish(response, index)
    }

    /// Adds SOFTWARE and FINGERPRINT and encodes.
    fn finish(&self, mut response: Message<Attribute>, sender: usize) -> Option<Answer> {
        if let Ok(software) = Software::new(self.software.clone()) {
            response.add_attribute(software);
        }
        let fingerprint = Fingerprint::new(&response).ok()?;
        response.add_attribute(fingerprint);
        let bytes = MessageEncoder::new().encode_into_bytes(response).ok()?;
        Some(Answer {
            from: sender,
            bytes,
        })
    }
}

/// Token buckets per source IP address, and one for the whole service.
#[derive(Debug)]
struct Limiter {
    sources: HashMap<IpAddr, Bucket>,
    total: Bucket,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills at `rate` a second up to `burst`, then takes a token if there is one.
    fn take(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Limiter {
    fn new() -> Self {
        Limiter {
            sources: HashMap::new(),
            total: Bucket {
                tokens: f64::from(TOTAL_RATE),
                at: Instant::now(),
            },
        }
    }

    /// Whether a request from `ip` may be answered now.
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.sources.contains_key(&ip) && self.sources.len() >= MAX_SOURCES {
            // Forget the sources quiet for long enough to have a full bucket again.
            let refill =
                Duration::from_secs_f64(f64::from(PER_SOURCE_BURST) / f64::from(PER_SOURCE_RATE));
            self.sources
                .retain(|_, b| now.saturating_duration_since(b.at) < refill);
            if self.sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let bucket = self.sources.entry(ip).or_insert(Bucket {
            tokens: f64::from(PER_SOURCE_BURST),
            at: now,
        });
        bucket.take(now, PER_SOURCE_RATE, PER_SOURCE_BURST)
            && self.total.take(now, TOTAL_RATE, TOTAL_RATE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(four: bool) -> Layout {
        let mut origins: Vec<Option<SocketAddr>> = vec![
            Some("192.0.2.1:3478".parse().unwrap()),
            Some("192.0.2.1:3479".parse().unwrap()),
        ];
        if four {
            origins.push(Some("192.0.2.2:3478".parse().unwrap()));
            origins.push(Some("192.0.2.2:3479".parse().unwrap()));
        }
        Layout {
            origins,
            software: "test".to_owned(),
        }
    }

    /// A Binding request built by hand (RFC 8489 §5), with extra attribute bytes.
    fn request(extra: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x00, 0x01];
        bytes.extend_from_slice(&u16::try_from(extra.len()).unwrap().to_be_bytes());
        bytes.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        bytes.extend_from_slice(&[7; 12]);
        bytes.extend_from_slice(extra);
        bytes
    }

    fn change(ip: bool, port: bool) -> Vec<u8> {
        let flags = u32::from(ip) << 2 | u32::from(port) << 1;
        let mut attr = vec![0x00, 0x03, 0x00, 0x04];
        attr.extend_from_slice(&flags.to_be_bytes());
        request(&attr)
    }

    fn decode(bytes: &[u8]) -> Message<Attribute> {
        MessageDecoder::<Attribute>::new()
            .decode_from_bytes(bytes)
            .unwrap()
            .unwrap()
    }

    const CLIENT: &str = "198.51.100.7:40000";

    #[test]
    fn binding_answers_from_the_receiving_socket() {
        let layout = layout(true);
        let answer = layout
            .answer(&request(&[]), CLIENT.parse().unwrap(), 1)
            .unwrap();
        assert_eq!(answer.from, 1);
        let m = decode(&answer.bytes);
        assert_eq!(m.class(), MessageClass::SuccessResponse);
        assert_eq!(m.transaction_id().as_bytes(), &[7; 12]);
        let x = m.get_attribute::<XorMappedAddress>().unwrap();
        assert_eq!(x.address(), CLIENT.parse().unwrap());
        let origin = m.get_attribute::<ResponseOrigin>().unwrap().address();
        assert_eq!(origin, "192.0.2.1:3479".parse().unwrap());
        let other = m.get_attribute::<OtherAddress>().unwrap().address();
        assert_eq!(other, "192.0.2.2:3478".parse().unwrap());
        assert!(answer.bytes.len() <= 100, "{}", answer.bytes.len());
    }

    #[test]
    fn change_request_picks_the_other_socket() {
        let layout = layout(true);
        let from = CLIENT.parse().unwrap();
        for (ip, port, expected) in [
            (false, false, 0),
            (false, true, 1),
            (true, false, 2),
            (true, true, 3),
        ] {
            let answer = layout.answer(&change(ip, port), from, 0).unwrap();
            assert_eq!(answer.from, expected, "ip {ip} port {port}");
            let m = decode(&answer.bytes);
            let origin = m.get_attribute::<ResponseOrigin>().unwrap().address();
            assert_eq!(Some(origin), layout.origins[expected]);
        }
    }

    #[test]
    fn change_ip_without_a_second_address_is_refused_with_420() {
        let layout = layout(false);
        let from = CLIENT.parse().unwrap();
        let answer = layout.answer(&change(true, true), from, 0).unwrap();
        assert_eq!(answer.from, 0);
        let m = decode(&answer.bytes);
        assert_eq!(m.class(), MessageClass::ErrorResponse);
        assert_eq!(m.get_attribute::<ErrorCode>().unwrap().code(), 420);
        let listed = m.get_attribute::<UnknownAttributes>().unwrap();
        assert_eq!(listed.unknowns(), &[AttributeType::new(CHANGE_REQUEST)]);
        // Change port alone works, and OTHER-ADDRESS is the other port.
        let answer = layout.answer(&change(false, true), from, 0).unwrap();
        assert_eq!(answer.from, 1);
        let m = decode(&answer.bytes);
        let other = m.get_attribute::<OtherAddress>().unwrap().address();
        assert_eq!(other, "192.0.2.1:3479".parse().unwrap());
    }

    #[test]
    fn unknown_comprehension_required_attributes_get_420() {
        // RESPONSE-PORT (0x0027), which this service does not honour.
        let answer = layout(false)
            .answer(
                &request(&[0x00, 0x27, 0x00, 0x04, 0x12, 0x34, 0, 0]),
                CLIENT.parse().unwrap(),
                0,
            )
            .unwrap();
        let m = decode(&answer.bytes);
        assert_eq!(m.get_attribute::<ErrorCode>().unwrap().code(), 420);
        assert_eq!(
            m.get_attribute::<UnknownAttributes>().unwrap().unknowns(),
            &[AttributeType::new(0x0027)]
        );
        // A comprehension-optional one is ignored.
        let answer = layout(false)
            .answer(
                &request(&[0x80, 0x99, 0x00, 0x04, 1, 2, 3, 4]),
                CLIENT.parse().unwrap(),
                0,
            )
            .unwrap();
        assert_eq!(decode(&answer.bytes).class(), MessageClass::SuccessResponse);
    }

    #[test]
    fn garbage_is_dropped() {
        let from: SocketAddr = CLIENT.parse().unwrap();
        let layout = layout(true);
        assert!(!looks_like_binding_request(b""));
        assert!(!looks_like_binding_request(b"GET / HTTP/1.1\r\n\r\n\0\0"));
        // A response, an indication, no cookie, a wrong length.
        let mut response = request(&[]);
        response[0] = 0x01;
        assert!(!looks_like_binding_request(&response));
        let mut no_cookie = request(&[]);
        no_cookie[4] = 0;
        assert!(!looks_like_binding_request(&no_cookie));
        let mut long = request(&[]);
        long[3] = 8;
        assert!(!looks_like_binding_request(&long));
        // A truncated attribute, a wrong fingerprint.
        assert!(
            layout
                .answer(&request(&[0x00, 0x03, 0x00, 0x08, 0, 0, 0, 0]), from, 0)
                .is_none()
        );
        assert!(
            layout
                .answer(&request(&[0x80, 0x28, 0x00, 0x04, 1, 2, 3, 4]), from, 0)
                .is_none()
        );
        // Random bytes behind a valid header never panic.
        let mut rng = fastrand::Rng::with_seed(5780);
        for _ in 0..20_000 {
            let len = rng.usize(0..64) * 4;
            let body: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let datagram = request(&body);
            assert!(looks_like_binding_request(&datagram));
            let _ = layout.answer(&datagram, from, rng.usize(0..4));
        }
    }

    #[test]
    fn the_limiter_caps_each_source() {
        let mut limiter = Limiter::new();
        let now = Instant::now();
        let a: IpAddr = "192.0.2.9".parse().unwrap();
        let b: IpAddr = "192.0.2.10".parse().unwrap();
        let allowed = (0..PER_SOURCE_BURST * 2)
            .filter(|_| limiter.allow(a, now))
            .count();
        assert_eq!(allowed, PER_SOURCE_BURST as usize);
        assert!(limiter.allow(b, now));
        // A second later, a second's worth more.
        let later = now + Duration::from_secs(1);
        let allowed = (0..PER_SOURCE_BURST * 2)
            .filter(|_| limiter.allow(a, later))
            .count();
        assert_eq!(allowed, PER_SOURCE_RATE as usize);
    }
}
