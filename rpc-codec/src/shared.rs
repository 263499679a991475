//! Binary payloads decoded without a copy: [`SharedBytes`] decodes as a slice of the frame it
//! was read from when that frame is at hand ([`Format::decode_shared`]).
//!
//! A decoder hands a byte string to serde either borrowed from its input (postcard and
//! MessagePack do, for their byte strings) or as a copy. While [`Format::decode_shared`] runs,
//! the frame's [`Bytes`] is this thread's *current frame*: a [`SharedBytes`] whose bytes are
//! borrowed from inside it becomes [`Bytes::slice_ref`] of it, a new handle to the same memory,
//! instead of a new buffer. Anywhere else (JSON, which writes bytes as arrays of numbers, or a
//! plain [`Format::decode`]) it copies, as `bytes::Bytes` does.
//!
//! Encoding is the mirror image: while [`Format::encode_lending`] runs, a [`SharedBytes`] or a
//! [`Lend`] of at least [`LEND_MIN`] bytes *lends* its buffer. The format writes the byte
//! string's length as usual, but its bytes are not copied into the output: the output records
//! where they belong and keeps a handle to them, and a writer sends them from their own memory
//! (vectored writes). A 64 KiB `Bytes` echoed through a `#[service]` method is then copied only
//! by the socket.
//!
//! [`Format::decode_shared`]: crate::Format::decode_shared
//! [`Format::decode`]: crate::Format::decode
//! [`Format::encode_lending`]: crate::Format::encode_lending

use std::cell::{Cell, RefCell};
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

thread_local! {
    /// The frame being decoded on this thread by [`with_frame`], if any.
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
    /// How many encodes under [`with_lending`] run on this thread (they may nest); while none
    /// does, nothing is lent.
    static LENDING: Cell<u32> = const { Cell::new(0) };
    /// How many buffers [`LENT`] holds, kept apart so that an encode that lends nothing (a
    /// small call) never touches the list.
    static LENT_LEN: Cell<usize> = const { Cell::new(0) };
    /// The buffers lent to the encodes running on this thread under [`with_lending`].
    static LENT: RefCell<Vec<Bytes>> = const { RefCell::new(Vec::new()) };
}

/// Byte strings at least this long are lent rather than copied by
/// [`Format::encode_lending`](crate::Format::encode_lending); shorter ones cost less to copy than
/// to keep apart.
pub const LEND_MIN: usize = 4 * 1024;

/// Runs `encode` with lending enabled on this thread; what it lent is let go after it.
pub(crate) fn with_lending<T>(encode: impl FnOnce() -> T) -> T {
    /// Ends the lending of one encode, even if it panics: the buffers it lent (those past
    /// `base`, an outer encode's being before them) are released.
    struct End {
        base: usize,
    }
    impl Drop for End {
        fn drop(&mut self) {
            LENDING.with(|n| n.set(n.get().saturating_sub(1)));
            if LENT_LEN.get() > self.base {
                LENT.with(|lent| lent.borrow_mut().truncate(self.base));
                LENT_LEN.set(self.base);
            }
        }
    }
    LENDING.with(|n| n.set(n.get() + 1));
    let _end = End {
        base: LENT_LEN.get(),
    };
    encode()
}

/// Offers `bytes` to the encode running under [`with_lending`], if any.
fn lend(bytes: &Bytes) {
    if bytes.len() >= LEND_MIN && LENDING.get() > 0 {
        LENT.with(|lent| {
            let mut lent = lent.borrow_mut();
            lent.push(bytes.clone());
            LENT_LEN.set(lent.len());
        });
    }
}

/// The lent buffer `part` lies in, as a handle to exactly `part`.
fn lent_slice(part: &[u8]) -> Option<Bytes> {
    if LENT_LEN.get() == 0 {
        return None;
    }
    LENT.with(|lent| {
        lent.borrow()
            .iter()
            .find(|whole| within(whole, part))
            .map(|whole| whole.slice_ref(part))
    })
}

/// What an encode under [`with_lending`] writes into: bytes go to `head`, except a write that
/// lies inside a lent buffer, which is recorded in `parts` as `(offset in head, bytes)`, in
/// order, where those bytes belong.
#[derive(Debug)]
pub(crate) struct LendingWriter<'a> {
    pub(crate) head: &'a mut bytes::BytesMut,
    pub(crate) parts: &'a mut Vec<(usize, Bytes)>,
}

