//! The 18-byte frame header and the frame kinds.

use std::fmt;

use bytes::BufMut;

use crate::{FrameError, SerializerId, Status};

/// The two bytes every frame starts with.
pub const MAGIC: u16 = 0xDAB0;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 18;

/// What a frame is for.
///
/// | value | kind          | direction        | body                                     |
/// |-------|---------------|------------------|------------------------------------------|
/// | 1     | `Request`     | client → server  | preamble, then the arguments             |
/// | 2     | `Response`    | server → client  | result (status ok) or error body         |
/// | 3     | `OneWay`      | client → server  | as a request; no response is sent        |
/// | 4     | `Ping`        | either           | empty                                    |
/// | 5     | `Pong`        | either           | empty; echoes the ping's request id      |
/// | 6     | `Cancel`      | client → server  | empty; names the call by request id      |
/// | 7     | `StreamItem`  | server → client  | one item of a server stream              |
/// | 8     | `StreamEnd`   | server → client  | empty (status ok) or error body          |
/// | 9     | `GoAway`      | server → client  | optional UTF-8 reason                    |
/// | 10    | `StreamCredit`| client → server  | u32: more stream items the client accepts|
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A call that expects a response or a stream.
    Request = 1,
    /// The answer to a request.
    Response = 2,
    /// A call that expects nothing back.
    OneWay = 3,
    /// A liveness probe; the peer answers with a pong.
    Ping = 4,
    /// The answer to a ping.
    Pong = 5,
    /// The caller gave up on a call.
    Cancel = 6,
    /// One item of a server-streaming call.
    StreamItem = 7,
    /// The end of a server-streaming call, with its status.
    StreamEnd = 8,
    /// The server is draining: send no new calls on this connection.
    GoAway = 9,
    /// The client has room for more items of a server stream (flow control).
    StreamCredit = 10,
}

impl FrameKind {
    /// Every kind, in wire order.
    pub const ALL: [FrameKind; 10] = [
        FrameKind::Request,
        FrameKind::Response,
        FrameKind::OneWay,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::Cancel,
        FrameKind::StreamItem,
        FrameKind::StreamEnd,
        FrameKind::GoAway,
        FrameKind::StreamCredit,
    ];

    /// Parses the kind byte.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::OneWay,
            4 => FrameKind::Ping,
            5 => FrameKind::Pong,
            6 => FrameKind::Cancel,
            7 => FrameKind::StreamItem,
            8 => FrameKind::StreamEnd,
            9 => FrameKind::GoAway,
            10 => FrameKind::StreamCredit,
            _ => return None,
        })
    }

    /// The byte sent on the wire.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameKind::Request => "request",
            FrameKind::Response => "response",
            FrameKind::OneWay => "one-way request",
            FrameKind::Ping => "ping",
            FrameKind::Pong => "pong",
            FrameKind::Cancel => "cancel",
            FrameKind::StreamItem => "stream item",
            FrameKind::StreamEnd => "stream end",
            FrameKind::GoAway => "go-away",
            FrameKind::StreamCredit => "stream credit",
        })
    }
}

/// The fixed 18-byte header in front of every frame body. All integers are big-endian.
///
/// ```text
///  0       2       3       4       5       6                               14              18
///  +-------+-------+-------+-------+-------+-------------------------------+---------------+
///  | magic | ver   | kind  | ser   | status|          request id           |   body length |
///  | u16   | u8    | u8    | u8    | u8    |             u64               |      u32      |
///  +-------+-------+-------+-------+-------+-------------------------------+---------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the frame is for.
    pub kind: FrameKind,
    /// How the body's payload is serialized.
    pub serializer: SerializerId,
    /// The outcome, for responses and stream ends; [`Status::OK`] elsewhere.
    pub status: Status,
    /// The call this frame belongs to.
    pub request_id: u64,
    /// The number of body bytes that follow the header.
    pub body_len: u32,
}

impl Header {
    /// Writes the header's 18 bytes.
    pub fn put(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// The header's 18 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        out[2] = VERSION;
        out[3] = self.kind.as_u8();
        out[4] = self.serializer.as_u8();
        out[5] = self.status.as_u8();
        out[6..14].copy_from_slice(&self.request_id.to_be_bytes());
        out[14..18].copy_from_slice(&self.body_len.to_be_bytes());
        out
    }

