//! Section 12 of `docs/PROTOCOL.md` ("Services of the example programs") against the services
//! themselves: every service's name, version and methods (name, kind, idempotence) are read from
//! the page and compared with what the service declares, and the page's JSON examples with what
//! the types serialize to.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use chat_api::{
    Access, CallMedia, ChatError, Delivery, Destination, DeviceKey, Envelope, Friend, FriendState,
    IceCandidate, InboxItem, LoginRequest, Membership, NatReport, Node, NodeServer,
    Page as ChatPage, Path, Peer, PeerError, PeerServer, PresenceEvent, RegisterRequest,
    Rendezvous, RoomInfo, SdpKind, Sender, Session, Signal, SignalServer, UserInfo,
};
use examples::hello::{GreeterServer, HelloService};
use rpc_core::{
    CallContext, Format, MethodKind, Reflection, ReflectionServer, ServerStream, Service,
    ServiceDescriptor,
};
use rpc_registry::{
    Change, Instance, MemoryRegistry, Page, RegistryApiServer, RegistryService, ServiceKey,
    WatchItem,
};
use uuid::Uuid;

const PAGE: &str = include_str!("../../docs/PROTOCOL.md");

/// A method as the page lists it.
#[derive(Debug, PartialEq)]
struct Listed {
    name: String,
    kind: String,
    idempotent: String,
}

/// A service as the page lists it: the heading's name and version, the table's methods.
#[derive(Debug, PartialEq)]
struct ListedService {
    name: String,
    version: String,
    methods: Vec<Listed>,
}

fn strip(cell: &str) -> String {
    cell.trim().trim_matches('`').to_owned()
}

/// The services of a section ("12. " or "13. "), in page order.
fn listed_services(number: &str) -> Vec<ListedService> {
    let section = PAGE
        .split("\n## ")
        .find(|s| s.starts_with(number))
        .unwrap_or_else(|| panic!("the page has a section {number}"));
    section
        .split("\n### ")
        .skip(1)
        .map(|sub| {
            // "12.1 `hello.Greeter`, version `1`"
            let heading = sub.lines().next().unwrap_or_default();
            let quoted: Vec<&str> = heading.split('`').skip(1).step_by(2).collect();
            let [name, version] = quoted[..] else {
                panic!("heading {heading:?} names a service and a version");
            };
            let methods = sub
                .lines()
                .skip_while(|l| !l.starts_with('|'))
                .take_while(|l| l.starts_with('|'))
                .skip(2)
                .map(|row| {
                    let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
                    let [name, _args, _result, kind, idempotent] = cells[..] else {
                        panic!("row {row:?} has five cells");
                    };
                    Listed {
                        name: strip(name),
                        kind: strip(kind),
                        idempotent: strip(idempotent),
                    }
                })
                .collect();
            ListedService {
                name: name.to_owned(),
                version: version.to_owned(),
                methods,
            }
        })
        .collect()
}

fn as_listed(service: &dyn Service) -> ListedService {
    ListedService {
        name: service.name().to_owned(),
        version: service.version().to_owned(),
        methods: service
            .methods()
            .iter()
            .map(|m| Listed {
                name: m.name.to_owned(),
                kind: match m.kind {
                    MethodKind::Unary => "unary",
                    MethodKind::OneWay => "one-way",
                    MethodKind::ServerStream => "stream",
                    _ => "unknown to this test",
                }
                .to_owned(),
                idempotent: if m.idempotent { "yes" } else { "no" }.to_owned(),
            })
            .collect(),
    }
}

/// Stands in for the chat server's implementation, whose type is private: only the method list
/// of the generated `SignalServer` is read.
struct SignalMethods;

const UNCALLED: &str = "only the method list is read";

