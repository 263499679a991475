//! The client's settings.

use std::sync::Arc;
use std::time::Duration;

use rpc_codec::{DEFAULT_MAX_BODY_LEN, Format};

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
    }
}
