//! The server's settings.

use std::time::Duration;

use rpc_codec::DEFAULT_MAX_BODY_LEN;

use crate::reader::{ReaderConfig, effective_idle_timeout};

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
    /// Answers waiting to be written to one connection (counted as they cost in memory,
    /// about 64 bytes per frame beyond its length) past which the server stops reading that
    /// connection's requests until they are down to half: a client that does not read its
    /// answers cannot make the server buffer more. Default: 4 MiB.
    pub connection_buffer: usize,
    /// Answers waiting for one connection past which the server closes it: calls already
    /// running when reading paused can still answer past `connection_buffer`, up to this.
    /// Default: 32 MiB.
    pub max_connection_buffer: usize,
    /// Answers waiting for all connections together past which every connection stops being
    /// read and the connection holding the most is closed. Default: 256 MiB.
    pub max_server_buffer: usize,
    /// After this long without reading anything from a connection, the server pings it.
    /// Default: 10 s.
    pub heartbeat_interval: Duration,
    /// After this long without reading anything, the server closes the connection.
    /// Default (`None`): 3 × `heartbeat_interval`, whatever that is set to.
    pub idle_timeout: Option<Duration>,
    /// Whether the server also serves the reflection service, `rpc.Reflection` version `1`,
    /// which lists its services and their methods (see [`Reflection`](crate::Reflection)).
    /// Default: true.
    pub reflection: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_concurrent_per_connection: 1024,
            max_concurrent: 65_536,
            max_frame_len: DEFAULT_MAX_BODY_LEN,
            connection_buffer: 4 * 1024 * 1024,
            max_connection_buffer: 32 * 1024 * 1024,
            max_server_buffer: 256 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(10),
            idle_timeout: None,
            reflection: true,
        }
    }
}

impl ServerConfig {
    /// The idle timeout in force: the one set, or three heartbeat intervals.
    pub fn effective_idle_timeout(&self) -> Duration {
        effective_idle_timeout(self.heartbeat_interval, self.idle_timeout)
    }

    /// What each connection's reader runs with; fails as [`ServerConfig::validate`] does.
    pub(crate) fn reader(&self) -> Result<ReaderConfig, String> {
        ReaderConfig::new(
            self.heartbeat_interval,
            self.idle_timeout,
            self.max_frame_len,
        )
    }

    /// Checks that the settings make sense together; the error says which does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent_per_connection == 0 || self.max_concurrent == 0 {
            return Err("concurrency limits must be at least 1".to_owned());
        }
        if self.connection_buffer == 0
            || self.connection_buffer > self.max_connection_buffer
            || self.max_connection_buffer > self.max_server_buffer
        {
            return Err(format!(
                "buffers must be 0 < connection_buffer ({}) <= max_connection_buffer ({}) <= \
                 max_server_buffer ({})",
                self.connection_buffer, self.max_connection_buffer, self.max_server_buffer
            ));
        }
        self.reader().map(drop)
    }
}