    /// Parses a header from its 18 bytes, checking magic, version and kind.
    pub fn parse(src: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        check_prefix(src)?;
        let kind = FrameKind::from_u8(src[3]).ok_or(FrameError::UnknownKind(src[3]))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&src[6..14]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&src[14..18]);
        Ok(Header {
            kind,
            serializer: SerializerId::from_u8(src[4]),
            status: Status::from_u8(src[5]),
            request_id: u64::from_be_bytes(id),
            body_len: u32::from_be_bytes(len),
        })
    }
}

/// Checks whatever part of magic, version and kind is present in a header's first bytes, so that
/// garbage is rejected as soon as its first bytes arrive rather than when 18 of them have.
pub(crate) fn check_prefix(src: &[u8]) -> Result<(), FrameError> {
    let magic = MAGIC.to_be_bytes();
    let mismatch = src.iter().zip(magic.iter()).any(|(got, want)| got != want);
    if mismatch {
        // Only what has arrived is reported; a missing second byte shows as zero.
        let found = u16::from_be_bytes([src[0], src.get(1).copied().unwrap_or(0)]);
        return Err(FrameError::BadMagic { found });
    }
    if let Some(&version) = src.get(2)
        && version != VERSION
    {
        return Err(FrameError::UnsupportedVersion(version));
    }
    if let Some(&kind) = src.get(3)
        && FrameKind::from_u8(kind).is_none()
    {
        return Err(FrameError::UnknownKind(kind));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_kind() -> impl Strategy<Value = FrameKind> {
        prop::sample::select(FrameKind::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn header_round_trips(
            kind in any_kind(),
            ser in any::<u8>(),
            status in any::<u8>(),
            request_id in any::<u64>(),
            body_len in any::<u32>(),
        ) {
            let header = Header {
                kind,
                serializer: SerializerId::from_u8(ser),
                status: Status::from_u8(status),
                request_id,
                body_len,
            };
            let bytes = header.to_bytes();
            prop_assert_eq!(Header::parse(&bytes).unwrap(), header);
        }

        #[test]
        fn parse_never_panics(bytes in any::<[u8; HEADER_LEN]>()) {
            let _ = Header::parse(&bytes);
        }
    }

    #[test]
    fn layout_is_big_endian() {
        let header = Header {
            kind: FrameKind::Response,
            serializer: SerializerId::POSTCARD,
            status: Status::APPLICATION_ERROR,
            request_id: 0x0102_0304_0506_0708,
            body_len: 0x0A0B_0C0D,
        };
        assert_eq!(
            header.to_bytes(),
            [
                0xDA, 0xB0, 1, 2, 2, 7, 1, 2, 3, 4, 5, 6, 7, 8, 0x0A, 0x0B, 0x0C, 0x0D
            ]
        );
    }

    #[test]
    fn rejects_bad_magic_version_and_kind() {
        let good = Header {
            kind: FrameKind::Ping,
            serializer: SerializerId::NONE,
            status: Status::OK,
            request_id: 1,
            body_len: 0,
        }
        .to_bytes();

        let mut bad = good;
        bad[1] = 0x00;
        assert!(matches!(
            Header::parse(&bad),
            Err(FrameError::BadMagic { found: 0xDA00 })
        ));

        let mut bad = good;
        bad[2] = 9;
        assert!(matches!(
            Header::parse(&bad),
            Err(FrameError::UnsupportedVersion(9))
        ));

        for kind in [0u8, 11, 255] {
            let mut bad = good;
            bad[3] = kind;
            assert!(matches!(Header::parse(&bad), Err(FrameError::UnknownKind(k)) if k == kind));
        }
    }

    #[test]
    fn prefix_check_rejects_early() {
        assert!(check_prefix(&[]).is_ok());
        assert!(check_prefix(&[0xDA]).is_ok());
        assert!(matches!(
            check_prefix(&[0x47]),
            Err(FrameError::BadMagic { .. })
        ));
        assert!(matches!(
            check_prefix(&[0xDA, 0xB0, 2]),
            Err(FrameError::UnsupportedVersion(2))
        ));
        assert!(check_prefix(&[0xDA, 0xB0, 1, 4]).is_ok());
    }
}
