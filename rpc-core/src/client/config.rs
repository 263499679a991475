//! The client's settings.

use std::sync::Arc;
use std::time::Duration;

use rpc_codec::{DEFAULT_MAX_BODY_LEN, Format};

use crate::backoff::Backoff;
use crate::filter::ClientFilter;

/// Client settings. Every field's default is in its description.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The format arguments and results are encoded in. Default: MessagePack.
    pub format: Format,
    /// The deadline of a call that sets none. Default: 10 s.
    pub timeout: Duration,
    /// How long one connection attempt may take. Default: 3 s.
    pub connect_timeout: Duration,
    /// After this long without reading anything, the client pings the server. Default: 10 s.
    pub heartbeat_interval: Duration,
    /// After this long without reading anything, the connection is declared dead, its calls fail
    /// with "connection lost" and the client reconnects. Default: 3 × `heartbeat_interval`.
    pub idle_timeout: Duration,
    /// The largest frame body sent or accepted. Default: 8 MiB.
    pub max_frame_len: usize,
    /// Delays between reconnect attempts. Default: [`Backoff::default`] (100 ms doubling to 5 s,
    /// full jitter, no attempt limit).
    pub reconnect: Backoff,
    /// Interceptors that see every call, in order. Default: none.
    pub filters: Vec<Arc<dyn ClientFilter>>,
    /// Whether calls made while the connection is down wait for the reconnect (up to their
    /// deadline). When false, a call fails at once with "could not connect" once a reconnect
    /// attempt has failed — what a balancer wants, so it can try another instance.
    /// Default: true.
    pub wait_for_reconnect: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            format: Format::MessagePack,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            heartbeat_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_frame_len: DEFAULT_MAX_BODY_LEN,
            reconnect: Backoff::default(),
            filters: Vec::new(),
            wait_for_reconnect: true,
        }
    }
}
