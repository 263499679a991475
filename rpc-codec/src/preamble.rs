//! The request preamble (service, version, method, deadline, metadata) that any serializer can
//! route on, and the error body of a failed answer.

use std::str;
use std::time::Duration;

use bytes::{BufMut, BytesMut};

use crate::Metadata;

/// Why a request preamble or an error body could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreambleError {
    /// The body ended inside the named field.
    #[error("body truncated in {0}")]
    Truncated(&'static str),
    /// The named string field was not valid UTF-8.
    #[error("{0} is not valid utf-8")]
    InvalidUtf8(&'static str),
    /// The named field was empty where it must not be.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// The named field is longer than its length prefix allows.
    #[error("{field} is {len} bytes, at most {max} fit")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most the wire format allows.
        max: usize,
    },
}

/// The routing data at the start of every request body, readable without knowing the
/// serializer of the arguments that follow it.
///
/// ```text
/// +-----+---------+-----+---------+-----+--------+-------------+-------+------------------+
/// | u8  | service | u8  | version | u8  | method | u32         | u8    | metadata entries |
/// | len | utf-8   | len | utf-8   | len | utf-8  | deadline ms | count | (see below)      |
/// +-----+---------+-----+---------+-----+--------+-------------+-------+------------------+
/// metadata entry: u8 key len | key utf-8 | u16 value len | value utf-8
/// ```
///
/// `service` and `method` are 1 to 255 bytes, `version` 0 to 255 (empty means unversioned). The
/// deadline is the caller's remaining budget in milliseconds when the request was written; 0
/// means none. All integers are big-endian.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// The service's name.
    pub service: String,
    /// The service's version; empty for none.
    pub version: String,
    /// The method's name.
    pub method: String,
    /// The remaining time budget; `None` for no deadline.
    pub deadline: Option<Duration>,
    /// Key/value pairs that travel with the call.
    pub metadata: Metadata,
}

/// A decoded request preamble that borrows its strings from the body, so a server can route a
/// call without allocating. [`RequestHeadRef::metadata`] decodes the metadata when wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeadRef<'a> {
    /// The service's name.
    pub service: &'a str,
    /// The service's version; empty for none.
    pub version: &'a str,
    /// The method's name.
    pub method: &'a str,
    /// The remaining time budget; `None` for no deadline.
    pub deadline: Option<Duration>,
    metadata_count: u8,
    metadata: &'a [u8],
}

impl RequestHead {
    /// Appends the encoded preamble to `dst`.
    pub fn put(&self, dst: &mut BytesMut) -> Result<(), PreambleError> {
        put_request_head(
            dst,
            &self.service,
            &self.version,
            &self.method,
            self.deadline,
            &self.metadata,
        )
    }

    /// Decodes a preamble, returning it and the offset at which the arguments start.
    pub fn parse(body: &[u8]) -> Result<(RequestHead, usize), PreambleError> {
        let (head, offset) = RequestHeadRef::parse(body)?;
        Ok((head.to_owned(), offset))
    }
}

impl<'a> RequestHeadRef<'a> {
    /// Decodes a preamble, returning it and the offset at which the arguments start.
    pub fn parse(body: &'a [u8]) -> Result<(RequestHeadRef<'a>, usize), PreambleError> {
        let mut r = Reader { buf: body, pos: 0 };
        let service = r.str8("service")?;
        let version = r.str8("version")?;
        let method = r.str8("method")?;
        if service.is_empty() {
            return Err(PreambleError::Empty("service"));
        }
        if method.is_empty() {
            return Err(PreambleError::Empty("method"));
        }
        let deadline_ms = r.u32("deadline")?;
        let metadata_count = r.u8("metadata count")?;
        let metadata_start = r.pos;
        for _ in 0..metadata_count {
            let key = r.str8("metadata key")?;
            if key.is_empty() {
                return Err(PreambleError::Empty("metadata key"));
            }
            let len = usize::from(r.u16("metadata value length")?);
            r.str_n(len, "metadata value")?;
        }
        let head = RequestHeadRef {
            service,
            version,
            method,
            deadline: (deadline_ms != 0).then(|| Duration::from_millis(u64::from(deadline_ms))),
            metadata_count,
            metadata: &body[metadata_start..r.pos],
        };
        Ok((head, r.pos))
    }

    /// The metadata, decoded.
    pub fn metadata(&self) -> Metadata {
        let mut out = Metadata::new();
        for (k, v) in self.metadata_iter() {
            // Keys and values were checked against the limits in `parse`; a repeated key keeps the
            // last value, which `insert` does.
            let _ = out.insert(k, v);
        }
        out
    }

