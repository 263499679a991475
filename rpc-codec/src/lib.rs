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
//! - [`StreamCredit`] and [`GoAway`] are the bodies of those control frames;
//!   [`STREAM_WINDOW`] and [`MAX_STREAM_CREDIT`] are the stream flow-control constants;
//!   [`STREAM_WINDOW_KEY`] announces a byte window.
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
mod control;
mod frame;
mod header;
mod metadata;
mod preamble;
mod serializer;
mod shared;
mod status;

pub use codec::{DEFAULT_MAX_BODY_LEN, FrameCodec, FrameError};
pub use control::{
    ControlError, GoAway, MAX_STREAM_CREDIT, MAX_STREAM_WINDOW_BYTES, MIN_STREAM_WINDOW_BYTES,
    STREAM_WINDOW, STREAM_WINDOW_KEY, StreamCredit, WINDOWED_STREAM_CREDIT, parse_stream_window,
};
pub use frame::Frame;
pub use header::{FrameKind, HEADER_LEN, Header, MAGIC, VERSION};
pub use metadata::{Metadata, MetadataError};
pub use preamble::{ErrorBody, PreambleError, RequestHead, RequestHeadRef, put_request_head};
pub use serializer::{
    DeserializeFn, Format, Formats, SerializeError, Serializer, SerializerId, UnknownFormatName,
};
pub use shared::{LEND_MIN, Lend, SharedBytes};
pub use status::Status;

// Re-exported so plugged-in serializers and generated code name the same versions.
pub use erased_serde;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::BytesMut;
    use tokio_util::codec::Encoder;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The hex dumps of section 11 of docs/PROTOCOL.md.
    #[test]
    fn worked_example_matches_the_protocol_page() {
        let mut metadata = Metadata::new();
        metadata.insert("trace-id", "abc").unwrap();
        let head = RequestHead {
            service: "greeter".into(),
            version: String::new(),
            method: "hello".into(),
            deadline: Some(Duration::from_secs(1)),
            metadata,
        };
        let mut body = BytesMut::new();
        head.put(&mut body).unwrap();
        Format::MessagePack.encode(&("world",), &mut body).unwrap();
        let request = Frame::new(FrameKind::Request, 7)
            .with_serializer(SerializerId::MESSAGE_PACK)
            .with_body(body.freeze());
        let mut wire = BytesMut::new();
        FrameCodec::new().encode(&request, &mut wire).unwrap();
        assert_eq!(
            hex(&wire),
            "da b0 01 01 01 00 00 00 00 00 00 00 00 07 00 00 00 29 07 67 72 65 65 74 65 72 00 \
             05 68 65 6c 6c 6f 00 00 03 e8 01 08 74 72 61 63 65 2d 69 64 00 03 61 62 63 91 a5 \
             77 6f 72 6c 64"
        );

        let response = Frame::new(FrameKind::Response, 7)
            .with_serializer(SerializerId::MESSAGE_PACK)
            .with_body(Format::MessagePack.to_bytes("hello, world").unwrap());
        let mut wire = BytesMut::new();
        FrameCodec::new().encode(&response, &mut wire).unwrap();
        assert_eq!(
            hex(&wire),
            "da b0 01 02 01 00 00 00 00 00 00 00 00 07 00 00 00 0d ac 68 65 6c 6c 6f 2c 20 77 \
             6f 72 6c 64"
        );

        let mut body = BytesMut::new();
        ErrorBody::new(r#"service "greeter" has no method "hullo""#).put(&mut body);
        let error = Frame::new(FrameKind::Response, 8)
            .with_serializer(SerializerId::MESSAGE_PACK)
            .with_status(Status::METHOD_NOT_FOUND)
            .with_body(body.freeze());
        let mut wire = BytesMut::new();
        FrameCodec::new().encode(&error, &mut wire).unwrap();
        assert_eq!(
            &wire[..20],
            &[
                0xda, 0xb0, 1, 2, 1, 3, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0x29, 0, 0x27
            ]
        );
        assert_eq!(&wire[20..], br#"service "greeter" has no method "hullo""#);
    }

    #[test]
    fn unit_arguments_are_what_the_protocol_page_says() {
        assert_eq!(&Format::MessagePack.to_bytes(&()).unwrap()[..], &[0xc0]);
        assert_eq!(&Format::Json.to_bytes(&()).unwrap()[..], b"null");
        assert!(Format::Postcard.to_bytes(&()).unwrap().is_empty());
    }
}
