//! The web chat's files, embedded in the program and served over HTTP (`--web ADDR`), with
//! `config.json`, which tells the page where the server's WebSocket endpoint is and which ICE
//! servers to use.
//!
//! A small HTTP/1.1 server for a handful of fixed files: `GET` and `HEAD` only, one request per
//! connection, the request head at most [`MAX_HEAD`] bytes and read within
//! [`READ_TIMEOUT`], at most [`MAX_CONNECTIONS`] connections at once. Anything else is
//! answered with the fitting 4xx status and the connection closed.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rpc_core::tls::rustls::ServerConfig;
use rpc_core::tls::tokio_rustls::TlsAcceptor;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The largest request head read.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connections are served at once; more wait to be accepted.
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// The files, by path: content type and content.
const FILES: &[(&str, &str, &str)] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_str!("../../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/app.js"),
    ),
    (
        "/chat.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/chat.js"),
    ),
    (
        "/rpc.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../web/rpc.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/style.css"),
    ),
];

/// The page may load its own files, talk to WebSocket endpoints and show camera streams, and
/// nothing else.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: \
                   mediastream:; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'";

/// What `config.json` says, besides the WebSocket URL's host (the one the browser used).
#[derive(Debug, Clone)]
pub(crate) struct WebSettings {
    /// The scheme (`ws` or `wss`), port and path of the server's WebSocket endpoint.
    pub(crate) ws_scheme: &'static str,
    pub(crate) ws_port: u16,
    pub(crate) ws_path: String,
    /// `urls` of the ICE servers the browsers should use (`stun:host:port`).
    pub(crate) ice_urls: Vec<String>,
}

/// Serves the web chat on `listener` until `stop`, over HTTPS with `tls`, else HTTP.
pub(crate) async fn serve(
    listener: TcpListener,
    settings: WebSettings,
    tls: Option<Arc<ServerConfig>>,
    stop: CancellationToken,
) {
    let settings = Arc::new(settings);
    let tls = tls.map(TlsAcceptor::from);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = stop.cancelled() => return,
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (settings, stop, tls) = (settings.clone(), stop.clone(), tls.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        result = serve_connection(stream, tls, &settings) => {
                            if let Err(error) = result {
                                debug!(%peer, %error, "web request failed");
                            }
                        }
                        () = stop.cancelled() => {}
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                debug!(%error, "accepting a web connection failed");
                // Out of file descriptors, say: let some close.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Does the TLS handshake (with `tls`), then reads one request and answers it.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    settings: &WebSettings,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    match tls {
        Some(tls) => {
            let mut stream = tokio::time::timeout(READ_TIMEOUT, tls.accept(stream))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                })??;
            serve_one(&mut stream, settings).await?;
            // TLS's close_notify, so the browser knows the answer is whole.
            stream.shutdown().await
        }
        None => {
            let mut stream = stream;
            serve_one(&mut stream, settings).await
        }
    }
}

/// Reads one request and answers it.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    settings: &WebSettings,
) -> io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
                true,
            )
            .await?;
            return drain(stream).await;
        }
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            return respond(stream, "408 Request Timeout", "text/plain", b"", true).await;
        }
    };
    let request = Request::parse(&head);
    let Some(request) = request else {
        return respond(
            stream,
            "400 Bad Request",
            "text/plain",
            b"bad request\n",
            true,
        )
        .await;
    };
    let with_body = request.method == "GET";
    if request.method != "GET" && request.method != "HEAD" {
        return respond(
            stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET or HEAD\n",
            with_body,
        )
        .await;
    }
    let path = request.path.split('?').next().unwrap_or("/");
    if path == "/config.json" {
        let host = request.host.as_deref().map_or("127.0.0.1", host_name);
        let body = config_json(settings, host);
        return respond(
            stream,
            "200 OK",
            "application/json",
            body.as_bytes(),
            with_body,
        )
        .await;
    }
    let path = if path == "/" { "/index.html" } else { path };
    match FILES.iter().find(|(name, _, _)| *name == path) {
        Some((_, kind, content)) => {
            respond(stream, "200 OK", kind, content.as_bytes(), with_body).await
        }
        None => {
            respond(
                stream,
                "404 Not Found",
                "text/plain",
                b"not found\n",
                with_body,
            )
            .await
        }
    }
}

