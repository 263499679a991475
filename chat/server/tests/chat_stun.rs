//! The chat server's STUN service on loopback, spoken to as any STUN client would (requests
//! built by hand here, byte by byte, as RFC 8489 lays them out), NAT discovery with the chat
//! client library against it, and the `rendezvous`, `report_nat` and `nat_of` calls.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use chat_api::{NatBehaviour, NatReport};
use chat_client::{ChatClient, ChatClientConfig, NatTimeouts};
use chat_server::{ChatServer, ChatServerConfig, StunConfig};
use uuid::Uuid;

const COOKIE: u32 = 0x2112_A442;

async fn server(dir: &std::path::Path, stun: Option<StunConfig>) -> ChatServer {
    let mut config = ChatServerConfig::new(dir);
    config.listen = vec!["tcp://127.0.0.1:0".parse().unwrap()];
    config.password_hashing.memory_kib = 64;
    config.password_hashing.iterations = 1;
    config.stun = stun;
    ChatServer::start(config).await.unwrap()
}

fn stun_config(alternate_ip: Option<&str>) -> StunConfig {
    let mut config = StunConfig::new("127.0.0.1:0".parse().unwrap());
    config.alternate_ip = alternate_ip.map(|ip| ip.parse().unwrap());
    config
}

/// CRC-32 (ISO-HDLC), as FINGERPRINT uses it, bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A Binding request as a browser sends one: header, the given attributes, then FINGERPRINT.
fn binding_request(id: [u8; 12], attributes: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0x00, 0x01];
    let len = u16::try_from(attributes.len() + 8).unwrap();
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&COOKIE.to_be_bytes());
    bytes.extend_from_slice(&id);
    bytes.extend_from_slice(attributes);
    let fingerprint = crc32(&bytes) ^ 0x5354_554E;
    bytes.extend_from_slice(&[0x80, 0x28, 0x00, 0x04]);
    bytes.extend_from_slice(&fingerprint.to_be_bytes());
    bytes
}

fn change_request(ip: bool, port: bool) -> Vec<u8> {
    let flags = u32::from(ip) << 2 | u32::from(port) << 1;
    let mut attribute = vec![0x00, 0x03, 0x00, 0x04];
    attribute.extend_from_slice(&flags.to_be_bytes());
    attribute
}

/// A response's attributes, read by hand: (type, value).
fn attributes(response: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut found = Vec::new();
    let mut at = 20;
    while at + 4 <= response.len() {
        let kind = u16::from_be_bytes([response[at], response[at + 1]]);
        let len = usize::from(u16::from_be_bytes([response[at + 2], response[at + 3]]));
        found.push((kind, response[at + 4..at + 4 + len].to_vec()));
        at += 4 + len.div_ceil(4) * 4;
    }
    assert_eq!(at, response.len(), "attributes fill the message");
    found
}

/// An address attribute's value; XOR-ed with the cookie for the XOR kinds (IPv4 only here).
fn address(value: &[u8], xor: bool) -> SocketAddr {
    assert_eq!(value[1], 0x01, "IPv4");
    let mut port = u16::from_be_bytes([value[2], value[3]]);
    let mut ip = u32::from_be_bytes([value[4], value[5], value[6], value[7]]);
    if xor {
        port ^= (COOKIE >> 16) as u16;
        ip ^= COOKIE;
    }
    SocketAddr::new(IpAddr::from(ip.to_be_bytes()), port)
}

/// Sends `request` and returns the first answer and where it came from.
fn exchange(socket: &UdpSocket, to: SocketAddr, request: &[u8]) -> (Vec<u8>, SocketAddr) {
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket.send_to(request, to).unwrap();
    let mut buf = [0u8; 1500];
    let (len, from) = socket.recv_from(&mut buf).unwrap();
    (buf[..len].to_vec(), from)
}

