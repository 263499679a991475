//! Benchmarks of the framework (under `benches/`, run with `cargo bench -p benches`) and the
//! messages they share, so that every benchmark measures the same payloads.
//!
//! - [`SmallRequest`]: the arguments of a typical unary call, a few numbers and a short string.
//! - [`ChatMessage`]: two UUIDs, a timestamp and a 200-character text that is not all ASCII.
//! - [`Record`]: one row of a list; [`Record::batch`] builds the 1,000-row list.
//!
//! Every constructor is deterministic, so encoded sizes are the same from run to run and can be
//! quoted in `docs/BENCHMARKS.md`.
//!
//! ```
//! use benches::ChatMessage;
//! use rpc_codec::Format;
//!
//! let message = ChatMessage::sample();
//! let bytes = Format::Postcard.to_bytes(&message).unwrap();
//! assert_eq!(Format::Postcard.decode::<ChatMessage>(&bytes).unwrap(), message);
//! ```

mod messages;

pub use messages::{ChatMessage, Record, SmallRequest};

pub mod echo;
pub mod peers;
pub mod raw;
