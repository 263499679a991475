//! Endpoints: where to connect or listen, parsed from and written as text.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::TransportError;

/// Where to connect or listen: `tcp://host:port`, `tls://host:port`, `quic://host:port`,
/// `ws://host:port/path`, `wss://host:port/path`, `unix:///abs/path` or `mem://name`.
///
/// Parsed with [`FromStr`]; [`Display`](fmt::Display) writes the same form back, so an endpoint
/// survives a round trip through text (an IPv6 host is written in brackets, `tcp://[::1]:80`).
///
/// ```
/// use rpc_transport::Endpoint;
///
/// let endpoint: Endpoint = "tcp://[::1]:8080".parse()?;
/// assert_eq!(endpoint, Endpoint::Tcp { host: "::1".into(), port: 8080 });
/// assert_eq!(endpoint.to_string(), "tcp://[::1]:8080");
///
/// let endpoint: Endpoint = "quic://[::1]:4433".parse()?;
/// assert_eq!(endpoint, Endpoint::Quic { host: "::1".into(), port: 4433 });
/// assert_eq!(endpoint.scheme(), "quic");
/// let endpoint: Endpoint = "ws://[::1]:8080".parse()?;
/// assert_eq!(endpoint.scheme(), "ws");
/// assert_eq!(endpoint.to_string(), "ws://[::1]:8080/");
/// let endpoint: Endpoint = "wss://chat.example:443/rpc".parse()?;
/// assert_eq!(endpoint.scheme(), "wss");
/// let endpoint: Endpoint = "tls://chat.example:7443".parse()?;
/// assert_eq!(endpoint, Endpoint::Tls { host: "chat.example".into(), port: 7443 });
///
/// let err = "http://x".parse::<Endpoint>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"invalid endpoint "http://x": unknown scheme "http"; expected tcp://host:port, tls://host:port, quic://host:port, ws://host:port/path, wss://host:port/path, unix:///path or mem://name"#,
/// );
/// # Ok::<(), rpc_transport::TransportError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A TCP socket. The host is a name (`localhost`), an IPv4 address or an IPv6 address
    /// (stored without brackets).
    Tcp {
        /// Host name or address, resolved when connecting or listening.
        host: String,
        /// Port; 0 when listening asks the system for a free one.
        port: u16,
    },
    /// TLS over TCP (see [`tls`](crate::tls), feature `tls`): host and port as for
    /// [`Tcp`](Endpoint::Tcp); a client checks the server's certificate for the host.
    Tls {
        /// Host name or address, resolved when connecting or listening.
        host: String,
        /// Port; 0 when listening asks the system for a free one.
        port: u16,
    },
    /// QUIC over UDP (see [`quic`](crate::quic), feature `quic`): host and port as for
    /// [`Tcp`](Endpoint::Tcp).
    Quic {
        /// Host name or address, resolved when connecting or listening.
        host: String,
        /// UDP port; 0 when listening asks the system for a free one.
        port: u16,
    },
    /// A WebSocket over TCP (feature `ws`): the framework's frames in binary messages, so that
    /// a browser can call. Written `ws://host:port/path`; the path defaults to `/`.
    Ws {
        /// Host name or address, resolved when connecting or listening.
        host: String,
        /// Port; 0 when listening asks the system for a free one.
        port: u16,
        /// The HTTP path of the upgrade request, starting with `/`; a listener answers 404 to
        /// any other.
        path: String,
    },
    /// A WebSocket over TLS (features `ws` and `tls`), as [`Ws`](Endpoint::Ws) after a TLS
    /// handshake: what a browser on an `https://` page must use.
    Wss {
        /// Host name or address, resolved when connecting or listening.
        host: String,
        /// Port; 0 when listening asks the system for a free one.
        port: u16,
        /// The HTTP path of the upgrade request, starting with `/`.
        path: String,
    },
    /// A Unix domain socket at an absolute path.
    Unix(PathBuf),
    /// An in-process pipe registered under a name; see [`listen`](crate::listen).
    Memory(String),
}

