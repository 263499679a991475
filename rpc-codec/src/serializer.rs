//! Serializers: MessagePack, postcard and JSON built in, user formats in the user id range, and the
//! table that finds one by the id in a header.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The one-byte id of a serializer, sent in every frame header.
///
/// | id       | serializer                                   |
/// |----------|----------------------------------------------|
/// | 0        | none (frames without a serialized payload)   |
/// | 1        | MessagePack (structs as maps, `rmp-serde`)   |
/// | 2        | postcard                                     |
/// | 3        | JSON                                         |
/// | 4–127    | reserved for this protocol                   |
/// | 128–255  | user range: formats plugged in by users      |
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SerializerId(u8);

impl SerializerId {
    /// No serialized payload (pings, cancels, error bodies of frames without arguments).
    pub const NONE: SerializerId = SerializerId(0);
    /// MessagePack.
    pub const MESSAGE_PACK: SerializerId = SerializerId(1);
    /// postcard.
    pub const POSTCARD: SerializerId = SerializerId(2);
    /// JSON.
    pub const JSON: SerializerId = SerializerId(3);
    /// The first id of the user range.
    pub const USER_MIN: u8 = 128;

    /// Wraps a raw id byte.
    pub const fn from_u8(value: u8) -> Self {
        SerializerId(value)
    }

    /// The byte sent on the wire.
    pub const fn as_u8(self) -> u8 {
        self.0
    }

    /// Whether the id is in the user range (128–255).
    pub const fn is_user(self) -> bool {
        self.0 >= Self::USER_MIN
    }
}

impl fmt::Debug for SerializerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SerializerId({})", self.0)
    }
}

impl fmt::Display for SerializerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why a value could not be serialized or deserialized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SerializeError {
    /// The value could not be encoded.
    #[error("{format} encoding failed: {message}")]
    Encode {
        /// The serializer's name.
        format: String,
        /// What went wrong.
        message: String,
    },
    /// The bytes could not be decoded as the expected type.
    #[error("{format} decoding failed: {message}")]
    Decode {
        /// The serializer's name.
        format: String,
        /// What went wrong.
        message: String,
    },
    /// No serializer with this id is known.
    #[error("unknown serializer id {0}")]
    UnknownSerializer(SerializerId),
    /// A user serializer was registered with an id outside the user range or twice.
    #[error("serializer id {0} is outside the user range 128-255 or already taken")]
    InvalidUserId(SerializerId),
}

impl SerializeError {
    /// An encode error from any displayable cause.
    pub fn encode(format: &str, cause: impl fmt::Display) -> Self {
        SerializeError::Encode {
            format: format.to_owned(),
            message: cause.to_string(),
        }
    }

    /// A decode error from any displayable cause.
    pub fn decode(format: &str, cause: impl fmt::Display) -> Self {
        SerializeError::Decode {
            format: format.to_owned(),
            message: cause.to_string(),
        }
    }
}

/// The callback a [`Serializer`] hands its deserializer to.
pub type DeserializeFn<'f> =
    dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error> + 'f;

/// A serialization format a user plugs in, with an id from the user range (128–255).
///
/// The built-in formats do not go through this trait (they are monomorphized through
/// [`Format`]); a plugged-in format is reached through `erased-serde`, which costs a virtual
/// call per value.
///
/// ```
/// use bytes::{BufMut, BytesMut};
/// use rpc_codec::{DeserializeFn, Format, SerializeError, Serializer, SerializerId};
///
/// /// JSON with pretty printing, under user id 200.
/// #[derive(Debug)]
/// struct PrettyJson;
///
/// impl Serializer for PrettyJson {
///     fn id(&self) -> SerializerId {
///         SerializerId::from_u8(200)
///     }
///     fn name(&self) -> &str {
///         "pretty-json"
///     }
///     fn serialize(
///         &self,
///         value: &dyn erased_serde::Serialize,
///         dst: &mut BytesMut,
///     ) -> Result<(), SerializeError> {
///         serde_json::to_writer_pretty(dst.writer(), value)
///             .map_err(|e| SerializeError::encode(self.name(), e))
///     }
///     fn deserialize(&self, src: &[u8], f: &mut DeserializeFn<'_>) -> Result<(), SerializeError> {
///         let mut de = serde_json::Deserializer::from_slice(src);
///         f(&mut <dyn erased_serde::Deserializer>::erase(&mut de))
///             .map_err(|e| SerializeError::decode(self.name(), e))
///     }
/// }
///
/// let format = Format::custom(PrettyJson)?;
/// let bytes = format.to_bytes(&vec![1, 2])?;
/// assert_eq!(format.decode::<Vec<u8>>(&bytes)?, vec![1, 2]);
/// # Ok::<(), SerializeError>(())
/// ```
pub trait Serializer: Send + Sync + fmt::Debug + 'static {
    /// The id sent in frame headers; must be in the user range.
    fn id(&self) -> SerializerId;

    /// A short name for errors and logs.
    fn name(&self) -> &str;

    /// Appends the serialized `value` to `dst`.
    fn serialize(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), SerializeError>;

    /// Builds a deserializer over `src` and passes it to `f`.
    fn deserialize(&self, src: &[u8], f: &mut DeserializeFn<'_>) -> Result<(), SerializeError>;
}

