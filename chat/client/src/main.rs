#![allow(rustdoc::invalid_html_tags)] // clap help text with <name> placeholders
//! A chat client: a line interface for people, JSON lines for scripts.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chat_api::{Access, Friend, FriendState, Membership, RoomInfo, UserInfo, excerpt};
use chat_client::{
    ChatClient, ChatClientConfig, ChatEvent, ClientState, Command, DEFAULT_LISTEN, DEFAULT_SERVER,
    HELP, NatTimeouts, PeerPath, event_json, event_text, human_bytes, nat_json, nat_text,
    new_secret, path_name, printable, user_json,
};
use clap::Parser;
use rpc_core::{Endpoint, Format};
use rpc_registry::RemoteRegistry;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long leaving the server may hold up the exit.
const QUIT_WAIT: Duration = Duration::from_millis(300);

/// What `--help` says above the options.
const LONG_ABOUT: &str = "\
Chat client of the chat.Signal service (see chat-server).

The client registers the user with the chat server and serves its own small chat service
(chat.Peer) on --listen, a quic:// endpoint, where other clients deliver direct messages peer to
peer. Both ends of a direct connection prove their device keys (--key-file), checked against
the keys the server has bound to each user's session, so a direct message is from who it says.
A message to an online user goes directly to that user's client; when the direct connection
fails within --direct-timeout-ms, it goes through the server's relay, and to an offline user it
is stored by the server and delivered when they come back. Whatever arrives by either path is shown once.
When the server goes away the client reconnects and registers again by itself, and says so.

Identity: an account is a UUID bound to a password (the secret) and to the display name, both
reserved to it for good at its first registration. Without both --id and --secret, the client
keeps them in an identity file (--identity; by default $HOME/.chat-client/<name>.json, or
./.chat-client-<name>.json without $HOME), created on first use; values given on the command
line take precedence over the file's. On another device, --login with --name and --password
(the secret) logs in to the account without its id.

Interactive mode (the default) reads commands typed at a prompt and prints incoming messages,
presence changes and state changes above it. Commands (/help lists them):
  /who, /whois <name|uuid>, /msg <name|uuid> <text>,
  /join <room>, /create <room>, /group <room>, /invite <room> <user>, /add <room> <user>,
  /remove <room> <user>, /leave <room>, /rooms, /myrooms, /members <room>,
  /say <room> <text> (or plain text for the last room joined), /history <room>,
  /friend <user>, /accept <user>, /unfriend <user>, /friends, /status, /nat [<user>], /help,
  /quit
Rooms and groups last: the server keeps your memberships and the posts you missed while away.
Lists (/who, /rooms, /members, /history, /friends) are fetched a page at a time.

