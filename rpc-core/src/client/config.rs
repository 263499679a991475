//! The client's settings.

use std::sync::Arc;
use std::time::Duration;

use rpc_codec::{DEFAULT_MAX_BODY_LEN, Format, MAX_STREAM_WINDOW_BYTES, MIN_STREAM_WINDOW_BYTES};

use crate::backoff::Backoff;
use crate::filter::ClientFilter;
use crate::reader::{ReaderConfig, effective_idle_timeout};

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
    /// with "connection lost" and the client reconnects. Default (`None`): 3 ×
    /// `heartbeat_interval`, whatever that is set to.
    pub idle_timeout: Option<Duration>,
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
    /// The bytes of a server stream's items that may be on their way or waiting to be read:
    /// the client announces this window with each streaming call, and a server that knows it
    /// sends no more than that ahead of what the caller has read, however small the items are
    /// (a server of an earlier version counts 256 items instead). Larger windows keep fast
    /// streams going over long round trips; smaller ones bound the memory a slow reader holds.
    /// Between 16 KiB and 64 MiB. Default: 2 MiB.
    pub stream_window: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            format: Format::MessagePack,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            heartbeat_interval: Duration::from_secs(10),
            idle_timeout: None,
            max_frame_len: DEFAULT_MAX_BODY_LEN,
            reconnect: Backoff::default(),
            filters: Vec::new(),
            wait_for_reconnect: true,
            stream_window: 2 * 1024 * 1024,
        }
    }
}

impl ClientConfig {
    /// The idle timeout in force: the one set, or three heartbeat intervals.
    pub fn effective_idle_timeout(&self) -> Duration {
        effective_idle_timeout(self.heartbeat_interval, self.idle_timeout)
    }

    /// What the connection's reader runs with; fails as [`ClientConfig::validate`] does.
    pub(crate) fn reader(&self) -> Result<ReaderConfig, String> {
        ReaderConfig::new(
            self.heartbeat_interval,
            self.idle_timeout,
            self.max_frame_len,
        )
    }

    /// Checks that the settings make sense together; the error says which does not.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
        ];
        for (name, value) in positive {
            if value.is_zero() {
                return Err(format!("{name} must be more than zero"));
            }
        }
        let window = self.stream_window as u64;
        if !(MIN_STREAM_WINDOW_BYTES..=MAX_STREAM_WINDOW_BYTES).contains(&window) {
            return Err(format!(
                "stream_window must be between {MIN_STREAM_WINDOW_BYTES} and \
                 {MAX_STREAM_WINDOW_BYTES} bytes, not {window}"
            ));
        }
        self.reader().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_timeout_follows_the_heartbeat_unless_set() {
        let mut config = ClientConfig::default();
        assert_eq!(config.effective_idle_timeout(), Duration::from_secs(30));
        config.heartbeat_interval = Duration::from_secs(2);
        assert_eq!(config.effective_idle_timeout(), Duration::from_secs(6));
        config.idle_timeout = Some(Duration::from_secs(5));
        assert_eq!(config.effective_idle_timeout(), Duration::from_secs(5));
        assert!(config.validate().is_ok());
        config.idle_timeout = Some(Duration::from_secs(1));
        assert!(config.validate().unwrap_err().contains("idle_timeout"));
    }

    #[test]
    fn impossible_settings_are_named() {
        let config = ClientConfig {
            timeout: Duration::ZERO,
            ..ClientConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("timeout"));
        let config = ClientConfig {
            max_frame_len: 0,
            ..ClientConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("max_frame_len"));
        let config = ClientConfig {
            stream_window: 1024,
            ..ClientConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("stream_window"));
    }
}
