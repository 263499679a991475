//! Serves the chat signaling service until Ctrl-C or SIGTERM, then shuts down gracefully.

/// The allocator that keeps a long-running server's memory flat as clients come and go (see
/// docs/BENCHMARKS.md, "Memory under attack"); without the `jemalloc` feature, the system's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chat_server::page::{MIN_PAGE_BYTES, PAGE_EXPANSION};
use chat_server::store::{PgStore, Store};
use chat_server::{ChatServer, ChatServerConfig};
use clap::Parser;
use rpc_core::Endpoint;
use rpc_registry::{Registry, RemoteRegistry};

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
    /// Where to listen: tcp://host:port, unix:///path or mem://name. Repeat for several.
    #[arg(long, default_value = ChatServerConfig::DEFAULT_LISTEN)]
    listen: Vec<Endpoint>,
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
    /// Where presence is kept: `embedded` (an in-process registry), or the endpoint of a
    /// registry server (e.g. tcp://127.0.0.1:7100, see `registry-server`) to share presence
    /// with other chat servers.
    #[arg(long, default_value = "embedded")]
    registry: String,
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
    /// How long calls in flight may take to finish at shutdown, in seconds (0 to 3600).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3600))]
    grace: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_server::init_logging();
    let args = Args::parse();
    let stop = chat_server::shutdown_signal()?;
    let mut config = ChatServerConfig::new(&args.data_dir)
        .with_presence_ttl(Duration::from_secs(args.presence_ttl_secs));
    config.listen = args.listen;
    config.advertise = args.advertise;
    config.room_history = usize::try_from(args.room_history)?;
    config.max_pending = args.max_pending;
    config.max_rooms_created = args.max_rooms_created;
    config.max_rooms_joined = args.max_rooms_joined;
    config.max_room_members = args.max_room_members;
    config.max_page_items = usize::try_from(args.max_page_items)?;
    config.max_page_bytes = usize::try_from(args.max_page_bytes)?;
    config.registry = match args.registry.as_str() {
        "embedded" => None,
        endpoint => {
            let endpoint: Endpoint = endpoint
                .parse()
                .map_err(|e| anyhow::anyhow!("--registry {endpoint:?}: {e}"))?;
            Some(Arc::new(RemoteRegistry::connect_lazy(&endpoint)?) as Arc<dyn Registry>)
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
    let server = ChatServer::start(config).await?;
    for endpoint in server.endpoints() {
        println!("chat-server listening on {endpoint}");
    }
    println!("chat-server data in {data}");
    let signal = stop.await;
    println!(
        "{signal}: draining, calls in flight have {} s to finish",
        args.grace
    );
    server.shutdown(Duration::from_secs(args.grace)).await;
    println!("chat-server stopped");
    Ok(())
}
