//! The wire format of the framework: frame header, frame codec, request preamble, error bodies
//! and serializers. Sans-IO: nothing here touches a socket or a clock.
//!
//! A frame is a fixed 18-byte [`Header`] followed by a body of `body_len` bytes:
//!
//! ```text
//!  0       2       3       4       5       6                               14              18
//!  +-------+-------+-------+-------+-------+-------------------------------+---------------+
//!  | magic | ver   | kind  | ser   | status|          request id           |   body length |
//!  | 0xDAB0| 1     | u8    | u8    | u8    |             u64               |      u32      |
//!  +-------+-------+-------+-------+-------+-------------------------------+---------------+
//! ```
//!
//! - [`FrameCodec`] turns a byte stream into [`Frame`]s and back (a `tokio_util` codec), whatever
//!   the stream's reads look like, and refuses oversized bodies before allocating.
//! - [`RequestHead`] is the routing data at the start of a request body (service, version,
//!   method, deadline, [`Metadata`]); [`ErrorBody`] is the body of a failed response.
//! - [`Format`] serializes payloads: MessagePack, postcard, JSON, or a user [`Serializer`];
//!   [`Formats`] finds one by the [`SerializerId`] in a header.
//! - [`Status`] is the outcome of a call.
//!
//! The full byte-level description is `docs/PROTOCOL.md` in the repository.
//!
//! ```
//! use bytes::BytesMut;
//! use rpc_codec::{Format, Frame, FrameCodec, FrameKind, Metadata, RequestHead, RequestHeadRef};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! // A client encodes a request: preamble, then the arguments as a tuple.
//! let head = RequestHead {
//!     service: "greeter".into(),
//!     method: "hello".into(),
//!     ..Default::default()
//! };
//! let mut body = BytesMut::new();
//! head.put(&mut body).unwrap();
//! Format::MessagePack.encode(&("world",), &mut body).unwrap();
//! let request = Frame::new(FrameKind::Request, 1)
//!     .with_serializer(Format::MessagePack.id())
//!     .with_body(body.freeze());
//!
//! let mut codec = FrameCodec::new();
//! let mut wire = BytesMut::new();
//! codec.encode(&request, &mut wire).unwrap();
//!
//! // A server decodes it and routes on the preamble before touching the arguments.
//! let frame = codec.decode(&mut wire).unwrap().unwrap();
//! let (head, offset) = RequestHeadRef::parse(&frame.body).unwrap();
//! assert_eq!((head.service, head.method), ("greeter", "hello"));
//! let (name,): (String,) = Format::MessagePack.decode(&frame.body[offset..]).unwrap();
//! assert_eq!(name, "world");
//! assert_eq!(head.metadata(), Metadata::new());
//! ```

mod codec;
mod frame;
mod header;
mod metadata;
mod preamble;
mod serializer;
mod status;

pub use codec::{DEFAULT_MAX_BODY_LEN, FrameCodec, FrameError};
pub use frame::Frame;
pub use header::{FrameKind, HEADER_LEN, Header, MAGIC, VERSION};
pub use metadata::{Metadata, MetadataError};
pub use preamble::{ErrorBody, PreambleError, RequestHead, RequestHeadRef, put_request_head};
pub use serializer::{
    DeserializeFn, Format, Formats, SerializeError, Serializer, SerializerId, UnknownFormatName,
};
pub use status::Status;

// Re-exported so plugged-in serializers and generated code name the same versions.
pub use erased_serde;