/// Reads and drops what the client still sends (for a second, at most 64 KiB) after an answer
/// that did not read its whole request, so that closing does not reset the connection and
/// lose the answer.
async fn drain<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<()> {
    let mut buf = [0; 4096];
    let mut left: usize = 64 * 1024;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

/// The request head (up to and without the blank line), or `None` when it is too long.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0; 1024];
    loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return Ok(Some(String::from_utf8_lossy(&head).into_owned()));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the request head ended",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
}

/// The parts of a request head that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    method: String,
    path: String,
    host: Option<String>,
}

impl Request {
    fn parse(head: &str) -> Option<Request> {
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, path, version) = (first.next()?, first.next()?, first.next()?);
        if first.next().is_some() || !version.starts_with("HTTP/1.") || !path.starts_with('/') {
            return None;
        }
        let host = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("host")
                .then(|| value.trim().to_owned())
        });
        Some(Request {
            method: method.to_owned(),
            path: path.to_owned(),
            host,
        })
    }
}

/// The host of a `Host` header, without its port; a name or address made only of the
/// characters a host may have (anything else is replaced by 127.0.0.1, so that nothing a
/// client sends is echoed into the page's configuration).
fn host_name(host: &str) -> &str {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        rest.split(']')
            .next()
            .map_or("", |v6| &host[..v6.len() + 2])
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if valid { name } else { "127.0.0.1" }
}

fn config_json(settings: &WebSettings, host: &str) -> String {
    json!({
        "ws": format!(
            "{}://{host}:{}{}",
            settings.ws_scheme, settings.ws_port, settings.ws_path
        ),
        "ice_servers": settings
            .ice_urls
            .iter()
            .map(|url| json!({ "urls": [url] }))
            .collect::<Vec<_>>(),
    })
    .to_string()
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-cache\r\nx-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n\
         content-security-policy: {CSP}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_read_for_its_method_path_and_host() {
        let request =
            Request::parse("GET /app.js?v=1 HTTP/1.1\r\nHost: chat.example:8080\r\nAccept: */*")
                .unwrap();
        assert_eq!(request.method, "GET");
        assert_eq!(request.path, "/app.js?v=1");
        assert_eq!(request.host.as_deref(), Some("chat.example:8080"));
        assert_eq!(Request::parse("GET / HTTP/1.0").unwrap().host, None);
        for bad in [
            "",
            "GET",
            "GET /",
            "GET x HTTP/1.1",
            "GET / SPDY/3",
            "GET / HTTP/1.1 extra",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_websocket_url_names_the_host_the_browser_used_and_nothing_else() {
        assert_eq!(host_name("chat.example:8080"), "chat.example");
        assert_eq!(host_name("192.0.2.7"), "192.0.2.7");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("evil\"},x:{"), "127.0.0.1");
        assert_eq!(host_name(""), "127.0.0.1");
        let mut settings = WebSettings {
            ws_scheme: "ws",
            ws_port: 7301,
            ws_path: "/".into(),
            ice_urls: vec!["stun:192.0.2.1:3478".into()],
        };
        let config: serde_json::Value =
            serde_json::from_str(&config_json(&settings, "[::1]")).unwrap();
        assert_eq!(config["ws"], "ws://[::1]:7301/");
        settings.ws_scheme = "wss";
        let config: serde_json::Value =
            serde_json::from_str(&config_json(&settings, "chat.example")).unwrap();
        assert_eq!(config["ws"], "wss://chat.example:7301/");
        assert_eq!(config["ice_servers"][0]["urls"][0], "stun:192.0.2.1:3478");
    }

    #[test]
    fn every_embedded_file_is_there_and_the_page_names_its_scripts() {
        let index = FILES.iter().find(|f| f.0 == "/index.html").unwrap().2;
        assert!(index.contains("app.js") && index.contains("style.css"));
        for (path, _, content) in FILES {
            assert!(!content.is_empty(), "{path}");
        }
    }
}
