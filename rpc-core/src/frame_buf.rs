//! Frames encoded in place: header placeholder first, body after it, header filled in last.

use std::any::Any;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use rpc_codec::{Format, FrameKind, HEADER_LEN, Header, SerializeError, SerializerId, Status};
use serde::Serialize;

/// A frame encoded in place: the header's bytes are reserved first, the body is written after
/// them, and the header is filled in once the body's length is known. At most one allocation
/// per frame (none when it is carved from a [`FrameChunk`]), no copy of the body; large byte strings a value lends ([`rpc_codec::Lend`],
/// [`rpc_codec::SharedBytes`]) stay in their own buffers as parts of the frame.
#[derive(Debug)]
pub(crate) struct FrameBuf {
    buf: BytesMut,
    /// Lent byte strings: `(offset in buf, bytes)`, in order.
    parts: Vec<(usize, Bytes)>,
}

impl FrameBuf {
    pub(crate) fn with_capacity(body_capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + body_capacity);
        buf.resize(HEADER_LEN, 0);
        FrameBuf {
            buf,
            parts: Vec::new(),
        }
    }

    /// The buffer the body is appended to (it already holds the header's placeholder).
    pub(crate) fn body(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends `value` in `format`, keeping the large byte strings it lends as parts.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        &mut self,
        format: &Format,
        value: &T,
    ) -> Result<(), SerializeError> {
        format.encode_lending(value, &mut self.buf, &mut self.parts)
    }

    pub(crate) fn body_len(&self) -> usize {
        self.buf.len() - HEADER_LEN + self.parts.iter().map(|(_, p)| p.len()).sum::<usize>()
    }

    /// Fills in the header. Fails with the body's length when it exceeds `max_body_len`.
    pub(crate) fn finish(
        mut self,
        kind: FrameKind,
        serializer: SerializerId,
        status: Status,
        request_id: u64,
        max_body_len: usize,
    ) -> Result<OutFrame, usize> {
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
        Ok(pieces(self.buf, self.parts))
    }
}

/// Bytes holding one or more whole frames, and the byte strings they lend at `parts`' offsets,
/// as the pieces to write in order.
fn pieces(mut buf: BytesMut, parts: Vec<(usize, Bytes)>) -> OutFrame {
    if parts.is_empty() {
        return OutFrame {
            head: buf,
            rest: Box::default(),
        };
    }
    // The copied bytes between the parts, each split off the front of the buffer; the last
    // copied piece is the buffer itself (splitting costs an allocation).
    let written = buf.len();
    let mut offsets = parts.iter().map(|(offset, _)| *offset).peekable();
    let mut between = 0;
    let mut before = None;
    while let Some(offset) = offsets.next() {
        if before.is_some_and(|b| b < offset) {
            between += 1;
        }
        before = Some(offset);
        if offsets.peek().is_none() && offset < written {
            between += 1;
        }
    }
    let mut rest = Vec::with_capacity(parts.len() + between);
    let mut taken = 0;
    let mut head = None;
    for (offset, part) in parts {
        let piece = if offset == written {
            std::mem::take(&mut buf)
        } else {
            buf.split_to(offset - taken)
        };
        taken = offset;
        match head {
            None => head = Some(piece),
            Some(_) if piece.is_empty() => {}
            Some(_) => rest.push(piece.freeze()),
        }
        rest.push(part);
    }
    if !buf.is_empty() {
        rest.push(buf.freeze());
    }
    OutFrame {
        // A frame's header is always copied, so the first piece holds it.
        head: head.unwrap_or_default(),
        rest: rest.into_boxed_slice(),
    }
}

/// The room a [`FrameChunk`] makes at a time.
const CHUNK_ROOM: usize = 8 * 1024;
/// A chunk whose buffer grew past this (a large frame was encoded in it) is not kept: a
/// connection holds at most this much room between frames.
const MAX_CHUNK_ROOM: usize = 64 * 1024;
/// Less room than this left after a frame is not worth keeping.
const MIN_SPARE: usize = 256;

