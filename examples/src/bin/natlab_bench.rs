//! Measures hole punching in the NAT lab (`scripts/natlab`): for each pair of router behaviours,
//! the path `/connect` finds from host a to host b, the time it takes, and the hole-punching
//! datagrams the connecting side sends, over several fresh connecting clients.
//!
//! Needs root (network namespaces and iptables), and `chat-server` and `chat-client` built in
//! the same profile (`cargo build --release -p chat-server -p chat-client -p examples`). Prints
//! a Markdown table.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::Value;

/// Times `/connect` between two chat clients behind each pair of NAT behaviours of the lab.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Fresh connecting clients per pair (the median of their times is reported).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    /// Pairs to measure, as `a/b` behaviours (none, pr, ar, sym); every pair when none given.
    #[arg(long = "pair")]
    pairs: Vec<String>,
    /// Also send a file of this many megabytes from a to b with `/send` (peer to peer, or
    /// through the server where there is no direct path) and report its throughput, from the
    /// send to the recipient's saved copy (hashing included).
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    file_mb: Option<u64>,
}

const BEHAVIOURS: [&str; 4] = ["none", "pr", "ar", "sym"];
const SERVER: &str = "tcp://203.0.113.1:7300";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pairs: Vec<(String, String)> = if args.pairs.is_empty() {
        BEHAVIOURS
            .iter()
            .flat_map(|a| {
                BEHAVIOURS
                    .iter()
                    .map(move |b| (a.to_string(), b.to_string()))
            })
            .collect()
    } else {
        args.pairs
            .iter()
            .map(|p| {
                p.split_once('/')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .with_context(|| format!("a pair is a/b, not {p}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let file = match args.file_mb {
        Some(mb) => format!(" {mb} MB file, until saved |"),
        None => String::new(),
    };
    println!(
        "| a → b | path (of {}) | time to connect, median (min–max) | datagrams sent, median |{file}",
        args.runs
    );
    println!(
        "|---|---|---|---|{}",
        if file.is_empty() { "" } else { "---|" }
    );
    for (a, b) in pairs {
        let row =
            measure(&a, &b, args.runs, args.file_mb).with_context(|| format!("pair {a}/{b}"))?;
        println!("{row}");
    }
    Ok(())
}

/// The directory of this program, where `chat-server` and `chat-client` are built too.
fn programs() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("no directory")?.to_owned())
}

fn natlab() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/natlab")
}

/// A lab, torn down when dropped.
struct Lab(String);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(natlab()).args(["down", &self.0]).status();
    }
}

/// A child killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `chat-client --json` in the lab, driven through its stdin.
struct Client {
    _child: Running,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Client {
    /// Starts a client for user `id` (the same each time a user's client is started again).
    fn start(
        lab: &Lab,
        node: &str,
        (name, id): (&str, uuid::Uuid),
        lan_ip: &str,
        dir: &Path,
    ) -> anyhow::Result<Client> {
        let mut child = Command::new(natlab())
            .args(["exec", &lab.0, node])
            .arg(programs()?.join("chat-client"))
            .args(["--json", "--server", SERVER, "--name", name])
            .args(["--id", &id.to_string(), "--secret", &format!("secret-{id}")])
            .args(["--listen", &format!("quic://{lan_ip}:0")])
            .args(["--direct-timeout-ms", "4000"])
            .arg("--files-dir")
            .arg(dir.join(format!("{name}-files")))
            .arg("--identity")
            .arg(dir.join(format!("{name}-{id}.json")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("NATLAB_BENCH_VERBOSE").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .context("chat-client starts")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut client = Client {
            _child: Running(child),
            stdin,
            lines,
        };
        client.expect(|e| e["event"] == "state" && e["state"] == "online")?;
        Ok(client)
    }

    /// Sends a command and returns the first event that matches.
    fn ask(&mut self, line: &str, matches: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        self.ask_for(line, matches, Duration::from_secs(20))
    }

    /// Like [`Client::ask`], waiting at most `wait`.
    fn ask_for(
        &mut self,
        line: &str,
        matches: impl Fn(&Value) -> bool,
        wait: Duration,
    ) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        self.expect_within(matches, wait)
    }

    fn expect(&mut self, matches: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        self.expect_within(matches, Duration::from_secs(20))
    }

    fn expect_within(
        &mut self,
        matches: impl Fn(&Value) -> bool,
        wait: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("no answer in {wait:?}"))?;
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["event"] == "error" {
                bail!("{event}");
            }
            if matches(&event) {
                return Ok(event);
            }
        }
    }
}

