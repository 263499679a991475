//! A decoded frame: its header fields and its body.

use bytes::Bytes;

use crate::{FrameKind, HEADER_LEN, Header, SerializerId, Status};

/// One decoded frame: the header's fields and the body.
///
/// The body length on the wire is always `body.len()`; it is not stored separately so the two
/// cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is for.
    pub kind: FrameKind,
    /// How the body's payload is serialized ([`SerializerId::NONE`] for frames without one).
    pub serializer: SerializerId,
    /// The outcome, for responses and stream ends.
    pub status: Status,
    /// The call this frame belongs to.
    pub request_id: u64,
    /// The body bytes.
    pub body: Bytes,
}

impl Frame {
    /// A frame of `kind` for `request_id` with an empty body and status ok.
    pub fn new(kind: FrameKind, request_id: u64) -> Self {
        Frame {
            kind,
            serializer: SerializerId::NONE,
            status: Status::OK,
            request_id,
            body: Bytes::new(),
        }
    }

    /// Sets the serializer id.
    pub fn with_serializer(mut self, serializer: SerializerId) -> Self {
        self.serializer = serializer;
        self
    }

    /// Sets the status.
    pub fn with_status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    /// Sets the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The header this frame is sent with.
    ///
    /// # Panics
    ///
    /// If the body is longer than `u32::MAX` bytes; [`FrameCodec`](crate::FrameCodec) checks the
    /// configured maximum (far below that) before calling this.
    #[allow(clippy::expect_used)] // documented: callers check the body against their maximum
    pub fn header(&self) -> Header {
        Header {
            kind: self.kind,
            serializer: self.serializer,
            status: self.status,
            request_id: self.request_id,
            body_len: u32::try_from(self.body.len()).expect("frame body longer than u32::MAX"),
        }
    }

    /// The number of bytes the frame takes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}