impl Signal for SignalMethods {
    async fn register(&self, _: CallContext, _: RegisterRequest) -> Result<Session, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn heartbeat(&self, _: String) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn leave(&self, _: String) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn lookup(&self, _: String, _: String) -> Result<UserInfo, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn online(
        &self,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<ChatPage<UserInfo>, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn presence(&self, _: String) -> ServerStream<PresenceEvent> {
        unreachable!("{UNCALLED}")
    }
    async fn relay(
        &self,
        _: String,
        _: Uuid,
        _: Uuid,
        _: String,
        _: u64,
    ) -> Result<Delivery, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn inbox(&self, _: String) -> ServerStream<InboxItem> {
        unreachable!("{UNCALLED}")
    }
    async fn ack(&self, _: String, _: Vec<Uuid>) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn login(&self, _: CallContext, _: LoginRequest) -> Result<Session, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn create_room(&self, _: String, _: String, _: Access) -> Result<RoomInfo, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn invite(&self, _: String, _: String, _: Uuid) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn add_member(&self, _: String, _: String, _: Uuid) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn remove_member(&self, _: String, _: String, _: Uuid) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn my_rooms(
        &self,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<ChatPage<RoomInfo>, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn request_friend(&self, _: String, _: Uuid) -> Result<FriendState, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn accept_friend(&self, _: String, _: Uuid) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn unfriend(&self, _: String, _: Uuid) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn friends(
        &self,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<ChatPage<Friend>, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn call(&self, _: String, _: Uuid, _: Vec<CallMedia>) -> Result<Uuid, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn ringing(&self, _: String, _: Uuid) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn accept_call(&self, _: String, _: Uuid) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn reject_call(&self, _: String, _: Uuid, _: bool) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn hang_up(&self, _: String, _: Uuid) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn send_sdp(&self, _: String, _: Uuid, _: SdpKind, _: String) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn send_ice(&self, _: String, _: Uuid, _: IceCandidate) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn punch(
        &self,
        _: String,
        _: Uuid,
        _: Uuid,
        _: Vec<String>,
        _: bool,
    ) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn rendezvous(&self) -> Rendezvous {
        unreachable!("{UNCALLED}")
    }
    async fn report_nat(&self, _: String, _: NatReport) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn nat_of(&self, _: String, _: String) -> Result<Option<NatReport>, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn bind_device_key(&self, _: String, _: DeviceKey) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn device_key_of(&self, _: String, _: String) -> Result<Option<Vec<u8>>, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn upload_file(
        &self,
        _: String,
        _: Uuid,
        _: Uuid,
        _: chat_api::Attachment,
    ) -> Result<u64, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn upload_chunk(
        &self,
        _: String,
        _: Uuid,
        _: u64,
        _: bytes::Bytes,
    ) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn finish_upload(&self, _: String, _: Uuid, _: u64) -> Result<Delivery, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn download(
        &self,
        _: String,
        _: Uuid,
        _: u64,
        _: u32,
    ) -> Result<bytes::Bytes, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn join(&self, _: String, _: String) -> Result<RoomInfo, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn leave_room(&self, _: String, _: String) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn rooms(
        &self,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<ChatPage<RoomInfo>, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn members(
        &self,
        _: String,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<ChatPage<Sender>, ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn post(
        &self,
        _: String,
        _: String,
        _: Uuid,
        _: String,
        _: u64,
    ) -> Result<(), ChatError> {
        unreachable!("{UNCALLED}")
    }
    async fn history(
        &self,
        _: String,
        _: String,
        _: Option<String>,
        _: u32,
    ) -> Result<ChatPage<Envelope>, ChatError> {
        unreachable!("{UNCALLED}")
    }
}

/// Stands in for the chat client's peer service, whose type is private.
struct PeerMethods;

impl Peer for PeerMethods {
    async fn deliver(&self, _: rpc_core::CallContext, _: Envelope) -> Result<(), PeerError> {
        unreachable!("{UNCALLED}")
    }
    async fn whoami(&self) -> Uuid {
        unreachable!("{UNCALLED}")
    }
    async fn offer_file(
        &self,
        _: rpc_core::CallContext,
        _: chat_api::FileOffer,
    ) -> Result<u64, PeerError> {
        unreachable!("{UNCALLED}")
    }
    async fn file_chunk(
        &self,
        _: rpc_core::CallContext,
        _: Uuid,
        _: u64,
        _: bytes::Bytes,
    ) -> Result<(), PeerError> {
        unreachable!("{UNCALLED}")
    }
    async fn finish_file(&self, _: rpc_core::CallContext, _: Uuid) -> Result<(), PeerError> {
        unreachable!("{UNCALLED}")
    }
}

/// Stands in for the chat server's node service, whose type is private.
struct NodeMethods;

impl Node for NodeMethods {
    async fn wake(&self, _: Uuid, _: u64) -> bool {
        unreachable!("{UNCALLED}")
    }
    async fn push(&self, _: String, _: Vec<Uuid>, _: InboxItem) -> Result<u32, ChatError> {
        unreachable!("{UNCALLED}")
    }
}

// The memory registry behind the registry service runs a task: a runtime is needed.
#[tokio::test]
async fn the_page_lists_every_example_service_with_its_methods() {
    let hello = GreeterServer::new(HelloService {
        name: "hello-server".to_owned(),
    });
    let registry = RegistryApiServer::new(RegistryService::new(Arc::new(MemoryRegistry::new())));
    let served: Vec<ListedService> = [
        &hello as &dyn Service,
        &registry,
        &SignalServer::new(SignalMethods),
        &PeerServer::new(PeerMethods),
        &NodeServer::new(NodeMethods),
    ]
    .into_iter()
    .map(as_listed)
    .collect();
    assert_eq!(listed_services("12. "), served);
}

/// Stands in for the server's own reflection service, whose type is private.
struct ReflectionMethods;

impl Reflection for ReflectionMethods {
    async fn services(&self) -> Vec<ServiceDescriptor> {
        unreachable!("{UNCALLED}")
    }
}

#[test]
fn the_page_lists_the_built_in_services() {
    let reflection = ReflectionServer::new(ReflectionMethods);
    assert_eq!(listed_services("13. "), [as_listed(&reflection)]);
}

#[test]
fn the_reflection_example_describes_the_hello_service() {
    let hello = GreeterServer::new(HelloService {
        name: "hello-server".to_owned(),
    });
    assert_eq!(
        json_example("The `hello.Greeter` of [§12.1]"),
        json(&ServiceDescriptor::of(&hello))
    );
}

/// The JSON line after the paragraph that introduces it.
fn json_example(intro: &str) -> &'static str {
    PAGE.lines()
        .skip_while(|l| !l.starts_with(intro))
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("the page has a JSON example after {intro:?}"))
}

fn json(value: &impl serde::Serialize) -> String {
    String::from_utf8(Format::Json.to_bytes(value).unwrap().to_vec()).unwrap()
}

#[test]
fn the_pages_json_examples_are_what_the_types_serialize_to() {
    let key = ServiceKey::new("hello.Greeter").with_version("1");
    let instance = Instance::new(key, "tcp://127.0.0.1:7000");
    let page = Page {
        revision: 9,
        changed: 7,
        instances: vec![instance.clone()],
        next: Some(instance.id.clone()),
    };
    assert_eq!(json_example("A `Page` in JSON"), json(&page));
    let removed = WatchItem::Change {
        revision: 5,
        change: Change::Remove(instance),
    };
    assert_eq!(json_example("A `WatchItem` in JSON:"), json(&removed));

    let message = InboxItem::Message(Envelope {
        id: Uuid::from_u128(1),
        from: Sender {
            id: Uuid::from_u128(2),
            name: "ann".to_owned(),
        },
        to: Destination::User(Uuid::from_u128(3)),
        text: "hi".to_owned(),
        sent_at_ms: 1_700_000_000_000,
        path: Path::Relayed,
        file: None,
    });
    assert_eq!(json_example("An `InboxItem` in JSON:"), json(&message));

    let page = ChatPage {
        items: vec![RoomInfo {
            name: "lobby".to_owned(),
            member_count: 3,
            owner: Uuid::from_u128(2),
            access: Access::Open,
            membership: Membership::Member,
        }],
        next: Some("lobby".to_owned()),
    };
    assert_eq!(
        json_example("A `Page<RoomInfo>` in JSON, with more pages to come:"),
        json(&page)
    );
}

#[test]
fn defaulted_fields_of_the_registry_types_may_be_left_out() {
    let key: ServiceKey = Format::Json
        .decode(br#"{"service":"hello.Greeter"}"#)
        .unwrap();
    assert_eq!(key, ServiceKey::new("hello.Greeter"));
    let instance: Instance = Format::Json
        .decode(
            br#"{"key":{"service":"s"},"id":"a","endpoint":"tcp://h:1","weight":100,"healthy":true}"#,
        )
        .unwrap();
    assert!(instance.metadata.is_empty());
}