/// The room one connection's frames are encoded in. Each frame takes the free end of one buffer
/// and gives back what it did not use, so a run of small frames shares one allocation; once
/// every frame taken from the buffer has been written (the writer copies small frames and drops
/// them), the next frame that needs room reclaims the whole buffer instead of allocating.
///
/// Frames of one connection only: what a connection's queued frames pin is then their own bytes
/// and at most the two chunks at the ends of the queue, never room that another connection's
/// frames hold on to. Encoders that find the chunk in use (concurrent callers) take a buffer of
/// their own rather than wait.
#[derive(Debug, Default)]
pub(crate) struct FrameChunk(Mutex<BytesMut>);

impl FrameChunk {
    /// A frame buffer with room for at least `body_capacity` bytes of body, carved from the
    /// chunk. Hand it to [`give_back`](Self::give_back) once its body is written.
    pub(crate) fn frame(&self, body_capacity: usize) -> FrameBuf {
        let need = HEADER_LEN + body_capacity;
        if need > CHUNK_ROOM {
            return FrameBuf::with_capacity(body_capacity);
        }
        let mut buf = match self.0.try_lock() {
            Ok(mut room) => std::mem::take(&mut *room),
            Err(_) => BytesMut::new(),
        };
        if buf.capacity() < need {
            // Reclaims the whole buffer when every frame taken from it is gone; otherwise (or
            // when there was none) a new one.
            buf.reserve(CHUNK_ROOM);
        }
        buf.resize(HEADER_LEN, 0);
        FrameBuf {
            buf,
            parts: Vec::new(),
        }
    }

    /// Takes back the room `frame` did not use.
    pub(crate) fn give_back(&self, frame: &mut FrameBuf) {
        let buf = &mut frame.buf;
        if buf.capacity() - buf.len() < MIN_SPARE || buf.capacity() > MAX_CHUNK_ROOM {
            return;
        }
        if let Ok(mut room) = self.0.try_lock()
            && room.capacity() < buf.capacity() - buf.len()
        {
            *room = buf.split_off(buf.len());
        }
    }
}

/// When less than this is free in a [`FrameRun`]'s buffer, it makes room for [`RUN_CHUNK`].
const RUN_SPARE: usize = 1024;
/// The room a [`FrameRun`] makes at a time.
const RUN_CHUNK: usize = 64 * 1024;

/// Why a frame could not join a [`FrameRun`].
#[derive(Debug)]
pub(crate) enum RunError {
    /// The value did not serialize.
    Encode(SerializeError),
    /// The body has this many bytes, more than the maximum.
    TooLarge(usize),
}

/// Frames encoded one after another into one buffer and taken together: a stream's items. Each
/// batch taken is split off the buffer, which makes room a chunk at a time, so a batch of small
/// frames costs at most one allocation, and none once the buffer behind the batches already
/// written is free again.
#[derive(Debug, Default)]
pub(crate) struct FrameRun {
    buf: BytesMut,
    /// Lent byte strings: `(offset in buf, bytes)`, in order.
    parts: Vec<(usize, Bytes)>,
    /// The lent bytes in `parts`.
    lent: usize,
}