/// A serialization format, chosen per client; the server answers in the format of each request.
///
/// The three built-in formats are fast paths with no dynamic dispatch. `Custom` holds a
/// user-supplied [`Serializer`].
///
/// Binary payloads should be `bytes::Bytes` or `serde_bytes::ByteBuf` (or a `Vec<u8>` field with
/// `#[serde(with = "serde_bytes")]`): a plain `Vec<u8>` goes through serde one element at a time,
/// which is several times slower for large payloads. [`SharedBytes`](crate::SharedBytes),
/// decoded with [`decode_shared`](Format::decode_shared), is not copied at all.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Format {
    /// MessagePack via `rmp-serde`, structs encoded as maps (field names on the wire) so other
    /// languages can read them. The default.
    #[default]
    MessagePack,
    /// postcard: the most compact, Rust-to-Rust.
    Postcard,
    /// JSON via `serde_json`.
    Json,
    /// A user format with an id in the user range.
    Custom(Arc<dyn Serializer>),
}

impl Format {
    /// Wraps a user serializer, checking that its id is in the user range.
    pub fn custom(serializer: impl Serializer) -> Result<Format, SerializeError> {
        Self::from_arc(Arc::new(serializer))
    }

    /// As [`Format::custom`], for a serializer already in an `Arc`.
    pub fn from_arc(serializer: Arc<dyn Serializer>) -> Result<Format, SerializeError> {
        let id = serializer.id();
        if !id.is_user() {
            return Err(SerializeError::InvalidUserId(id));
        }
        Ok(Format::Custom(serializer))
    }

    /// The id sent in frame headers.
    pub fn id(&self) -> SerializerId {
        match self {
            Format::MessagePack => SerializerId::MESSAGE_PACK,
            Format::Postcard => SerializerId::POSTCARD,
            Format::Json => SerializerId::JSON,
            Format::Custom(s) => s.id(),
        }
    }

    /// A short name: `msgpack`, `postcard`, `json`, or the custom serializer's name.
    pub fn name(&self) -> &str {
        match self {
            Format::MessagePack => "msgpack",
            Format::Postcard => "postcard",
            Format::Json => "json",
            Format::Custom(s) => s.name(),
        }
    }

    /// Appends the serialized `value` to `dst`.
    pub fn encode<T: Serialize + ?Sized>(
        &self,
        value: &T,
        dst: &mut BytesMut,
    ) -> Result<(), SerializeError> {
        match self {
            Format::MessagePack => {
                let mut ser = rmp_serde::Serializer::new(dst.writer()).with_struct_map();
                value
                    .serialize(&mut ser)
                    .map_err(|e| SerializeError::encode(self.name(), e))
            }
            Format::Postcard => postcard::to_io(value, dst.writer())
                .map(drop)
                .map_err(|e| SerializeError::encode(self.name(), e)),
            Format::Json => serde_json::to_writer(dst.writer(), value)
                .map_err(|e| SerializeError::encode(self.name(), e)),
            Format::Custom(s) => s.serialize(&ErasedRef(value), dst),
        }
    }