impl Endpoint {
    /// The TCP endpoint of a socket address.
    pub fn tcp(addr: SocketAddr) -> Self {
        Endpoint::Tcp {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// The TLS endpoint of a socket address.
    pub fn tls(addr: SocketAddr) -> Self {
        Endpoint::Tls {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// The QUIC endpoint of a UDP socket address.
    pub fn quic(addr: SocketAddr) -> Self {
        Endpoint::Quic {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// The Unix socket endpoint at `path`, which should be absolute.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Endpoint::Unix(path.into())
    }

    /// The in-process endpoint named `name`.
    pub fn memory(name: impl Into<String>) -> Self {
        Endpoint::Memory(name.into())
    }

    /// The WebSocket endpoint of a socket address, upgrading at `path`.
    pub fn ws(addr: SocketAddr, path: impl Into<String>) -> Self {
        Endpoint::Ws {
            host: addr.ip().to_string(),
            port: addr.port(),
            path: path.into(),
        }
    }

    /// The WebSocket-over-TLS endpoint of a socket address, upgrading at `path`.
    pub fn wss(addr: SocketAddr, path: impl Into<String>) -> Self {
        Endpoint::Wss {
            host: addr.ip().to_string(),
            port: addr.port(),
            path: path.into(),
        }
    }

    /// Whether connections to it run TLS (`tls://` and `wss://`).
    pub fn is_tls(&self) -> bool {
        matches!(self, Endpoint::Tls { .. } | Endpoint::Wss { .. })
    }

    /// The scheme: `"tcp"`, `"tls"`, `"quic"`, `"ws"`, `"wss"`, `"unix"` or `"mem"`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Tcp { .. } => "tcp",
            Endpoint::Tls { .. } => "tls",
            Endpoint::Wss { .. } => "wss",
            Endpoint::Quic { .. } => "quic",
            Endpoint::Ws { .. } => "ws",
            Endpoint::Unix(_) => "unix",
            Endpoint::Memory(_) => "mem",
        }
    }
}

impl FromStr for Endpoint {
    type Err = TransportError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(TransportError::invalid(input, "missing scheme"));
        };
        match scheme {
            "tcp" => {
                parse_host_port(input, "tcp", rest).map(|(host, port)| Endpoint::Tcp { host, port })
            }
            "tls" => {
                parse_host_port(input, "tls", rest).map(|(host, port)| Endpoint::Tls { host, port })
            }
            "quic" => parse_host_port(input, "quic", rest)
                .map(|(host, port)| Endpoint::Quic { host, port }),
            "ws" => parse_ws(input, "ws", rest).map(|(host, port, path)| Endpoint::Ws {
                host,
                port,
                path,
            }),
            "wss" => parse_ws(input, "wss", rest).map(|(host, port, path)| Endpoint::Wss {
                host,
                port,
                path,
            }),
            "unix" => parse_unix(input, rest),
            "mem" => parse_memory(input, rest),
            other => Err(TransportError::invalid(
                input,
                format!("unknown scheme {other:?}"),
            )),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Tls { host, port } if host.contains(':') => {
                write!(f, "tls://[{host}]:{port}")
            }
            Endpoint::Tls { host, port } => write!(f, "tls://{host}:{port}"),
            Endpoint::Quic { host, port } if host.contains(':') => {
                write!(f, "quic://[{host}]:{port}")
            }
            Endpoint::Quic { host, port } => write!(f, "quic://{host}:{port}"),
            Endpoint::Ws { host, port, path } if host.contains(':') => {
                write!(f, "ws://[{host}]:{port}{path}")
            }
            Endpoint::Ws { host, port, path } => write!(f, "ws://{host}:{port}{path}"),
            Endpoint::Wss { host, port, path } if host.contains(':') => {
                write!(f, "wss://[{host}]:{port}{path}")
            }
            Endpoint::Wss { host, port, path } => write!(f, "wss://{host}:{port}{path}"),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Memory(name) => write!(f, "mem://{name}"),
        }
    }
}

/// Anything that names an [`Endpoint`]: an `Endpoint` (or a reference to one), a
/// [`SocketAddr`], or text such as `"tcp://127.0.0.1:7000"`, parsed when it is used. Every API
/// of the framework that takes an address takes one of these.
///
/// ```
/// use rpc_transport::{Endpoint, IntoEndpoint};
///
/// let parsed = "mem://greeter".into_endpoint()?;
/// assert_eq!(parsed, Endpoint::Memory("greeter".into()));
/// assert_eq!(parsed.clone().into_endpoint()?, parsed);
/// assert!("http://x".into_endpoint().is_err());
/// # Ok::<(), rpc_transport::TransportError>(())
/// ```
///
/// This trait is sealed: the conversions above are the ones the framework accepts.
pub trait IntoEndpoint: sealed::Sealed {
    /// The endpoint, or why the text does not name one.
    fn into_endpoint(self) -> Result<Endpoint, TransportError>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Endpoint {}
    impl Sealed for &super::Endpoint {}
    impl Sealed for std::net::SocketAddr {}
    impl Sealed for &str {}
    impl Sealed for String {}
    impl Sealed for &String {}
}

impl IntoEndpoint for Endpoint {
    fn into_endpoint(self) -> Result<Endpoint, TransportError> {
        Ok(self)
    }
}

impl IntoEndpoint for &Endpoint {
    fn into_endpoint(self) -> Result<Endpoint, TransportError> {
        Ok(self.clone())
    }
}

impl IntoEndpoint for SocketAddr {
    fn into_endpoint(self) -> Result<Endpoint, TransportError> {
        Ok(Endpoint::tcp(self))
    }
}

impl IntoEndpoint for &str {
    fn into_endpoint(self) -> Result<Endpoint, TransportError> {
        self.parse()
    }
}

impl IntoEndpoint for String {
    fn into_endpoint(self) -> Result<Endpoint, TransportError> {
        self.parse()
    }
}

impl IntoEndpoint for &String {
    fn into_endpoint(self) -> Result<Endpoint, TransportError> {
        self.parse()
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::tcp(addr)
    }
}

/// The host, port and path of `ws://` and `wss://` endpoints.
fn parse_ws(
    input: &str,
    scheme: &str,
    rest: &str,
) -> Result<(String, u16, String), TransportError> {
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let (host, port) = parse_host_port(input, scheme, authority)?;
    if let Some(bad) = path
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '?' | '#'))
    {
        return Err(TransportError::invalid(
            input,
            format!("invalid character {bad:?} in the path {path:?}"),
        ));
    }
    Ok((host, port, path.to_owned()))
}

