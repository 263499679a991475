//! Parses arbitrary bytes as a request preamble and as an error body, the two structures a
//! server or client reads from a peer's frame body before any serializer runs. Beyond not
//! panicking, whatever parses must survive a round trip:
//!
//! - `RequestHead`: `parse(put(parse(x))) == parse(x)`, and when the metadata keys are distinct
//!   (so nothing was merged) `put(parse(x))` is exactly the bytes that were parsed;
//! - `ErrorBody`: `put(parse(x)) == x`.

#![no_main]

use std::collections::HashSet;

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rpc_codec::{ErrorBody, RequestHead, RequestHeadRef};

fuzz_target!(|data: &[u8]| {
    request_head(data);
    error_body(data);
});

fn request_head(data: &[u8]) {
    let Ok((head, offset)) = RequestHeadRef::parse(data) else {
        return;
    };
    assert!(offset <= data.len());
    assert!(!head.service.is_empty() && !head.method.is_empty());

    // The metadata count byte follows the three length-prefixed strings and the u32 deadline.
    let count_at = 3 + head.service.len() + head.version.len() + head.method.len() + 4;
    let count = usize::from(data[count_at]);
    let entries: Vec<_> = head.metadata_iter().collect();
    assert_eq!(entries.len(), count, "metadata_iter lost entries");

    let owned = head.to_owned();
    let mut buf = BytesMut::new();
    owned.put(&mut buf).expect("a parsed preamble is encodable");
    let (again, again_offset) = RequestHead::parse(&buf).expect("an encoded preamble parses");
    assert_eq!(again_offset, buf.len());
    assert_eq!(again, owned);

    let distinct: HashSet<_> = entries.iter().map(|(k, _)| *k).collect();
    if distinct.len() == entries.len() {
        assert_eq!(owned.metadata.len(), count);
        assert_eq!(
            &buf[..],
            &data[..offset],
            "re-encoding changed the preamble"
        );
    } else {
        // A repeated key keeps its first position and its last value.
        let mut first_seen = HashSet::new();
        let order: Vec<_> = entries
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| first_seen.insert(*k))
            .collect();
        let keys: Vec<_> = owned.metadata.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, order);
        for (k, v) in owned.metadata.iter() {
            let last = entries
                .iter()
                .rev()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| *v);
            assert_eq!(last, Some(v));
        }
    }
}

fn error_body(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let Ok(parsed) = ErrorBody::parse(&body) else {
        return;
    };
    let mut buf = BytesMut::new();
    parsed.put(&mut buf);
    assert_eq!(&buf[..], data, "error body does not re-encode to its bytes");
}