fn is_event(name: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == name
}

fn measure(a: &str, b: &str, runs: u32, file_mb: Option<u64>) -> anyhow::Result<String> {
    let name = format!("nb{}", std::process::id() % 0xffff);
    let status = Command::new(natlab())
        .args(["up", &name, a, b])
        .status()
        .context("scripts/natlab runs")?;
    if !status.success() {
        bail!("the lab was not built (root, iproute2, iptables and ipset are needed)");
    }
    let lab = Lab(name);
    let data = tempfile::tempdir()?;
    let mut server = Command::new(natlab())
        .args(["exec", &lab.0, "server"])
        .arg(programs()?.join("chat-server"))
        .args(["--listen", SERVER, "--data-dir"])
        .arg(data.path())
        .args(["--stun", "203.0.113.1:3478", "--stun-alt-ip", "203.0.113.2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("chat-server starts")?;
    let stdout = server.stdout.take().context("stdout")?;
    let _server = Running(server);
    let mut said = BufReader::new(stdout).lines();
    loop {
        match said.next() {
            Some(Ok(line)) if line.starts_with("chat-server stun on") => break,
            Some(_) => {}
            None => bail!("chat-server stopped before STUN was up"),
        }
    }
    std::thread::spawn(move || for _ in said {});

    let mut bob = Client::start(
        &lab,
        "b",
        ("bob", uuid::Uuid::new_v4()),
        "198.51.100.2",
        data.path(),
    )?;
    bob.ask("/nat", is_event("nat"))?;
    let mut paths = Vec::new();
    let mut times = Vec::new();
    let mut datagrams = Vec::new();
    let alice_id = uuid::Uuid::new_v4();
    let mut last = None;
    for run in 0..runs {
        // A peer answers one user's requests at most every 500 ms (later ones wait): runs of
        // the same user are spaced so that none waits.
        if run > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        // A fresh connecting client each time: nothing remembered, a new socket.
        let mut alice = Client::start(&lab, "a", ("alice", alice_id), "192.0.2.2", data.path())?;
        alice.ask("/nat", is_event("nat"))?;
        let path = alice.ask("/connect bob", is_event("path"))?;
        paths.push(path["path"].as_str().unwrap_or("?").to_owned());
        times.push(path["took_ms"].as_u64().unwrap_or(0));
        datagrams.push(path["datagrams"].as_u64().unwrap_or(0));
        last = Some(alice);
    }
    let direct_last = paths.last().is_some_and(|p| p == "direct");
    let file = match (file_mb, last) {
        (Some(mb), Some(mut alice)) => {
            let path = data.path().join("payload.bin");
            let chunk: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
            let mut out = std::fs::File::create(&path)?;
            for _ in 0..mb {
                out.write_all(&chunk)?;
            }
            drop(out);
            let started = Instant::now();
            let sent = alice.ask_for(
                &format!("/send bob {}", path.display()),
                is_event("file_sent"),
                Duration::from_secs(600),
            )?;
            // Directly, the sender's report ends with the recipient's hash check; through the
            // server, the recipient downloads it after: the time runs until it is saved.
            bob.expect_within(
                |e| e["event"] == "file" && e["change"] == "received",
                Duration::from_secs(600),
            )?;
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let how = match sent["path"].as_str() {
                Some("direct") => "direct",
                _ => "through the server",
            };
            if direct_last != (how == "direct") {
                bail!("the file went {how}, but /connect found the other path");
            }
            format!(" {:.1} MB/s ({secs:.1} s, {how}) |", mb as f64 / secs)
        }
        _ => String::new(),
    };
    let direct = paths.iter().filter(|p| *p == "direct").count();
    let path = match direct {
        0 => format!("relayed ({runs})"),
        n if n == paths.len() => format!("direct ({runs})"),
        n => format!("direct {n}, relayed {}", paths.len() - n),
    };
    let median = |values: &mut Vec<u64>| {
        values.sort_unstable();
        values[values.len() / 2]
    };
    let (min, max) = (
        times.iter().min().copied().unwrap_or(0),
        times.iter().max().copied().unwrap_or(0),
    );
    Ok(format!(
        "| {a} → {b} | {path} | {} ms ({min}–{max}) | {} |{file}",
        median(&mut times),
        median(&mut datagrams)
    ))
}
