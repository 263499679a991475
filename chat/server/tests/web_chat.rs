//! The web chat in two headless Chromium browsers against a real `chat-server --web`, with a
//! terminal `chat-client` as a third member: sign in, see each other online, a direct
//! message, a group post that reaches all three, a video call over WebRTC (fake camera and
//! microphone) that connects and carries data-channel messages both ways, hang up, and a
//! server restart that the pages ride out.
//!
//! Set `WEB_CHAT_SCREENSHOTS=<dir>` to save screenshots of the pages there.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

mod support;

#[path = "support/browser.rs"]
mod browser;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use browser::Browser;
use serde_json::{Value, json};
use support::{Killed, free_port, lines_of, program_of};

/// How long anything a user would wait for may take.
const WAIT: Duration = Duration::from_secs(20);

struct Server {
    _process: Killed,
    tcp: u16,
    web: u16,
    ws: u16,
}

fn start_server(data: &Path, tcp: u16, web: u16, ws: u16) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args([
            "--listen",
            &format!("tcp://127.0.0.1:{tcp}"),
            "--listen",
            &format!("ws://127.0.0.1:{ws}/"),
            "--web",
            &format!("127.0.0.1:{web}"),
            "--password-memory-kib",
            "64",
            "--password-iterations",
            "1",
            "--data-dir",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chat-server starts");
    let lines = lines_of(&mut child);
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("web chat on")) {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("chat-server did not serve the web chat: {seen:?}"),
        }
    }
    // Keep reading its stdout so that it never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    Server {
        _process: Killed(child),
        tcp,
        web,
        ws,
    }
}

