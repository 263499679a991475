//! The peers the framework is compared with in the echo benchmark (`echo-bench`): the same echo
//! service written the way a user of each would write it.
//!
//! - [`tarpc_echo`]: tarpc with its serde transport and bincode, Nagle left on (tarpc's own
//!   default) or turned off on both ends. tarpc has no server streaming.
//! - `tonic_echo`, with the `tonic` feature: tonic (gRPC over HTTP/2) with prost messages
//!   generated from `proto/echo.proto`, `TCP_NODELAY` on both ends (tonic's default), `bytes`
//!   fields as [`bytes::Bytes`]. The feature is off by default because the generated code needs
//!   `protoc` to build.

pub mod tarpc_echo;
#[cfg(feature = "tonic")]
pub mod tonic_echo;
