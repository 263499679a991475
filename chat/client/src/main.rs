#![allow(rustdoc::invalid_html_tags)] // clap help text with <name> placeholders
//! A chat client: a line interface for people, JSON lines for scripts.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chat_api::{UserInfo, excerpt};
use chat_client::{
    ChatClient, ChatClientConfig, ChatEvent, ClientState, Command, DEFAULT_LISTEN, DEFAULT_SERVER,
    HELP, event_json, event_text, new_secret, path_name, user_json,
};
use clap::Parser;
use rpc_core::{Endpoint, Format};
use rpc_registry::RemoteRegistry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

/// What `--help` says above the options.
const LONG_ABOUT: &str = "\
Chat client of the chat.Signal service (see chat-server).

The client registers the user with the chat server and serves its own small chat service
(chat.Peer) on --listen, where other clients deliver direct messages peer to peer. A message to
an online user goes directly to that user's client; when the direct connection fails within
--direct-timeout-ms, it goes through the server's relay, and to an offline user it is stored by
the server and delivered when they come back. Whatever arrives by either path is shown once.
When the server goes away the client reconnects and registers again by itself, and says so.

Identity: a user is a UUID bound to a secret at its first registration. Without both --id and
--secret, the client keeps them in an identity file (--identity; by default
$HOME/.chat-client/<name>.json, or ./.chat-client-<name>.json without $HOME), created on first
use; values given on the command line take precedence over the file's.

Interactive mode (the default) reads commands typed at a prompt and prints incoming messages,
presence changes and state changes above it. Commands (/help lists them):
  /who, /whois <name|uuid>, /msg <name|uuid> <text>, /join <room>, /leave <room>, /rooms,
  /members <room>, /say <room> <text> (or plain text for the last room joined),
  /history <room>, /status, /help, /quit
Lists (/who, /rooms, /members, /history) are fetched from the server a page at a time.

Script mode (--json) reads the same commands from stdin, one per line and without a prompt, and
prints every event and every command's result as one JSON object per line on stdout, its kind
under \"event\": message, presence, room, state, sent, who, user, joined, left, rooms, members,
posted, history, status, help, error. For example:
  {\"event\":\"state\",\"state\":\"online\",\"name\":\"alice\",\"observed\":\"127.0.0.1:50712\",...}
  {\"event\":\"sent\",\"to\":\"bob\",\"path\":\"direct\",\"id\":\"...\",...}
  {\"event\":\"message\",\"from\":\"bob\",\"text\":\"hi\",\"path\":\"relayed\",\"id\":\"...\",...}
  {\"event\":\"presence\",\"left\":\"carol\",\"user\":{...}}
  {\"event\":\"error\",\"command\":\"/msg zed hi\",\"message\":\"unknown user zed\"}
It exits when stdin closes (after the commands read so far are done) or, with --for, that many
seconds later.

Exit status: 0 after /quit or the end of input; 1 when the first registration fails
(unreachable server, wrong secret, name taken) or when another client registered as the same
user and took over; 2 for a bad identity file.";

/// The command line; see [`LONG_ABOUT`].
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Chat client of the chat.Signal service: direct messages peer to peer, relayed when \
             that fails, rooms, presence; interactive or JSON lines",
    long_about = LONG_ABOUT
)]
struct Args {
    /// The chat server: tcp://host:port, unix:///path or mem://name. Repeat it to name other
    /// nodes of the same service: when the first cannot be reached the client goes to the next
    /// that answers, and registers again there.
    #[arg(long, default_value = DEFAULT_SERVER)]
    server: Vec<Endpoint>,
    /// A registry server the chat servers register in (e.g. tcp://127.0.0.1:7100): the client
    /// connects to one of the chat servers it lists and moves to another when that one goes
    /// away; --server is used while it lists none.
    #[arg(long)]
    registry: Option<Endpoint>,
    /// The display name (at most 32 characters), reserved to this id for good by the server.
    #[arg(long)]
    name: String,
    /// The user's UUID. Default: from the identity file, or a new one saved there.
    #[arg(long)]
    id: Option<Uuid>,
    /// The secret that proves the UUID is yours. Default: from the identity file, or a new one
    /// saved there.
    #[arg(long, env = "CHAT_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The identity file holding the id and secret (JSON). Default:
    /// $HOME/.chat-client/NAME.json. Not used when both --id and --secret are given.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Where to serve this client's peer for direct messages; port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: Endpoint,
    /// The endpoint to advertise for direct messages instead of the one bound by --listen (for
    /// a wildcard --listen, a NAT, or to force others onto the relay with a closed endpoint).
    #[arg(long)]
    advertise: Option<String>,
    /// How long a direct send may take before the message goes through the server, in ms
    /// (1 to 60000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    direct_timeout_ms: u64,
    /// The serializer: msgpack, postcard or json.
    #[arg(long, default_value = "msgpack")]
    format: Format,
    /// Script mode: commands from stdin without a prompt, JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// With --json: after stdin closes, keep receiving for this many seconds (0 to 86400,
    /// fractions allowed), then exit.
    #[arg(long = "for", value_name = "SECS", requires = "json", value_parser = seconds)]
    for_secs: Option<Duration>,
}

/// What the identity file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    id: Uuid,
    secret: String,
    name: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Logs would tear the prompt apart; only errors, unless RUST_LOG asks for more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let out = Output::new(args.json);
    let code = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(args, out.clone())),
        Err(e) => {
            eprintln!("chat-client: {e}");
            1
        }
    };
    out.finish();
    // Exiting here rather than returning: the thread reading stdin may still be blocked in a
    // read, and nothing else is left to wait for.
    std::process::exit(code)
}