/// The host and port of `tcp://`, `tls://`, `quic://`, `ws://` and `wss://` endpoints (`host:port` or
/// `[v6]:port`); `scheme` names the form in errors.
fn parse_host_port(input: &str, scheme: &str, rest: &str) -> Result<(String, u16), TransportError> {
    let invalid = |reason: String| TransportError::invalid(input, reason);
    if rest.is_empty() {
        return Err(invalid("missing host and port".into()));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(invalid("unclosed '[' around the IPv6 host".into()));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(invalid(format!("invalid IPv6 address {host:?}")));
        }
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => return Err(invalid("missing port".into())),
            None => return Err(invalid(format!("expected ':' after ']', found {after:?}"))),
        };
        (host, port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(invalid("missing port".into()));
        };
        if host.contains(':') {
            return Err(invalid(format!(
                "an IPv6 host must be in brackets, as in {scheme}://[::1]:80"
            )));
        }
        if host.is_empty() {
            return Err(invalid("missing host".into()));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(invalid(format!("invalid host {host:?}")));
        }
        (host, port)
    };
    if port.is_empty() {
        return Err(invalid("missing port".into()));
    }
    // `u16::from_str` also takes a leading `+`, which no one means in an address.
    let port = match port
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| port.parse::<u16>())
    {
        Some(Ok(port)) => port,
        _ => {
            return Err(invalid(format!(
                "invalid port {port:?}, expected 0 to 65535"
            )));
        }
    };
    Ok((host.to_owned(), port))
}