    /// As [`encode`](Self::encode), except that the byte strings of at least
    /// [`LEND_MIN`](crate::LEND_MIN) bytes which [`SharedBytes`](crate::SharedBytes) and
    /// [`Lend`](crate::Lend) values in `value` lend are not copied into `dst`: each is pushed
    /// to `parts` as `(where in dst its bytes belong, the bytes)`, in order, and the encoding is
    /// `dst` with every part inserted at its offset. MessagePack and postcard lend; JSON and
    /// plugged-in formats copy everything into `dst` (and leave `parts` alone).
    pub fn encode_lending<T: Serialize + ?Sized>(
        &self,
        value: &T,
        dst: &mut BytesMut,
        parts: &mut Vec<(usize, Bytes)>,
    ) -> Result<(), SerializeError> {
        let writer = crate::shared::LendingWriter { head: dst, parts };
        match self {
            Format::MessagePack => crate::shared::with_lending(|| {
                let mut ser = rmp_serde::Serializer::new(writer).with_struct_map();
                value
                    .serialize(&mut ser)
                    .map_err(|e| SerializeError::encode(self.name(), e))
            }),
            Format::Postcard => crate::shared::with_lending(|| {
                postcard::to_io(value, writer)
                    .map(drop)
                    .map_err(|e| SerializeError::encode(self.name(), e))
            }),
            Format::Json | Format::Custom(_) => self.encode(value, writer.head),
        }
    }

    /// As [`encode_lending`](Self::encode_lending) of `bytes` (the same encoding: postcard's
    /// varint length and bytes, MessagePack's `bin8/16/32`), written without serde; `bytes` of
    /// at least [`LEND_MIN`](crate::LEND_MIN) are lent (pushed to `parts`), not copied. JSON and
    /// plugged-in formats go the serde way.
    pub fn encode_bytes_lending(
        &self,
        bytes: &Bytes,
        dst: &mut BytesMut,
        parts: &mut Vec<(usize, Bytes)>,
    ) -> Result<(), SerializeError> {
        let len = bytes.len();
        match self {
            Format::Postcard => {
                let mut rest = len as u64;
                while rest >= 0x80 {
                    dst.put_u8((rest as u8 & 0x7f) | 0x80);
                    rest >>= 7;
                }
                dst.put_u8(rest as u8);
            }
            Format::MessagePack => {
                match (u8::try_from(len), u16::try_from(len), u32::try_from(len)) {
                    (Ok(n), _, _) => dst.put_slice(&[0xc4, n]),
                    (_, Ok(n), _) => {
                        dst.put_u8(0xc5);
                        dst.put_u16(n);
                    }
                    (_, _, Ok(n)) => {
                        dst.put_u8(0xc6);
                        dst.put_u32(n);
                    }
                    _ => return self.encode_lending(bytes, dst, parts),
                }
            }
            Format::Json | Format::Custom(_) => return self.encode_lending(bytes, dst, parts),
        }
        if len >= crate::LEND_MIN {
            parts.push((dst.len(), bytes.clone()));
        } else {
            dst.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// The serialized `value` as its own buffer.
    pub fn to_bytes<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, SerializeError> {
        let mut dst = BytesMut::new();
        self.encode(value, &mut dst)?;
        Ok(dst.freeze())
    }

    /// Deserializes a `T` from `src`, a frame's body as it was read (or part of it): every
    /// [`SharedBytes`](crate::SharedBytes) in `T` whose bytes the decoder lends (postcard,
    /// MessagePack) becomes a slice of `src`, without a copy. Otherwise as
    /// [`decode`](Self::decode).
    pub fn decode_shared<T: DeserializeOwned>(&self, src: &Bytes) -> Result<T, SerializeError> {
        crate::shared::with_frame(src, || self.decode(src))
    }

    /// Deserializes a byte string from `src` as a slice of it, as
    /// [`decode_shared`](Self::decode_shared) does for a [`SharedBytes`](crate::SharedBytes); a
    /// body that is exactly one byte string (postcard's length and bytes, MessagePack's `bin`)
    /// is sliced without going through serde.
    pub fn decode_bytes(&self, src: &Bytes) -> Result<Bytes, SerializeError> {
        let start = match self {
            Format::Postcard => postcard_bytes_start(src),
            Format::MessagePack => msgpack_bin_start(src),
            Format::Json | Format::Custom(_) => None,
        };
        match start {
            Some(start) => Ok(src.slice(start..)),
            None => self
                .decode_shared::<crate::SharedBytes>(src)
                .map(|shared| shared.0),
        }
    }

    /// Deserializes a `T` from `src`.
    pub fn decode<T: DeserializeOwned>(&self, src: &[u8]) -> Result<T, SerializeError> {
        match self {
            Format::MessagePack => {
                rmp_serde::from_slice(src).map_err(|e| SerializeError::decode(self.name(), e))
            }
            Format::Postcard => {
                postcard::from_bytes(src).map_err(|e| SerializeError::decode(self.name(), e))
            }
            Format::Json => {
                serde_json::from_slice(src).map_err(|e| SerializeError::decode(self.name(), e))
            }
            Format::Custom(s) => {
                let mut out = None;
                s.deserialize(src, &mut |de| {
                    out = Some(erased_serde::deserialize::<T>(de)?);
                    Ok(())
                })?;
                out.ok_or_else(|| {
                    SerializeError::decode(s.name(), "the serializer produced no value")
                })
            }
        }
    }
}

/// Where the bytes start in a postcard byte string that fills `src` exactly: its length is a
/// varint (taken here up to five bytes; anything else goes the general way).
fn postcard_bytes_start(src: &[u8]) -> Option<usize> {
    let mut len = 0u64;
    for (i, byte) in src.iter().take(5).enumerate() {
        len |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let start = i + 1;
            return (src.len() - start == usize::try_from(len).ok()?).then_some(start);
        }
    }
    None
}

/// Where the bytes start in a MessagePack `bin` that fills `src` exactly.
fn msgpack_bin_start(src: &[u8]) -> Option<usize> {
    let (start, len) = match *src {
        [0xc4, len, ..] => (2, usize::from(len)),
        [0xc5, a, b, ..] => (3, usize::from(u16::from_be_bytes([a, b]))),
        [0xc6, a, b, c, d, ..] => (5, usize::try_from(u32::from_be_bytes([a, b, c, d])).ok()?),
        _ => return None,
    };
    (src.len() - start == len).then_some(start)
}

impl PartialEq for Format {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Format {}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing an unknown format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown serializer {0:?}; expected one of: msgpack, postcard, json")]
pub struct UnknownFormatName(pub String);

impl FromStr for Format {
    type Err = UnknownFormatName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "msgpack" | "messagepack" | "rmp" => Ok(Format::MessagePack),
            "postcard" => Ok(Format::Postcard),
            "json" => Ok(Format::Json),
            _ => Err(UnknownFormatName(s.to_owned())),
        }
    }
}