impl FrameRun {
    /// Appends a frame whose body is `value` in `format`; on failure the run is as it was.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push<T: Serialize + 'static>(
        &mut self,
        format: &Format,
        value: &T,
        kind: FrameKind,
        status: Status,
        request_id: u64,
        max_body_len: usize,
    ) -> Result<(), RunError> {
        if self.buf.capacity() - self.buf.len() < RUN_SPARE {
            self.buf.reserve(RUN_CHUNK);
        }
        let start = self.buf.len();
        let first_part = self.parts.len();
        self.buf.resize(start + HEADER_LEN, 0);
        let undo = |run: &mut Self| {
            run.buf.truncate(start);
            run.parts.truncate(first_part);
        };
        // A `Bytes` item (the common stream of chunks) skips serde: same encoding.
        let encoded = match (value as &dyn Any).downcast_ref::<Bytes>() {
            Some(bytes) => format.encode_bytes_lending(bytes, &mut self.buf, &mut self.parts),
            None => format.encode_lending(value, &mut self.buf, &mut self.parts),
        };
        if let Err(e) = encoded {
            undo(self);
            return Err(RunError::Encode(e));
        }
        let lent: usize = self.parts[first_part..].iter().map(|(_, p)| p.len()).sum();
        let len = self.buf.len() - start - HEADER_LEN + lent;
        if len > max_body_len {
            undo(self);
            return Err(RunError::TooLarge(len));
        }
        let header = Header {
            kind,
            serializer: format.id(),
            status,
            request_id,
            // `max_body_len` never exceeds u32::MAX (FrameCodec clamps it), so this fits.
            body_len: len as u32,
        };
        self.buf[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
        self.lent += lent;
        Ok(())
    }

    /// The bytes of the frames appended and not yet taken.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() + self.lent
    }

    /// Every frame appended since the last take, as one piece of writing.
    pub(crate) fn take(&mut self) -> Option<OutFrame> {
        if self.buf.is_empty() {
            return None;
        }
        self.lent = 0;
        Some(pieces(self.buf.split(), std::mem::take(&mut self.parts)))
    }
}

/// A frame ready to be written: `head` (which holds the header) and, for a frame with lent
/// parts, the pieces that follow it, in order.
///
/// The head stays a `BytesMut`: the writer copies small frames into its own buffer, and a
/// `Bytes` made of a buffer with room to spare would cost an allocation of its own.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutFrame {
    head: BytesMut,
    /// Empty (no allocation) for a frame in one buffer.
    rest: Box<[Bytes]>,
}

impl OutFrame {
    /// The whole frame's length.
    pub(crate) fn len(&self) -> usize {
        self.head.len() + self.rest.iter().map(Bytes::len).sum::<usize>()
    }

    /// The first piece, which holds the header.
    pub(crate) fn head(&self) -> &[u8] {
        &self.head
    }

    /// The whole frame in one buffer.
    #[cfg(test)]
    pub(crate) fn concat(self) -> Vec<u8> {
        self.into_pieces().flat_map(|p| p.to_vec()).collect()
    }

    /// The pieces in order.
    #[cfg(test)]
    pub(crate) fn into_pieces(self) -> impl Iterator<Item = Bytes> {
        std::iter::once(self.head.freeze()).chain(self.rest)
    }

    /// The first piece and the rest (empty for a frame in one buffer).
    pub(crate) fn into_parts(self) -> (BytesMut, Box<[Bytes]>) {
        (self.head, self.rest)
    }
}

impl From<Bytes> for OutFrame {
    fn from(head: Bytes) -> Self {
        OutFrame {
            // Without a copy when `head` is the only handle on its buffer.
            head: BytesMut::from(head),
            rest: Box::default(),
        }
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
            .decode(&mut BytesMut::from(&bytes.concat()[..]))
            .unwrap()
            .unwrap();
        assert_eq!(frame.request_id, 42);
        assert_eq!(&frame.body[..], b"payload");
        let mut fb = FrameBuf::with_capacity(0);
        fb.body().extend_from_slice(&[0; 10]);
        assert_eq!(
            fb.finish(FrameKind::Response, SerializerId::JSON, Status::OK, 1, 9)
                .map(OutFrame::concat),
            Err(10)
        );
    }

