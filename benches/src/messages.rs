//! The messages the codec benchmark encodes and decodes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The arguments of a typical unary call: a few numbers and a short string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmallRequest {
    /// The caller's account.
    pub user_id: u64,
    /// The page to return, from 0.
    pub page: u32,
    /// How many items per page.
    pub page_size: u16,
    /// A short search string.
    pub query: String,
}

impl SmallRequest {
    /// The request the benchmarks send.
    pub fn sample() -> Self {
        SmallRequest {
            user_id: 4_207_311,
            page: 3,
            page_size: 50,
            query: "rust rpc".to_owned(),
        }
    }
}

/// A chat message: who sent it where, when, and a 200-character text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The message's id.
    pub id: Uuid,
    /// The room it was posted in.
    pub room: Uuid,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub sent_at_ms: u64,
    /// The text, UTF-8.
    pub text: String,
}

impl ChatMessage {
    /// The number of characters (not bytes) in [`ChatMessage::sample`]'s text.
    pub const TEXT_CHARS: usize = 200;

    /// A message whose text mixes ASCII, Latin accents, CJK and an emoji, so that it is longer
    /// in bytes than in characters, as real chat text is.
    pub fn sample() -> Self {
        const PHRASE: &str = "Grüße aus Köln! Meeting at 10:30 — 会議は十時半です 🚀 ça marche? ";
        ChatMessage {
            id: Uuid::from_u128(0x6f1c_2a4e_93b7_4d0a_8c55_1e2f_3a4b_5c6d),
            room: Uuid::from_u128(0x0b9e_77d3_5a12_4c8f_b6e0_9d8c_7b6a_5948),
            sent_at_ms: 1_767_225_600_000,
            text: PHRASE.chars().cycle().take(Self::TEXT_CHARS).collect(),
        }
    }
}

/// One row of a list result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The row's id.
    pub id: u64,
    /// A short display name.
    pub name: String,
    /// A score with a fractional part.
    pub score: f64,
    /// Whether the row is active.
    pub active: bool,
    /// An 8-byte opaque tag, sent as bytes rather than as a list of numbers.
    #[serde(with = "serde_bytes")]
    pub tag: Vec<u8>,
}

impl Record {
    /// `n` rows with distinct, deterministic contents.
    pub fn batch(n: usize) -> Vec<Record> {
        (0..n as u64)
            .map(|i| Record {
                id: 1_000_000 + i,
                name: format!("user-{i:04}"),
                score: i as f64 * 0.37 + 0.125,
                active: i % 3 != 0,
                tag: (i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                    .to_be_bytes()
                    .to_vec(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Debug;

    use rpc_codec::Format;
    use serde::de::DeserializeOwned;

    use super::*;

    fn round_trips<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
        for format in [Format::MessagePack, Format::Postcard, Format::Json] {
            let bytes = format.to_bytes(value).unwrap();
            assert_eq!(&format.decode::<T>(&bytes).unwrap(), value, "{format}");
        }
    }

    #[test]
    fn samples_round_trip_in_every_format() {
        round_trips(&SmallRequest::sample());
        round_trips(&ChatMessage::sample());
        round_trips(&Record::batch(1000));
    }

    #[test]
    fn chat_text_is_200_chars_and_not_ascii() {
        let text = ChatMessage::sample().text;
        assert_eq!(text.chars().count(), ChatMessage::TEXT_CHARS);
        assert!(text.len() > ChatMessage::TEXT_CHARS);
    }

    #[test]
    fn batch_rows_are_distinct() {
        let rows = Record::batch(1000);
        assert_eq!(rows.len(), 1000);
        assert!(
            rows.windows(2)
                .all(|w| w[0].id < w[1].id && w[0].tag != w[1].tag)
        );
    }
}
