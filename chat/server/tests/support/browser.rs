//! Headless Chromium driven over WebDriver (chromedriver, through fantoccini), and a small HTTP
//! server for the files of `web/`, for the tests that run the JavaScript client in a real
//! browser.
//!
//! Chromium and chromedriver come from Debian's `chromium` and `chromium-driver`
//! (`scripts/system-packages.sh` installs them). Where they are missing, [`Browser::start`]
//! says so and returns `None`, except under CI (`CI` set), where it panics: there the browser
//! tests must run.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Killed, free_port};

/// The programs, where Debian puts them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session of it.
pub struct Browser {
    pub client: Client,
    _driver: Killed,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session, or returns `None` (after saying
    /// why) where they are not installed and the test is not running under CI.
    pub async fn start() -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            let why = "Chromium and chromedriver are not installed (Debian: chromium, chromium-driver; \
                       scripts/system-packages.sh installs them)";
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipped: {why}");
            return None;
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Killed(driver);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        // As root Chromium needs --no-sandbox; the background-networking flags keep it from
        // reaching out to hosts this machine cannot reach.
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1000,800".to_owned(),
            "--use-fake-device-for-media-stream".to_owned(),
            "--use-fake-ui-for-media-stream".to_owned(),
            // Host candidates as addresses, not mDNS names, so that two browsers on loopback
            // reach each other without a resolver.
            "--disable-features=WebRtcHideLocalIpsWithMdns".to_owned(),
        ];
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        // The HTTPS tests serve certificates made at test time, which no browser trusts.
        capabilities.insert("acceptInsecureCerts".into(), json!(true));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session");
        Some(Browser {
            client,
            _driver: driver,
            _profile: profile,
        })
    }

    /// Opens `url` and waits until its module scripts have run (`<body data-ready>`).
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self
                .client
                .execute(
                    "return document.body && document.body.dataset.ready || null",
                    vec![],
                )
                .await
                .unwrap();
            if ready == json!("yes") {
                return;
            }
            assert!(Instant::now() < deadline, "{url} did not load its scripts");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `script` (a function body; `arguments` are `args`; it may return a promise, which
    /// WebDriver waits for) and returns its value; a script that throws fails the test with
    /// the error's message.
    pub async fn run(&self, script: &str, args: Vec<Value>) -> Value {
        let wrapped = format!(
            "const args = Array.from(arguments);
             const f = async function () {{ {script} }};
             try {{ return {{ ok: await f.apply(null, args) }}; }}
             catch (e) {{ return {{ error: String(e && e.stack || e) }}; }}"
        );
        let outcome = self.client.execute(&wrapped, args).await.unwrap();
        if let Some(error) = outcome.get("error") {
            panic!(
                "the script failed in the browser: {}",
                error.as_str().unwrap_or_default()
            );
        }
        outcome["ok"].clone()
    }

    /// Types `text` into the element `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self
            .client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        element.clear().await.unwrap();
        element.send_keys(text).await.unwrap();
    }

    /// Clicks the element `css`.
    pub async fn click(&self, css: &str) {
        self.client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
    }

    /// Waits until the JavaScript expression `condition` is truthy (polling), and returns its
    /// value; panics with `what` after `within`.
    pub async fn wait_for(&self, condition: &str, what: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let script =
            format!("try {{ return ({condition}) || null; }} catch (e) {{ return null; }}");
        loop {
            let value = self.client.execute(&script, vec![]).await.unwrap();
            if !value.is_null() && value != json!(false) {
                return value;
            }
            if Instant::now() >= deadline {
                let log = self
                    .client
                    .execute(
                        "return (window.chatApp && window.chatApp.log) || null",
                        vec![],
                    )
                    .await
                    .unwrap_or_default();
                panic!("{what}: not so after {within:?} (the page said {log})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG screenshot of the page to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Ends the browser session.
    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// Serves the files under `web/` over HTTP on 127.0.0.1 (GET only), until dropped.
pub struct WebFiles {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl WebFiles {
    pub async fn serve() -> WebFiles {
        // The workspace's `web/`, from whichever package's tests include this file.
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("web"))
            .find(|web| web.join("rpc.js").is_file())
            .expect("the workspace has web/rpc.js");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_one(stream, root.clone()));
            }
        });
        WebFiles { addr, task }
    }

    /// The URL of `path` (under `web/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}

impl Drop for WebFiles {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(mut stream: tokio::net::TcpStream, root: PathBuf) {
    let mut request = Vec::new();
    let mut buf = [0; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > 64 * 1024 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&request);
    let path = head
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .split('?')
        .next()
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_owned();
    let relative = Path::new(&path);
    let safe = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    let file = root.join(relative);
    let (status, kind, body) = match std::fs::read(&file) {
        Ok(body) if safe => ("200 OK", content_type(&file), body),
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}
