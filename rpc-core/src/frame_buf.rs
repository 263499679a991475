//! Frames encoded in place: header placeholder first, body after it, header filled in last.

use bytes::{Bytes, BytesMut};
use rpc_codec::{FrameKind, HEADER_LEN, Header, SerializerId, Status};

/// A frame encoded in place: the header's bytes are reserved first, the body is written after
/// them, and the header is filled in once the body's length is known. One allocation per frame,
/// no copy of the body.
#[derive(Debug)]
pub(crate) struct FrameBuf {
    buf: BytesMut,
}

impl FrameBuf {
    pub(crate) fn with_capacity(body_capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + body_capacity);
        buf.resize(HEADER_LEN, 0);
        FrameBuf { buf }
    }

    /// The buffer the body is appended to (it already holds the header's placeholder).
    pub(crate) fn body(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub(crate) fn body_len(&self) -> usize {
        self.buf.len() - HEADER_LEN
    }

    /// Fills in the header. Fails with the body's length when it exceeds `max_body_len`.
    pub(crate) fn finish(
        mut self,
        kind: FrameKind,
        serializer: SerializerId,
        status: Status,
        request_id: u64,
        max_body_len: usize,
    ) -> Result<Bytes, usize> {
        let len = self.body_len();
        if len > max_body_len {
            return Err(len);
        }
        let header = Header {
            kind,
            serializer,
            status,
            request_id,
            // `max_body_len` never exceeds u32::MAX (FrameCodec clamps it), so this fits.
            body_len: len as u32,
        };
        self.buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        Ok(self.buf.freeze())
    }
}

/// A frame with no body and no serializer.
pub(crate) fn empty_frame(kind: FrameKind, request_id: u64) -> Bytes {
    empty_frame_with(kind, SerializerId::NONE, request_id)
}

/// A frame with no body that answers a call, so it carries the call's serializer.
pub(crate) fn empty_frame_with(
    kind: FrameKind,
    serializer: SerializerId,
    request_id: u64,
) -> Bytes {
    Bytes::copy_from_slice(
        &Header {
            kind,
            serializer,
            status: Status::OK,
            request_id,
            body_len: 0,
        }
        .to_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use rpc_codec::FrameCodec;
    use tokio_util::codec::Decoder;

    use super::*;

    #[test]
    fn frames_built_in_place_decode() {
        let mut fb = FrameBuf::with_capacity(8);
        fb.body().extend_from_slice(b"payload");
        let bytes = fb
            .finish(
                FrameKind::Response,
                SerializerId::JSON,
                Status::OK,
                42,
                1024,
            )
            .unwrap();
        let frame = FrameCodec::new()
            .decode(&mut BytesMut::from(&bytes[..]))
            .unwrap()
            .unwrap();
        assert_eq!(frame.request_id, 42);
        assert_eq!(&frame.body[..], b"payload");
        let mut fb = FrameBuf::with_capacity(0);
        fb.body().extend_from_slice(&[0; 10]);
        assert_eq!(
            fb.finish(FrameKind::Response, SerializerId::JSON, Status::OK, 1, 9),
            Err(10)
        );
    }
}