Script mode (--json) reads the same commands from stdin, one per line and without a prompt, and
prints every event and every command's result as one JSON object per line on stdout, its kind
under \"event\". Events: message, presence, room, friend, state; every object of a kind has the
same keys (null where one does not apply) and says what changed under \"change\". Results: sent,
who, user, joined, created, invited, added, removed, left, rooms, members, posted, history,
friend, friends, status, nat, help, and error. For example:
  {\"event\":\"state\",\"state\":\"online\",\"name\":\"alice\",\"observed\":\"127.0.0.1:50712\",...}
  {\"event\":\"sent\",\"to\":\"bob\",\"path\":\"direct\",\"id\":\"...\",...}
  {\"event\":\"message\",\"from\":\"bob\",\"room\":null,\"text\":\"hi\",\"path\":\"relayed\",...}
  {\"event\":\"presence\",\"change\":\"left\",\"users\":[{...}],\"more\":false}
  {\"event\":\"error\",\"command\":\"/msg zed hi\",\"message\":\"unknown user zed\"}
It exits when stdin closes (after the commands read so far are done) or, with --for, that many
seconds later.

Exit status: 0 after /quit or the end of input; 1 when the first registration fails
(unreachable server, wrong secret, name taken, wrong login), when another client registered as
the same user and took over, or when --max-reconnect-attempts attempts to reconnect failed; 2 for
a bad identity file or option.";

/// The command line; see [`LONG_ABOUT`].
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Chat client of the chat.Signal service: direct messages peer to peer, relayed when \
             that fails, rooms, presence; interactive or JSON lines",
    long_about = LONG_ABOUT
)]
struct Args {
    /// The chat server: tcp://host:port, tls://host:port, ws://host:port/path,
    /// wss://host:port/path, unix:///path or mem://name. Repeat it to name other
    /// nodes of the same service: when the first cannot be reached the client goes to the next
    /// that answers, and registers again there.
    #[arg(long, default_value = DEFAULT_SERVER)]
    server: Vec<Endpoint>,
    /// A registry server the chat servers register in (e.g. tcp://127.0.0.1:7100): the client
    /// connects to one of the chat servers it lists and moves to another when that one goes
    /// away; --server is used while it lists none.
    #[arg(long)]
    registry: Option<Endpoint>,
    /// The display name, reserved to this user's id for good (at most 32 characters).
    /// Required, except with --nat-check.
    #[arg(long, required_unless_present = "nat_check", default_value = "")]
    name: String,
    /// Log in to the existing account --name with its password (--password), without its id.
    #[arg(long, requires = "secret")]
    login: bool,
    /// The user's UUID. Default: from the identity file, or a new one saved there.
    #[arg(long)]
    id: Option<Uuid>,
    /// The account's password (its secret), which proves the UUID (or with --login the name)
    /// is yours. Default: from the identity file, or a new one saved there.
    #[arg(
        long,
        visible_alias = "password",
        env = "CHAT_SECRET",
        hide_env_values = true
    )]
    secret: Option<String>,
    /// The identity file holding the id and secret (JSON). Default:
    /// $HOME/.chat-client/NAME.json. Not used when both --id and --secret are given.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Where to serve this client's peer for direct messages: quic://host:port (a UDP port,
    /// which also carries the direct messages this client sends); port 0 picks a free port.
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
    /// Give up (and exit with status 1) after this many failed attempts in a row to reconnect
    /// after the session was lost (1 to 1000000). Default: keep trying.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_reconnect_attempts: Option<u32>,
    /// This device's identity key (ed25519), kept in FILE as 64 hex digits (made, readable by
    /// its owner only, when missing); it is bound to each session so that peers connecting
    /// directly know the device by it. Default: a new key each run.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Where files other users send (/send) are saved, made when the first arrives.
    #[arg(long, value_name = "DIR", default_value = "chat-files")]
    files_dir: PathBuf,
    /// The largest file taken from another user, in megabytes (0 refuses every file).
    #[arg(long, value_name = "MB", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    max_file_mb: u64,
    /// CA certificates (PEM) to trust for a tls:// or wss:// server (and registry), instead of
    /// the Mozilla root store: a private CA, or the server's self-signed certificate.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The serializer: msgpack, postcard or json.
    #[arg(long, default_value = "msgpack")]
    format: Format,
    /// Script mode: commands from stdin without a prompt, JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Find out how this host's NAT maps and filters UDP (RFC 5780) with the STUN service of
    /// --stun or, without it, of the server (asked with `rendezvous`, no registration), print
    /// it (with --json one line: {"kind":"nat","event":"nat","mapping":...,"filtering":...,
    /// "public":"ip:port"}) and exit: 0 when STUN answered, 1 when it did not. Takes at most
    /// 3 s, whatever is lost.
    #[arg(long)]
    nat_check: bool,
    /// The STUN server for --nat-check, as host:port (e.g. 203.0.113.1:3478).
    #[arg(long, value_name = "HOST:PORT")]
    stun: Option<String>,
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
    if args.nat_check {
        return nat_check(&args, &out).await;
    }
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
    // Telling the server we leave is worth a moment, not a wait: without it the server drops
    // the user when their presence expires.
    let _ = tokio::time::timeout(QUIT_WAIT, client.shutdown()).await;
    // Let the last events (the "closed" state) reach the output.
    tokio::time::sleep(Duration::from_millis(20)).await;
    printer.abort();
    code
}

/// `--nat-check`: discovery against --stun or the server's STUN service, one report, exit.
async fn nat_check(args: &Args, out: &Output) -> i32 {
    let stun = match &args.stun {
        Some(stun) => stun.clone(),
        None => match server_stun(args).await {
            Ok(stun) => stun,
            Err(e) => {
                out.error(None, &format!("{e:#}"));
                return 1;
            }
        },
    };
    let stun = match chat_client::resolve_stun(&stun).await {
        Ok(stun) => stun,
        Err(e) => {
            out.error(None, &e.to_string());
            return 2;
        }
    };
    let bind = if stun.is_ipv4() {
        std::net::SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        std::net::SocketAddr::from(([0u16; 8], 0))
    };
    match chat_client::discover(bind, stun, NatTimeouts::default()).await {
        Ok(report) => {
            let mut value = nat_json(&report, None);
            value["kind"] = json!("nat");
            value["stun"] = json!(stun.to_string());
            out.result(value, nat_text(&report, None));
            if report.public.is_some() { 0 } else { 1 }
        }
        Err(e) => {
            out.error(None, &format!("STUN at {stun}: {e}"));
            1
        }
    }
}

/// The STUN service the first --server tells about.
async fn server_stun(args: &Args) -> anyhow::Result<String> {
    let server = args
        .server
        .first()
        .ok_or_else(|| anyhow::anyhow!("--server: at least one endpoint is needed"))?;
    let connect = async {
        let mut client = rpc_core::Client::builder().format(args.format.clone());
        if let Some(tls) = client_tls(args)? {
            client = client.tls(tls);
        }
        let client = client.connect(server).await?;
        let signal = chat_api::SignalClient::new(client);
        let rendezvous = signal.rendezvous().await?;
        anyhow::Ok(rendezvous)
    };
    let rendezvous = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .map_err(|_| anyhow::anyhow!("the server {server} did not answer within 2 s"))??;
    rendezvous
        .stun
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the server {server} has no STUN service; give --stun"))
}

/// Builds the client configuration, reading or creating the identity file as needed.
fn config(args: &Args) -> anyhow::Result<ChatClientConfig> {
    let (id, secret) = match (args.id, &args.secret) {
        (Some(id), Some(secret)) => (id, secret.clone()),
        // The server tells the id.
        (None, Some(password)) if args.login => (Uuid::nil(), password.clone()),
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
    config.login = args.login;
    config.max_reconnect_attempts = args.max_reconnect_attempts;
    if let Some(path) = &args.key_file {
        config.device_key = Some(device_key(path)?);
    }
    config.fallback_servers = fallbacks.to_vec();
    config.tls = client_tls(args)?;
    if let Some(registry) = &args.registry {
        let mut client = rpc_core::Client::builder();
        if let Some(tls) = &config.tls {
            client = client.tls(tls.clone());
        }
        let client = client
            .connect_lazy(registry)
            .map_err(|e| anyhow::anyhow!("--registry {registry}: {e}"))?;
        config.registry = Some(Arc::new(RemoteRegistry::new(client)));
    }
    config.listen = args.listen.clone();
    config.advertise = args.advertise.clone();
    config.direct_timeout = Duration::from_millis(args.direct_timeout_ms);
    config.format = args.format.clone();
    if args.max_file_mb > 0 {
        config.files_dir = Some(args.files_dir.clone());
        config.max_file_bytes = args.max_file_mb * 1_000_000;
    }
    Ok(config)
}

/// The TLS settings of `--tls-ca`, if given.
fn client_tls(args: &Args) -> anyhow::Result<Option<rpc_core::tls::ClientTls>> {
    args.tls_ca
        .as_ref()
        .map(|ca| {
            rpc_core::tls::ClientTls::with_ca_pem_file(ca)
                .map_err(|e| anyhow::anyhow!("--tls-ca: {e}"))
        })
        .transpose()
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
                out.result(
                    json!({"event": "who", "online": users.iter().map(user_json).collect::<Vec<_>>()}),
                    who_table(&users, client.id()),
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
                let value: Vec<Value> = rooms.iter().map(room_json).collect();
                let text = if rooms.is_empty() {
                    "* no rooms yet; /join <room> creates one".to_owned()
                } else {
                    rooms.iter().map(room_line).collect::<Vec<_>>().join("\n")
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
                    text.push_str(&format!(
                        "\n  {}: {}",
                        printable(&m.from.name),
                        printable(&m.text)
                    ));
                }
                out.result(
                    json!({"event": "history", "room": room, "messages": messages}),
                    text,
                );
            }
            Command::MyRooms => {
                let rooms = client.my_rooms().await.map_err(|e| e.to_string())?;
                let text = if rooms.is_empty() {
                    "* you are in no room; /join <room> or /group <room>".to_owned()
                } else {
                    rooms.iter().map(room_line).collect::<Vec<_>>().join("\n")
                };
                let value: Vec<Value> = rooms.iter().map(room_json).collect();
                out.result(json!({"event": "rooms", "rooms": value}), text);
            }
            Command::Create { room, access } => {
                let info = client
                    .create_room(&room, access)
                    .await
                    .map_err(|e| e.to_string())?;
                self.room = Some(info.name.clone());
                out.set_room(self.room.clone());
                let what = match access {
                    Access::Open => "open room",
                    Access::InviteOnly => "invite-only group (/invite or /add members)",
                };
                out.result(
                    json!({"event": "created", "room": room_json(&info)}),
                    format!("* made #{}, an {what}", info.name),
                );
            }
            Command::Invite { room, user } => {
                let user = client
                    .invite(&room, &user)
                    .await
                    .map_err(|e| e.to_string())?;
                out.result(
                    json!({"event": "invited", "room": room, "user": user.name, "user_id": user.id}),
                    format!("* invited {} to #{room}", user.name),
                );
            }
            Command::Add { room, user } => {
                let user = client
                    .add_member(&room, &user)
                    .await
                    .map_err(|e| e.to_string())?;
                out.result(
                    json!({"event": "added", "room": room, "user": user.name, "user_id": user.id}),
                    format!("* added {} to #{room}", user.name),
                );
            }
            Command::Remove { room, user } => {
                let user = client
                    .remove_member(&room, &user)
                    .await
                    .map_err(|e| e.to_string())?;
                out.result(
                    json!({"event": "removed", "room": room, "user": user.name, "user_id": user.id}),
                    format!("* removed {} from #{room}", user.name),
                );
            }
            Command::Friend(user) => {
                let (user, state) = client
                    .request_friend(&user)
                    .await
                    .map_err(|e| e.to_string())?;
                let text = match state {
                    FriendState::Friends => format!("* {} and you are friends now", user.name),
                    _ => format!("* asked {} to be friends", user.name),
                };
                out.result(
                    json!({"event": "friend", "user": user.name, "user_id": user.id, "state": friend_state(state)}),
                    text,
                );
            }
            Command::Accept(user) => {
                let user = client
                    .accept_friend(&user)
                    .await
                    .map_err(|e| e.to_string())?;
                out.result(
                    json!({"event": "friend", "user": user.name, "user_id": user.id, "state": friend_state(FriendState::Friends)}),
                    format!("* {} and you are friends now", user.name),
                );
            }
            Command::Unfriend(user) => {
                let user = client.unfriend(&user).await.map_err(|e| e.to_string())?;
                out.result(
                    json!({"event": "friend", "user": user.name, "user_id": user.id, "state": null}),
                    format!("* {} is not a friend (nor asked to be) any more", user.name),
                );
            }
            Command::Friends => {
                let friends = client.friends().await.map_err(|e| e.to_string())?;
                let value: Vec<Value> = friends
                    .iter()
                    .map(|f| {
                        json!({"user": f.user.name, "user_id": f.user.id, "state": friend_state(f.state), "online": f.online})
                    })
                    .collect();
                out.result(
                    json!({"event": "friends", "friends": value}),
                    friends_table(&friends),
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
            Command::Nat(None) => {
                let report = client.nat().await.map_err(|e| e.to_string())?;
                out.result(nat_json(&report, None), nat_text(&report, None));
            }
            Command::Nat(Some(user)) => {
                let info = client.lookup(&user).await.map_err(|e| e.to_string())?;
                let report = client
                    .nat_of(&info.id.to_string())
                    .await
                    .map_err(|e| e.to_string())?;
                match report {
                    Some(report) => out.result(
                        nat_json(&report, Some(&info.name)),
                        nat_text(&report, Some(&info.name)),
                    ),
                    None => out.result(
                        json!({"event": "nat", "user": info.name, "mapping": null, "filtering": null, "public": null}),
                        format!("* {} reported no NAT details", printable(&info.name)),
                    ),
                }
            }
            Command::Connect(user) => {
                let path = client
                    .connect_peer(&user)
                    .await
                    .map_err(|e| e.to_string())?;
                out.result(path_json(&path), path_text(&path));
            }
            Command::Send { to, path } => {
                // In the background: the chat goes on while the file does.
                let (client, out) = (client.clone(), out.clone());
                tokio::spawn(async move {
                    let bar = ProgressBar::new(out.clone(), &path);
                    match client
                        .send_file(&to, Path::new(&path), |sent, size| bar.show(sent, size))
                        .await
                    {
                        Ok(report) => {
                            let secs = report.took.as_secs_f64().max(1e-6);
                            let rate = report.size as f64 / secs / 1e6;
                            let resumed = match report.resumed {
                                0 => String::new(),
                                n => format!(", resumed {n}×"),
                            };
                            out.result(
                                json!({
                                    "event": "file_sent",
                                    "id": report.id,
                                    "to": report.to.name,
                                    "to_id": report.to.id,
                                    "name": report.name,
                                    "size": report.size,
                                    "path": path_name(report.path),
                                    "endpoint": report.endpoint,
                                    "why_not_direct": report.why_not_direct,
                                    "took_ms": u64::try_from(report.took.as_millis()).unwrap_or(u64::MAX),
                                    "resumed": report.resumed,
                                }),
                                format!(
                                    "* sent {} to {} ({} in {:.1} s, {rate:.1} MB/s, {}{resumed})",
                                    printable(&report.name),
                                    report.to.name,
                                    human_bytes(report.size),
                                    secs,
                                    file_path_text(&report)
                                ),
                            );
                        }
                        Err(e) => out.error(Some(&format!("/send {to} {path}")), &e.to_string()),
                    }
                });
            }
            Command::Paths => {
                let paths = client.peer_paths();
                if paths.is_empty() {
                    out.result(
                        json!({"event": "paths", "paths": []}),
                        "* no peer reached yet; /connect <user> opens a path".to_owned(),
                    );
                } else {
                    let text = paths.iter().map(path_text).collect::<Vec<_>>().join("\n");
                    out.result(
                        json!({"event": "paths", "paths": paths.iter().map(path_json).collect::<Vec<_>>()}),
                        text,
                    );
                }
            }
            Command::Help => out.result(json!({"event": "help", "text": HELP}), HELP.to_owned()),
            // Handled by the caller; anything newer is not for this program to guess.
            _ => return Err("not supported by this program".to_owned()),
        }
        Ok(())
    }
}

/// How a file went: "direct over quic://…", "through the server (why not directly)", "held by
/// the server until they return".
fn file_path_text(report: &chat_client::FileReport) -> String {
    let why = report
        .why_not_direct
        .as_deref()
        .map(|why| format!(": {}", printable(why)))
        .unwrap_or_default();
    match (report.path, &report.endpoint) {
        (chat_api::Path::Direct, Some(endpoint)) => format!("direct over {endpoint}"),
        (chat_api::Path::Stored, _) => format!("held by the server until they return{why}"),
        _ => format!("through the server{why}"),
    }
}

/// A peer path as JSON (the `/connect` event, and each of `/paths`).
fn path_json(path: &PeerPath) -> serde_json::Value {
    json!({
        "event": "path",
        "user": path.to.name,
        "user_id": path.to.id,
        "path": path_name(path.path),
        "endpoint": path.endpoint,
        "why": path.why,
        "took_ms": u64::try_from(path.took.as_millis()).unwrap_or(u64::MAX),
        "datagrams": path.datagrams,
    })
}

/// A peer path as a line: "* bob: direct over quic://… (how; 412 ms, 2,110 datagrams)".
fn path_text(path: &PeerPath) -> String {
    let over = path
        .endpoint
        .as_deref()
        .map(|e| format!(" over {e}"))
        .unwrap_or_default();
    format!(
        "* {}: {}{over} ({}; {} ms, {} hole-punching datagrams)",
        printable(&path.to.name),
        path_name(path.path),
        printable(&path.why),
        path.took.as_millis(),
        path.datagrams
    )
}

/// "1 member", "3 members".
fn members(count: u32) -> String {
    match count {
        1 => "1 member".to_owned(),
        n => format!("{n} members"),
    }
}

/// A room in JSON, as `/rooms`, `/myrooms` and `/create` give it.
fn room_json(room: &RoomInfo) -> Value {
    json!({
        "name": room.name,
        "member_count": room.member_count,
        "owner_id": room.owner,
        "access": match room.access {
            Access::Open => "open",
            Access::InviteOnly => "invite-only",
        },
        "membership": match room.membership {
            Membership::Owner => "owner",
            Membership::Member => "member",
            Membership::Invited => "invited",
            Membership::Outsider => "outsider",
        },
    })
}

/// A room as a line: `* #team (3 members; invite-only; you own it)`.
fn room_line(room: &RoomInfo) -> String {
    let mut notes = vec![members(room.member_count)];
    if room.access == Access::InviteOnly {
        notes.push("invite-only".to_owned());
    }
    match room.membership {
        Membership::Owner => notes.push("you own it".to_owned()),
        Membership::Member => notes.push("you are in it".to_owned()),
        Membership::Invited => notes.push(format!("you are invited: /join {}", room.name)),
        Membership::Outsider => {}
    }
    format!("* #{} ({})", room.name, notes.join("; "))
}

fn friend_state(state: FriendState) -> &'static str {
    match state {
        FriendState::Friends => "friends",
        FriendState::RequestSent => "request-sent",
        FriendState::RequestReceived => "request-received",
    }
}

/// `/friends` for people: one aligned line each.
fn friends_table(friends: &[Friend]) -> String {
    if friends.is_empty() {
        return "* no friends yet; /friend <user> asks someone".to_owned();
    }
    let width = friends
        .iter()
        .map(|f| f.user.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = format!("* {} friends and requests:", friends.len());
    for f in friends {
        let state = match f.state {
            FriendState::Friends if f.online => "online".to_owned(),
            FriendState::Friends => "offline".to_owned(),
            FriendState::RequestSent => "asked by you".to_owned(),
            FriendState::RequestReceived => format!("asks you: /accept {}", f.user.name),
        };
        text.push_str(&format!("\n  {}  {state}", pad(&f.user.name, width)));
    }
    text
}

/// `/who` for people: a line per user, the columns aligned, ids left to `/whois`.
fn who_table(users: &[UserInfo], me: Uuid) -> String {
    let name = |u: &UserInfo| {
        if u.id == me {
            format!("{} (you)", u.name)
        } else {
            u.name.clone()
        }
    };
    let names: Vec<String> = users.iter().map(name).collect();
    let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let seen = users
        .iter()
        .map(|u| u.observed.chars().count())
        .max()
        .unwrap_or(0);
    let mut text = format!("* {} online:", users.len());
    for (user, name) in users.iter().zip(&names) {
        let peer = user.advertised.as_deref().unwrap_or("no direct messages");
        text.push_str(&format!(
            "\n  {}  {}  {peer}",
            pad(name, width),
            pad(&user.observed, seen)
        ));
    }
    text
}

/// `text` followed by spaces up to `width` characters.
fn pad(text: &str, width: usize) -> String {
    let fill = width.saturating_sub(text.chars().count());
    format!("{text}{}", " ".repeat(fill))
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

/// A file's progress on the prompt line of a terminal, at most ten times a second; nothing
/// elsewhere (the end is reported as a line of its own).
struct ProgressBar {
    out: Output,
    name: String,
    started: std::time::Instant,
    last: Mutex<Option<std::time::Instant>>,
}

impl ProgressBar {
    fn new(out: Output, path: &str) -> Self {
        let name = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_owned());
        ProgressBar {
            out,
            name,
            started: std::time::Instant::now(),
            last: Mutex::new(None),
        }
    }

    fn show(&self, sent: u64, size: u64) {
        if !self.out.tty {
            return;
        }
        let now = std::time::Instant::now();
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| now.duration_since(at) < Duration::from_millis(100))
                && sent < size
            {
                return;
            }
            *last = Some(now);
        }
        const WIDTH: u64 = 24;
        let filled = (sent * WIDTH).checked_div(size).unwrap_or(WIDTH);
        let percent = (sent * 100).checked_div(size).unwrap_or(100);
        let rate = sent as f64 / now.duration_since(self.started).as_secs_f64().max(1e-3) / 1e6;
        let bar: String = (0..WIDTH)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        self.out.status(&format!(
            "{} [{bar}] {percent:>3}% {} / {}  {rate:.1} MB/s",
            printable(&self.name),
            human_bytes(sent),
            human_bytes(size)
        ));
    }
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

    /// Shows `line` in place of the prompt (a terminal only), until the next line or prompt.
    fn status(&self, line: &str) {
        if self.tty {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "\r\x1b[2K{line}");
            let _ = stdout.flush();
        }
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

/// The device key kept in `path` (64 hex digits), made and saved (owner-only) when missing.
fn device_key(path: &Path) -> anyhow::Result<rpc_core::transport::quic::Identity> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = text.trim();
            let mut secret = [0u8; 32];
            if text.len() != 64 || !text.is_ascii() {
                anyhow::bail!("{}: not a device key (64 hex digits)", path.display());
            }
            for (i, byte) in secret.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).with_context(|| {
                    format!("{}: not a device key (64 hex digits)", path.display())
                })?;
            }
            rpc_core::transport::quic::Identity::from_secret_bytes(secret)
                .with_context(|| format!("{}: unusable device key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity =
                rpc_core::transport::quic::Identity::generate().context("making a device key")?;
            let hex: String = identity
                .secret_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            std::io::Write::write_all(&mut file, format!("{hex}\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(identity)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
