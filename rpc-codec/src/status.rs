//! The status of an answered call: a small documented table of codes.

use std::fmt;

/// The outcome of a call, carried in the header of response and stream-end frames.
///
/// A status is a single byte on the wire. The values below are fixed by the protocol; a peer may
/// send a value this version does not know, which is kept as is (see [`Status::is_known`]) rather
/// than rejected, so that newer servers can add codes without breaking older clients.
///
/// | value | name                     | meaning                                                   |
/// |-------|--------------------------|-----------------------------------------------------------|
/// | 0     | `OK`                     | the call succeeded; the body is the result                |
/// | 1     | `BAD_REQUEST`            | preamble or arguments could not be decoded                |
/// | 2     | `SERVICE_NOT_FOUND`      | no service with that name and version on the server       |
/// | 3     | `METHOD_NOT_FOUND`       | the service has no such method                            |
/// | 4     | `DEADLINE_EXCEEDED`      | the deadline passed before the answer                     |
/// | 5     | `CANCELLED`              | the caller cancelled the call                             |
/// | 6     | `SERVER_BUSY`            | a concurrency limit was reached; retry later              |
/// | 7     | `APPLICATION_ERROR`      | the method returned an error (detail holds it)            |
/// | 8     | `INTERNAL_ERROR`         | the server failed (a handler panicked, a result failed to encode) |
/// | 9     | `UNSUPPORTED_SERIALIZER` | the server does not know the frame's serializer id        |
/// | 10    | `UNAVAILABLE`            | the server is draining and did not start the call         |
/// | 11    | `REJECTED`               | a filter refused the call (authentication, policy)        |
/// | 12    | `PROTOCOL_ERROR`         | the frame kind was not valid in this place                |
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(u8);

impl Status {
    /// The call succeeded.
    pub const OK: Status = Status(0);
    /// The request preamble or the arguments could not be decoded.
    pub const BAD_REQUEST: Status = Status(1);
    /// No service with the requested name and version is served.
    pub const SERVICE_NOT_FOUND: Status = Status(2);
    /// The service has no method with the requested name.
    pub const METHOD_NOT_FOUND: Status = Status(3);
    /// The call's deadline passed before it finished.
    pub const DEADLINE_EXCEEDED: Status = Status(4);
    /// The call was cancelled by the caller.
    pub const CANCELLED: Status = Status(5);
    /// A concurrency limit was reached; the call was not started.
    pub const SERVER_BUSY: Status = Status(6);
    /// The method returned an application error; the error body's detail carries it.
    pub const APPLICATION_ERROR: Status = Status(7);
    /// The server failed while handling the call.
    pub const INTERNAL_ERROR: Status = Status(8);
    /// The frame's serializer id is not known to the server.
    pub const UNSUPPORTED_SERIALIZER: Status = Status(9);
    /// The server is shutting down and did not start the call.
    pub const UNAVAILABLE: Status = Status(10);
    /// A server filter refused the call.
    pub const REJECTED: Status = Status(11);
    /// The frame was well formed but not valid where it appeared.
    pub const PROTOCOL_ERROR: Status = Status(12);

    const NAMES: [&'static str; 13] = [
        "ok",
        "bad request",
        "service not found",
        "method not found",
        "deadline exceeded",
        "cancelled",
        "server busy",
        "application error",
        "internal error",
        "unsupported serializer",
        "unavailable",
        "rejected",
        "protocol error",
    ];

    /// Wraps a raw status byte; unknown values are kept as they are.
    pub const fn from_u8(value: u8) -> Self {
        Status(value)
    }

    /// The byte sent on the wire.
    pub const fn as_u8(self) -> u8 {
        self.0
    }

    /// Whether this is [`Status::OK`].
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Whether this version of the protocol defines this value.
    pub const fn is_known(self) -> bool {
        (self.0 as usize) < Self::NAMES.len()
    }

    /// A short lowercase name, `"unknown"` for values this version does not define.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .get(self.0 as usize)
            .copied()
            .unwrap_or("unknown")
    }
}

impl Default for Status {
    fn default() -> Self {
        Status::OK
    }
}

impl From<u8> for Status {
    fn from(value: u8) -> Self {
        Status(value)
    }
}

impl From<Status> for u8 {
    fn from(status: Status) -> Self {
        status.0
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({} {})", self.0, self.name())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            f.write_str(self.name())
        } else {
            write!(f, "unknown status {}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_have_distinct_names() {
        let mut names: Vec<_> = (0..=12u8).map(|v| Status::from(v).name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 13);
        assert!(!names.contains(&"unknown"));
    }

    #[test]
    fn unknown_values_survive() {
        let s = Status::from_u8(200);
        assert!(!s.is_known());
        assert_eq!(s.as_u8(), 200);
        assert_eq!(s.to_string(), "unknown status 200");
        assert_eq!(Status::DEADLINE_EXCEEDED.to_string(), "deadline exceeded");
        assert!(Status::OK.is_ok() && !Status::CANCELLED.is_ok());
    }
}
