//! Serves the chat signaling service until Ctrl-C or SIGTERM, then shuts down gracefully.

/// The allocator that keeps a long-running server's memory flat as clients come and go (see
/// docs/BENCHMARKS.md, "Memory under attack"); without the `jemalloc` feature, the system's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chat_server::page::{MIN_PAGE_BYTES, PAGE_EXPANSION};
use chat_server::store::{PgStore, Store};
use chat_server::{ChatServer, ChatServerConfig, PasswordHashing, StunConfig};
use clap::Parser;
use rpc_core::Endpoint;
use rpc_core::metrics::Metrics;
use rpc_core::tls::{ClientTls, ServerTls};
use rpc_registry::{Registry, RemoteRegistry};

/// `println!` for what the program tells whoever started it: a stdout that nobody reads any more
/// (a closed pipe) is no reason to stop serving, so a line that cannot be written is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Serves `chat.Signal`: users register a UUID, a display name and the endpoint of their own
/// chat peer; the server records the address it saw them come from, keeps them online while
/// they heartbeat, lets them look each other up, relays messages (storing them for users who are
/// offline until they acknowledge them) and runs rooms.
///
/// Messages awaiting delivery, the secrets user ids are bound to and the rooms' last posts are
/// kept in one database file (`chat.redb`) in the data directory, so they survive a restart or
/// a crash; or, with `--store postgres://...`, in a PostgreSQL database that several chat
/// servers can share, so that a user's messages reach them whichever server they reconnect to.
/// On Ctrl-C or SIGTERM the server stops accepting, finishes the calls in flight and exits.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where to listen: tcp://host:port, tls://host:port, ws://host:port/path,
    /// wss://host:port/path, quic://host:port, unix:///path or mem://name. Repeat for several.
    /// tls:// and wss:// need --tls-cert and --tls-key.
    #[arg(long, default_value = ChatServerConfig::DEFAULT_LISTEN)]
    listen: Vec<Endpoint>,
    /// The certificate chain (PEM, leaf first, as an ACME client's fullchain.pem) of the
    /// tls:// and wss:// endpoints; with --web, the web chat is then served over HTTPS and
    /// talks to a wss:// endpoint.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) to trust, instead of the Mozilla root store, for the connections
    /// this server makes over tls:// or wss:// (to a registry server, to other nodes).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The directory of the database file (chat.redb); created if missing. Unused with a
    /// PostgreSQL --store.
    #[arg(long, default_value = "chat-data")]
    data_dir: PathBuf,
    /// Where messages, identities and rooms are kept: `redb` (the file chat.redb in
    /// --data-dir), or the URL of a PostgreSQL database, e.g.
    /// postgres://chat@127.0.0.1:5432/chat (its tables are created if missing; no TLS).
    #[arg(long, default_value = "redb")]
    store: String,
    /// How long to wait for PostgreSQL at startup, in seconds (0 to 3600): the server retries
    /// with backoff, saying so, so it may start before its database.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    store_wait_secs: u64,
    /// Where presence and the list of nodes are kept: `embedded` (an in-process registry),
    /// the endpoint of a registry server (e.g. tcp://127.0.0.1:7100, see `registry-server`), or
    /// etcd directly: etcd://host:port, several members separated by commas
    /// (etcd://10.0.0.1:2379,10.0.0.2:2379; needs a build with `--features etcd`). Chat
    /// servers sharing a registry (and a PostgreSQL --store) are nodes of one chat service.
    #[arg(long, default_value = "embedded")]
    registry: String,
    /// The key prefix in etcd, with an etcd:// --registry; the chat servers of one service
    /// must use the same.
    #[arg(long, default_value = "/chat/registry/")]
    etcd_prefix: String,
    /// How long to wait for etcd at startup, in seconds (0 to 3600; with an etcd:// --registry):
    /// the server retries with backoff, saying so, so it may start before etcd.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    registry_wait_secs: u64,
    /// An endpoint clients should use to reach this server, registered in the registry as a
    /// node of chat.Signal (repeat for several). Default: the endpoints it listens on.
    #[arg(long)]
    advertise: Vec<String>,
    /// Seconds without a heartbeat after which a user is dropped and everyone sees them leave
    /// (1 to 3600). Clients are told to heartbeat every third of it.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    presence_ttl_secs: u64,
    /// How many posts each room keeps for `history` (1 to 100000).
    #[arg(
        long,
        default_value_t = ChatServerConfig::DEFAULT_ROOM_HISTORY as u64,
        value_parser = clap::value_parser!(u64).range(1..=ChatServerConfig::MAX_ROOM_HISTORY as u64),
    )]
    room_history: u64,
    /// How many messages may wait for one user (stored while they are offline, or not yet
    /// acknowledged), 1 to 1000000. Past it, relays to them are refused with a "quota
    /// reached" error their senders see; the messages already waiting are all kept.
    #[arg(
        long,
        default_value_t = ChatServerConfig::DEFAULT_MAX_PENDING,
        value_parser = clap::value_parser!(u64).range(1..=ChatServerConfig::MAX_PENDING_LIMIT),
    )]
    max_pending: u64,
    /// How many rooms one user may make, ever (1 to 1000000): by creating them, or by joining
    /// rooms that did not exist.
    #[arg(
        long,
        default_value_t = ChatServerConfig::DEFAULT_MAX_ROOMS_CREATED,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(ChatServerConfig::MAX_QUOTA)),
    )]
    max_rooms_created: u32,
    /// The largest file the server holds for a user who cannot take it directly (offline, or
    /// behind a NAT no direct path crosses), in MiB (0: files go peer to peer only).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=65536))]
    max_held_file_mb: u64,
    /// How many MiB of files the server holds for one user at once, at least
    /// --max-held-file-mb.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=1 << 30))]
    held_files_mb: u64,
    /// How long a held file lasts after it was last written, in hours (1 to 8784), downloaded
    /// or not: then the server deletes it.
    #[arg(long, default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=8784))]
    file_ttl_hours: u64,
    /// How many rooms one user may be a member of at once (1 to 1000000); membership lasts
    /// until the member leaves or is removed.
    #[arg(
        long,
        default_value_t = ChatServerConfig::DEFAULT_MAX_ROOMS_JOINED,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(ChatServerConfig::MAX_QUOTA)),
    )]
    max_rooms_joined: u32,
    /// How many members one room may have (1 to 1000000).
    #[arg(
        long,
        default_value_t = ChatServerConfig::DEFAULT_MAX_ROOM_MEMBERS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(ChatServerConfig::MAX_QUOTA)),
    )]
    max_room_members: u32,
    /// The most items in one page of a list (who is online, rooms, a room's members or
    /// history), whatever a client asks for (1 to 10000).
    #[arg(
        long,
        default_value_t = ChatServerConfig::DEFAULT_MAX_PAGE_ITEMS as u64,
        value_parser = clap::value_parser!(u64).range(1..=ChatServerConfig::MAX_PAGE_ITEMS_LIMIT as u64),
    )]
    max_page_items: u64,
    /// The byte budget of one page of a list: a page stops before the content of its items
    /// passes it, but always holds one item (8192 to 524288, an eighth of the 4 MiB frame
    /// limit).
    #[arg(
        long,
        default_value_t = ChatServerConfig::DEFAULT_MAX_PAGE_BYTES as u64,
        value_parser = clap::value_parser!(u64).range(
            MIN_PAGE_BYTES as u64..=(ChatServerConfig::DEFAULT_MAX_FRAME_LEN / PAGE_EXPANSION) as u64
        ),
    )]
    max_page_bytes: u64,
    /// How many friends and friend requests (sent or received) one user may have (1 to
    /// 1000000). Past it, on either side, requests are refused with a "quota reached" error.
    #[arg(
        long,
        default_value_t = ChatServerConfig::DEFAULT_MAX_FRIENDS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(ChatServerConfig::MAX_QUOTA)),
    )]
    max_friends: u32,
    /// How long a call may ring before it ends as missed, in seconds (1 to 600).
    #[arg(long, default_value_t = chat_api::CALL_ANSWER_SECS, value_parser = clap::value_parser!(u64).range(1..=600))]
    call_answer_secs: u64,
    /// Serve the web chat at this address (host:port), e.g. 127.0.0.1:8080: open
    /// http://127.0.0.1:8080/ in a browser. Browsers talk to the server over its first ws://
    /// --listen endpoint; without one, a ws:// endpoint on this host and a free port is added.
    #[arg(long, value_name = "ADDR")]
    web: Option<SocketAddr>,
    /// Serve Prometheus metrics over HTTP at this address (host:port), e.g. 127.0.0.1:9100:
    /// GET /metrics (calls, latencies, connections, bytes, users online, messages by path,
    /// messages waiting, calls in progress).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// The memory of one password hash (argon2id), in KiB (8 to 4194304, and at least 8 per
    /// lane). Existing passwords keep working when it changes; they are hashed again with the
    /// new settings when their users sign in.
    #[arg(
        long,
        default_value_t = PasswordHashing::default().memory_kib,
        value_parser = clap::value_parser!(u32).range(
            i64::from(PasswordHashing::MIN_MEMORY_KIB)..=i64::from(PasswordHashing::MAX_MEMORY_KIB)
        ),
    )]
    password_memory_kib: u32,
    /// The passes of one password hash over its memory (1 to 100).
    #[arg(
        long,
        default_value_t = PasswordHashing::default().iterations,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(PasswordHashing::MAX_ITERATIONS)),
    )]
    password_iterations: u32,
    /// The lanes of one password hash (1 to 64).
    #[arg(
        long,
        default_value_t = PasswordHashing::default().parallelism,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(PasswordHashing::MAX_PARALLELISM)),
    )]
    password_parallelism: u32,
    /// Serve STUN (RFC 8489 Binding, with RFC 5780's NAT behaviour discovery) on UDP at this
    /// address and port, e.g. 0.0.0.0:3478, and on the alternate port; clients learn their
    /// public address and NAT type from it (`rendezvous`). Off unless given.
    #[arg(long, value_name = "ADDR:PORT")]
    stun: Option<SocketAddr>,
    /// The STUN alternate port (default: the --stun port + 1).
    #[arg(long, requires = "stun")]
    stun_alt_port: Option<u16>,
    /// The host's second address, for RFC 5780's "change IP" tests: STUN listens on both ports
    /// there too (--stun must then be a specific address).
    #[arg(long, requires = "stun", value_name = "IP")]
    stun_alt_ip: Option<IpAddr>,
    /// The host (name or IP) clients are told to send STUN to. Default: the --stun IP unless it
    /// is 0.0.0.0 or ::, else the host of the first --advertise (or --listen) endpoint.
    #[arg(long, requires = "stun", value_name = "HOST")]
    stun_advertise: Option<String>,
    /// How long calls in flight may take to finish at shutdown, in seconds (0 to 3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    grace: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_server::init_logging();
    let args = Args::parse();
    let mut stop = Box::pin(chat_server::shutdown_signal()?);
    let mut config = ChatServerConfig::new(&args.data_dir)
        .with_presence_ttl(Duration::from_secs(args.presence_ttl_secs));
    config.listen = args.listen;
    config.advertise = args.advertise;
    config.room_history = usize::try_from(args.room_history)?;
    config.max_pending = args.max_pending;
    config.max_rooms_created = args.max_rooms_created;
    config.max_held_file = args.max_held_file_mb << 20;
    config.held_files_quota = args.held_files_mb << 20;
    config.file_ttl = Duration::from_secs(args.file_ttl_hours * 3600);
    config.max_rooms_joined = args.max_rooms_joined;
    config.max_room_members = args.max_room_members;
    config.max_page_items = usize::try_from(args.max_page_items)?;
    config.max_page_bytes = usize::try_from(args.max_page_bytes)?;
    config.max_friends = args.max_friends;
    config.call_answer = Duration::from_secs(args.call_answer_secs);
    config.web = args.web;
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(ServerTls::from_pem_files(cert, key).context("--tls-cert/--tls-key")?);
    }
    if let Some(ca) = &args.tls_ca {
        config.client_tls = Some(ClientTls::with_ca_pem_file(ca).context("--tls-ca")?);
    }
    config.password_hashing.memory_kib = args.password_memory_kib;
    config.password_hashing.iterations = args.password_iterations;
    config.password_hashing.parallelism = args.password_parallelism;
    config.stun = args.stun.map(|primary| {
        let mut stun = StunConfig::new(primary);
        stun.alternate_port = args.stun_alt_port;
        stun.alternate_ip = args.stun_alt_ip;
        stun.advertise = args.stun_advertise.clone();
        stun
    });
    if let Err(e) = config.check() {
        // A usage error, like the ranges clap checks: the lanes need memory.
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let presence = match args.registry.as_str() {
        "embedded" => "this process".to_owned(),
        url if url.starts_with("etcd://") => format!("etcd at {}", &url["etcd://".len()..]),
        endpoint => format!("the registry server at {endpoint}"),
    };
    config.registry = match args.registry.as_str() {
        "embedded" => None,
        url if url.starts_with("etcd://") => {
            let members = etcd_members(url)?;
            let wait = Duration::from_secs(args.registry_wait_secs);
            tokio::select! {
                registry = etcd(members, &args.etcd_prefix, wait) => Some(registry?),
                signal = &mut stop => {
                    say!("{signal}: stopping before etcd answered");
                    return Ok(());
                }
            }
        }
        endpoint => {
            let endpoint: Endpoint = endpoint
                .parse()
                .map_err(|e| anyhow::anyhow!("--registry {endpoint:?}: {e}"))?;
            let mut client = rpc_core::Client::builder();
            if let Some(tls) = &config.client_tls {
                client = client.tls(tls.clone());
            }
            let client = client.connect_lazy(&endpoint)?;
            Some(Arc::new(RemoteRegistry::new(client)) as Arc<dyn Registry>)
        }
    };
    let data = match args.store.as_str() {
        "redb" => args.data_dir.display().to_string(),
        url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let wait = Duration::from_secs(args.store_wait_secs);
            let store = PgStore::connect_within(url, wait)
                .await
                .map_err(|e| anyhow::anyhow!("--store: {e}"))?;
            let description = format!("PostgreSQL at {}", store.database());
            config.store = Some(Arc::new(store) as Arc<dyn Store>);
            description
        }
        other => anyhow::bail!("--store {other:?}: expected `redb` or a postgres:// URL"),
    };
    let metrics_server = match args.metrics {
        Some(addr) => {
            let metrics = Metrics::new();
            config.metrics = Some(metrics.clone());
            Some(metrics.serve(addr).await.context("--metrics")?)
        }
        None => None,
    };
    let server = ChatServer::start(config).await?;
    for endpoint in server.endpoints() {
        say!("chat-server listening on {endpoint}");
    }
    if let [primary, alternate, more @ ..] = server.stun_addresses() {
        let second = match more {
            [p, q] => format!(", {p} and {q}"),
            _ => String::new(),
        };
        let advertised = server.stun_advertised().map_or_else(
            || " (not advertised)".to_owned(),
            |a| format!(", advertised as {a}"),
        );
        say!("chat-server stun on udp {primary} and {alternate}{second}{advertised}");
    }
    if let Some(web) = server.web_address() {
        let scheme = if args.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        say!("web chat on {scheme}://{web}/");
    }
    if let Some(metrics_server) = &metrics_server {
        say!("metrics on http://{}/metrics", metrics_server.local_addr());
    }
    say!("chat-server data in {data}");
    say!("chat-server presence in {presence}");
    let signal = stop.await;
    say!(
        "{signal}: draining, calls in flight have {} s to finish",
        args.grace
    );
    server.shutdown(Duration::from_secs(args.grace)).await;
    say!("chat-server stopped");
    Ok(())
}