impl std::io::Write for LendingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if buf.len() >= LEND_MIN
            && let Some(part) = lent_slice(buf)
        {
            self.parts.push((self.head.len(), part));
        } else {
            self.head.extend_from_slice(buf);
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A `Bytes` that encodes as a byte string and lends its buffer to
/// [`Format::encode_lending`](crate::Format::encode_lending) instead of being copied, like
/// [`SharedBytes`] but borrowed. `#[service]` wraps `Bytes` arguments and results in it.
#[derive(Clone, Copy, Debug)]
pub struct Lend<'a>(pub &'a Bytes);

impl Serialize for Lend<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        lend(self.0);
        serializer.serialize_bytes(self.0)
    }
}

/// Runs `decode` with `frame` as this thread's current frame, restoring the one before (decodes
/// may nest: a custom format may decode a frame inside another).
pub(crate) fn with_frame<T>(frame: &Bytes, decode: impl FnOnce() -> T) -> T {
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            FRAME.with(|current| *current.borrow_mut() = before);
        }
    }
    let before = FRAME.with(|current| current.borrow_mut().replace(frame.clone()));
    let _restore = Restore(before);
    decode()
}

/// `bytes` as a slice of the current frame when they lie inside it, else a copy.
fn share(bytes: &[u8]) -> Bytes {
    FRAME.with(|current| match current.borrow().as_ref() {
        Some(frame) if within(frame, bytes) => frame.slice_ref(bytes),
        _ => Bytes::copy_from_slice(bytes),
    })
}

/// Whether `part` lies inside `whole`'s memory (an empty slice counts only at a real address
/// inside it, as [`Bytes::slice_ref`] requires).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let (start, end) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    let (part_start, part_end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
    !part.is_empty() && start <= part_start && part_end <= end
}

/// A binary payload that decodes as a slice of the frame it arrived in, without a copy, where
/// the decoder lends its bytes (postcard and MessagePack) and the frame is known
/// ([`Format::decode_shared`](crate::Format::decode_shared)); elsewhere it copies. It encodes as
/// a byte string, exactly as `bytes::Bytes` and `serde_bytes` do, so either side may use
/// either type; under [`Format::encode_lending`](crate::Format::encode_lending) it lends its
/// buffer instead of being copied.
///
/// `#[service]` methods whose argument or result is `Bytes` get this for free; use
/// `SharedBytes` for the same in hand-written decoding.
///
/// A slice keeps the whole frame it came from alive: keep it briefly, or copy what must
/// outlive the call ([`Bytes::copy_from_slice`]) when it is a small part of a large frame.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SharedBytes(pub Bytes);

impl SharedBytes {
    /// The payload.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Bytes> for SharedBytes {
    fn from(bytes: Bytes) -> Self {
        SharedBytes(bytes)
    }
}

impl From<SharedBytes> for Bytes {
    fn from(shared: SharedBytes) -> Self {
        shared.0
    }
}

impl Serialize for SharedBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        lend(&self.0);
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for SharedBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_bytes(SharedVisitor)
            .map(SharedBytes)
    }
}

struct SharedVisitor;

