//! Decodes arbitrary bytes as a typical RPC argument type with each built-in `Format`. Beyond not
//! panicking (nor exhausting memory on a huge announced length), a value that decodes must be
//! a fixed point of encode-then-decode in its own format and in the other formats.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use rpc_codec::Format;
use serde::{Deserialize, Serialize};

/// The shapes argument structs are made of: integers of several widths, a float, strings,
/// options, sequences, a map, bytes, a unit and a data-carrying enum, a nested struct.
#[derive(Debug, Serialize, Deserialize)]
struct Args {
    id: u64,
    delta: i32,
    small: u8,
    flag: bool,
    score: f64,
    name: String,
    note: Option<String>,
    tags: Vec<String>,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    counts: BTreeMap<String, u32>,
    kind: Kind,
    point: Point,
    pair: (u16, char),
}

#[derive(Debug, Serialize, Deserialize)]
enum Kind {
    Empty,
    Number(i64),
    Text(String),
    Pair { a: u32, b: Option<bool> },
}

#[derive(Debug, Serialize, Deserialize)]
struct Point {
    x: f32,
    y: f32,
}

const FORMATS: [Format; 3] = [Format::MessagePack, Format::Postcard, Format::Json];

fuzz_target!(|data: &[u8]| {
    for format in &FORMATS {
        let Ok(args) = format.decode::<Args>(data) else {
            continue;
        };
        for target in &FORMATS {
            // JSON has no NaN or infinity (serde_json writes them as null), so such values
            // cannot be expected to survive it.
            if *target == Format::Json && !finite(&args) {
                continue;
            }
            assert_fixed_point(target, &args);
        }
    }
});

/// `encode(decode(encode(args))) == encode(args)` in `format`. Compared as bytes, so that a NaN
/// (which is not equal to itself) still counts as preserved.
fn assert_fixed_point(format: &Format, args: &Args) {
    let bytes = format.to_bytes(args).expect("a decoded value encodes");
    let back: Args = format
        .decode(&bytes)
        .unwrap_or_else(|e| panic!("{format} cannot decode its own output: {e}"));
    let again = format.to_bytes(&back).expect("a decoded value encodes");
    assert_eq!(bytes, again, "{format} round trip changed the value");
}

fn finite(args: &Args) -> bool {
    args.score.is_finite() && args.point.x.is_finite() && args.point.y.is_finite()
}