/// The client URLs of the etcd members named by an `etcd://host:port[,host:port...]` --registry.
fn etcd_members(url: &str) -> anyhow::Result<Vec<String>> {
    let list = url.strip_prefix("etcd://").unwrap_or(url);
    let members: Vec<String> = list
        .split(',')
        .map(str::trim)
        .map(|member| format!("http://{member}"))
        .collect();
    let bad = |member: &str| {
        let address = member.trim_start_matches("http://");
        address
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    };
    if let Some(member) = members.iter().find(|m| bad(m)) {
        anyhow::bail!(
            "--registry {url:?}: {:?} is not host:port; expected \
             etcd://host:port[,host:port...]",
            member.trim_start_matches("http://")
        );
    }
    Ok(members)
}

/// Connects to etcd, retrying with backoff while it does not answer, for up to `wait`.
#[cfg(feature = "etcd")]
async fn etcd(
    members: Vec<String>,
    prefix: &str,
    wait: Duration,
) -> anyhow::Result<Arc<dyn Registry>> {
    use rpc_core::Backoff;
    use rpc_registry::{EtcdConfig, EtcdRegistry, RegistryError};
    use tokio::time::Instant;

    let endpoints = members.join(", ");
    let mut config = EtcdConfig::new(members);
    config.prefix = prefix.to_owned();
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let deadline = Instant::now() + wait;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let reason = match EtcdRegistry::connect(config.clone()).await {
            Ok(registry) => return Ok(Arc::new(registry)),
            Err(RegistryError::Unavailable(reason)) => reason,
            Err(e) => return Err(anyhow::anyhow!("--registry: etcd at {endpoints}: {e}")),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            anyhow::bail!(
                "--registry: etcd at {endpoints} did not answer within {} s \
                 (--registry-wait-secs): {reason}",
                wait.as_secs()
            );
        }
        // Half the ceiling plus a random half of it: many nodes restarted together do not
        // retry together.
        let ceiling = backoff.ceiling(attempt);
        let delay = (ceiling / 2 + ceiling.mul_f64(fastrand::f64()) / 2).min(left);
        tracing::warn!("waiting for etcd at {endpoints}, retrying in {delay:.1?}: {reason}");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(not(feature = "etcd"))]
async fn etcd(_: Vec<String>, _: &str, _: Duration) -> anyhow::Result<Arc<dyn Registry>> {
    anyhow::bail!(
        "--registry etcd://...: this chat-server was built without etcd; build it with \
         `cargo build -p chat-server --features etcd` (needs protoc), or use a registry-server \
         (--registry tcp://host:port)"
    )
}