    /// The metadata entries without allocating, in wire order.
    pub fn metadata_iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut r = Reader {
            buf: self.metadata,
            pos: 0,
        };
        (0..self.metadata_count).map_while(move |_| {
            let key = r.str8("metadata key").ok()?;
            let len = usize::from(r.u16("metadata value length").ok()?);
            let value = r.str_n(len, "metadata value").ok()?;
            Some((key, value))
        })
    }

    /// An owned copy.
    pub fn to_owned(&self) -> RequestHead {
        RequestHead {
            service: self.service.to_owned(),
            version: self.version.to_owned(),
            method: self.method.to_owned(),
            deadline: self.deadline,
            metadata: self.metadata(),
        }
    }
}

/// Appends an encoded request preamble to `dst` without building a [`RequestHead`] first.
pub fn put_request_head(
    dst: &mut BytesMut,
    service: &str,
    version: &str,
    method: &str,
    deadline: Option<Duration>,
    metadata: &Metadata,
) -> Result<(), PreambleError> {
    if service.is_empty() {
        return Err(PreambleError::Empty("service"));
    }
    if method.is_empty() {
        return Err(PreambleError::Empty("method"));
    }
    for (field, s) in [
        ("service", service),
        ("version", version),
        ("method", method),
    ] {
        if s.len() > 255 {
            return Err(PreambleError::TooLong {
                field,
                len: s.len(),
                max: 255,
            });
        }
    }
    dst.reserve(3 + service.len() + version.len() + method.len() + 5);
    for s in [service, version, method] {
        dst.put_u8(s.len() as u8);
        dst.put_slice(s.as_bytes());
    }
    dst.put_u32(deadline_to_ms(deadline));
    // `Metadata` enforces its limits on insert, so every length below fits its prefix.
    dst.put_u8(metadata.len() as u8);
    for (k, v) in metadata.iter() {
        dst.reserve(3 + k.len() + v.len());
        dst.put_u8(k.len() as u8);
        dst.put_slice(k.as_bytes());
        dst.put_u16(v.len() as u16);
        dst.put_slice(v.as_bytes());
    }
    Ok(())
}

/// The wire value of a deadline: milliseconds rounded up (so a budget under a millisecond is
/// not sent as "none"), saturating at `u32::MAX`, and 0 for no deadline.
fn deadline_to_ms(deadline: Option<Duration>) -> u32 {
    match deadline {
        None => 0,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000).max(1);
            u32::try_from(ms).unwrap_or(u32::MAX)
        }
    }
}

/// The body of a response or stream-end frame whose status is not ok.
///
/// ```text
/// +----------------+-------------------+-------------------------------------------+
/// | u16 msg len    | message (utf-8)   | detail (rest of body, may be empty)       |
/// +----------------+-------------------+-------------------------------------------+
/// ```
///
/// The message is for people. The detail, when present, is the application's typed error
/// serialized with the frame's serializer (status `APPLICATION_ERROR`); it is empty otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    /// A human-readable description, at most 65,535 bytes (longer messages are truncated at a
    /// character boundary when encoded).
    pub message: String,
    /// The serialized typed error, or empty.
    pub detail: bytes::Bytes,
}

impl ErrorBody {
    /// An error body with a message and no detail.
    pub fn new(message: impl Into<String>) -> Self {
        ErrorBody {
            message: message.into(),
            detail: bytes::Bytes::new(),
        }
    }

    /// Appends the encoded error body to `dst`.
    pub fn put(&self, dst: &mut BytesMut) {
        let msg = truncate_utf8(&self.message, u16::MAX as usize);
        dst.reserve(2 + msg.len() + self.detail.len());
        dst.put_u16(msg.len() as u16);
        dst.put_slice(msg.as_bytes());
        dst.put_slice(&self.detail);
    }