/// Every format a server accepts, looked up by the id in each frame header: the built-ins plus
/// any user formats registered here.
#[derive(Clone, Debug, Default)]
pub struct Formats {
    custom: Vec<Format>,
}

impl Formats {
    /// The built-in formats only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a user format. Its id must be in the user range and not already registered.
    pub fn register(&mut self, format: Format) -> Result<&mut Self, SerializeError> {
        let id = format.id();
        if !id.is_user() || self.custom.iter().any(|f| f.id() == id) {
            return Err(SerializeError::InvalidUserId(id));
        }
        self.custom.push(format);
        Ok(self)
    }

    /// The format with this id.
    pub fn get(&self, id: SerializerId) -> Result<Format, SerializeError> {
        match id {
            SerializerId::MESSAGE_PACK => Ok(Format::MessagePack),
            SerializerId::POSTCARD => Ok(Format::Postcard),
            SerializerId::JSON => Ok(Format::Json),
            _ => self
                .custom
                .iter()
                .find(|f| f.id() == id)
                .cloned()
                .ok_or(SerializeError::UnknownSerializer(id)),
        }
    }
}

/// Lets a `T: Serialize + ?Sized` be passed as `&dyn erased_serde::Serialize`, which needs a
/// sized type.
struct ErasedRef<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for ErasedRef<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: u64,
        name: String,
        score: f64,
        tags: Vec<String>,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
        nested: Option<Box<Sample>>,
    }

    #[test]
    fn a_byte_string_body_is_sliced_as_serde_would_decode_it() {
        for format in [Format::Postcard, Format::MessagePack, Format::Json] {
            for len in [0usize, 1, 127, 128, 255, 256, 300, 65_535, 65_536, 70_000] {
                let payload = Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>());
                let body = format.to_bytes(&crate::Lend(&payload)).unwrap();
                let decoded = format.decode_bytes(&body).unwrap();
                assert_eq!(decoded, payload, "{format} {len}");
                if format != Format::Json && len > 0 {
                    // A slice of the body, not a copy.
                    let at = decoded.as_ptr() as usize - body.as_ptr() as usize;
                    assert!(at < body.len(), "{format} {len}");
                }
                // With a byte more than the string, serde decides, as it would without the
                // fast path.
                let mut longer = body.to_vec();
                longer.push(0);
                let longer = Bytes::from(longer);
                assert_eq!(
                    format.decode_bytes(&longer).ok(),
                    format
                        .decode_shared::<crate::SharedBytes>(&longer)
                        .ok()
                        .map(|s| s.0),
                    "{format} {len}"
                );
            }
        }
        // Bodies that are not byte strings are refused the same way.
        for body in [
            &b""[..],
            &[0xc4][..],
            &[0xc5, 0][..],
            &[0x80][..],
            &[0xff; 6][..],
        ] {
            let body = Bytes::copy_from_slice(body);
            for format in [Format::Postcard, Format::MessagePack] {
                assert_eq!(
                    format.decode_bytes(&body).ok(),
                    format
                        .decode_shared::<crate::SharedBytes>(&body)
                        .ok()
                        .map(|s| s.0),
                    "{format} {body:?}"
                );
            }
        }
    }

    #[test]
    fn a_byte_string_is_encoded_as_serde_would_and_large_ones_are_lent() {
        for format in [Format::Postcard, Format::MessagePack, Format::Json] {
            for len in [
                0usize, 1, 127, 128, 255, 256, 300, 4_095, 4_096, 65_535, 65_536, 70_000,
            ] {
                let payload = Bytes::from((0..len).map(|i| (i * 7) as u8).collect::<Vec<_>>());
                let mut dst = BytesMut::from(&b"pre"[..]);
                let mut parts = Vec::new();
                format
                    .encode_bytes_lending(&payload, &mut dst, &mut parts)
                    .unwrap();
                // Parts inserted at their offsets make the whole encoding.
                let mut whole = Vec::new();
                let mut at = 0;
                for (offset, part) in &parts {
                    whole.extend_from_slice(&dst[at..*offset]);
                    whole.extend_from_slice(part);
                    at = *offset;
                }
                whole.extend_from_slice(&dst[at..]);
                let mut expected = b"pre".to_vec();
                expected.extend_from_slice(&format.to_bytes(&payload).unwrap());
                assert_eq!(whole, expected, "{format} {len}");
                let lent = format != Format::Json && len >= crate::LEND_MIN;
                assert_eq!(parts.len(), usize::from(lent), "{format} {len}");
                if lent {
                    assert_eq!(parts[0].1.as_ptr(), payload.as_ptr(), "{format} {len}");
                }
            }
        }
    }

    fn any_sample() -> impl Strategy<Value = Sample> {
        let leaf = (
            any::<u64>(),
            ".{0,20}",
            -1e9f64..1e9,
            prop::collection::vec(".{0,8}", 0..4),
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(id, name, score, tags, blob)| Sample {
                id,
                name,
                score,
                tags,
                blob,
                nested: None,
            });
        (leaf.clone(), prop::option::of(leaf)).prop_map(|(mut a, b)| {
            a.nested = b.map(Box::new);
            a
        })
    }

    /// MessagePack with structs as arrays (no field names), plugged in as a user format.
    #[derive(Debug)]
    struct CompactMsgpack;

    impl Serializer for CompactMsgpack {
        fn id(&self) -> SerializerId {
            SerializerId::from_u8(130)
        }
        fn name(&self) -> &str {
            "msgpack-compact"
        }
        fn serialize(
            &self,
            value: &dyn erased_serde::Serialize,
            dst: &mut BytesMut,
        ) -> Result<(), SerializeError> {
            let mut ser = rmp_serde::Serializer::new(dst.writer());
            erased_serde::serialize(value, &mut ser)
                .map_err(|e| SerializeError::encode(self.name(), e))
        }
        fn deserialize(&self, src: &[u8], f: &mut DeserializeFn<'_>) -> Result<(), SerializeError> {
            let mut de = rmp_serde::Deserializer::from_read_ref(src);
            f(&mut <dyn erased_serde::Deserializer<'_>>::erase(&mut de))
                .map_err(|e| SerializeError::decode(self.name(), e))
        }
    }

    fn all_formats() -> Vec<Format> {
        vec![
            Format::MessagePack,
            Format::Postcard,
            Format::Json,
            Format::custom(CompactMsgpack).unwrap(),
        ]
    }

    proptest! {
        #[test]
        fn every_format_round_trips(sample in any_sample()) {
            for format in all_formats() {
                let bytes = format.to_bytes(&sample).unwrap();
                let back: Sample = format.decode(&bytes).unwrap();
                prop_assert_eq!(&back, &sample, "format {}", format);
            }
        }

        #[test]
        fn decoding_garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
            for format in all_formats() {
                let _ = format.decode::<Sample>(&bytes);
            }
        }
    }

    #[test]
    fn argument_tuples_round_trip() {
        for format in all_formats() {
            let args = (
                7u32,
                "hi".to_owned(),
                serde_bytes::ByteBuf::from(vec![1, 2, 3]),
            );
            let bytes = format.to_bytes(&args).unwrap();
            let back: (u32, String, serde_bytes::ByteBuf) = format.decode(&bytes).unwrap();
            assert_eq!(back, args, "format {format}");
        }
    }

    #[test]
    fn msgpack_writes_field_names() {
        #[derive(Serialize)]
        struct Point {
            x: u8,
        }
        let bytes = Format::MessagePack.to_bytes(&Point { x: 1 }).unwrap();
        // fixmap of 1, fixstr "x", positive fixint 1
        assert_eq!(&bytes[..], &[0x81, 0xa1, b'x', 0x01]);
    }

    #[test]
    fn byte_payloads_are_not_element_by_element() {
        let payload = serde_bytes::ByteBuf::from(vec![0xFFu8; 1000]);
        let msgpack = Format::MessagePack.to_bytes(&payload).unwrap();
        // bin 16 header (3 bytes) + the bytes; element-wise would need 2 bytes per 0xFF.
        assert_eq!(msgpack.len(), 1003);
        let postcard = Format::Postcard.to_bytes(&payload).unwrap();
        assert_eq!(postcard.len(), 1002);
    }

    #[test]
    fn registry_finds_builtins_and_user_formats() {
        let mut formats = Formats::new();
        assert_eq!(
            formats.get(SerializerId::POSTCARD).unwrap(),
            Format::Postcard
        );
        assert_eq!(
            formats.get(SerializerId::from_u8(130)).unwrap_err(),
            SerializeError::UnknownSerializer(SerializerId::from_u8(130))
        );
        formats
            .register(Format::custom(CompactMsgpack).unwrap())
            .unwrap();
        assert_eq!(
            formats.get(SerializerId::from_u8(130)).unwrap().name(),
            "msgpack-compact"
        );
        assert!(matches!(
            formats.register(Format::custom(CompactMsgpack).unwrap()),
            Err(SerializeError::InvalidUserId(_))
        ));
        assert!(formats.get(SerializerId::NONE).is_err());
        assert!(formats.get(SerializerId::from_u8(77)).is_err());
    }

    #[test]
    fn custom_ids_must_be_in_the_user_range() {
        #[derive(Debug)]
        struct Squatter;
        impl Serializer for Squatter {
            fn id(&self) -> SerializerId {
                SerializerId::JSON
            }
            fn name(&self) -> &str {
                "squatter"
            }
            fn serialize(
                &self,
                _: &dyn erased_serde::Serialize,
                _: &mut BytesMut,
            ) -> Result<(), SerializeError> {
                Ok(())
            }
            fn deserialize(
                &self,
                _: &[u8],
                _: &mut DeserializeFn<'_>,
            ) -> Result<(), SerializeError> {
                Ok(())
            }
        }
        assert_eq!(
            Format::custom(Squatter).unwrap_err(),
            SerializeError::InvalidUserId(SerializerId::JSON)
        );
    }

    #[test]
    fn names_parse() {
        assert_eq!("msgpack".parse::<Format>().unwrap(), Format::MessagePack);
        assert_eq!("Postcard".parse::<Format>().unwrap(), Format::Postcard);
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        assert!(
            "bincode"
                .parse::<Format>()
                .unwrap_err()
                .to_string()
                .contains("msgpack")
        );
    }
}