/// A terminal client (`chat-client --json`), fed commands on its stdin.
struct Terminal {
    _process: Killed,
    /// Where the files sent to it are saved.
    files: tempfile::TempDir,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Terminal {
    fn start(server: &Server, name: &str) -> Terminal {
        let files = tempfile::tempdir().unwrap();
        let mut child = Command::new(program_of("chat-client", "chat-client"))
            .args([
                "--server",
                &format!("tcp://127.0.0.1:{}", server.tcp),
                "--name",
                name,
                "--secret",
                &format!("password of {name}"),
                "--json",
                "--files-dir",
                files.path().to_str().unwrap(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chat-client starts");
        let stdin = child.stdin.take().unwrap();
        let lines = lines_of(&mut child);
        let mut terminal = Terminal {
            _process: Killed(child),
            files,
            stdin,
            lines,
        };
        terminal.expect("online", |v| {
            v["event"] == "state" && v["state"] == "online"
        });
        terminal
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
    }

    fn expect(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the terminal client: no {what} in {seen:#?}"));
            if let Ok(value) = serde_json::from_str::<Value>(&line)
                && wanted(&value)
            {
                return value;
            }
            seen.push(line);
        }
    }
}

/// Opens the web chat in `browser` and makes an account.
async fn sign_up(browser: &Browser, server: &Server, name: &str) {
    browser
        .open(&format!("http://127.0.0.1:{}/", server.web))
        .await;
    browser.fill("#name", name).await;
    browser
        .fill("#password", &format!("password of {name}"))
        .await;
    browser.click("#register").await;
    browser
        .wait_for(
            "!document.getElementById('app').hidden && chatApp.chat.state === 'online'",
            &format!("{name} is signed in"),
            WAIT,
        )
        .await;
}

fn screenshots() -> Option<PathBuf> {
    std::env::var_os("WEB_CHAT_SCREENSHOTS").map(PathBuf::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_chat_post_in_a_group_call_each_other_and_ride_out_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let (tcp, web, ws) = (free_port(), free_port(), free_port());
    let server = start_server(data.path(), tcp, web, ws);
    let Some(ann) = Browser::start().await else {
        return;
    };
    let ben = Browser::start().await.expect("a second browser");

    sign_up(&ann, &server, "ann").await;
    sign_up(&ben, &server, "ben").await;
    // Each sees the other online.
    ann.wait_for(
        "document.querySelector('#people li[data-user=ben]')",
        "ann sees ben",
        WAIT,
    )
    .await;
    ben.wait_for(
        "document.querySelector('#people li[data-user=ann]')",
        "ben sees ann",
        WAIT,
    )
    .await;

    // A direct message.
    ann.click("#people li[data-user=ben]").await;
    ann.fill("#text", "hi ben, it's ann").await;
    ann.click("#send").await;
    ben.wait_for(
        "[...chatApp.conversations.values()].some(c => c.messages.some(m => m.text === \"hi ben, it's ann\"))",
        "ben gets ann's message",
        WAIT,
    )
    .await;
    ben.click("#people li[data-user=ann]").await;
    ben.wait_for(
        "[...document.querySelectorAll('#messages li')].some(li => li.textContent.includes(\"hi ben, it's ann\"))",
        "ben's page shows it",
        WAIT,
    )
    .await;

    // A group of three: the two browsers and a terminal.
    let mut carl = Terminal::start(&server, "carl");
    ann.fill("#group-name", "crew").await;
    ann.click("#group-form button").await;
    ann.wait_for("chatApp.groups.has('crew')", "ann is in #crew", WAIT)
        .await;
    ben.fill("#group-name", "crew").await;
    ben.click("#group-form button").await;
    ben.wait_for("chatApp.groups.has('crew')", "ben is in #crew", WAIT)
        .await;
    carl.send("/join crew");
    carl.expect("carl joined", |v| {
        v["event"] == "room" && v["change"] == "joined"
    });
    ann.fill("#text", "hello crew").await;
    ann.click("#send").await;
    carl.expect("ann's post", |v| {
        v["event"] == "message" && v["text"] == "hello crew"
    });
    carl.send("/say crew hi from the terminal");
    for (browser, name) in [(&ann, "ann"), (&ben, "ben")] {
        browser
            .wait_for(
                "(chatApp.conversations.get('room:crew')?.messages ?? []).some(m => m.text === 'hi from the terminal')",
                &format!("{name} gets carl's post"),
                WAIT,
            )
            .await;
    }
    if let Some(dir) = screenshots() {
        ann.screenshot(&dir.join("web-chat-group.png")).await;
    }

    // Files through the server both ways: a browser has no direct path.
    let report = data.path().join("report.txt");
    let content: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&report, &content).unwrap();
    carl.send(&format!("/send ann {}", report.display()));
    let sent = carl.expect("the file sent", |v| v["event"] == "file_sent");
    assert_eq!(sent["path"], "relayed", "{sent}");
    ann.click("#people li[data-user=carl]").await;
    ann.wait_for(
        "document.querySelector('#messages .take-file')",
        "ann's page offers carl's file",
        WAIT,
    )
    .await;
    ann.click("#messages .take-file").await;
    ann.wait_for(
        "document.querySelector('#messages .saved-file')",
        "ann's page saved it",
        WAIT,
    )
    .await;
    let saved = ann
        .run(
            "const link = document.querySelector('#messages .saved-file');
             const saved = [...chatApp.files.values()].find(f => f.url === link.href);
             const bytes = new Uint8Array(await saved.blob.arrayBuffer());
             return { name: link.download, size: bytes.length,
                      sum: bytes.reduce((a, b) => (a * 31 + b) % 1000000007, 0) };",
            vec![],
        )
        .await;
    let sum = content
        .iter()
        .fold(0u64, |a, &b| (a * 31 + u64::from(b)) % 1_000_000_007);
    assert_eq!(
        saved,
        json!({"name": "report.txt", "size": 700_000, "sum": sum})
    );
    ann.run(
        "const carl = [...chatApp.people.values()].find(u => u.name === 'carl');
         const text = new TextEncoder().encode('notes from the browser');
         await chatApp.chat.sendFile(carl.id, new File([text], 'from-ann.txt'));",
        vec![],
    )
    .await;
    let received = carl.expect("ann's file", |v| {
        v["event"] == "file" && v["change"] == "received"
    });
    let path = PathBuf::from(received["path"].as_str().unwrap());
    assert!(path.starts_with(carl.files.path()), "{received}");
    assert_eq!(std::fs::read(&path).unwrap(), b"notes from the browser");

    // A video call, from ann to ben.
    ann.click("#people li[data-user=ben]").await;
    ann.click("#video-call").await;
    ben.wait_for(
        "!document.getElementById('incoming').hidden",
        "ben's page rings",
        WAIT,
    )
    .await;
    ben.click("#accept").await;
    for (browser, name) in [(&ann, "ann"), (&ben, "ben")] {
        browser
            .wait_for(
                "chatApp.calls[0]?.connectionState === 'connected' && chatApp.calls[0]?.channelOpen",
                &format!("{name}'s call connects"),
                WAIT,
            )
            .await;
    }
    let connected_ms = ann
        .run("return chatApp.calls[0].connectedMs;", vec![])
        .await;
    println!("invite to connected: {connected_ms} ms");
    if let Some(dir) = screenshots() {
        ben.screenshot(&dir.join("web-chat-call.png")).await;
    }
    ann.fill("#call-text", "over the data channel").await;
    ann.click("#call-compose button").await;
    ben.wait_for(
        "chatApp.dataMessages.some(m => m.text === 'over the data channel')",
        "ben gets the data-channel message",
        WAIT,
    )
    .await;
    ben.fill("#call-text", "and back").await;
    ben.click("#call-compose button").await;
    ann.wait_for(
        "chatApp.dataMessages.some(m => m.text === 'and back')",
        "ann gets the answer",
        WAIT,
    )
    .await;
    ann.click("#hangup").await;
    for (browser, name) in [(&ann, "ann"), (&ben, "ben")] {
        let ended = browser
            .wait_for(
                "chatApp.calls[0]?.ended && document.getElementById('call').hidden && chatApp.calls[0].ended",
                &format!("{name} sees the call end"),
                WAIT,
            )
            .await;
        assert_eq!(ended, json!("HungUp"), "{name}");
    }

    // The server restarts: both pages say they reconnect, and come back by themselves.
    drop(server);
    for (browser, name) in [(&ann, "ann"), (&ben, "ben")] {
        browser
            .wait_for(
                "document.getElementById('status').textContent.startsWith('reconnecting')",
                &format!("{name}'s page says it reconnects"),
                WAIT,
            )
            .await;
    }
    let server = start_server(data.path(), tcp, web, ws);
    for (browser, name) in [(&ann, "ann"), (&ben, "ben")] {
        browser
            .wait_for(
                "chatApp.chat.state === 'online' && document.getElementById('status').textContent === 'online'",
                &format!("{name} is back online"),
                WAIT,
            )
            .await;
    }
    ann.wait_for(
        "document.querySelector('#people li[data-user=ben]')",
        "ann sees ben again",
        WAIT,
    )
    .await;
    ann.click("#people li[data-user=ben]").await;
    ann.fill("#text", "still here").await;
    ann.click("#send").await;
    ben.wait_for(
        "[...chatApp.conversations.values()].some(c => c.messages.some(m => m.text === 'still here'))",
        "ben gets a message after the restart",
        WAIT,
    )
    .await;

    // On a phone-sized window the page fits its width: no sideways scrolling.
    ben.client.set_window_size(390, 844).await.unwrap();
    ben.click("#people li[data-user=ann]").await;
    let fits = ben
        .wait_for(
            "window.innerWidth <= 420 && document.documentElement.scrollWidth <= window.innerWidth \
             && document.getElementById('compose').getBoundingClientRect().right <= window.innerWidth",
            "the page fits a phone-sized window",
            WAIT,
        )
        .await;
    assert_eq!(fits, json!(true));
    if let Some(dir) = screenshots() {
        ben.screenshot(&dir.join("web-chat-phone.png")).await;
    }
    drop(carl);
    ann.close().await;
    ben.close().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_the_page_is_a_secure_context_and_talks_wss() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let (tls, web) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args(["--listen", &format!("tls://127.0.0.1:{tls}")])
        .args(["--web", &format!("127.0.0.1:{web}")])
        .arg("--tls-cert")
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .args(["--password-memory-kib", "64", "--password-iterations", "1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chat-server starts");
    let lines = lines_of(&mut child);
    let _server = Killed(child);
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !seen.iter().any(|l: &String| l.starts_with("web chat on")) {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("chat-server did not serve the web chat: {seen:?}"),
        }
    }
    assert!(
        seen.iter()
            .any(|l| l == &format!("web chat on https://127.0.0.1:{web}/")),
        "{seen:?}"
    );
    // The server added a wss:// endpoint for the browsers.
    assert!(
        seen.iter()
            .any(|l| l.starts_with("chat-server listening on wss://127.0.0.1:")),
        "{seen:?}"
    );
    std::thread::spawn(move || while lines.recv().is_ok() {});

    let Some(browser) = Browser::start().await else {
        return;
    };
    browser.open(&format!("https://127.0.0.1:{web}/")).await;
    let secure = browser.run("return window.isSecureContext;", vec![]).await;
    assert_eq!(secure, Value::Bool(true));
    browser.fill("#name", "tess").await;
    browser.fill("#password", "password of tess").await;
    browser.click("#register").await;
    browser
        .wait_for(
            "!document.getElementById('app').hidden && chatApp.chat.state === 'online'",
            "tess is signed in over wss://",
            WAIT,
        )
        .await;

    // A terminal client over tls:// writes to the browser's user.
    let mut terminal = Command::new(program_of("chat-client", "chat-client"))
        .args(["--server", &format!("tls://127.0.0.1:{tls}")])
        .arg("--tls-ca")
        .arg(&cert_file)
        .args(["--name", "term", "--secret", "password of term", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chat-client starts");
    let mut stdin = terminal.stdin.take().unwrap();
    let terminal_lines = lines_of(&mut terminal);
    let _terminal = Killed(terminal);
    let deadline = Instant::now() + WAIT;
    loop {
        let line = terminal_lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the terminal client comes online over tls://");
        if line.contains(r#""state":"online""#) {
            break;
        }
    }
    writeln!(stdin, "/msg tess over tls and wss").unwrap();
    browser
        .wait_for(
            "[...chatApp.conversations.values()].some(c => c.messages.some(m => m.text === 'over tls and wss'))",
            "tess gets the terminal's message",
            WAIT,
        )
        .await;
    browser.close().await;
}

#[tokio::test]
async fn the_web_server_answers_what_it_has_and_refuses_the_rest() {
    let data = tempfile::tempdir().unwrap();
    let server = start_server(data.path(), free_port(), free_port(), free_port());
    let get = |request: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.web)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        answer
    };
    let page = get("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(page.contains("content-security-policy"), "{page}");
    assert!(
        page.contains("<script type=\"module\" src=\"app.js\">"),
        "{page}"
    );
    let config = get(&format!(
        "GET /config.json HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.web
    ));
    let body = config.split("\r\n\r\n").nth(1).unwrap();
    let config: Value = serde_json::from_str(body).unwrap();
    assert_eq!(config["ws"], format!("ws://127.0.0.1:{}/", server.ws));
    assert!(get("GET /../Cargo.toml HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(get("POST / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(get("NONSENSE\r\n\r\n").starts_with("HTTP/1.1 400"));
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(get(&huge).starts_with("HTTP/1.1 431"));
}