    #[test]
    fn lent_byte_strings_are_parts_of_the_frame_not_copies() {
        let big = Bytes::from(vec![3u8; 100_000]);
        let also = Bytes::from(vec![4u8; 5_000]);
        for format in [Format::Postcard, Format::MessagePack] {
            let value = (rpc_codec::Lend(&big), 1u8, rpc_codec::Lend(&also));
            let mut fb = FrameBuf::with_capacity(16);
            fb.body().extend_from_slice(b"pre");
            fb.encode(&format, &value).unwrap();
            let out = fb
                .finish(FrameKind::Request, format.id(), Status::OK, 9, 1 << 20)
                .unwrap();
            let pieces: Vec<Bytes> = out.clone().into_pieces().collect();
            assert_eq!(
                pieces.len(),
                4,
                "{format}: head, big, the byte between, also"
            );
            assert_eq!(pieces[1].as_ptr(), big.as_ptr());
            assert_eq!(pieces[3].as_ptr(), also.as_ptr());
            assert_eq!(out.len(), pieces.iter().map(Bytes::len).sum::<usize>());
            let frame = FrameCodec::new()
                .decode(&mut BytesMut::from(&out.concat()[..]))
                .unwrap()
                .unwrap();
            assert_eq!(frame.request_id, 9);
            let mut expected = b"pre".to_vec();
            expected.extend_from_slice(&format.to_bytes(&value).unwrap());
            assert_eq!(&frame.body[..], &expected[..]);
            // A part in the middle: the bytes after it follow it.
            let value = (rpc_codec::Lend(&big), u64::MAX);
            let mut fb = FrameBuf::with_capacity(16);
            fb.encode(&format, &value).unwrap();
            let out = fb
                .finish(FrameKind::Request, format.id(), Status::OK, 10, 1 << 20)
                .unwrap();
            assert_eq!(out.clone().into_pieces().count(), 3, "{format}");
            let frame = FrameCodec::new()
                .decode(&mut BytesMut::from(&out.concat()[..]))
                .unwrap()
                .unwrap();
            assert_eq!(frame.body, format.to_bytes(&value).unwrap());
            // Too large with its parts counted.
            let mut fb = FrameBuf::with_capacity(16);
            fb.encode(&format, &value).unwrap();
            assert!(
                fb.finish(FrameKind::Request, format.id(), Status::OK, 9, 100_000)
                    .is_err()
            );
        }
    }

    fn chunk_frame(chunk: &FrameChunk, id: u64, body: &[u8]) -> OutFrame {
        let mut fb = chunk.frame(body.len());
        fb.body().extend_from_slice(body);
        chunk.give_back(&mut fb);
        fb.finish(
            FrameKind::Request,
            SerializerId::POSTCARD,
            Status::OK,
            id,
            1 << 20,
        )
        .unwrap()
    }

    #[test]
    fn frames_share_the_chunk_and_reclaim_it_once_written() {
        let chunk = FrameChunk::default();
        let first = chunk_frame(&chunk, 1, b"one");
        let second = chunk_frame(&chunk, 2, b"second");
        let start = first.head().as_ptr();
        // One after the other in one buffer.
        assert_eq!(second.head().as_ptr(), start.wrapping_add(first.len()));
        let mut codec = FrameCodec::new();
        let mut wire = BytesMut::new();
        wire.extend_from_slice(first.head());
        wire.extend_from_slice(second.head());
        let a = codec.decode(&mut wire).unwrap().unwrap();
        let b = codec.decode(&mut wire).unwrap().unwrap();
        assert_eq!((a.request_id, &a.body[..]), (1, &b"one"[..]));
        assert_eq!((b.request_id, &b.body[..]), (2, &b"second"[..]));
        // Fill the rest of the room while the first frames are still held: a new buffer.
        let filler = chunk_frame(&chunk, 3, &vec![0; CHUNK_ROOM - 200]);
        let held = chunk_frame(&chunk, 4, &[1; 300]);
        assert!(held.head().as_ptr() < start || held.head().as_ptr() > filler.head().as_ptr());
        // Once every frame of the new buffer is gone, its whole room is taken again (the room
        // still holds the buffer, so the same address is the same buffer, not a new one).
        let again_start = held.head().as_ptr();
        drop(held);
        let reclaimed = chunk_frame(&chunk, 5, &vec![2; CHUNK_ROOM - 300]);
        assert_eq!(reclaimed.head().as_ptr(), again_start);
        // A frame larger than the room has a buffer of its own and leaves the room as it was.
        let large = chunk_frame(&chunk, 6, &vec![4; 2 * CHUNK_ROOM]);
        assert_eq!(large.len(), HEADER_LEN + 2 * CHUNK_ROOM);
        let after = chunk_frame(&chunk, 7, b"x");
        assert_eq!(
            after.head().as_ptr(),
            reclaimed.head().as_ptr().wrapping_add(reclaimed.len())
        );
    }
}
