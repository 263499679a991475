//! The rules requests must follow, checked before anything is touched.

use std::str::FromStr;

use chat_api::{ChatError, MAX_NAME_CHARS, MAX_ROOM_CHARS, MAX_TEXT_BYTES, excerpt};
use rpc_core::Endpoint;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;
use uuid::Uuid;

/// The longest secret, in bytes.
pub(crate) const MAX_SECRET_BYTES: usize = 256;
/// The longest advertised endpoint, in bytes.
pub(crate) const MAX_ENDPOINT_BYTES: usize = 256;
/// The most message ids one `ack` may carry.
pub(crate) const MAX_ACK_IDS: usize = 1024;

/// A display name: 1 to [`MAX_NAME_CHARS`] characters, nothing invisible ([`is_invisible`]),
/// no surrounding whitespace, and not something that reads as a user id (lookups would be
/// ambiguous).
pub(crate) fn display_name(name: &str) -> Result<(), ChatError> {
    label("name", name, MAX_NAME_CHARS)?;
    if Uuid::parse_str(name).is_ok() {
        return Err(ChatError::Invalid("a name cannot be a user id".into()));
    }
    Ok(())
}

/// A room name: 1 to [`MAX_ROOM_CHARS`] characters, nothing invisible ([`is_invisible`]), no
/// surrounding whitespace.
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
        Err(e) => Err(ChatError::Invalid(format!(
            "endpoint {:?}: {}",
            excerpt(&endpoint),
            excerpt(&e.to_string())
        ))),
    }
}

/// How names are compared for uniqueness and lookups: two names that a reader could take for
/// one another have the same key, so that one user cannot pass for another. The key folds case
/// and width (NFKC after lowercasing: "Alice", "ALICE" and the fullwidth "ａｌｉｃｅ" are one name)
/// and maps each character to its confusable prototype (the skeleton of Unicode Technical
/// Standard #39: the Cyrillic "аlice" and "alice" are one name, as are "rn" and "m").
pub(crate) fn name_key(name: &str) -> String {
    let folded: String = name.to_lowercase().nfkc().collect();
    skeleton(&folded).collect()
}

/// Whether a character shows nothing, or changes how the text around it shows, so that two
/// names that look alike could differ, or one could pass for another: control characters,
/// Unicode format characters (category Cf: zero-width spaces and joiners, the byte order mark,
/// the bidirectional marks, embeddings, overrides and isolates, tags, …), other characters that
/// render blank (fillers, variation selectors, the combining grapheme joiner), and every kind of
/// whitespace except the plain space.
pub(crate) fn is_invisible(c: char) -> bool {
    if c == ' ' {
        return false;
    }
    c.is_control()
        || c.is_whitespace()
        || matches!(
            c,
            // Format characters (Cf), as of Unicode 15.1.
            '\u{AD}'
                | '\u{600}'..='\u{605}'
                | '\u{61C}'
                | '\u{6DD}'
                | '\u{70F}'
                | '\u{890}'..='\u{891}'
                | '\u{8E2}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
                // Blank or invisible, though not Cf.
                | '\u{34F}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180D}'
                | '\u{180F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FFA0}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

fn label(what: &str, value: &str, max_chars: usize) -> Result<(), ChatError> {
    let chars = value.chars().count();
    if chars == 0 || chars > max_chars {
        return Err(ChatError::Invalid(format!(
            "the {what} must have 1 to {max_chars} characters"
        )));
    }
    if let Some(c) = value.chars().find(|c| is_invisible(*c)) {
        return Err(ChatError::Invalid(format!(
            "the {what} contains an invisible or control character (U+{:04X})",
            u32::from(c)
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
    fn names_that_look_alike_have_one_key() {
        let alice = name_key("alice");
        for alike in [
            "Alice",
            "ALICE",
            "\u{FF41}lice",
            "\u{430}lice",
            "ａｌｉｃｅ",
        ] {
            assert_eq!(name_key(alike), alice, "{alike:?}");
        }
        assert_eq!(name_key("modern"), name_key("rnodern"));
        assert_eq!(name_key("paypal"), name_key("paypa1"));
        for other in ["alicia", "bob", "al ice"] {
            assert_ne!(name_key(other), alice, "{other:?}");
        }
    }

    #[test]
    fn names_with_invisible_or_direction_changing_characters_are_refused() {
        for bad in [
            "\u{200B}",
            "ali\u{200B}ce",
            "ali\u{200D}ce",
            "\u{FEFF}bob",
            "bob\u{202E}evil",
            "\u{202A}x",
            "x\u{2066}y\u{2069}",
            "a\u{200E}",
            "a\u{200F}",
            "a\u{61C}",
            "a\u{2060}b",
            "a\u{AD}b",
            "tag\u{E0041}",
            "a\u{3164}",
            "a\u{A0}b",
            "a\u{2028}b",
            "a\u{1B}[31mred",
            "a\u{85}",
        ] {
            assert!(display_name(bad).is_err(), "{bad:?}");
            assert!(room_name(bad).is_err(), "{bad:?}");
        }
        for good in ["alice", "Zoë ünd 李", "ali ce", "🙂 ok", "مرحبا", "עברית"] {
            assert!(display_name(good).is_ok(), "{good:?}");
        }
        let refused = display_name("bob\u{202E}").unwrap_err().to_string();
        assert!(refused.contains("U+202E"), "{refused}");
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