async fn run(args: Args, out: Output) -> i32 {
    let config = match config(&args) {
        Ok(config) => config,
        Err(e) => {
            out.error(None, &format!("{e:#}"));
            return 2;
        }
    };
    let (client, mut events) = match ChatClient::connect(config).await {
        Ok(connected) => connected,
        Err(e) => {
            out.error(None, &format!("could not join the chat: {e}"));
            return 1;
        }
    };
    out.set_me(client.id(), client.name());
    let printer = {
        let out = out.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                out.event(&event);
            }
        })
    };
    let mut session = Session {
        client: client.clone(),
        out: out.clone(),
        room: None,
    };
    let mut lines = read_lines();
    let mut state = client.watch_state();
    let mut code = 0;
    out.prompt();
    loop {
        let line = tokio::select! {
            line = lines.recv() => line,
            _ = tokio::signal::ctrl_c() => None,
            _ = state.wait_for(ClientState::is_final) => {
                code = 1;
                None
            }
        };
        let Some(line) = line else { break };
        match Command::parse(&line) {
            Ok(None) => out.prompt(),
            Ok(Some(Command::Quit)) => break,
            Ok(Some(command)) => session.execute(&line, command).await,
            Err(message) => out.error(Some(&line), &message),
        }
    }
    if let (Some(wait), 0) = (args.for_secs, code) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = state.wait_for(ClientState::is_final) => code = 1,
        }
    }
    client.shutdown().await;
    // Let the last events (the "closed" state) reach the output.
    tokio::time::sleep(Duration::from_millis(20)).await;
    printer.abort();
    code
}

/// Builds the client configuration, reading or creating the identity file as needed.
fn config(args: &Args) -> anyhow::Result<ChatClientConfig> {
    let (id, secret) = match (args.id, &args.secret) {
        (Some(id), Some(secret)) => (id, secret.clone()),
        _ => {
            let path = args
                .identity
                .clone()
                .unwrap_or_else(|| default_identity_path(&args.name));
            let identity = load_or_create_identity(&path, args)?;
            (
                args.id.unwrap_or(identity.id),
                args.secret.clone().unwrap_or(identity.secret),
            )
        }
    };
    let (server, fallbacks) = args
        .server
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("--server: at least one endpoint is needed"))?;
    let mut config = ChatClientConfig::new(server.clone(), args.name.clone()).identity(id, secret);
    config.fallback_servers = fallbacks.to_vec();
    if let Some(registry) = &args.registry {
        let remote = RemoteRegistry::connect_lazy(registry)
            .map_err(|e| anyhow::anyhow!("--registry {registry}: {e}"))?;
        config.registry = Some(Arc::new(remote));
    }
    config.listen = args.listen.clone();
    config.advertise = args.advertise.clone();
    config.direct_timeout = Duration::from_millis(args.direct_timeout_ms);
    config.format = args.format.clone();
    Ok(config)
}

/// Parses `--for`: a number of seconds from 0 to a day.
fn seconds(text: &str) -> Result<Duration, String> {
    const LONGEST: f64 = 86_400.0;
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{:?} is not a number of seconds", excerpt(text)))?;
    if !(0.0..=LONGEST).contains(&secs) {
        return Err(format!("{secs} is not in 0..={LONGEST}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn default_identity_path(name: &str) -> PathBuf {
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home)
            .join(".chat-client")
            .join(format!("{file}.json")),
        None => PathBuf::from(format!(".chat-client-{file}.json")),
    }
}

fn load_or_create_identity(path: &Path, args: &Args) -> anyhow::Result<Identity> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("identity file {} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity {
                id: args.id.unwrap_or_else(Uuid::new_v4),
                secret: args.secret.clone().unwrap_or_else(new_secret),
                name: args.name.clone(),
            };
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("cannot create identity file {}", path.display()))?;
            serde_json::to_writer_pretty(&mut file, &identity)?;
            file.write_all(b"\n")?;
            Ok(identity)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read identity file {}", path.display())),
    }
}