    /// Decodes an error body.
    pub fn parse(body: &bytes::Bytes) -> Result<ErrorBody, PreambleError> {
        let mut r = Reader { buf: body, pos: 0 };
        let len = usize::from(r.u16("error message length")?);
        let message = r.str_n(len, "error message")?.to_owned();
        Ok(ErrorBody {
            message,
            detail: body.slice(r.pos..),
        })
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], PreambleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(PreambleError::Truncated(field))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, PreambleError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, PreambleError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, PreambleError> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn str_n(&mut self, n: usize, field: &'static str) -> Result<&'a str, PreambleError> {
        str::from_utf8(self.take(n, field)?).map_err(|_| PreambleError::InvalidUtf8(field))
    }

    fn str8(&mut self, field: &'static str) -> Result<&'a str, PreambleError> {
        let n = usize::from(self.u8(field)?);
        self.str_n(n, field)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn name(min: usize) -> impl Strategy<Value = String> {
        prop::string::string_regex(&format!(".{{{min},40}}"))
            .unwrap()
            .prop_filter("fits a u8 length", |s| s.len() <= 255)
    }

    fn any_head() -> impl Strategy<Value = RequestHead> {
        (
            name(1),
            name(0),
            name(1),
            prop::option::of(1u64..=u64::from(u32::MAX)),
            prop::collection::vec((name(1), ".{0,60}"), 0..6),
        )
            .prop_map(|(service, version, method, deadline, pairs)| {
                let mut metadata = Metadata::new();
                for (k, v) in pairs {
                    metadata.insert(k, v).unwrap();
                }
                RequestHead {
                    service,
                    version,
                    method,
                    deadline: deadline.map(Duration::from_millis),
                    metadata,
                }
            })
    }

    proptest! {
        #[test]
        fn preamble_round_trips(head in any_head(), args in prop::collection::vec(any::<u8>(), 0..32)) {
            let mut buf = BytesMut::new();
            head.put(&mut buf).unwrap();
            buf.extend_from_slice(&args);
            let (decoded, offset) = RequestHead::parse(&buf).unwrap();
            prop_assert_eq!(decoded, head);
            prop_assert_eq!(&buf[offset..], &args[..]);
        }

        #[test]
        fn preamble_parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok((head, offset)) = RequestHeadRef::parse(&bytes) {
                prop_assert!(offset <= bytes.len());
                let _ = head.metadata();
            }
        }

        #[test]
        fn error_body_round_trips(message in ".{0,100}", detail in prop::collection::vec(any::<u8>(), 0..50)) {
            let body = ErrorBody { message, detail: Bytes::from(detail) };
            let mut buf = BytesMut::new();
            body.put(&mut buf);
            prop_assert_eq!(ErrorBody::parse(&buf.freeze()).unwrap(), body);
        }
    }

    #[test]
    fn layout_matches_the_protocol_page() {
        let mut metadata = Metadata::new();
        metadata.insert("k", "v").unwrap();
        let head = RequestHead {
            service: "echo".into(),
            version: String::new(),
            method: "ping".into(),
            deadline: Some(Duration::from_millis(1000)),
            metadata,
        };
        let mut buf = BytesMut::new();
        head.put(&mut buf).unwrap();
        assert_eq!(
            &buf[..],
            b"\x04echo\x00\x04ping\x00\x00\x03\xe8\x01\x01k\x00\x01v"
        );
    }

    #[test]
    fn deadlines_round_up_and_saturate() {
        assert_eq!(deadline_to_ms(None), 0);
        assert_eq!(deadline_to_ms(Some(Duration::ZERO)), 1);
        assert_eq!(deadline_to_ms(Some(Duration::from_micros(1500))), 2);
        assert_eq!(
            deadline_to_ms(Some(Duration::from_secs(u64::MAX))),
            u32::MAX
        );
    }

    #[test]
    fn bad_preambles_are_typed_errors() {
        assert_eq!(
            RequestHeadRef::parse(b"").unwrap_err(),
            PreambleError::Truncated("service")
        );
        assert_eq!(
            RequestHeadRef::parse(b"\x00\x00\x01m\x00\x00\x00\x00\x00").unwrap_err(),
            PreambleError::Empty("service")
        );
        assert_eq!(
            RequestHeadRef::parse(b"\x02\xff\xfe").unwrap_err(),
            PreambleError::InvalidUtf8("service")
        );
        assert_eq!(
            RequestHeadRef::parse(b"\x01s\x00\x01m\x00\x00").unwrap_err(),
            PreambleError::Truncated("deadline")
        );
        assert_eq!(
            RequestHeadRef::parse(b"\x01s\x00\x01m\x00\x00\x00\x00\x01\x00").unwrap_err(),
            PreambleError::Empty("metadata key")
        );
        let mut buf = BytesMut::new();
        assert!(matches!(
            put_request_head(&mut buf, &"s".repeat(256), "", "m", None, &Metadata::new()),
            Err(PreambleError::TooLong {
                field: "service",
                len: 256,
                max: 255
            })
        ));
        assert_eq!(
            ErrorBody::parse(&Bytes::from_static(b"\x00\x05ab")).unwrap_err(),
            PreambleError::Truncated("error message")
        );
    }

    #[test]
    fn long_error_messages_are_cut_at_a_char_boundary() {
        let body = ErrorBody::new("é".repeat(40_000));
        let mut buf = BytesMut::new();
        body.put(&mut buf);
        let back = ErrorBody::parse(&buf.freeze()).unwrap();
        assert_eq!(back.message.len(), 65_534);
        assert!(back.message.chars().all(|c| c == 'é'));
    }
}
