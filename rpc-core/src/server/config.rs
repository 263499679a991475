//! The server's settings.

use std::time::Duration;

use rpc_codec::DEFAULT_MAX_BODY_LEN;

/// Server settings. Every field's default is in its description.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Calls one connection may have running at once; beyond it calls are answered
    /// "server busy". Responses still queued for writing count. Default: 1,024.
    pub max_concurrent_per_connection: usize,
    /// Calls the whole server may have running at once. Default: 65,536.
    pub max_concurrent: usize,
    /// The largest frame body accepted or sent; a connection that announces a larger one is
    /// closed. Default: 8 MiB.
    pub max_frame_len: usize,
    /// After this long without reading anything from a connection, the server pings it.
    /// Default: 10 s.
    pub heartbeat_interval: Duration,
    /// After this long without reading anything, the server closes the connection.
    /// Default: 3 × `heartbeat_interval`.
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_concurrent_per_connection: 1024,
            max_concurrent: 65_536,
            max_frame_len: DEFAULT_MAX_BODY_LEN,
            heartbeat_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}
