//! `FrameCodec`: a byte stream to frames and back, whatever its reads look like, refusing
//! oversized bodies before reserving memory for them.

use std::io;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::header::check_prefix;
use crate::{Frame, HEADER_LEN, Header};

/// The default maximum body length: 8 MiB, as in Dubbo.
pub const DEFAULT_MAX_BODY_LEN: usize = 8 * 1024 * 1024;

/// Why a byte stream could not be read or written as frames. Every variant but `Io` means the
/// peer does not speak this protocol (or is broken), and the connection should be closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The first two bytes were not [`MAGIC`](crate::MAGIC). The message says what the bytes
    /// look like when they are another protocol's (TLS, HTTP), the usual mistake being a
    /// `tcp://` client at a `tls://` port or the reverse.
    #[error("bad magic {found:#06x}, expected {:#06x}{}", crate::MAGIC, magic_hint(*found))]
    BadMagic {
        /// The bytes found instead.
        found: u16,
    },
    /// The version byte names a version this crate does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The kind byte is not a known [`FrameKind`](crate::FrameKind).
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The body length exceeds the configured maximum.
    #[error("frame body of {len} bytes exceeds the maximum of {max} bytes")]
    BodyTooLarge {
        /// The announced (or, when encoding, actual) body length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({buffered} bytes of it received)")]
    Truncated {
        /// How many bytes of the unfinished frame had arrived (header included).
        buffered: usize,
    },
    /// The underlying byte stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// What two bytes that are not the magic look like, if they are the start of another protocol.
fn magic_hint(found: u16) -> &'static str {
    match found.to_be_bytes() {
        // A TLS record: handshake (a client hello) or alert, in TLS 1.0 to 1.3's record version.
        [0x16, 0x03] => " (a TLS handshake: the peer speaks TLS; use a tls:// endpoint)",
        [0x15, 0x03] => " (a TLS alert: the peer speaks TLS; use a tls:// endpoint)",
        [b'H', b'T'] => " (an HTTP response: the peer is an HTTP server)",
        [b'G', b'E'] | [b'P', b'O'] | [b'P', b'U'] | [b'H', b'E'] => {
            " (an HTTP request: the peer is an HTTP client, or a WebSocket client at a tcp:// port)"
        }
        [b'S', b'S'] => " (an SSH banner)",
        _ => "",
    }
}

/// A [`Decoder`] and [`Encoder`] of [`Frame`]s for use with `tokio_util::codec::Framed`.
///
/// Decoding handles any split of the stream (a frame arriving one byte at a time, or many frames
/// in one read) and rejects bad input before allocating for it: a body longer than the maximum
/// is refused as soon as its header is read, without reserving space for it.
///
/// ```
/// use bytes::BytesMut;
/// use rpc_codec::{Frame, FrameCodec, FrameKind};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(Frame::new(FrameKind::Ping, 7), &mut wire)?;
/// let frame = codec.decode(&mut wire)?.expect("a whole frame");
/// assert_eq!((frame.kind, frame.request_id), (FrameKind::Ping, 7));
/// # Ok::<(), rpc_codec::FrameError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_body_len: usize,
    state: DecodeState,
}

#[derive(Debug, Clone, Copy)]
enum DecodeState {
    Head,
    Body(Header),
}

impl FrameCodec {
    /// A codec with the default maximum body length ([`DEFAULT_MAX_BODY_LEN`]).
    pub fn new() -> Self {
        Self::with_max_body_len(DEFAULT_MAX_BODY_LEN)
    }

    /// A codec that refuses bodies longer than `max_body_len` bytes (clamped to `u32::MAX`).
    pub fn with_max_body_len(max_body_len: usize) -> Self {
        FrameCodec {
            max_body_len: max_body_len.min(u32::MAX as usize),
            state: DecodeState::Head,
        }
    }

    /// The maximum body length this codec accepts.
    pub fn max_body_len(&self) -> usize {
        self.max_body_len
    }

    /// Checks that a body of `len` bytes may be sent.
    pub fn check_body_len(&self, len: usize) -> Result<(), FrameError> {
        if len > self.max_body_len {
            return Err(FrameError::BodyTooLarge {
                len: len as u64,
                max: self.max_body_len,
            });
        }
        Ok(())
    }

