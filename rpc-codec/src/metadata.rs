//! Call metadata: the key/value pairs a request carries in its preamble, with their limits.

use std::fmt;

/// String key/value pairs that travel with a call, like HTTP headers or Dubbo attachments.
///
/// Keys are 1 to 255 bytes, values at most 65,535 bytes, and a call carries at most 255 pairs;
/// [`Metadata::insert`] enforces those limits so that anything stored here can be encoded. Keys
/// are compared exactly (case-sensitive). Insertion order is kept.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Metadata {
    entries: Vec<(String, String)>,
}

/// A key or value did not fit the wire limits of [`Metadata`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The key was empty or longer than 255 bytes.
    #[error("metadata key must be 1 to 255 bytes, got {0}")]
    KeyLength(usize),
    /// The value was longer than 65,535 bytes.
    #[error("metadata value must be at most 65535 bytes, got {0}")]
    ValueLength(usize),
    /// There were already 255 entries.
    #[error("at most 255 metadata entries fit in a call")]
    TooMany,
}

impl Metadata {
    /// The maximum number of entries.
    pub const MAX_ENTRIES: usize = 255;
    /// The maximum key length in bytes.
    pub const MAX_KEY_LEN: usize = 255;
    /// The maximum value length in bytes.
    pub const MAX_VALUE_LEN: usize = u16::MAX as usize;

    /// Empty metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`, replacing an earlier value for the same key.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<&mut Self, MetadataError> {
        let (key, value) = (key.into(), value.into());
        if key.is_empty() || key.len() > Self::MAX_KEY_LEN {
            return Err(MetadataError::KeyLength(key.len()));
        }
        if value.len() > Self::MAX_VALUE_LEN {
            return Err(MetadataError::ValueLength(value.len()));
        }
        if let Some(slot) = self.entries.iter_mut().find(|(k, _)| *k == key) {
            slot.1 = value;
        } else {
            if self.entries.len() == Self::MAX_ENTRIES {
                return Err(MetadataError::TooMany);
            }
            self.entries.push((key, value));
        }
        Ok(self)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let i = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// The value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_and_enforces_limits() {
        let mut m = Metadata::new();
        m.insert("trace", "a").unwrap();
        m.insert("trace", "b").unwrap();
        assert_eq!(m.get("trace"), Some("b"));
        assert_eq!(m.len(), 1);
        assert_eq!(m.insert("", "x").unwrap_err(), MetadataError::KeyLength(0));
        assert_eq!(
            m.insert("k".repeat(256), "x").unwrap_err(),
            MetadataError::KeyLength(256)
        );
        assert_eq!(
            m.insert("v", "x".repeat(65_536)).unwrap_err(),
            MetadataError::ValueLength(65_536)
        );
        for i in 1..255 {
            m.insert(format!("k{i}"), "").unwrap();
        }
        assert_eq!(m.len(), 255);
        assert_eq!(
            m.insert("one-more", "").unwrap_err(),
            MetadataError::TooMany
        );
        assert_eq!(m.remove("trace").as_deref(), Some("b"));
        assert_eq!(m.get("trace"), None);
    }
}
