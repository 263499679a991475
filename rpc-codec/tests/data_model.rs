//! The tables of section 7 of `docs/PROTOCOL.md` ("Rust types on the wire" and "What a reader
//! also accepts"), checked row by row against the built-in formats. The tables are read from the
//! page itself, so the page and these tests cannot drift apart: a row whose bytes are wrong fails,
//! and a row this file has no value for fails too.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::fmt::Debug;

use rpc_codec::Format;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use uuid::Uuid;

const PAGE: &str = include_str!("../../docs/PROTOCOL.md");

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Marker;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Meters(u32);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Pair(u8, bool);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i32,
    label: Option<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Dot,
    Circle(u8),
    Line(u8, u8),
    Rect { w: u8 },
}

/// The cells of one table row, backticks removed.
#[derive(Debug)]
struct Row(Vec<String>);

/// The rows of the first table after the heading that starts with `heading`.
fn table_after(heading: &str) -> Vec<Row> {
    let start = PAGE
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("the page has a heading {heading:?}"));
    PAGE.lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        // The header row and the separator row.
        .skip(2)
        .map(|line| {
            let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
            Row(inner
                .split(" | ")
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect())
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(none)".to_owned();
    }
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unhex(text: &str) -> Vec<u8> {
    if text == "(none)" {
        return Vec::new();
    }
    text.split(' ')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|_| panic!("hex byte {b:?}")))
        .collect()
}

/// Checks one row of the "Rust types on the wire" table: `value` encodes to the row's bytes in
/// each format, and those bytes decode back to `value`.
fn encodes<T>(row: &Row, value: T) -> Vec<String>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let [_, example, msgpack, postcard, json] = &row.0[..] else {
        return vec![format!("row {row:?} does not have five cells")];
    };
    let mut failures = Vec::new();
    let mut check = |format: Format, written: String, expected: &str| {
        if written != expected {
            failures.push(format!(
                "{example} in {format}: the page says {expected}, the encoder writes {written}"
            ));
        }
    };
    let bytes = |format: &Format| format.to_bytes(&value).expect("the example encodes");
    check(
        Format::MessagePack,
        hex(&bytes(&Format::MessagePack)),
        msgpack,
    );
    check(Format::Postcard, hex(&bytes(&Format::Postcard)), postcard);
    let written = String::from_utf8(bytes(&Format::Json).to_vec()).expect("JSON is UTF-8");
    check(Format::Json, written, json);
    for (format, wire) in [
        (Format::MessagePack, unhex(msgpack)),
        (Format::Postcard, unhex(postcard)),
        (Format::Json, json.as_bytes().to_vec()),
    ] {
        match format.decode::<T>(&wire) {
            Ok(decoded) if decoded == value => {}
            other => failures.push(format!("{example} in {format} reads back as {other:?}")),
        }
    }
    failures
}

/// Checks one row of the "What a reader also accepts" table.
fn reads<T>(row: &Row, value: T) -> Vec<String>
where
    T: DeserializeOwned + PartialEq + Debug,
{
    let [input, format, bytes, reads_as] = &row.0[..] else {
        return vec![format!("row {row:?} does not have four cells")];
    };
    let (format, wire) = match format.as_str() {
        "MessagePack" => (Format::MessagePack, unhex(bytes)),
        "JSON" => (Format::Json, bytes.as_bytes().to_vec()),
        "postcard" => (Format::Postcard, unhex(bytes)),
        other => return vec![format!("unknown serializer {other:?}")],
    };
    match format.decode::<T>(&wire) {
        Ok(decoded) if decoded == value => Vec::new(),
        other => vec![format!(
            "{input} ({format} {bytes}) should read as {reads_as}, reads as {other:?}"
        )],
    }
}

fn map<K: Ord, V>(entries: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
    entries.into_iter().collect()
}