/// Reads stdin line by line on a thread of its own (a blocking read must not hold up the
/// runtime, nor the exit); bytes that are not UTF-8 are replaced rather than fatal.
fn read_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Runs commands for one user.
struct Session {
    client: ChatClient,
    out: Output,
    /// The room plain text goes to: the last one joined.
    room: Option<String>,
}

impl Session {
    async fn execute(&mut self, line: &str, command: Command) {
        if let Err(message) = self.try_execute(command).await {
            self.out.error(Some(line), &message);
        }
    }

    async fn try_execute(&mut self, command: Command) -> Result<(), String> {
        let client = &self.client;
        let out = &self.out;
        match command {
            Command::Who => {
                let mut users = client.who().await.map_err(|e| e.to_string())?;
                users.sort_by(|a, b| a.name.cmp(&b.name));
                let text = users
                    .iter()
                    .map(|u| describe(u, client.id()))
                    .collect::<Vec<_>>()
                    .join("\n");
                out.result(
                    json!({"event": "who", "online": users.iter().map(user_json).collect::<Vec<_>>()}),
                    format!("* {} online:\n{text}", users.len()),
                );
            }
            Command::Whois(user) => {
                let user = client.lookup(&user).await.map_err(|e| e.to_string())?;
                out.result(
                    json!({"event": "user", "user": user_json(&user)}),
                    describe(&user, client.id()),
                );
            }
            Command::Msg { to, text } => {
                let report = client.send(&to, &text).await.map_err(|e| e.to_string())?;
                let path = path_name(report.path);
                let why = report
                    .direct_error
                    .as_ref()
                    .map(|e| format!(" (direct failed: {e})"))
                    .unwrap_or_default();
                out.result(
                    json!({
                        "event": "sent",
                        "id": report.id,
                        "to": report.to.name,
                        "to_id": report.to.id,
                        "path": path,
                        "direct_error": report.direct_error,
                    }),
                    format!("[sent {path}] to {}: {text}{why}", report.to.name),
                );
            }
            Command::Join(room) => {
                let info = client.join(&room).await.map_err(|e| e.to_string())?;
                self.room = Some(info.name.clone());
                out.set_room(self.room.clone());
                out.result(
                    json!({"event": "joined", "room": info.name, "member_count": info.member_count}),
                    format!(
                        "* joined #{} ({}; /members {} lists them)",
                        info.name,
                        members(info.member_count),
                        info.name
                    ),
                );
            }
            Command::Leave(room) => {
                client.leave_room(&room).await.map_err(|e| e.to_string())?;
                if self.room.as_deref() == Some(room.as_str()) {
                    self.room = client.joined_rooms().pop();
                    out.set_room(self.room.clone());
                }
                out.result(
                    json!({"event": "left", "room": room}),
                    format!("* left #{room}"),
                );
            }
            Command::Rooms => {
                let rooms = client.rooms().await.map_err(|e| e.to_string())?;
                let value: Vec<Value> = rooms
                    .iter()
                    .map(|r| json!({"name": r.name, "member_count": r.member_count}))
                    .collect();
                let text = if rooms.is_empty() {
                    "* no rooms yet; /join <room> creates one".to_owned()
                } else {
                    rooms
                        .iter()
                        .map(|r| format!("* #{} ({})", r.name, members(r.member_count)))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                out.result(json!({"event": "rooms", "rooms": value}), text);
            }
            Command::Members(room) => {
                let members = client.members(&room).await.map_err(|e| e.to_string())?;
                let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
                out.result(
                    json!({"event": "members", "room": room, "members": names}),
                    format!("* #{room}: {}", names.join(", ")),
                );
            }
            Command::Say { room, text } => {
                let room = room.or_else(|| self.room.clone()).ok_or(
                    "no current room: /join <room> first, or /say <room> <text>, or /msg <user> <text>",
                )?;
                let id = client.post(&room, &text).await.map_err(|e| e.to_string())?;
                out.result(
                    json!({"event": "posted", "room": room, "id": id}),
                    String::new(),
                );
            }
            Command::History(room) => {
                let posts = client.history(&room).await.map_err(|e| e.to_string())?;
                let messages: Vec<Value> = posts
                    .iter()
                    .map(|m| event_json(&ChatEvent::Message(m.clone())))
                    .collect();
                let mut text = format!("* last {} posts in #{room}:", posts.len());
                for m in &posts {
                    text.push_str(&format!("\n  {}: {}", m.from.name, m.text));
                }
                out.result(
                    json!({"event": "history", "room": room, "messages": messages}),
                    text,
                );
            }
            Command::Status => {
                let state = client.state();
                let observed = client.session().map(|s| s.user.observed);
                let value = json!({
                    "event": "status",
                    "state": state.name(),
                    "id": client.id(),
                    "name": client.name(),
                    "peer": client.peer_endpoint().to_string(),
                    "advertised": client.advertised(),
                    "observed": observed,
                    "rooms": client.joined_rooms(),
                });
                let text = format!(
                    "* {} as {} ({})\n  peer listening on {}, advertised as {}\n  server sees us at {}\n  rooms: {}",
                    state.name(),
                    client.name(),
                    client.id(),
                    client.peer_endpoint(),
                    client.advertised().unwrap_or("nothing"),
                    observed.as_deref().unwrap_or("(not online)"),
                    client.joined_rooms().join(", "),
                );
                out.result(value, text);
            }
            Command::Help => out.result(json!({"event": "help", "text": HELP}), HELP.to_owned()),
            // Handled by the caller; anything newer is not for this program to guess.
            _ => return Err("not supported by this program".to_owned()),
        }
        Ok(())
    }
}

/// "1 member", "3 members".
fn members(count: u32) -> String {
    match count {
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    }
}

fn describe(user: &UserInfo, me: Uuid) -> String {
    format!(
        "  {}{}  id {}  seen at {}  peer {}",
        user.name,
        if user.id == me { " (you)" } else { "" },
        user.id,
        user.observed,
        user.advertised.as_deref().unwrap_or("none"),
    )
}

/// Where everything goes: JSON lines, or text lines above a prompt.
#[derive(Clone)]
struct Output {
    json: bool,
    /// Whether stdout is a terminal (then the prompt is redrawn after every line).
    tty: bool,
    view: Arc<Mutex<View>>,
}

#[derive(Default)]
struct View {
    me: Option<(Uuid, String)>,
    room: Option<String>,
    state: &'static str,
}

impl Output {
    fn new(json: bool) -> Self {
        Output {
            json,
            tty: !json && std::io::stdout().is_terminal(),
            view: Arc::new(Mutex::new(View {
                state: "connecting",
                ..View::default()
            })),
        }
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_me(&self, id: Uuid, name: &str) {
        self.view().me = Some((id, name.to_owned()));
    }

    fn set_room(&self, room: Option<String>) {
        self.view().room = room;
        self.prompt();
    }

    fn event(&self, event: &ChatEvent) {
        if let ChatEvent::State(state) = event {
            self.view().state = state.name();
        }
        if self.json {
            self.json_line(&event_json(event));
            return;
        }
        let me = self
            .view()
            .me
            .as_ref()
            .map(|(id, _)| *id)
            .unwrap_or_default();
        if let Some(line) = event_text(event, me) {
            self.text(&line);
        } else if matches!(event, ChatEvent::State(ClientState::Online { .. })) {
            self.prompt();
        }
    }

    fn result(&self, value: Value, text: String) {
        if self.json {
            self.json_line(&value);
        } else if text.is_empty() {
            self.prompt();
        } else {
            self.text(&text);
        }
    }

    fn error(&self, command: Option<&str>, message: &str) {
        if self.json {
            let mut value = json!({"event": "error", "message": message});
            if let Some(command) = command {
                value["command"] = json!(excerpt(command.trim_end()));
            }
            self.json_line(&value);
        } else if self.view().me.is_none() {
            eprintln!("chat-client: {message}");
        } else {
            self.text(&format!("! {message}"));
        }
    }

    /// Writes one line; on a terminal, over the prompt, and the prompt again below it.
    fn text(&self, line: &str) {
        let mut stdout = std::io::stdout().lock();
        if self.tty {
            let _ = write!(stdout, "\r\x1b[2K{line}\n{}", self.prompt_text());
        } else {
            let _ = writeln!(stdout, "{line}");
        }
        let _ = stdout.flush();
    }

    fn json_line(&self, value: &Value) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{value}");
        let _ = stdout.flush();
    }

    fn prompt(&self) {
        if self.tty {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "\r\x1b[2K{}", self.prompt_text());
            let _ = stdout.flush();
        }
    }

    fn prompt_text(&self) -> String {
        let view = self.view();
        let name = view.me.as_ref().map(|(_, n)| n.as_str()).unwrap_or("");
        let state = if view.state == "online" {
            String::new()
        } else {
            format!("({}) ", view.state)
        };
        match &view.room {
            Some(room) => format!("{state}{name}@#{room}> "),
            None => format!("{state}{name}> "),
        }
    }

    fn finish(&self) {
        if self.tty {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "\r\x1b[2K");
            let _ = stdout.flush();
        }
    }
}
