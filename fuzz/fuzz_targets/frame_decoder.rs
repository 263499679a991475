//! Feeds arbitrary bytes to `FrameCodec` in chunks chosen by the input, as a socket would deliver
//! them, and checks what the decoder must guarantee whatever the peer sends:
//!
//! - it never panics;
//! - every frame it yields re-encodes to exactly the bytes it was decoded from;
//! - it never stalls on a complete frame, and errors only on a header it must refuse;
//! - the buffer never grows beyond the input plus one maximal frame, whatever length a header
//!   announces.
//!
//! Input layout: `n` (low 3 bits: how many chunk-size bytes follow), `n` chunk sizes (0 means
//! 256), then the stream, fed in those chunk sizes cycled.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpc_codec::{FrameCodec, FrameError, FrameKind, HEADER_LEN, Header, MAGIC, VERSION};
use tokio_util::codec::{Decoder, Encoder};

/// Small, so that the fuzzer can reach "body at the limit" and "one byte over" with short inputs.
const MAX_BODY: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = rest.split_at(usize::from(n & 7).min(rest.len()));
    let chunk = |i: usize| match sizes.get(i % sizes.len().max(1)) {
        None => stream.len(),
        Some(0) => 256,
        Some(&s) => usize::from(s),
    };

    let mut codec = FrameCodec::with_max_body_len(MAX_BODY);
    let mut encoder = FrameCodec::with_max_body_len(MAX_BODY);
    let mut buf = BytesMut::new();
    let max_capacity = stream.len() + MAX_BODY + HEADER_LEN;
    // `fed` bytes of the stream have been appended to `buf`; the frame being decoded starts at
    // `frame_start`, so `stream[frame_start..fed - buf.len()]` is what the decoder has consumed
    // of it (its header, once it has been accepted).
    let mut fed = 0;
    let mut frame_start = 0;
    let mut i = 0;
    while fed < stream.len() {
        let n = chunk(i).min(stream.len() - fed);
        i += 1;
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let result = codec.decode(&mut buf);
            assert!(
                buf.capacity() <= max_capacity,
                "buffer capacity {} exceeds input {} + max body + header",
                buf.capacity(),
                stream.len(),
            );
            match result {
                Ok(Some(frame)) => {
                    let end = fed - buf.len();
                    let mut wire = BytesMut::new();
                    encoder
                        .encode(&frame, &mut wire)
                        .expect("a decoded frame is within the limit it was decoded with");
                    assert_eq!(
                        &wire[..],
                        &stream[frame_start..end],
                        "frame does not re-encode to its bytes"
                    );
                    frame_start = end;
                }
                Ok(None) => break,
                Err(e) => {
                    check_refusal(&e, &stream[frame_start..fed]);
                    return;
                }
            }
        }
    }
    check_incomplete(&stream[frame_start..]);
});

/// The decoder refused `pending` (the bytes from the start of the current frame): the header, or
/// the part of it that has arrived, must really be invalid.
fn check_refusal(e: &FrameError, pending: &[u8]) {
    if let Some(head) = pending.first_chunk::<HEADER_LEN>() {
        match (Header::parse(head), e) {
            (Ok(h), FrameError::BodyTooLarge { len, max }) => {
                assert!(h.body_len as usize > MAX_BODY);
                assert_eq!((*len, *max), (u64::from(h.body_len), MAX_BODY));
            }
            (Ok(h), e) => panic!("valid header {h:?} refused with {e}"),
            (Err(_), _) => {}
        }
        return;
    }
    let magic = MAGIC.to_be_bytes();
    let bad_magic = pending.iter().zip(magic).any(|(&got, want)| got != want);
    let bad_version = pending.get(2).is_some_and(|&v| v != VERSION);
    let bad_kind = pending
        .get(3)
        .is_some_and(|&k| FrameKind::from_u8(k).is_none());
    assert!(
        bad_magic || bad_version || bad_kind,
        "valid header prefix {pending:02x?} refused with {e}"
    );
}

/// The stream ended without an error and `pending` was not decoded: it must be an incomplete
/// frame, not a whole one the decoder failed to return.
fn check_incomplete(pending: &[u8]) {
    if let Some(head) = pending.first_chunk::<HEADER_LEN>() {
        let header = Header::parse(head).expect("an invalid header was not refused");
        assert!(
            header.body_len as usize <= MAX_BODY,
            "an oversized body length was not refused"
        );
        assert!(
            HEADER_LEN + header.body_len as usize > pending.len(),
            "a complete frame of {} bytes was not decoded",
            HEADER_LEN + header.body_len as usize
        );
    }
}
