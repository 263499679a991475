//! The bodies of control frames and the stream flow-control constants.
//!
//! ```text
//! StreamCredit body:  +-----------+         GoAway body:  +----------------------------+
//!                     | u32 items |                       | optional UTF-8 reason       |
//!                     +-----------+                       +----------------------------+
//! ```

use bytes::BufMut;

use crate::header::{HEADER_LEN, Header};
use crate::status::Status;

/// Items of credit every server stream starts with: the server may send this many StreamItem
/// frames before the client grants more.
pub const STREAM_WINDOW: u32 = 256;

/// The most credit a server keeps outstanding for one stream; a grant that would take it beyond
/// this is clamped to it.
pub const MAX_STREAM_CREDIT: u32 = STREAM_WINDOW * 4;

/// The Request metadata key by which a client announces a byte window for a server stream: its
/// value is a decimal number of bytes. A server that knows it bounds the stream by bytes as
/// well as items: it starts the stream with [`WINDOWED_STREAM_CREDIT`] items of credit (also
/// the most it keeps outstanding) and keeps at most the window's bytes of items sent and not yet
/// granted back (always letting one item go, however large). A server that does not know it
/// ignores it, as any metadata.
pub const STREAM_WINDOW_KEY: &str = "rpc-stream-window";

/// The items of credit a stream with a byte window starts with, and the most it keeps
/// outstanding.
pub const WINDOWED_STREAM_CREDIT: u32 = 65_536;

/// The smallest byte window a server accepts; a smaller announcement counts as this.
pub const MIN_STREAM_WINDOW_BYTES: u64 = 16 * 1024;

/// The largest byte window a server accepts; a larger announcement counts as this.
pub const MAX_STREAM_WINDOW_BYTES: u64 = 64 * 1024 * 1024;

/// The byte window announced by a Request's metadata value for [`STREAM_WINDOW_KEY`], clamped
/// to what a server accepts; `None` for a value that is not a decimal number.
pub fn parse_stream_window(value: &str) -> Option<u64> {
    let bytes: u64 = value.parse().ok()?;
    Some(bytes.clamp(MIN_STREAM_WINDOW_BYTES, MAX_STREAM_WINDOW_BYTES))
}

/// The body of a StreamCredit frame: how many more items the client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamCredit(pub u32);

/// A control frame's body that does not have the shape its kind requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A StreamCredit body is exactly four bytes.
    #[error("stream credit body of {0} bytes (expected 4)")]
    CreditLength(usize),
}

impl StreamCredit {
    /// The body's length on the wire.
    pub const LEN: usize = 4;

    /// Reads a StreamCredit body.
    pub fn parse(body: &[u8]) -> Result<Self, ControlError> {
        let bytes: [u8; 4] = body
            .try_into()
            .map_err(|_| ControlError::CreditLength(body.len()))?;
        Ok(StreamCredit(u32::from_be_bytes(bytes)))
    }

    /// Writes the body.
    pub fn put(self, dst: &mut impl BufMut) {
        dst.put_u32(self.0);
    }
}

/// The body of a GoAway frame: why the server is draining, for logs. Any bytes are accepted;
/// what is not UTF-8 is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The reason, possibly empty.
    pub reason: String,
}

impl GoAway {
    /// Reads a GoAway body.
    pub fn parse(body: &[u8]) -> Self {
        GoAway {
            reason: String::from_utf8_lossy(body).into_owned(),
        }
    }

    /// Writes the body.
    pub fn put(&self, dst: &mut impl BufMut) {
        dst.put_slice(self.reason.as_bytes());
    }
}

impl Header {
    /// The status of an encoded frame (its header's status byte), without parsing the rest;
    /// `None` if `frame` is shorter than a header.
    pub fn status_of(frame: &[u8]) -> Option<Status> {
        (frame.len() >= HEADER_LEN).then(|| Status::from_u8(frame[5]))
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use proptest::prelude::*;

    use super::*;
    use crate::{FrameKind, SerializerId};

    #[test]
    fn credit_bodies_are_four_bytes_big_endian() {
        let mut body = BytesMut::new();
        StreamCredit(0x0102_0304).put(&mut body);
        assert_eq!(&body[..], &[1, 2, 3, 4]);
        assert_eq!(StreamCredit::parse(&body), Ok(StreamCredit(0x0102_0304)));
        assert_eq!(
            StreamCredit::parse(&[1, 2, 3]),
            Err(ControlError::CreditLength(3))
        );
        assert_eq!(
            StreamCredit::parse(&[0; 5]),
            Err(ControlError::CreditLength(5))
        );
    }

    #[test]
    fn go_away_reasons_survive_any_bytes() {
        let mut body = BytesMut::new();
        GoAway {
            reason: "server is draining".into(),
        }
        .put(&mut body);
        assert_eq!(GoAway::parse(&body).reason, "server is draining");
        assert_eq!(GoAway::parse(&[0xff, b'x']).reason, "\u{fffd}x");
        assert_eq!(GoAway::parse(&[]).reason, "");
    }

    #[test]
    fn the_status_of_an_encoded_frame() {
        let header = Header {
            kind: FrameKind::Response,
            serializer: SerializerId::JSON,
            status: Status::SERVER_BUSY,
            request_id: 9,
            body_len: 0,
        };
        let frame = Bytes::copy_from_slice(&header.to_bytes());
        assert_eq!(Header::status_of(&frame), Some(Status::SERVER_BUSY));
        assert_eq!(Header::status_of(&frame[..HEADER_LEN - 1]), None);
    }

    proptest! {
        #[test]
        fn credit_round_trips(n in any::<u32>()) {
            let mut body = BytesMut::new();
            StreamCredit(n).put(&mut body);
            prop_assert_eq!(body.len(), StreamCredit::LEN);
            prop_assert_eq!(StreamCredit::parse(&body), Ok(StreamCredit(n)));
        }
    }
}
