//! Standard output: lines as they are ready, and JSON as the server sent it, re-spaced.

use std::io::{self, Write};

use crate::fail::Failure;

/// Writes a line (or several) and flushes, so that a reader sees each stream item as it
/// arrives.
pub(crate) fn line(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::OutputClosed,
            _ => Failure::failed(format!("cannot write to standard output: {e}")),
        })
}

/// A JSON text indented for people, its object keys in the order the server wrote them (a
/// struct's fields in declaration order).
pub(crate) fn pretty(json: &[u8]) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(json.len() * 2);
    let mut serializer = serde_json::Serializer::pretty(&mut out);
    serde_transcode::transcode(
        &mut serde_json::Deserializer::from_slice(json),
        &mut serializer,
    )?;
    Ok(utf8(out))
}

/// A JSON text on one line, whatever spacing the server used: one JSON value per line.
pub(crate) fn compact(json: &[u8]) -> Result<String, serde_json::Error> {
    let mut out = Vec::with_capacity(json.len());
    let mut serializer = serde_json::Serializer::new(&mut out);
    serde_transcode::transcode(
        &mut serde_json::Deserializer::from_slice(json),
        &mut serializer,
    )?;
    Ok(utf8(out))
}

fn utf8(bytes: Vec<u8>) -> String {
    // serde_json writes UTF-8 only; lossy conversion cannot lose anything here.
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_servers_key_order() {
        let text = pretty(br#"{"b":1,"a":[true,null]}"#).unwrap();
        assert_eq!(
            text,
            "{\n  \"b\": 1,\n  \"a\": [\n    true,\n    null\n  ]\n}"
        );
        assert_eq!(
            compact(b"{ \"b\" : 1,\n \"a\":2 }").unwrap(),
            r#"{"b":1,"a":2}"#
        );
        assert!(compact(b"{").is_err());
    }
}