    fn decode_head(&self, src: &mut BytesMut) -> Result<Option<Header>, FrameError> {
        let Some(head) = src.get(..HEADER_LEN) else {
            check_prefix(src)?;
            return Ok(None);
        };
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(head);
        let header = Header::parse(&bytes)?;
        if header.body_len as usize > self.max_body_len {
            return Err(FrameError::BodyTooLarge {
                len: u64::from(header.body_len),
                max: self.max_body_len,
            });
        }
        src.advance(HEADER_LEN);
        Ok(Some(header))
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let header = match self.state {
            DecodeState::Head => match self.decode_head(src)? {
                Some(header) => {
                    self.state = DecodeState::Body(header);
                    header
                }
                None => return Ok(None),
            },
            DecodeState::Body(header) => header,
        };
        let len = header.body_len as usize;
        if src.len() < len {
            // The length was checked against the maximum in `decode_head`, so this reservation
            // is bounded by configuration, not by what the peer announced.
            src.reserve(len - src.len());
            return Ok(None);
        }
        let body = src.split_to(len).freeze();
        self.state = DecodeState::Head;
        Ok(Some(Frame {
            kind: header.kind,
            serializer: header.serializer,
            status: header.status,
            request_id: header.request_id,
            body,
        }))
    }

    /// A stream may only end between frames: ending inside one (even right after its header)
    /// is an error, never a clean close.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        match (self.state, src.is_empty()) {
            (DecodeState::Head, true) => Ok(None),
            _ => Err(FrameError::Truncated {
                buffered: self.buffered_in_frame(src),
            }),
        }
    }
}

