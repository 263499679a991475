//! Encode and decode time of the built-in serializers (MessagePack, postcard, JSON) on three
//! payloads: a small request, a chat message and a list of 1,000 records.
//!
//! Encoding writes into a buffer that is cleared and reused, as a frame encoder does, so the
//! figure is the serializer's work and not an allocation; decoding builds the owned value,
//! strings and vectors included. The encoded sizes, which criterion does not report, are printed
//! first as a Markdown table.
//!
//! ```text
//! cargo bench -p benches --bench codecs [-- FILTER] [-- --warm-up-time 1 --measurement-time 3]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::fmt::Debug;
use std::hint::black_box;

use benches::{ChatMessage, Record, SmallRequest};
use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion};
use rpc_codec::Format;
use serde::Serialize;
use serde::de::DeserializeOwned;

const FORMATS: [Format; 3] = [Format::MessagePack, Format::Postcard, Format::Json];

fn main() {
    let small = SmallRequest::sample();
    let chat = ChatMessage::sample();
    let records = Record::batch(1000);

    // `--list` output is parsed by tools; keep it clean.
    if !std::env::args().any(|arg| arg == "--list") {
        print_sizes(&[
            ("small_request", sizes(&small)),
            ("chat_message", sizes(&chat)),
            ("records_1000", sizes(&records)),
        ]);
    }

    let mut c = Criterion::default().configure_from_args();
    bench_message(&mut c, "small_request", &small);
    bench_message(&mut c, "chat_message", &chat);
    bench_message(&mut c, "records_1000", &records);
    c.final_summary();
}

/// An encode and a decode benchmark per format, in a group named after the message.
fn bench_message<T>(c: &mut Criterion, name: &str, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut group = c.benchmark_group(name);
    for format in &FORMATS {
        let encoded = format.to_bytes(value).expect("the sample messages encode");
        // A benchmark of a lossy round trip would measure the wrong thing.
        assert_eq!(
            &format
                .decode::<T>(&encoded)
                .expect("the sample messages decode"),
            value,
            "{format} does not round-trip {name}"
        );

        group.bench_function(BenchmarkId::new("encode", format.name()), |b| {
            let mut buf = BytesMut::with_capacity(encoded.len());
            b.iter(|| {
                buf.clear();
                format
                    .encode(black_box(value), &mut buf)
                    .expect("the sample messages encode");
                black_box(buf.len())
            });
        });
        group.bench_function(BenchmarkId::new("decode", format.name()), |b| {
            b.iter(|| {
                format
                    .decode::<T>(black_box(&encoded))
                    .expect("the sample messages decode")
            });
        });
    }
    group.finish();
}

/// The encoded size of `value` in each of [`FORMATS`], in that order.
fn sizes<T: Serialize>(value: &T) -> [usize; 3] {
    FORMATS.map(|format| {
        format
            .to_bytes(value)
            .expect("the sample messages encode")
            .len()
    })
}

fn print_sizes(rows: &[(&str, [usize; 3])]) {
    println!("Encoded sizes in bytes:\n");
    println!(
        "| message | {} |",
        FORMATS.map(|format| format.name().to_owned()).join(" | ")
    );
    println!("|---|---:|---:|---:|");
    for (name, sizes) in rows {
        println!(
            "| {name} | {} |",
            sizes.map(|size| size.to_string()).join(" | ")
        );
    }
    println!();
}