impl<'de> Visitor<'de> for SharedVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(share(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Bytes, E> {
        Ok(share(v.as_bytes()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        // JSON writes bytes as an array of numbers.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(byte) = seq.next_element::<u8>()? {
            out.push(byte);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Format;

    fn inside(whole: &Bytes, part: &[u8]) -> bool {
        within(whole, part)
    }

    #[test]
    fn postcard_and_message_pack_lend_their_bytes_to_a_slice_of_the_frame() {
        let payload = Bytes::from(vec![7u8; 65536]);
        for format in [Format::Postcard, Format::MessagePack] {
            let frame = format.to_bytes(&(payload.clone(), 3u64)).unwrap();
            let (shared, n): (SharedBytes, u64) = format.decode_shared(&frame).unwrap();
            assert_eq!((&shared[..], n), (&payload[..], 3), "{format}");
            assert!(inside(&frame, &shared), "{format}: a slice of the frame");
            // Without the frame at hand, a copy.
            let (copied, _): (SharedBytes, u64) = format.decode(&frame).unwrap();
            assert_eq!(&copied[..], &payload[..]);
            assert!(!inside(&frame, &copied), "{format}: a copy");
        }
        // The current frame is cleared after the decode.
        FRAME.with(|current| assert!(current.borrow().is_none()));
    }

    #[test]
    fn json_and_other_types_decode_as_before() {
        let frame = Format::Json.to_bytes(&Bytes::from_static(b"abc")).unwrap();
        let shared: SharedBytes = Format::Json.decode_shared(&frame).unwrap();
        assert_eq!(&shared[..], b"abc");
        // Interchangeable with `bytes::Bytes` and `serde_bytes` on the wire.
        for format in [Format::Postcard, Format::MessagePack, Format::Json] {
            let frame = format
                .to_bytes(&SharedBytes(Bytes::from_static(b"xyz")))
                .unwrap();
            let plain: Bytes = format.decode(&frame).unwrap();
            assert_eq!(&plain[..], b"xyz");
            let buf: serde_bytes::ByteBuf = format.decode_shared(&frame).unwrap();
            assert_eq!(&buf[..], b"xyz");
            let empty = format.to_bytes(&Bytes::new()).unwrap();
            let shared: SharedBytes = format.decode_shared(&empty).unwrap();
            assert!(shared.is_empty());
        }
    }

    /// `head` with every part inserted where it belongs.
    fn reassemble(head: &[u8], parts: &[(usize, Bytes)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        for (offset, part) in parts {
            out.extend_from_slice(&head[at..*offset]);
            out.extend_from_slice(part);
            at = *offset;
        }
        out.extend_from_slice(&head[at..]);
        out
    }

    #[test]
    fn large_byte_strings_are_lent_not_copied_and_the_encoding_is_unchanged() {
        let big = Bytes::from(vec![9u8; 65536]);
        let other = Bytes::from(vec![5u8; LEND_MIN]);
        let small = Bytes::from(vec![1u8; LEND_MIN - 1]);
        for format in [Format::Postcard, Format::MessagePack] {
            let value = (
                Lend(&big),
                "between",
                SharedBytes(other.clone()),
                Lend(&small),
                7u64,
            );
            let mut head = bytes::BytesMut::new();
            let mut parts = Vec::new();
            format
                .encode_lending(&value, &mut head, &mut parts)
                .unwrap();
            assert_eq!(parts.len(), 2, "{format}: the two large strings are lent");
            assert_eq!(
                parts[0].1.as_ptr(),
                big.as_ptr(),
                "{format}: the buffer itself"
            );
            assert_eq!(parts[1].1.as_ptr(), other.as_ptr());
            assert!(
                head.len() < LEND_MIN * 2,
                "{format}: {} bytes copied",
                head.len()
            );
            let plain = format.to_bytes(&value).unwrap();
            assert_eq!(
                reassemble(&head, &parts),
                plain,
                "{format}: the same encoding"
            );
            let (a, _, c, d, n): (SharedBytes, String, Bytes, Bytes, u64) =
                format.decode(&plain).unwrap();
            assert_eq!(
                (&a[..], &c[..], &d[..], n),
                (&big[..], &other[..], &small[..], 7)
            );
        }
        // JSON copies everything; so does an encode that does not lend.
        let mut head = bytes::BytesMut::new();
        let mut parts = Vec::new();
        Format::Json
            .encode_lending(&Lend(&big), &mut head, &mut parts)
            .unwrap();
        assert!(parts.is_empty());
        let decoded: Bytes = Format::Json.decode(&head).unwrap();
        assert_eq!(decoded, big);
        LENT.with(|lent| assert!(lent.borrow().is_empty(), "lending ends with the encode"));
        assert_eq!((LENDING.get(), LENT_LEN.get()), (0, 0));
        let plain = Format::Postcard.to_bytes(&Lend(&big)).unwrap();
        assert_eq!(plain.len(), big.len() + 3);
    }

    #[test]
    fn nested_decodes_restore_the_outer_frame() {
        let outer = Format::Postcard
            .to_bytes(&Bytes::from_static(b"outer"))
            .unwrap();
        let inner = Format::Postcard
            .to_bytes(&Bytes::from_static(b"inner"))
            .unwrap();
        with_frame(&outer, || {
            let shared: SharedBytes = Format::Postcard.decode_shared(&inner).unwrap();
            assert!(inside(&inner, &shared));
            let again: SharedBytes = Format::Postcard.decode(&outer).unwrap();
            assert!(inside(&outer, &again), "the outer frame is current again");
        });
    }
}