fn parse_unix(input: &str, rest: &str) -> Result<Endpoint, TransportError> {
    if rest.is_empty() {
        return Err(TransportError::invalid(input, "empty unix socket path"));
    }
    if !rest.starts_with('/') {
        return Err(TransportError::invalid(
            input,
            format!("unix socket path {rest:?} is not absolute (write unix:///{rest})"),
        ));
    }
    Ok(Endpoint::Unix(PathBuf::from(rest)))
}

fn parse_memory(input: &str, rest: &str) -> Result<Endpoint, TransportError> {
    if rest.is_empty() {
        return Err(TransportError::invalid(input, "empty memory endpoint name"));
    }
    Ok(Endpoint::Memory(rest.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use proptest::prelude::*;

    use super::*;

    fn reason(input: &str) -> String {
        match input.parse::<Endpoint>() {
            Err(TransportError::InvalidEndpoint {
                input: echoed,
                reason,
            }) => {
                assert_eq!(echoed, input);
                reason
            }
            other => panic!("{input:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn parses_every_form() {
        let cases = [
            (
                "tcp://localhost:80",
                Endpoint::Tcp {
                    host: "localhost".into(),
                    port: 80,
                },
            ),
            (
                "tcp://127.0.0.1:0",
                Endpoint::Tcp {
                    host: "127.0.0.1".into(),
                    port: 0,
                },
            ),
            (
                "tcp://[::1]:65535",
                Endpoint::Tcp {
                    host: "::1".into(),
                    port: 65535,
                },
            ),
            (
                "unix:///tmp/app.sock",
                Endpoint::Unix("/tmp/app.sock".into()),
            ),
            (
                "quic://127.0.0.1:4433",
                Endpoint::Quic {
                    host: "127.0.0.1".into(),
                    port: 4433,
                },
            ),
            (
                "quic://[::1]:0",
                Endpoint::Quic {
                    host: "::1".into(),
                    port: 0,
                },
            ),
            (
                "ws://localhost:80/",
                Endpoint::Ws {
                    host: "localhost".into(),
                    port: 80,
                    path: "/".into(),
                },
            ),
            (
                "ws://[::1]:8080/rpc/v1",
                Endpoint::Ws {
                    host: "::1".into(),
                    port: 8080,
                    path: "/rpc/v1".into(),
                },
            ),
            (
                "tls://localhost:7443",
                Endpoint::Tls {
                    host: "localhost".into(),
                    port: 7443,
                },
            ),
            (
                "tls://[::1]:0",
                Endpoint::Tls {
                    host: "::1".into(),
                    port: 0,
                },
            ),
            (
                "wss://chat.example:443/rpc",
                Endpoint::Wss {
                    host: "chat.example".into(),
                    port: 443,
                    path: "/rpc".into(),
                },
            ),
            ("mem://svc", Endpoint::Memory("svc".into())),
            ("mem://a://b", Endpoint::Memory("a://b".into())),
        ];
        for (text, expected) in cases {
            let parsed: Endpoint = text.parse().unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn constructors_and_scheme() {
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
        assert_eq!(Endpoint::tcp(v4).to_string(), "tcp://127.0.0.1:9");
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9);
        assert_eq!(Endpoint::from(v6).to_string(), "tcp://[::1]:9");
        assert_eq!(Endpoint::tcp(v6).scheme(), "tcp");
        assert_eq!(Endpoint::quic(v6).to_string(), "quic://[::1]:9");
        assert_eq!(Endpoint::quic(v4).scheme(), "quic");
        assert_eq!(Endpoint::ws(v4, "/rpc").to_string(), "ws://127.0.0.1:9/rpc");
        assert_eq!(Endpoint::ws(v6, "/").to_string(), "ws://[::1]:9/");
        assert_eq!(Endpoint::ws(v6, "/").scheme(), "ws");
        assert_eq!(Endpoint::tls(v4).to_string(), "tls://127.0.0.1:9");
        assert_eq!(Endpoint::tls(v6).to_string(), "tls://[::1]:9");
        assert_eq!(Endpoint::wss(v6, "/").to_string(), "wss://[::1]:9/");
        assert_eq!(Endpoint::wss(v4, "/x").scheme(), "wss");
        assert_eq!(Endpoint::tls(v4).scheme(), "tls");
        assert!(Endpoint::tls(v4).is_tls() && Endpoint::wss(v4, "/").is_tls());
        assert!(!Endpoint::tcp(v4).is_tls() && !Endpoint::ws(v4, "/").is_tls());
        assert_eq!(Endpoint::unix("/s").scheme(), "unix");
        assert_eq!(Endpoint::memory("m").scheme(), "mem");
    }

    #[test]
    fn unknown_or_missing_scheme() {
        assert_eq!(reason("http://x"), r#"unknown scheme "http""#);
        assert_eq!(reason("TCP://h:1"), r#"unknown scheme "TCP""#);
        assert_eq!(reason("127.0.0.1:80"), "missing scheme");
        assert_eq!(reason(""), "missing scheme");
        let message = "http://x".parse::<Endpoint>().unwrap_err().to_string();
        assert_eq!(
            message,
            r#"invalid endpoint "http://x": unknown scheme "http"; expected tcp://host:port, tls://host:port, quic://host:port, ws://host:port/path, wss://host:port/path, unix:///path or mem://name"#
        );
    }

    #[test]
    fn tcp_errors() {
        assert_eq!(reason("tcp://"), "missing host and port");
        assert_eq!(reason("tcp://localhost"), "missing port");
        assert_eq!(reason("tcp://localhost:"), "missing port");
        assert_eq!(reason("tcp://:80"), "missing host");
        assert_eq!(
            reason("tcp://h:http"),
            r#"invalid port "http", expected 0 to 65535"#
        );
        assert_eq!(
            reason("tcp://h:65536"),
            r#"invalid port "65536", expected 0 to 65535"#
        );
        assert_eq!(
            reason("tcp://h:+80"),
            r#"invalid port "+80", expected 0 to 65535"#
        );
        assert_eq!(
            reason("tcp://h:80/path"),
            r#"invalid port "80/path", expected 0 to 65535"#
        );
        assert_eq!(
            reason("tcp://::1:80"),
            "an IPv6 host must be in brackets, as in tcp://[::1]:80"
        );
        assert_eq!(reason("tcp://[::1]"), "missing port");
        assert_eq!(reason("tcp://[::1"), "unclosed '[' around the IPv6 host");
        assert_eq!(
            reason("tcp://[::1]80"),
            r#"expected ':' after ']', found "80""#
        );
        assert_eq!(reason("tcp://[nope]:80"), r#"invalid IPv6 address "nope""#);
        assert_eq!(reason("tcp://a b:80"), r#"invalid host "a b""#);
        assert_eq!(reason("quic://"), "missing host and port");
        assert_eq!(reason("quic://h"), "missing port");
        assert_eq!(
            reason("quic://::1:80"),
            "an IPv6 host must be in brackets, as in quic://[::1]:80"
        );
        assert_eq!(reason("tcp://user@h:80"), r#"invalid host "user@h""#);
        assert_eq!(reason("tls://h"), "missing port");
        assert_eq!(
            reason("tls://::1:80"),
            "an IPv6 host must be in brackets, as in tls://[::1]:80"
        );
        assert_eq!(reason("wss://h/rpc"), "missing port");
        assert_eq!(
            reason("wss://::1:80/"),
            "an IPv6 host must be in brackets, as in wss://[::1]:80"
        );
        assert_eq!(
            reason("wss://h:80/a b"),
            r#"invalid character ' ' in the path "/a b""#
        );
    }

    #[test]
    fn ws_forms_and_errors() {
        let bare: Endpoint = "ws://127.0.0.1:7000".parse().unwrap();
        assert_eq!(
            bare,
            Endpoint::Ws {
                host: "127.0.0.1".into(),
                port: 7000,
                path: "/".into()
            }
        );
        assert_eq!(bare.to_string(), "ws://127.0.0.1:7000/");
        assert_eq!(reason("ws://"), "missing host and port");
        assert_eq!(reason("ws:///rpc"), "missing host and port");
        assert_eq!(reason("ws://h/rpc"), "missing port");
        assert_eq!(
            reason("ws://h:x/rpc"),
            r#"invalid port "x", expected 0 to 65535"#
        );
        assert_eq!(
            reason("ws://::1:80/"),
            "an IPv6 host must be in brackets, as in ws://[::1]:80"
        );
        assert_eq!(
            reason("ws://h:80/a b"),
            r#"invalid character ' ' in the path "/a b""#
        );
        assert_eq!(
            reason("ws://h:80/rpc?x=1"),
            r#"invalid character '?' in the path "/rpc?x=1""#
        );
        assert_eq!(
            reason("ws://h:80/#top"),
            r#"invalid character '#' in the path "/#top""#
        );
    }

    #[test]
    fn unix_and_memory_errors() {
        assert_eq!(reason("unix://"), "empty unix socket path");
        assert_eq!(
            reason("unix://tmp/s"),
            r#"unix socket path "tmp/s" is not absolute (write unix:///tmp/s)"#
        );
        assert_eq!(reason("mem://"), "empty memory endpoint name");
    }

    fn host_name() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9_-]{0,20}[a-z0-9])?(\\.[a-z0-9-]{1,10}){0,3}"
    }

    fn endpoint() -> impl Strategy<Value = Endpoint> {
        prop_oneof![
            any::<SocketAddr>().prop_map(Endpoint::tcp),
            (host_name(), any::<u16>()).prop_map(|(host, port)| Endpoint::Tcp { host, port }),
            any::<SocketAddr>().prop_map(Endpoint::quic),
            (host_name(), any::<u16>()).prop_map(|(host, port)| Endpoint::Quic { host, port }),
            (any::<SocketAddr>(), "(/[!-~&&[^?#/]]{0,8}){1,3}")
                .prop_map(|(addr, path)| Endpoint::ws(addr, path)),
            any::<SocketAddr>().prop_map(Endpoint::tls),
            (host_name(), any::<u16>()).prop_map(|(host, port)| Endpoint::Tls { host, port }),
            (any::<SocketAddr>(), "(/[!-~&&[^?#/]]{0,8}){1,3}")
                .prop_map(|(addr, path)| Endpoint::wss(addr, path)),
            "(/[^/\0]{1,12}){1,4}".prop_map(Endpoint::unix),
            ".{1,40}".prop_map(Endpoint::memory),
        ]
    }

    proptest! {
        #[test]
        fn display_round_trips_through_from_str(endpoint in endpoint()) {
            let text = endpoint.to_string();
            let parsed = text.parse::<Endpoint>().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed, endpoint);
        }

        #[test]
        fn parsing_any_text_never_panics(text in ".{0,60}") {
            if let Ok(endpoint) = text.parse::<Endpoint>() {
                prop_assert_eq!(endpoint.to_string().parse::<Endpoint>().ok(), Some(endpoint));
            }
        }
    }
}