#[test]
fn every_row_of_the_rust_types_table_is_what_the_formats_write_and_read() {
    let rows = table_after("### 7.1 Rust types on the wire");
    assert!(rows.len() >= 30, "the table has {} rows", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let example = row.0.get(1).map(String::as_str).unwrap_or_default();
        failures.extend(match example {
            "true" => encodes(row, true),
            "false" => encodes(row, false),
            "200u8" => encodes(row, 200u8),
            "200u16" => encodes(row, 200u16),
            "300u32" => encodes(row, 300u32),
            "70000u64" => encodes(row, 70000u64),
            "u64::MAX" => encodes(row, u64::MAX),
            "-1i8" => encodes(row, -1i8),
            "1i32" => encodes(row, 1i32),
            "-1i32" => encodes(row, -1i32),
            "200i32" => encodes(row, 200i32),
            "-33i64" => encodes(row, -33i64),
            "-200i64" => encodes(row, -200i64),
            "i64::MAX" => encodes(row, i64::MAX),
            "1.5f32" => encodes(row, 1.5f32),
            "1.5f64" => encodes(row, 1.5f64),
            r#""héllo""# => encodes(row, "héllo".to_owned()),
            "'x'" => encodes(row, 'x'),
            "()" => encodes(row, ()),
            "Marker" => encodes(row, Marker),
            "Meters(7)" => encodes(row, Meters(7)),
            "None::<u8>" => encodes(row, None::<u8>),
            "Some(5u8)" => encodes(row, Some(5u8)),
            r#"(1u8, "a")"# => encodes(row, (1u8, "a".to_owned())),
            "(1u8,)" => encodes(row, (1u8,)),
            "Pair(1, true)" => encodes(row, Pair(1, true)),
            "Point { x: -1, label: None }" => encodes(row, Point { x: -1, label: None }),
            r#"Point { x: 300, label: Some("hi") }"# => encodes(
                row,
                Point {
                    x: 300,
                    label: Some("hi".to_owned()),
                },
            ),
            "vec![1u32, 300]" => encodes(row, vec![1u32, 300]),
            "vec![1u8, 2, 3]" => encodes(row, vec![1u8, 2, 3]),
            "Blob(vec![1, 2, 3])" => encodes(row, Blob(vec![1, 2, 3])),
            "ByteBuf::from([1, 2, 3])" => encodes(row, ByteBuf::from([1, 2, 3])),
            "Bytes::from([1, 2, 3])" => encodes(row, bytes::Bytes::from_static(&[1, 2, 3])),
            r#"{"k": 1u8, "l": 2}"# => {
                encodes(row, map([("k".to_owned(), 1u8), ("l".to_owned(), 2)]))
            }
            "{1u8: true}" => encodes(row, map([(1u8, true)])),
            "Shape::Dot" => encodes(row, Shape::Dot),
            "Shape::Circle(5)" => encodes(row, Shape::Circle(5)),
            "Shape::Line(1, 2)" => encodes(row, Shape::Line(1, 2)),
            "Shape::Rect { w: 3 }" => encodes(row, Shape::Rect { w: 3 }),
            "Uuid::from_u128(0x0123456789abcdef0123456789abcdef)" => {
                encodes(row, Uuid::from_u128(0x0123456789abcdef0123456789abcdef))
            }
            other => vec![format!("no value for the page's example {other:?}")],
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_row_of_the_lenient_reading_table_reads_as_the_page_says() {
    let rows = table_after("### 7.2 What a reader also accepts");
    assert!(rows.len() >= 7, "the table has {} rows", rows.len());
    let mut failures = Vec::new();
    for row in &rows {
        let reads_as = row.0.get(3).map(String::as_str).unwrap_or_default();
        failures.extend(match reads_as {
            "5u8" => reads(row, 5u8),
            "Point { x: -1, label: None }" => reads(row, Point { x: -1, label: None }),
            "Point { x: 5, label: None }" => reads(row, Point { x: 5, label: None }),
            "Blob(vec![1, 2, 3])" => reads(row, Blob(vec![1, 2, 3])),
            "{1u8: true}" => reads(row, map([(1u8, true)])),
            r#"(1u8, "a")"# => reads(row, (1u8, "a".to_owned())),
            other => vec![format!("no value for the page's {other:?}")],
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The prose rules of section 7.1 that the table's rows do not show on their own.
#[test]
fn rules_beyond_the_examples_hold() {
    // Lengths past the short forms: str 8, bin 16, array 16, map 16.
    let text = "a".repeat(40);
    assert_eq!(
        Format::MessagePack.to_bytes(&text).unwrap()[..2],
        [0xd9, 40]
    );
    let blob = ByteBuf::from(vec![0u8; 300]);
    assert_eq!(
        Format::MessagePack.to_bytes(&blob).unwrap()[..3],
        [0xc5, 1, 0x2c]
    );
    let sixteen: Vec<u8> = (0..16).collect();
    assert_eq!(
        Format::MessagePack.to_bytes(&sixteen).unwrap()[..3],
        [0xdc, 0, 16]
    );
    let wide = map((0..16u8).map(|k| (k, k)));
    assert_eq!(
        Format::MessagePack.to_bytes(&wide).unwrap()[..3],
        [0xde, 0, 16]
    );
    // A negative fixint goes down to -32; -33 is int 8 (in the table).
    assert_eq!(&Format::MessagePack.to_bytes(&-32i64).unwrap()[..], [0xe0]);
    // Non-finite floats are null in JSON.
    assert_eq!(&Format::Json.to_bytes(&f64::NAN).unwrap()[..], b"null");
    assert_eq!(&Format::Json.to_bytes(&f64::INFINITY).unwrap()[..], b"null");
    // Option<()> and Option<Option<T>> lose information in MessagePack.
    assert_eq!(
        Format::MessagePack.to_bytes(&Some(())).unwrap(),
        Format::MessagePack.to_bytes(&None::<()>).unwrap()
    );
    assert_eq!(
        Format::MessagePack.to_bytes(&Some(None::<u8>)).unwrap(),
        Format::MessagePack.to_bytes(&None::<Option<u8>>).unwrap()
    );
    // A missing field that is not an Option is an error.
    assert!(Format::Json.decode::<Point>(br#"{"label":"x"}"#).is_err());
}
