//! The rules requests must follow, checked before anything is touched.

use std::str::FromStr;

use rpc_core::Endpoint;
use uuid::Uuid;

use crate::chat::api::{ChatError, MAX_NAME_CHARS, MAX_ROOM_CHARS, MAX_TEXT_BYTES};

/// The longest secret, in bytes.
pub(crate) const MAX_SECRET_BYTES: usize = 256;
/// The longest advertised endpoint, in bytes.
pub(crate) const MAX_ENDPOINT_BYTES: usize = 256;
/// The most message ids one `ack` may carry.
pub(crate) const MAX_ACK_IDS: usize = 1024;

/// A display name: 1 to [`MAX_NAME_CHARS`] characters, no control characters, no surrounding
/// whitespace, and not something that reads as a user id (lookups would be ambiguous).
pub(crate) fn display_name(name: &str) -> Result<(), ChatError> {
    label("name", name, MAX_NAME_CHARS)?;
    if Uuid::parse_str(name).is_ok() {
        return Err(ChatError::Invalid("a name cannot be a user id".into()));
    }
    Ok(())
}

/// A room name: 1 to [`MAX_ROOM_CHARS`] characters, no control characters, no surrounding
/// whitespace.
pub(crate) fn room_name(room: &str) -> Result<(), ChatError> {
    label("room name", room, MAX_ROOM_CHARS)
}

/// A message text: not empty, at most [`MAX_TEXT_BYTES`] bytes.
pub(crate) fn text(text: &str) -> Result<(), ChatError> {
    if text.is_empty() {
        return Err(ChatError::Invalid("the text is empty".into()));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(ChatError::Invalid(format!(
            "the text has {} bytes; at most {MAX_TEXT_BYTES} are allowed",
            text.len()
        )));
    }
    Ok(())
}

/// A secret: 1 to [`MAX_SECRET_BYTES`] bytes.
pub(crate) fn secret(secret: &str) -> Result<(), ChatError> {
    if secret.is_empty() || secret.len() > MAX_SECRET_BYTES {
        return Err(ChatError::Invalid(format!(
            "the secret must have 1 to {MAX_SECRET_BYTES} bytes"
        )));
    }
    Ok(())
}

/// An advertised endpoint: absent, or one this framework can parse (`tcp://host:port`, …).
pub(crate) fn endpoint(endpoint: Option<String>) -> Result<Option<String>, ChatError> {
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    if endpoint.len() > MAX_ENDPOINT_BYTES {
        return Err(ChatError::Invalid(format!(
            "the endpoint has more than {MAX_ENDPOINT_BYTES} bytes"
        )));
    }
    match Endpoint::from_str(&endpoint) {
        Ok(_) => Ok(Some(endpoint)),
        Err(e) => Err(ChatError::Invalid(format!("endpoint {endpoint:?}: {e}"))),
    }
}

/// How names are compared for uniqueness and lookups: case-insensitively, so that "Alice" and
/// "alice" cannot be online at once.
pub(crate) fn name_key(name: &str) -> String {
    name.to_lowercase()
}

fn label(what: &str, value: &str, max_chars: usize) -> Result<(), ChatError> {
    let chars = value.chars().count();
    if chars == 0 || chars > max_chars {
        return Err(ChatError::Invalid(format!(
            "the {what} must have 1 to {max_chars} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ChatError::Invalid(format!(
            "the {what} contains control characters"
        )));
    }
    if value.trim() != value {
        return Err(ChatError::Invalid(format!(
            "the {what} starts or ends with whitespace"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(display_name("alice").is_ok());
        assert!(display_name("Zoë ünd 李").is_ok());
        assert!(display_name(&"x".repeat(MAX_NAME_CHARS)).is_ok());
        for bad in [
            "",
            " a",
            "a ",
            "a\nb",
            "\u{7}",
            &"x".repeat(MAX_NAME_CHARS + 1),
        ] {
            assert!(display_name(bad).is_err(), "{bad:?}");
        }
        assert!(display_name(&Uuid::new_v4().to_string()).is_err());
    }

    #[test]
    fn texts_and_endpoints() {
        assert!(text("hi\nthere").is_ok());
        assert!(text("").is_err());
        assert!(text(&"x".repeat(MAX_TEXT_BYTES + 1)).is_err());
        assert_eq!(endpoint(None), Ok(None));
        assert!(endpoint(Some("tcp://127.0.0.1:1".into())).is_ok());
        assert!(endpoint(Some("carrier pigeon".into())).is_err());
    }
}