impl FrameCodec {
    fn buffered_in_frame(&self, src: &BytesMut) -> usize {
        match self.state {
            DecodeState::Head => src.len(),
            DecodeState::Body(_) => HEADER_LEN + src.len(),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        <Self as Encoder<&Frame>>::encode(self, &frame, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.check_body_len(frame.body.len())?;
        dst.reserve(frame.wire_len());
        frame.header().put(dst);
        dst.extend_from_slice(&frame.body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::{FrameKind, MAGIC, SerializerId, Status, VERSION};

    fn any_frame() -> impl Strategy<Value = Frame> {
        (
            prop::sample::select(FrameKind::ALL.to_vec()),
            any::<u8>(),
            any::<u8>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(kind, ser, status, id, body)| Frame {
                kind,
                serializer: SerializerId::from_u8(ser),
                status: Status::from_u8(status),
                request_id: id,
                body: Bytes::from(body),
            })
    }

    fn encode_all(frames: &[Frame]) -> BytesMut {
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        for frame in frames {
            codec.encode(frame, &mut wire).unwrap();
        }
        wire
    }

    /// Feeds `wire` to a fresh decoder in the given chunk sizes (cycled) and collects frames.
    fn decode_chunked(wire: &[u8], chunks: &[usize]) -> Vec<Frame> {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < wire.len() {
            let n = chunks[i % chunks.len()].max(1).min(wire.len() - pos);
            i += 1;
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                out.push(frame);
            }
        }
        assert!(buf.is_empty(), "bytes left over");
        out
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_chunking(
            frames in prop::collection::vec(any_frame(), 1..8),
            chunks in prop::collection::vec(1usize..64, 1..8),
        ) {
            let wire = encode_all(&frames);
            prop_assert_eq!(decode_chunked(&wire, &chunks), frames);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut codec = FrameCodec::with_max_body_len(1024);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            prop_assert!(buf.capacity() <= 512 + 1024 + HEADER_LEN);
        }
    }

    #[test]
    fn every_split_point_of_a_stream_decodes() {
        let frames = vec![
            Frame::new(FrameKind::Request, 1)
                .with_serializer(SerializerId::MESSAGE_PACK)
                .with_body(&b"\x05hello"[..]),
            Frame::new(FrameKind::Ping, 2),
            Frame::new(FrameKind::Response, 1)
                .with_status(Status::APPLICATION_ERROR)
                .with_body(vec![7u8; 100]),
            Frame::new(FrameKind::GoAway, 0).with_body(&b"draining"[..]),
        ];
        let wire = encode_all(&frames);
        // One byte at a time.
        assert_eq!(decode_chunked(&wire, &[1]), frames);
        // Every two-way split.
        for split in 0..=wire.len() {
            let mut codec = FrameCodec::new();
            let mut buf = BytesMut::from(&wire[..split]);
            let mut out = Vec::new();
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
            assert_eq!(out, frames, "split at {split}");
        }
        // All coalesced in one read.
        assert_eq!(decode_chunked(&wire, &[wire.len()]), frames);
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut codec = FrameCodec::with_max_body_len(1024);
        let header = Header {
            kind: FrameKind::Request,
            serializer: SerializerId::POSTCARD,
            status: Status::OK,
            request_id: 9,
            body_len: u32::MAX,
        };
        let mut buf = BytesMut::with_capacity(HEADER_LEN);
        header.put(&mut buf);
        let before = buf.capacity();
        match codec.decode(&mut buf) {
            Err(FrameError::BodyTooLarge { len, max }) => {
                assert_eq!(len, u64::from(u32::MAX));
                assert_eq!(max, 1024);
            }
            other => panic!("expected BodyTooLarge, got {other:?}"),
        }
        assert!(
            buf.capacity() <= before,
            "the buffer grew toward the announced length"
        );
    }

    #[test]
    fn body_at_the_limit_is_accepted_and_one_more_is_not() {
        let mut codec = FrameCodec::with_max_body_len(16);
        let mut wire = BytesMut::new();
        let ok = Frame::new(FrameKind::Response, 1).with_body(vec![1u8; 16]);
        codec.encode(&ok, &mut wire).unwrap();
        assert_eq!(codec.decode(&mut wire).unwrap(), Some(ok));
        let too_big = Frame::new(FrameKind::Response, 1).with_body(vec![1u8; 17]);
        assert!(matches!(
            codec.encode(&too_big, &mut wire),
            Err(FrameError::BodyTooLarge { len: 17, max: 16 })
        ));
    }

    #[test]
    fn garbage_is_rejected_on_its_first_byte() {
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::from(&b"G"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::BadMagic { .. })
        ));
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(matches!(
            FrameCodec::new().decode(&mut buf),
            Err(FrameError::BadMagic { found: 0x4745 })
        ));
    }

    #[test]
    fn bad_magic_names_the_protocol_it_looks_like() {
        let message = |bytes: &[u8]| {
            FrameCodec::new()
                .decode(&mut BytesMut::from(bytes))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            message(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            "bad magic 0x1603, expected 0xdab0 (a TLS handshake: the peer speaks TLS; use a \
             tls:// endpoint)"
        );
        assert!(
            message(&[0x15, 0x03, 0x03, 0, 2, 2, 50])
                .ends_with("(a TLS alert: the peer speaks TLS; use a tls:// endpoint)")
        );
        assert!(message(b"HTTP/1.1 400 Bad Request").contains("an HTTP response"));
        assert!(message(b"GET / HTTP/1.1").contains("an HTTP request"));
        assert_eq!(message(b"\x00\x01"), "bad magic 0x0001, expected 0xdab0");
    }

    #[test]
    fn truncated_frames_wait_for_more() {
        let wire = encode_all(&[Frame::new(FrameKind::Request, 3).with_body(vec![0u8; 10])]);
        for len in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..len]);
            assert_eq!(
                FrameCodec::new().decode(&mut buf).unwrap(),
                None,
                "len {len}"
            );
        }
    }

    #[test]
    fn a_stream_may_only_end_between_frames() {
        let wire = encode_all(&[Frame::new(FrameKind::Request, 3).with_body(vec![0u8; 10])]);
        for cut in 1..wire.len() {
            let mut codec = FrameCodec::new();
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None, "cut at {cut}");
            match codec.decode_eof(&mut buf) {
                Err(FrameError::Truncated { buffered }) => assert_eq!(buffered, cut),
                other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
            }
        }
        let mut codec = FrameCodec::new();
        let mut buf = wire.clone();
        assert!(codec.decode_eof(&mut buf).unwrap().is_some());
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn constants_are_what_the_protocol_says() {
        assert_eq!(MAGIC, 0xDAB0);
        assert_eq!(VERSION, 1);
        assert_eq!(HEADER_LEN, 18);
        assert_eq!(DEFAULT_MAX_BODY_LEN, 8 << 20);
    }
}