fn get(attributes: &[(u16, Vec<u8>)], kind: u16) -> &[u8] {
    &attributes
        .iter()
        .find(|(k, _)| *k == kind)
        .unwrap_or_else(|| panic!("attribute {kind:#06x} missing in {attributes:?}"))
        .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_built_binding_request_gets_the_address_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), Some(stun_config(None))).await;
    let stun = server.stun_addresses().to_vec();
    assert_eq!(stun.len(), 2);
    assert_eq!(server.stun_advertised(), Some(stun[0].to_string().as_str()));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = socket.local_addr().unwrap();
    let id = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2];
    let request = binding_request(id, &[]);
    let (response, from) = exchange(&socket, stun[0], &request);
    assert_eq!(from, stun[0]);
    assert_eq!(&response[..2], &[0x01, 0x01], "a Binding success response");
    assert_eq!(
        usize::from(u16::from_be_bytes([response[2], response[3]])),
        response.len() - 20
    );
    assert_eq!(&response[4..8], &COOKIE.to_be_bytes());
    assert_eq!(&response[8..20], &id);
    let attrs = attributes(&response);
    assert_eq!(address(get(&attrs, 0x0020), true), me, "XOR-MAPPED-ADDRESS");
    assert_eq!(address(get(&attrs, 0x0001), false), me, "MAPPED-ADDRESS");
    assert_eq!(
        address(get(&attrs, 0x802b), false),
        stun[0],
        "RESPONSE-ORIGIN"
    );
    assert_eq!(
        address(get(&attrs, 0x802c), false),
        stun[1],
        "OTHER-ADDRESS"
    );
    assert!(String::from_utf8_lossy(get(&attrs, 0x8022)).starts_with("chat-server"));
    // FINGERPRINT last, over everything before it.
    let (kind, value) = attrs.last().unwrap();
    assert_eq!(*kind, 0x8028);
    let expected = crc32(&response[..response.len() - 8]) ^ 0x5354_554E;
    assert_eq!(value.as_slice(), expected.to_be_bytes());
    // Not much more than what was asked: 28 bytes in, at most 100 out.
    assert!(response.len() <= 100, "{} bytes", response.len());
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_requests_are_answered_from_the_socket_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.2 is loopback too on Linux: the host's second address.
    let server = server(dir.path(), Some(stun_config(Some("127.0.0.2")))).await;
    let stun = server.stun_addresses().to_vec();
    assert_eq!(stun.len(), 4);
    assert_eq!(stun[2].ip().to_string(), "127.0.0.2");
    assert_eq!(
        (stun[2].port(), stun[3].port()),
        (stun[0].port(), stun[1].port())
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (ip, port, sender) in [
        (false, false, 0),
        (false, true, 1),
        (true, false, 2),
        (true, true, 3),
    ] {
        let request = binding_request([sender as u8; 12], &change_request(ip, port));
        let (response, from) = exchange(&socket, stun[0], &request);
        assert_eq!(from, stun[sender], "change ip {ip} port {port}");
        let attrs = attributes(&response);
        assert_eq!(address(get(&attrs, 0x802b), false), stun[sender]);
        assert_eq!(
            address(get(&attrs, 0x802c), false),
            stun[3],
            "OTHER-ADDRESS"
        );
    }
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_address_change_ip_is_refused_and_change_port_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), Some(stun_config(None))).await;
    let stun = server.stun_addresses().to_vec();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (response, from) = exchange(
        &socket,
        stun[0],
        &binding_request([1; 12], &change_request(true, false)),
    );
    assert_eq!(from, stun[0]);
    assert_eq!(&response[..2], &[0x01, 0x11], "a Binding error response");
    let attrs = attributes(&response);
    let error = get(&attrs, 0x0009);
    assert_eq!((error[2], error[3]), (4, 20), "420");
    assert_eq!(
        get(&attrs, 0x000a),
        &[0x00, 0x03],
        "UNKNOWN-ATTRIBUTES: CHANGE-REQUEST"
    );
    let (_, from) = exchange(
        &socket,
        stun[0],
        &binding_request([2; 12], &change_request(false, true)),
    );
    assert_eq!(from, stun[1]);
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_binding_request_gets_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), Some(stun_config(None))).await;
    let stun = server.stun_addresses()[0];
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut bad_fingerprint = binding_request([3; 12], &[]);
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 1;
    let mut indication = binding_request([4; 12], &[]);
    indication[1] = 0x11;
    let junk: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0; 20],
        vec![0xff; 1400],
        bad_fingerprint,
        indication,
        binding_request([5; 12], &[0x00, 0x03, 0x00, 0x02, 0, 0, 0, 0]),
    ];
    for datagram in &junk {
        socket.send_to(datagram, stun).unwrap();
    }
    // The first answer is to the one real request sent after the junk.
    let (response, _) = exchange(&socket, stun, &binding_request([6; 12], &[]));
    assert_eq!(&response[8..20], &[6; 12]);
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_on_loopback_finds_no_nat() {
    let dir = tempfile::tempdir().unwrap();
    for alternate in [None, Some("127.0.0.2")] {
        let server = server(dir.path(), Some(stun_config(alternate))).await;
        let stun = server.stun_addresses()[0];
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let started = std::time::Instant::now();
        let report = chat_client::discover_on(&socket, stun, NatTimeouts::default())
            .await
            .unwrap();
        assert_eq!(
            report,
            NatReport {
                mapping: NatBehaviour::EndpointIndependent,
                filtering: NatBehaviour::EndpointIndependent,
                public: Some(socket.local_addr().unwrap().to_string()),
            },
            "alternate address {alternate:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        server.shutdown(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_rfc_5780_leaves_the_behaviour_unknown() {
    // A plain STUN responder, built by hand: answers every request from where it was asked
    // with XOR-MAPPED-ADDRESS only (no OTHER-ADDRESS, CHANGE-REQUEST ignored).
    let plain = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let responder = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let (_, client) = plain.recv_from(&mut buf).await.unwrap();
            let SocketAddr::V4(client) = client else {
                continue;
            };
            let mut response = vec![0x01, 0x01, 0x00, 0x0c];
            response.extend_from_slice(&buf[4..20]);
            response.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
            response.extend_from_slice(&(client.port() ^ (COOKIE >> 16) as u16).to_be_bytes());
            response.extend_from_slice(&(u32::from(*client.ip()) ^ COOKIE).to_be_bytes());
            plain.send_to(&response, client).await.unwrap();
        }
    });
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let report = chat_client::discover_on(&socket, plain_addr, NatTimeouts::default())
        .await
        .unwrap();
    assert_eq!(report.mapping, NatBehaviour::Unknown);
    assert_eq!(report.filtering, NatBehaviour::Unknown);
    assert_eq!(
        report.public,
        Some(socket.local_addr().unwrap().to_string())
    );
    responder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_learn_where_stun_is_and_see_each_others_nat() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), Some(stun_config(Some("127.0.0.2")))).await;
    let endpoint = server.endpoints()[0].clone();
    let stun = server.stun_addresses()[0];
    let connect = |name: &str| {
        ChatClient::connect(
            ChatClientConfig::new(endpoint.clone(), name).identity(Uuid::new_v4(), "secret-1234"),
        )
    };
    let (alice, _a) = connect("alice").await.unwrap();
    let (bob, _b) = connect("bob").await.unwrap();
    let rendezvous = alice.rendezvous().await.unwrap();
    assert_eq!(rendezvous.stun, [stun.to_string()]);
    assert_eq!(rendezvous.ice_servers.len(), 1);
    assert_eq!(rendezvous.ice_servers[0].urls, [format!("stun:{stun}")]);
    assert_eq!(rendezvous.ice_servers[0].username, None);

    let report = alice.nat().await.unwrap();
    assert_eq!(report.mapping, NatBehaviour::EndpointIndependent);
    assert_eq!(report.filtering, NatBehaviour::EndpointIndependent);
    assert!(report.public.as_deref().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(bob.nat_of("alice").await.unwrap(), Some(report.clone()));
    assert_eq!(
        bob.nat_of(&alice.id().to_string()).await.unwrap(),
        Some(report)
    );
    assert!(bob.nat_of("nobody").await.is_err());
    alice.shutdown().await;
    bob.shutdown().await;
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_nat_checks_the_address_and_rendezvous_is_empty_without_stun() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), None).await;
    assert!(server.stun_addresses().is_empty());
    let endpoint = server.endpoints()[0].clone();
    let (alice, _a) = ChatClient::connect(
        ChatClientConfig::new(endpoint.clone(), "alice").identity(Uuid::new_v4(), "secret-1234"),
    )
    .await
    .unwrap();
    let rendezvous = alice.rendezvous().await.unwrap();
    assert!(rendezvous.stun.is_empty() && rendezvous.ice_servers.is_empty());
    assert!(alice.nat().await.is_err());
    assert_eq!(alice.nat_of("alice").await.unwrap(), None);

    // The raw service: a bad public address is refused, a good report kept.
    let rpc = rpc_core::Client::builder()
        .connect(&endpoint)
        .await
        .unwrap();
    let signal = chat_api::SignalClient::new(rpc);
    let token = alice.session().unwrap().token;
    let mut report = NatReport {
        mapping: NatBehaviour::AddressAndPortDependent,
        filtering: NatBehaviour::AddressDependent,
        public: Some("not an address".to_owned()),
    };
    let refused = signal.report_nat(token.clone(), report.clone()).await;
    assert!(
        matches!(
            refused,
            Err(rpc_core::RpcError::Application(
                chat_api::ChatError::Invalid(_)
            ))
        ),
        "{refused:?}"
    );
    report.public = Some("198.51.100.1:4000".to_owned());
    signal
        .report_nat(token.clone(), report.clone())
        .await
        .unwrap();
    assert_eq!(
        signal.nat_of(token, "alice".to_owned()).await.unwrap(),
        Some(report)
    );
    assert!(
        signal
            .report_nat(
                "no-such-token".to_owned(),
                NatReport {
                    mapping: NatBehaviour::Unknown,
                    filtering: NatBehaviour::Unknown,
                    public: None,
                }
            )
            .await
            .is_err()
    );
    alice.shutdown().await;
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reports_its_nat_again_in_a_new_session() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), Some(stun_config(None))).await;
    let endpoint = server.endpoints()[0].clone();
    let connect = |name: &str| {
        ChatClient::connect(
            ChatClientConfig::new(endpoint.clone(), name).identity(Uuid::new_v4(), "secret-1234"),
        )
    };
    let (alice, _a) = connect("alice").await.unwrap();
    let (bob, _b) = connect("bob").await.unwrap();
    let report = alice.nat().await.unwrap();
    // The server ends alice's session; her client registers again by itself.
    let old = alice.session().unwrap().token;
    let rpc = rpc_core::Client::builder()
        .connect(&endpoint)
        .await
        .unwrap();
    chat_api::SignalClient::new(rpc)
        .leave(old.clone())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let renewed = alice.session().is_some_and(|s| s.token != old);
        if renewed && bob.nat_of("alice").await.ok().flatten().as_ref() == Some(&report) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice's new session has no NAT report"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    alice.shutdown().await;
    bob.shutdown().await;
    server.shutdown(Duration::from_millis(100)).await;
}
