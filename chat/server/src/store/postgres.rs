//! The [`Store`] in a PostgreSQL database, which several chat servers can share: see the
//! schema in the [module's](super) documentation.
//!
//! Each operation takes a connection from a small pool and runs in one transaction; the rows
//! it changes together are serialized by locking one row first (`FOR UPDATE`): the recipient's
//! mailbox for relays and acks, the creator's count for room creation, the room's group row
//! for its membership changes and posts (then the members' mailboxes, in member id order, for
//! the post's fan-out), the recipient's sum of held files for the files begun, deleted and
//! expired for them (before the files' rows), and the file's row for its appends. A connection
//! that fails (the server restarted, the network dropped) is answered
//! [`StoreError::Unavailable`] and replaced by a new one on a later call.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chat_api::{Access, Envelope, FriendState, Page, Sender, now_ms};
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use rpc_core::Backoff;
use tokio::time::Instant;
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row, Transaction};
use tracing::{info, warn};
use uuid::Uuid;

use super::{
    Admission, Binding, FileAppended, FileBegun, FriendAccepted, FriendRequested, HeldFile,
    Invited, Joined, Left, ListedRoom, Mailbox, Posted, Relayed, RoomFilter, RoomQuotas, Store,
    StoreError, StoredRoom, StoredUser, decode, decode_envelope, encode, friend_state,
    friend_state_code, same_file,
};
use crate::page::{PageBuilder, PageLimits};
use crate::password::legacy_credential;
use crate::validate::name_key;

/// How many connections one store opens at most.
const POOL_SIZE: usize = 8;
/// How long opening a connection, or waiting for a free one, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Serializes the schema's creation among servers starting together (`CREATE TABLE IF NOT
/// EXISTS` is not safe to run concurrently).
const SCHEMA_LOCK: i64 = 0x6368_6174_7374_6f72; // "chatstor"

/// The tables, created when a store connects (see the [module's](super) documentation).
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS chat_users (
    id UUID PRIMARY KEY,
    name TEXT NOT NULL,
    credential TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_names (
    key TEXT PRIMARY KEY,
    id UUID NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_friends (
    user_id UUID NOT NULL,
    other UUID NOT NULL,
    state SMALLINT NOT NULL,
    PRIMARY KEY (user_id, other)
);
CREATE TABLE IF NOT EXISTS chat_mailboxes (
    recipient UUID PRIMARY KEY,
    last_seq BIGINT NOT NULL,
    pending BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_pending (
    recipient UUID NOT NULL,
    seq BIGINT NOT NULL,
    envelope BYTEA NOT NULL,
    PRIMARY KEY (recipient, seq)
);
CREATE TABLE IF NOT EXISTS chat_message_ids (
    recipient UUID NOT NULL,
    message_id UUID NOT NULL,
    seq BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (recipient, message_id)
);
CREATE TABLE IF NOT EXISTS chat_rooms (
    name TEXT PRIMARY KEY,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_rooms_created (
    creator UUID PRIMARY KEY,
    made BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_room_heads (
    room TEXT PRIMARY KEY,
    last_number BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_room_posts (
    room TEXT NOT NULL,
    number BIGINT NOT NULL,
    envelope BYTEA NOT NULL,
    PRIMARY KEY (room, number)
);
CREATE TABLE IF NOT EXISTS chat_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_room_post_ids (
    room TEXT NOT NULL,
    message_id UUID NOT NULL,
    number BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (room, message_id)
);
CREATE TABLE IF NOT EXISTS chat_room_groups (
    room TEXT PRIMARY KEY,
    owner UUID NOT NULL,
    invite_only BOOLEAN NOT NULL,
    member_count BIGINT NOT NULL,
    next_join BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_room_members (
    room TEXT NOT NULL,
    member UUID NOT NULL,
    joined BIGINT NOT NULL,
    PRIMARY KEY (room, member)
);
CREATE INDEX IF NOT EXISTS chat_room_members_by_member ON chat_room_members (member);
CREATE TABLE IF NOT EXISTS chat_room_invites (
    invitee UUID NOT NULL,
    room TEXT NOT NULL,
    PRIMARY KEY (invitee, room)
);
CREATE TABLE IF NOT EXISTS chat_rooms_joined (
    member UUID PRIMARY KEY,
    joined BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_files (
    id UUID PRIMARY KEY,
    sender UUID NOT NULL,
    recipient UUID NOT NULL,
    record BYTEA NOT NULL,
    size BIGINT NOT NULL,
    received BIGINT NOT NULL,
    touched_ms BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_files_by_touched ON chat_files (touched_ms);
CREATE TABLE IF NOT EXISTS chat_file_pieces (
    file_id UUID NOT NULL REFERENCES chat_files (id) ON DELETE CASCADE,
    start BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (file_id, start)
);
CREATE TABLE IF NOT EXISTS chat_files_held (
    recipient UUID PRIMARY KEY,
    held BIGINT NOT NULL
);
"#;

/// The store in a PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    /// Where the database is, for the log (the URL without its password).
    target: String,
    closed: AtomicBool,
    /// Whether the last operation reached the database.
    healthy: AtomicBool,
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/dbname`, or the
    /// `key=value` form of libpq) and creates the tables that are missing. Fails with
    /// [`StoreError::Unavailable`] if the database does not answer, and
    /// [`StoreError::Database`] if the URL is not one or the database refuses the schema.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Database(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database(format!("connection pool: {e}")))?;
        let store = PgStore {
            pool,
            target,
            closed: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
        };
        store.create_schema().await?;
        Ok(store)
    }

    /// [`PgStore::connect`], tried again with a growing pause while the database does not
    /// answer, for up to `wait`, saying so in the log: a server may start before its database.
    pub async fn connect_within(url: &str, wait: Duration) -> Result<PgStore, StoreError> {
        let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let deadline = Instant::now() + wait;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reason = match PgStore::connect(url).await {
                Ok(store) => {
                    if attempt > 1 {
                        info!(attempt, "connected to {}", store.target);
                    }
                    return Ok(store);
                }
                Err(StoreError::Unavailable(reason)) => reason,
                Err(e) => return Err(e),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Unavailable(format!(
                    "PostgreSQL did not answer within {} s: {reason}",
                    wait.as_secs()
                )));
            }
            // Half the ceiling plus a random half of it: servers restarted together do not
            // retry together.
            let ceiling = backoff.ceiling(attempt);
            let delay = (ceiling / 2 + ceiling.mul_f64(fastrand::f64()) / 2).min(left);
            warn!("waiting for PostgreSQL, retrying in {delay:.1?}: {reason}");
            tokio::time::sleep(delay).await;
        }
    }

    /// Where the database is: `host:port/dbname` (the URL without its user and password).
    pub fn database(&self) -> &str {
        &self.target
    }

    async fn create_schema(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(pg)?;
        txn.batch_execute(SCHEMA).await.map_err(pg)?;
        migrate(&txn).await?;
        txn.commit().await.map_err(pg)
    }

    /// A connection from the pool, unless the store is closed.
    async fn client(&self) -> Result<Object, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => pg(e),
            PoolError::Closed => StoreError::Closed,
            e => StoreError::Unavailable(e.to_string()),
        })
    }

    /// Records whether the database answered, logging the changes.
    fn track<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Err(StoreError::Unavailable(e)) => {
                if self.healthy.swap(false, Ordering::AcqRel) {
                    warn!("PostgreSQL at {} is unavailable: {e}", self.target);
                }
            }
            Err(StoreError::Closed) => {}
            _ => {
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    info!("PostgreSQL at {} answers again", self.target);
                }
            }
        }
        result
    }

    async fn bind_in(
        &self,
        id: Uuid,
        name: &str,
        credential: &str,
        expected: Option<&str>,
    ) -> Result<Binding, StoreError> {
        let key = name_key(name);
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let existing = txn
            .query_opt(
                "SELECT name, credential FROM chat_users WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(pg)?
            .map(|row| stored_user(&row));
        if existing.as_ref().map(|user| user.credential.as_str()) != expected {
            return Ok(Binding::Stale);
        }
        // A name being reserved by another transaction waits for it, then is seen here.
        txn.execute(
            "INSERT INTO chat_names (key, id) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&key, &id],
        )
        .await
        .map_err(pg)?;
        let owner: Uuid = txn
            .query_one("SELECT id FROM chat_names WHERE key = $1", &[&key])
            .await
            .map_err(pg)?
            .get(0);
        if owner != id {
            return Ok(Binding::NameTaken);
        }
        let binding = match existing {
            None => {
                let inserted = txn
                    .execute(
                        "INSERT INTO chat_users (id, name, credential) VALUES ($1, $2, $3) \
                         ON CONFLICT (id) DO NOTHING",
                        &[&id, &name, &credential],
                    )
                    .await
                    .map_err(pg)?;
                if inserted == 0 {
                    // Made by another server since it was read.
                    return Ok(Binding::Stale);
                }
                Binding::Created
            }
            Some(old) => {
                let old_key = name_key(&old.name);
                if old_key != key {
                    txn.execute(
                        "DELETE FROM chat_names WHERE key = $1 AND id = $2",
                        &[&old_key, &id],
                    )
                    .await
                    .map_err(pg)?;
                }
                txn.execute(
                    "UPDATE chat_users SET name = $2, credential = $3 WHERE id = $1",
                    &[&id, &name, &credential],
                )
                .await
                .map_err(pg)?;
                Binding::Updated
            }
        };
        txn.commit().await.map_err(pg)?;
        Ok(binding)
    }

    async fn user_in(&self, id: Uuid) -> Result<Option<StoredUser>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT name, credential FROM chat_users WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg)?;
        Ok(row.as_ref().map(stored_user))
    }

    async fn user_by_name_in(&self, name: &str) -> Result<Option<(Uuid, StoredUser)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT u.id, u.name, u.credential FROM chat_names n \
                 JOIN chat_users u ON u.id = n.id WHERE n.key = $1",
                &[&name_key(name)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|row| {
            let user = StoredUser {
                name: row.get(1),
                credential: row.get(2),
            };
            (row.get(0), user)
        }))
    }

    async fn request_friend_in(
        &self,
        from: Uuid,
        to: Uuid,
        max: u64,
    ) -> Result<FriendRequested, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        if lock_pair(&txn, from, to).await? < 2 {
            return Ok(FriendRequested::UnknownUser);
        }
        match standing(&txn, from, to).await? {
            Some(FriendState::RequestReceived) => {
                set_pair(&txn, from, to, FriendState::Friends, FriendState::Friends).await?;
                txn.commit().await.map_err(pg)?;
                return Ok(FriendRequested::Accepted);
            }
            Some(state) => return Ok(FriendRequested::Unchanged(state)),
            None => {}
        }
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        for (user, requester) in [(from, true), (to, false)] {
            let count: i64 = txn
                .query_one(
                    "SELECT count(*) FROM chat_friends WHERE user_id = $1",
                    &[&user],
                )
                .await
                .map_err(pg)?
                .get(0);
            if count >= max {
                return Ok(FriendRequested::QuotaReached { requester });
            }
        }
        set_pair(
            &txn,
            from,
            to,
            FriendState::RequestSent,
            FriendState::RequestReceived,
        )
        .await?;
        txn.commit().await.map_err(pg)?;
        Ok(FriendRequested::Requested)
    }

    async fn accept_friend_in(&self, user: Uuid, from: Uuid) -> Result<FriendAccepted, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        lock_pair(&txn, user, from).await?;
        let accepted = match standing(&txn, user, from).await? {
            Some(FriendState::RequestReceived) => {
                set_pair(&txn, user, from, FriendState::Friends, FriendState::Friends).await?;
                FriendAccepted::Accepted
            }
            Some(FriendState::Friends) => FriendAccepted::AlreadyFriends,
            Some(FriendState::RequestSent) | None => FriendAccepted::NoRequest,
        };
        txn.commit().await.map_err(pg)?;
        Ok(accepted)
    }

    async fn unfriend_in(
        &self,
        user: Uuid,
        other: Uuid,
    ) -> Result<Option<FriendState>, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        lock_pair(&txn, user, other).await?;
        let state = standing(&txn, user, other).await?;
        txn.execute(
            "DELETE FROM chat_friends WHERE (user_id = $1 AND other = $2) \
             OR (user_id = $2 AND other = $1)",
            &[&user, &other],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        Ok(state)
    }

    async fn friends_in(&self, user: Uuid) -> Result<Vec<(Sender, FriendState)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT f.other, u.name, f.state FROM chat_friends f \
                 JOIN chat_users u ON u.id = f.other WHERE f.user_id = $1",
                &[&user],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                let code: i16 = row.get(2);
                let state = friend_state(u8::try_from(code).unwrap_or(u8::MAX))?;
                let sender = Sender {
                    id: row.get(0),
                    name: row.get(1),
                };
                Ok((sender, state))
            })
            .collect()
    }

    async fn relay_in(
        &self,
        to: Uuid,
        envelope: &Envelope,
        max_pending: u64,
    ) -> Result<Relayed, StoreError> {
        let bytes = encode(envelope)?;
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let known = txn
            .query_opt("SELECT 1 FROM chat_users WHERE id = $1", &[&to])
            .await
            .map_err(pg)?;
        if known.is_none() {
            return Ok(Relayed::UnknownRecipient);
        }
        // The mailbox's row is the lock that orders the relays and acks of one recipient.
        let row = lock_row(
            &txn,
            "INSERT INTO chat_mailboxes (recipient, last_seq, pending) VALUES ($1, 0, 0) \
             ON CONFLICT (recipient) DO NOTHING",
            "SELECT last_seq, pending FROM chat_mailboxes WHERE recipient = $1 FOR UPDATE",
            &to,
        )
        .await?;
        let (last, count): (i64, i64) = (row.get(0), row.get(1));
        let seen = txn
            .query_opt(
                "SELECT seq FROM chat_message_ids WHERE recipient = $1 AND message_id = $2",
                &[&to, &envelope.id],
            )
            .await
            .map_err(pg)?;
        if let Some(seen) = seen {
            let seq: i64 = seen.get(0);
            return Ok(Relayed::Duplicate {
                acknowledged: seq == 0,
            });
        }
        if unsigned(count)? >= max_pending {
            return Ok(Relayed::MailboxFull);
        }
        let seq = last + 1;
        txn.execute(
            "INSERT INTO chat_pending (recipient, seq, envelope) VALUES ($1, $2, $3)",
            &[&to, &seq, &bytes],
        )
        .await
        .map_err(pg)?;
        txn.execute(
            "INSERT INTO chat_message_ids (recipient, message_id, seq, at_ms) \
             VALUES ($1, $2, $3, $4)",
            &[&to, &envelope.id, &seq, &now()],
        )
        .await
        .map_err(pg)?;
        txn.execute(
            "UPDATE chat_mailboxes SET last_seq = $2, pending = pending + 1 \
             WHERE recipient = $1",
            &[&to, &seq],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        Ok(Relayed::Stored {
            seq: unsigned(seq)?,
        })
    }

    async fn mailbox_in(
        &self,
        user: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Mailbox, StoreError> {
        let mut client = self.client().await?;
        // One snapshot: `last_seq` and `messages` are of the same moment.
        let txn = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let last_seq = match txn
            .query_opt(
                "SELECT last_seq FROM chat_mailboxes WHERE recipient = $1",
                &[&user],
            )
            .await
            .map_err(pg)?
        {
            Some(row) => unsigned(row.get(0))?,
            None => 0,
        };
        let mut messages = Vec::new();
        let Ok(after) = i64::try_from(after) else {
            return Ok(Mailbox { messages, last_seq });
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = txn
            .query(
                "SELECT seq, envelope FROM chat_pending WHERE recipient = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3",
                &[&user, &after, &limit],
            )
            .await
            .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        for row in rows {
            let bytes: &[u8] = row.get(1);
            messages.push((unsigned(row.get(0))?, decode_envelope(bytes)?));
        }
        Ok(Mailbox { messages, last_seq })
    }

    async fn ack_in(&self, user: Uuid, ids: &[Uuid]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids = ids.to_vec();
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let mailbox = txn
            .query_opt(
                "SELECT pending FROM chat_mailboxes WHERE recipient = $1 FOR UPDATE",
                &[&user],
            )
            .await
            .map_err(pg)?;
        if mailbox.is_none() {
            return Ok(0);
        }
        let (seqs, waiting): (Vec<i64>, Vec<Uuid>) = txn
            .query(
                "SELECT seq, message_id FROM chat_message_ids \
                 WHERE recipient = $1 AND message_id = ANY($2) AND seq <> 0",
                &[&user, &ids],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| (row.get::<_, i64>(0), row.get::<_, Uuid>(1)))
            .unzip();
        if seqs.is_empty() {
            return Ok(0);
        }
        // The files held for the user under the ids of the messages acknowledged now (as in
        // redb: a message's file goes with it).
        delete_files(
            &txn,
            &[user],
            "DELETE FROM chat_files WHERE recipient = $1 AND id = ANY($2) \
             RETURNING recipient, size",
            &[&user, &waiting],
        )
        .await?;
        txn.execute(
            "DELETE FROM chat_pending WHERE recipient = $1 AND seq = ANY($2)",
            &[&user, &seqs],
        )
        .await
        .map_err(pg)?;
        // The ids stay, marked acknowledged, so that relaying one again is recognised.
        txn.execute(
            "UPDATE chat_message_ids SET seq = 0, at_ms = $3 \
             WHERE recipient = $1 AND message_id = ANY($2) AND seq <> 0",
            &[&user, &ids, &now()],
        )
        .await
        .map_err(pg)?;
        let removed = i64::try_from(seqs.len()).unwrap_or(i64::MAX);
        txn.execute(
            "UPDATE chat_mailboxes SET pending = GREATEST(pending - $2, 0) WHERE recipient = $1",
            &[&user, &removed],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        Ok(seqs.len())
    }

    async fn forget_old_ids_in(&self, max_age_ms: u64) -> Result<u64, StoreError> {
        let cutoff = i64::try_from(now_ms().saturating_sub(max_age_ms)).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let messages = txn
            .execute(
                "DELETE FROM chat_message_ids WHERE seq = 0 AND at_ms < $1",
                &[&cutoff],
            )
            .await
            .map_err(pg)?;
        let posts = txn
            .execute(
                "DELETE FROM chat_room_post_ids WHERE at_ms < $1",
                &[&cutoff],
            )
            .await
            .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        Ok(messages + posts)
    }

    async fn node_secret_in(&self) -> Result<String, StoreError> {
        let client = self.client().await?;
        let made = Uuid::new_v4().simple().to_string();
        // The first server to ask makes it; every later one (even at the same moment) reads it.
        client
            .execute(
                "INSERT INTO chat_meta (key, value) VALUES ('node_secret', $1) \
                 ON CONFLICT (key) DO NOTHING",
                &[&made],
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_one("SELECT value FROM chat_meta WHERE key = 'node_secret'", &[])
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn rooms_in(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                r#"SELECT name FROM chat_rooms ORDER BY name COLLATE "C""#,
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn join_room_in(
        &self,
        room: &str,
        user: Uuid,
        how: Admission,
        quotas: RoomQuotas,
    ) -> Result<Option<Joined>, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let existing = lock_group(&txn, room).await?;
        if existing.is_none() && matches!(how, Admission::Create(_) | Admission::Join) {
            // The maker's count is the lock that orders the rooms one user makes.
            let made: i64 = lock_row(
                &txn,
                "INSERT INTO chat_rooms_created (creator, made) VALUES ($1, 0) \
                 ON CONFLICT (creator) DO NOTHING",
                "SELECT made FROM chat_rooms_created WHERE creator = $1 FOR UPDATE",
                &user,
            )
            .await?
            .get(0);
            if unsigned(made)? >= quotas.max_created {
                return Ok(Some(Joined::TooManyCreated));
            }
        }
        let joined = lock_joined(&txn, user).await?;
        let (mut stored, next, created) = match (existing, how) {
            (Some(_), Admission::Create(_)) => return Ok(Some(Joined::Exists)),
            (None, Admission::AddedBy(_)) => return Ok(Some(Joined::UnknownRoom)),
            (None, _) => {
                let access = match how {
                    Admission::Create(access) => access,
                    _ => Access::Open,
                };
                // Not a room made only to be left empty because its maker may not join it.
                if joined >= quotas.max_joined {
                    return Ok(Some(Joined::TooManyJoined));
                }
                let inserted = txn
                    .execute(
                        "INSERT INTO chat_rooms (name, created_at_ms) VALUES ($1, $2) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&room, &now()],
                    )
                    .await
                    .map_err(pg)?;
                if inserted == 0 {
                    // Another user made it meanwhile: this transaction is rolled back and the
                    // call is tried again, finding the room.
                    return Ok(None);
                }
                txn.execute(
                    "UPDATE chat_rooms_created SET made = made + 1 WHERE creator = $1",
                    &[&user],
                )
                .await
                .map_err(pg)?;
                let stored = StoredRoom {
                    name: room.to_owned(),
                    owner: user,
                    access,
                    member_count: 0,
                };
                (stored, 1, true)
            }
            (Some((stored, next)), _) => (stored, next, false),
        };
        if !created {
            if let Admission::AddedBy(by) = how
                && stored.owner != by
            {
                return Ok(Some(Joined::NotTheOwner));
            }
            let known = txn
                .query_opt("SELECT 1 FROM chat_users WHERE id = $1", &[&user])
                .await
                .map_err(pg)?;
            if known.is_none() {
                return Ok(Some(Joined::UnknownUser));
            }
            let member = txn
                .query_opt(
                    "SELECT 1 FROM chat_room_members WHERE room = $1 AND member = $2",
                    &[&room, &user],
                )
                .await
                .map_err(pg)?;
            if member.is_some() {
                return Ok(Some(Joined::AlreadyMember(stored)));
            }
            let invited = txn
                .query_opt(
                    "SELECT 1 FROM chat_room_invites WHERE room = $1 AND invitee = $2",
                    &[&room, &user],
                )
                .await
                .map_err(pg)?
                .is_some();
            let admitted = stored.access == Access::Open
                || invited
                || stored.owner == user
                || matches!(how, Admission::AddedBy(_));
            if !admitted {
                return Ok(Some(Joined::NotInvited));
            }
            if stored.member_count >= quotas.max_members {
                return Ok(Some(Joined::RoomFull));
            }
            if joined >= quotas.max_joined {
                return Ok(Some(Joined::TooManyJoined));
            }
        }
        let next_join = signed(next)?;
        txn.execute(
            "INSERT INTO chat_room_members (room, member, joined) VALUES ($1, $2, $3)",
            &[&room, &user, &next_join],
        )
        .await
        .map_err(pg)?;
        txn.execute(
            "DELETE FROM chat_room_invites WHERE room = $1 AND invitee = $2",
            &[&room, &user],
        )
        .await
        .map_err(pg)?;
        txn.execute(
            "UPDATE chat_rooms_joined SET joined = joined + 1 WHERE member = $1",
            &[&user],
        )
        .await
        .map_err(pg)?;
        stored.member_count += 1;
        put_group(&txn, &stored, next + 1).await?;
        txn.commit().await.map_err(pg)?;
        Ok(Some(Joined::Joined {
            room: stored,
            created,
        }))
    }

    async fn leave_room_in(
        &self,
        room: &str,
        user: Uuid,
        by: Option<Uuid>,
    ) -> Result<Left, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let Some((mut stored, next)) = lock_group(&txn, room).await? else {
            return Ok(Left::UnknownRoom);
        };
        if by.is_some_and(|by| by != stored.owner) {
            return Ok(Left::NotTheOwner);
        }
        lock_joined(&txn, user).await?;
        let removed = txn
            .execute(
                "DELETE FROM chat_room_members WHERE room = $1 AND member = $2",
                &[&room, &user],
            )
            .await
            .map_err(pg)?;
        if removed == 0 {
            return Ok(Left::NotAMember);
        }
        txn.execute(
            "UPDATE chat_rooms_joined SET joined = GREATEST(joined - 1, 0) WHERE member = $1",
            &[&user],
        )
        .await
        .map_err(pg)?;
        stored.member_count = stored.member_count.saturating_sub(1);
        if stored.owner == user {
            // The longest-standing member takes over; an empty room keeps its owner.
            let heir = txn
                .query_opt(
                    "SELECT member FROM chat_room_members WHERE room = $1 \
                     ORDER BY joined, member LIMIT 1",
                    &[&room],
                )
                .await
                .map_err(pg)?;
            if let Some(heir) = heir {
                stored.owner = heir.get(0);
            }
        }
        put_group(&txn, &stored, next).await?;
        txn.commit().await.map_err(pg)?;
        Ok(Left::Left { room: stored })
    }

    async fn invite_in(&self, room: &str, by: Uuid, user: Uuid) -> Result<Invited, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let Some((stored, _)) = lock_group(&txn, room).await? else {
            return Ok(Invited::UnknownRoom);
        };
        let member = |who: Uuid| {
            let txn = &txn;
            async move {
                txn.query_opt(
                    "SELECT 1 FROM chat_room_members WHERE room = $1 AND member = $2",
                    &[&room, &who],
                )
                .await
                .map_err(pg)
                .map(|row| row.is_some())
            }
        };
        if !member(by).await? {
            return Ok(Invited::NotAMember);
        }
        let known = txn
            .query_opt("SELECT 1 FROM chat_users WHERE id = $1", &[&user])
            .await
            .map_err(pg)?;
        if known.is_none() {
            return Ok(Invited::UnknownUser);
        }
        if member(user).await? {
            return Ok(Invited::AlreadyIn);
        }
        let inserted = txn
            .execute(
                "INSERT INTO chat_room_invites (invitee, room) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&user, &room],
            )
            .await
            .map_err(pg)?;
        if inserted == 0 {
            return Ok(Invited::AlreadyIn);
        }
        txn.commit().await.map_err(pg)?;
        Ok(Invited::Invited(stored))
    }

    async fn room_list_in(
        &self,
        user: Uuid,
        filter: Option<RoomFilter>,
        after: &str,
        limit: usize,
    ) -> Result<Vec<ListedRoom>, StoreError> {
        let condition = match filter {
            None => "r.name = $2",
            Some(RoomFilter::Visible) => {
                r#"r.name COLLATE "C" > $2 AND (NOT COALESCE(g.invite_only, FALSE) OR EXISTS
                   (SELECT 1 FROM chat_room_members m WHERE m.room = r.name AND m.member = $1))"#
            }
            Some(RoomFilter::Mine) => {
                r#"r.name COLLATE "C" > $2 AND (EXISTS
                   (SELECT 1 FROM chat_room_members m WHERE m.room = r.name AND m.member = $1)
                   OR EXISTS (SELECT 1 FROM chat_room_invites i
                              WHERE i.room = r.name AND i.invitee = $1))"#
            }
        };
        let query = format!(
            r#"SELECT r.name, g.owner, COALESCE(g.invite_only, FALSE),
                      COALESCE(g.member_count, 0),
                      EXISTS (SELECT 1 FROM chat_room_members m
                              WHERE m.room = r.name AND m.member = $1),
                      EXISTS (SELECT 1 FROM chat_room_invites i
                              WHERE i.room = r.name AND i.invitee = $1)
               FROM chat_rooms r LEFT JOIN chat_room_groups g ON g.room = r.name
               WHERE {condition} ORDER BY r.name COLLATE "C" LIMIT $3"#
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let rows = client
            .query(&query, &[&user, &after, &limit])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| {
                let room = StoredRoom {
                    name: row.get(0),
                    owner: row.get::<_, Option<Uuid>>(1).unwrap_or_default(),
                    access: if row.get(2) {
                        Access::InviteOnly
                    } else {
                        Access::Open
                    },
                    member_count: unsigned(row.get(3))?,
                };
                let membership = room.membership(user, row.get(4), row.get(5));
                Ok(ListedRoom { room, membership })
            })
            .collect()
    }

    async fn members_in(&self, room: &str) -> Result<Vec<Sender>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT m.member, COALESCE(u.name, '') FROM chat_room_members m \
                 LEFT JOIN chat_users u ON u.id = m.member WHERE m.room = $1 ORDER BY m.member",
                &[&room],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|row| Sender {
                id: row.get(0),
                name: row.get(1),
            })
            .collect())
    }

    async fn post_in(
        &self,
        room: &str,
        from: Uuid,
        envelope: &Envelope,
        keep: usize,
        max_pending: u64,
    ) -> Result<Posted, StoreError> {
        let bytes = encode(envelope)?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        // The room's group row is the lock that orders its posts and membership changes.
        if lock_group(&txn, room).await?.is_none() {
            return Ok(Posted::UnknownRoom);
        }
        let member = txn
            .query_opt(
                "SELECT 1 FROM chat_room_members WHERE room = $1 AND member = $2",
                &[&room, &from],
            )
            .await
            .map_err(pg)?;
        if member.is_none() {
            return Ok(Posted::NotAMember);
        }
        let last: i64 = lock_row(
            &txn,
            "INSERT INTO chat_room_heads (room, last_number) VALUES ($1, 0) \
             ON CONFLICT (room) DO NOTHING",
            "SELECT last_number FROM chat_room_heads WHERE room = $1 FOR UPDATE",
            &room,
        )
        .await?
        .get(0);
        let seen = txn
            .query_opt(
                "SELECT 1 FROM chat_room_post_ids WHERE room = $1 AND message_id = $2",
                &[&room, &envelope.id],
            )
            .await
            .map_err(pg)?;
        if seen.is_some() {
            return Ok(Posted::Duplicate);
        }
        let number = last + 1;
        let at = now();
        txn.execute(
            "INSERT INTO chat_room_posts (room, number, envelope) VALUES ($1, $2, $3)",
            &[&room, &number, &bytes],
        )
        .await
        .map_err(pg)?;
        txn.execute(
            "INSERT INTO chat_room_post_ids (room, message_id, number, at_ms) \
             VALUES ($1, $2, $3, $4)",
            &[&room, &envelope.id, &number, &at],
        )
        .await
        .map_err(pg)?;
        txn.execute(
            "UPDATE chat_room_heads SET last_number = $2 WHERE room = $1",
            &[&room, &number],
        )
        .await
        .map_err(pg)?;
        let cutoff = number.saturating_sub(keep);
        if cutoff > 0 {
            txn.execute(
                "DELETE FROM chat_room_posts WHERE room = $1 AND number <= $2",
                &[&room, &cutoff],
            )
            .await
            .map_err(pg)?;
        }
        // Mailboxes are locked in member id order, the same in every post, so that two posts
        // fanning out to the same members at once cannot deadlock.
        let members: Vec<Uuid> = txn
            .query(
                "SELECT member FROM chat_room_members WHERE room = $1 ORDER BY member",
                &[&room],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let ensure = txn
            .prepare(
                "INSERT INTO chat_mailboxes (recipient, last_seq, pending) VALUES ($1, 0, 0) \
                 ON CONFLICT (recipient) DO NOTHING",
            )
            .await
            .map_err(pg)?;
        let lock = txn
            .prepare("SELECT last_seq, pending FROM chat_mailboxes WHERE recipient = $1 FOR UPDATE")
            .await
            .map_err(pg)?;
        let mark = txn
            .prepare(
                "INSERT INTO chat_message_ids (recipient, message_id, seq, at_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(pg)?;
        let store = txn
            .prepare("INSERT INTO chat_pending (recipient, seq, envelope) VALUES ($1, $2, $3)")
            .await
            .map_err(pg)?;
        let count = txn
            .prepare(
                "UPDATE chat_mailboxes SET last_seq = $2, pending = pending + 1 \
                 WHERE recipient = $1",
            )
            .await
            .map_err(pg)?;
        let mut delivered = Vec::new();
        for member in members {
            txn.execute(&ensure, &[&member]).await.map_err(pg)?;
            let row = txn.query_one(&lock, &[&member]).await.map_err(pg)?;
            let (last, pending): (i64, i64) = (row.get(0), row.get(1));
            if unsigned(pending)? >= max_pending {
                continue;
            }
            let seq = last + 1;
            // A message with the same id in this mailbox already: the member has it.
            let marked = txn
                .execute(&mark, &[&member, &envelope.id, &seq, &at])
                .await
                .map_err(pg)?;
            if marked == 0 {
                continue;
            }
            txn.execute(&store, &[&member, &seq, &bytes])
                .await
                .map_err(pg)?;
            txn.execute(&count, &[&member, &seq]).await.map_err(pg)?;
            delivered.push((member, unsigned(seq)?));
        }
        txn.commit().await.map_err(pg)?;
        Ok(Posted::Posted { delivered })
    }

    async fn history_in(
        &self,
        room: &str,
        after: u64,
        limits: PageLimits,
    ) -> Result<Page<Envelope>, StoreError> {
        let mut page = PageBuilder::new(limits);
        let Ok(after) = i64::try_from(after) else {
            return Ok(page.finish(None));
        };
        // One more than a page holds tells whether there is more.
        let fetch = i64::try_from(limits.items)
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT number, envelope FROM chat_room_posts WHERE room = $1 AND number > $2 \
                 ORDER BY number LIMIT $3",
                &[&room, &after, &fetch],
            )
            .await
            .map_err(pg)?;
        let mut last = None;
        for row in rows {
            let bytes: &[u8] = row.get(1);
            if page.push(decode_envelope(bytes)?).is_err() {
                return Ok(page.finish(last.map(|n: u64| n.to_string())));
            }
            last = Some(unsigned(row.get(0))?);
        }
        Ok(page.finish(None))
    }

    async fn begin_file_in(
        &self,
        id: Uuid,
        file: &HeldFile,
        quota: u64,
    ) -> Result<FileBegun, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        if let Some(held) = held_in(&txn, id).await? {
            return Ok(begun_again(&held, file));
        }
        let to = file.to;
        let known = txn
            .query_opt("SELECT 1 FROM chat_users WHERE id = $1", &[&to])
            .await
            .map_err(pg)?;
        if known.is_none() {
            return Ok(FileBegun::UnknownRecipient);
        }
        // The recipient's sum is the lock that orders the files begun for them (and deleted).
        let held: i64 = lock_row(
            &txn,
            "INSERT INTO chat_files_held (recipient, held) VALUES ($1, 0) \
             ON CONFLICT (recipient) DO NOTHING",
            "SELECT held FROM chat_files_held WHERE recipient = $1 FOR UPDATE",
            &to,
        )
        .await?
        .get(0);
        let held = unsigned(held)?;
        if held.saturating_add(file.file.size) > quota {
            return Ok(FileBegun::QuotaReached { held });
        }
        let at = now_ms();
        let stored = HeldFile {
            received: 0,
            touched_ms: at,
            ..file.clone()
        };
        let size = signed(stored.file.size)?;
        let inserted = txn
            .execute(
                "INSERT INTO chat_files (id, sender, recipient, record, size, received, \
                 touched_ms) VALUES ($1, $2, $3, $4, $5, 0, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &stored.from.id,
                    &to,
                    &encode(&stored)?,
                    &size,
                    &signed(at)?,
                ],
            )
            .await
            .map_err(pg)?;
        if inserted == 0 {
            // Begun by another call meanwhile (for another recipient: those for this one wait
            // for the lock); this transaction changes nothing.
            return Ok(match held_in(&txn, id).await? {
                Some(held) => begun_again(&held, file),
                None => FileBegun::OtherFile,
            });
        }
        txn.execute(
            "UPDATE chat_files_held SET held = held + $2 WHERE recipient = $1",
            &[&to, &size],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        Ok(FileBegun::Held { received: 0 })
    }

    async fn append_file_in(
        &self,
        id: Uuid,
        from: Uuid,
        offset: u64,
        data: Bytes,
    ) -> Result<FileAppended, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        // The file's row is the lock that orders its appends.
        let row = txn
            .query_opt(
                "SELECT record, received, touched_ms FROM chat_files WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(FileAppended::UnknownFile);
        };
        let mut held = held_of(&row)?;
        if held.from.id != from {
            return Ok(FileAppended::UnknownFile);
        }
        let end = offset.saturating_add(data.len() as u64);
        if offset != held.received || end > held.file.size {
            return Ok(FileAppended::WrongOffset {
                received: held.received,
            });
        }
        if !data.is_empty() {
            txn.execute(
                "INSERT INTO chat_file_pieces (file_id, start, data) VALUES ($1, $2, $3)",
                &[&id, &signed(offset)?, &&data[..]],
            )
            .await
            .map_err(pg)?;
        }
        held.received = end;
        held.touched_ms = now_ms();
        txn.execute(
            "UPDATE chat_files SET record = $2, received = $3, touched_ms = $4 WHERE id = $1",
            &[
                &id,
                &encode(&held)?,
                &signed(held.received)?,
                &signed(held.touched_ms)?,
            ],
        )
        .await
        .map_err(pg)?;
        txn.commit().await.map_err(pg)?;
        Ok(FileAppended::Appended { received: end })
    }

    async fn held_file_in(&self, id: Uuid) -> Result<Option<HeldFile>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT record, received, touched_ms FROM chat_files WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(pg)?;
        row.as_ref().map(held_of).transpose()
    }

    async fn read_file_in(
        &self,
        id: Uuid,
        offset: u64,
        max: usize,
    ) -> Result<Option<Bytes>, StoreError> {
        // Past the largest size a file may have is past its end.
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let max = i32::try_from(max).unwrap_or(i32::MAX);
        let client = self.client().await?;
        // One statement, one snapshot: the file and its piece that holds `offset` (the one that
        // starts last at or before it), cut from `offset` to at most `max` bytes.
        let row = client
            .query_opt(
                "SELECT f.received, p.start, p.length, p.bytes FROM chat_files f \
                 LEFT JOIN LATERAL (SELECT start, octet_length(data) AS length, \
                     substring(data FROM ($2 - start + 1)::integer FOR $3) AS bytes \
                     FROM chat_file_pieces \
                     WHERE file_id = f.id AND start <= $2 AND $2 < f.received \
                     ORDER BY start DESC LIMIT 1) p ON TRUE \
                 WHERE f.id = $1",
                &[&id, &offset, &max],
            )
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let received: i64 = row.get(0);
        if offset >= received {
            return Ok(Some(Bytes::new()));
        }
        let start: Option<i64> = row.get(1);
        let length: Option<i32> = row.get(2);
        match (start, length) {
            (Some(start), Some(length)) if start + i64::from(length) > offset => {
                let bytes: Vec<u8> = row.get(3);
                Ok(Some(Bytes::from(bytes)))
            }
            (None, _) | (_, None) => Err(StoreError::Record(format!(
                "file {id} has no piece at {offset}"
            ))),
            _ => Err(StoreError::Record(format!(
                "file {id} has a gap at {offset}"
            ))),
        }
    }

    async fn delete_file_in(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let Some(row) = txn
            .query_opt("SELECT recipient FROM chat_files WHERE id = $1", &[&id])
            .await
            .map_err(pg)?
        else {
            return Ok(false);
        };
        let to: Uuid = row.get(0);
        let deleted = delete_files(
            &txn,
            &[to],
            "DELETE FROM chat_files WHERE id = $1 AND recipient = $2 RETURNING recipient, size",
            &[&id, &to],
        )
        .await?;
        txn.commit().await.map_err(pg)?;
        Ok(deleted > 0)
    }

    async fn expire_files_in(&self, max_age_ms: u64) -> Result<u64, StoreError> {
        let cutoff = i64::try_from(now_ms().saturating_sub(max_age_ms)).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(pg)?;
        let recipients: Vec<Uuid> = txn
            .query(
                "SELECT DISTINCT recipient FROM chat_files WHERE touched_ms < $1",
                &[&cutoff],
            )
            .await
            .map_err(pg)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if recipients.is_empty() {
            return Ok(0);
        }
        // Only the files of the recipients whose sums are locked: one begun for another since
        // is new, and one written since is no longer old.
        let deleted = delete_files(
            &txn,
            &recipients,
            "DELETE FROM chat_files WHERE touched_ms < $1 AND recipient = ANY($2) \
             RETURNING recipient, size",
            &[&cutoff, &recipients],
        )
        .await?;
        txn.commit().await.map_err(pg)?;
        Ok(deleted)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn bind(
        &self,
        id: Uuid,
        name: &str,
        credential: &str,
        expected: Option<&str>,
    ) -> Result<Binding, StoreError> {
        self.track(self.bind_in(id, name, credential, expected).await)
    }

    async fn user(&self, id: Uuid) -> Result<Option<StoredUser>, StoreError> {
        self.track(self.user_in(id).await)
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<(Uuid, StoredUser)>, StoreError> {
        self.track(self.user_by_name_in(name).await)
    }

    async fn request_friend(
        &self,
        from: Uuid,
        to: Uuid,
        max: u64,
    ) -> Result<FriendRequested, StoreError> {
        self.track(self.request_friend_in(from, to, max).await)
    }

    async fn accept_friend(&self, user: Uuid, from: Uuid) -> Result<FriendAccepted, StoreError> {
        self.track(self.accept_friend_in(user, from).await)
    }

    async fn unfriend(&self, user: Uuid, other: Uuid) -> Result<Option<FriendState>, StoreError> {
        self.track(self.unfriend_in(user, other).await)
    }

    async fn friends(&self, user: Uuid) -> Result<Vec<(Sender, FriendState)>, StoreError> {
        self.track(self.friends_in(user).await)
    }

    async fn relay(
        &self,
        to: Uuid,
        envelope: &Envelope,
        max_pending: u64,
    ) -> Result<Relayed, StoreError> {
        self.track(self.relay_in(to, envelope, max_pending).await)
    }

    async fn mailbox(&self, user: Uuid, after: u64, limit: usize) -> Result<Mailbox, StoreError> {
        self.track(self.mailbox_in(user, after, limit).await)
    }

    async fn ack(&self, user: Uuid, ids: &[Uuid]) -> Result<usize, StoreError> {
        self.track(self.ack_in(user, ids).await)
    }

    async fn forget_old_ids(&self, max_age_ms: u64) -> Result<u64, StoreError> {
        self.track(self.forget_old_ids_in(max_age_ms).await)
    }

    async fn join_room(
        &self,
        room: &str,
        user: Uuid,
        how: Admission,
        quotas: RoomQuotas,
    ) -> Result<Joined, StoreError> {
        // A room made by another call at the same moment is found on the next attempt.
        for _ in 0..3 {
            if let Some(joined) = self.track(self.join_room_in(room, user, how, quotas).await)? {
                return Ok(joined);
            }
        }
        Err(StoreError::Unavailable(
            "the room kept changing; try again".into(),
        ))
    }

    async fn leave_room(
        &self,
        room: &str,
        user: Uuid,
        by: Option<Uuid>,
    ) -> Result<Left, StoreError> {
        self.track(self.leave_room_in(room, user, by).await)
    }

    async fn invite(&self, room: &str, by: Uuid, user: Uuid) -> Result<Invited, StoreError> {
        self.track(self.invite_in(room, by, user).await)
    }

    async fn room(&self, room: &str, user: Uuid) -> Result<Option<ListedRoom>, StoreError> {
        let listed = self.room_list_in(user, None, room, 1).await;
        self.track(listed.map(|rooms| rooms.into_iter().next()))
    }

    async fn room_list(
        &self,
        user: Uuid,
        filter: RoomFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<ListedRoom>, StoreError> {
        let after = after.unwrap_or_default();
        self.track(self.room_list_in(user, Some(filter), &after, limit).await)
    }

    async fn members(&self, room: &str) -> Result<Vec<Sender>, StoreError> {
        self.track(self.members_in(room).await)
    }

    async fn rooms(&self) -> Result<Vec<String>, StoreError> {
        self.track(self.rooms_in().await)
    }

    async fn begin_file(
        &self,
        id: Uuid,
        file: &HeldFile,
        quota: u64,
    ) -> Result<FileBegun, StoreError> {
        self.track(self.begin_file_in(id, file, quota).await)
    }

    async fn append_file(
        &self,
        id: Uuid,
        from: Uuid,
        offset: u64,
        data: Bytes,
    ) -> Result<FileAppended, StoreError> {
        self.track(self.append_file_in(id, from, offset, data).await)
    }

    async fn held_file(&self, id: Uuid) -> Result<Option<HeldFile>, StoreError> {
        self.track(self.held_file_in(id).await)
    }

    async fn read_file(
        &self,
        id: Uuid,
        offset: u64,
        max: usize,
    ) -> Result<Option<Bytes>, StoreError> {
        self.track(self.read_file_in(id, offset, max).await)
    }

    async fn delete_file(&self, id: Uuid) -> Result<bool, StoreError> {
        self.track(self.delete_file_in(id).await)
    }

    async fn expire_files(&self, max_age_ms: u64) -> Result<u64, StoreError> {
        self.track(self.expire_files_in(max_age_ms).await)
    }

    async fn node_secret(&self) -> Result<String, StoreError> {
        self.track(self.node_secret_in().await)
    }

    async fn post(
        &self,
        room: &str,
        from: Uuid,
        envelope: &Envelope,
        keep: usize,
        max_pending: u64,
    ) -> Result<Posted, StoreError> {
        self.track(self.post_in(room, from, envelope, keep, max_pending).await)
    }

    async fn history(
        &self,
        room: &str,
        after: u64,
        limits: PageLimits,
    ) -> Result<Page<Envelope>, StoreError> {
        self.track(self.history_in(room, after, limits).await)
    }

    fn is_healthy(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && self.healthy.load(Ordering::Acquire)
    }

    async fn close(&self) {
        // Every operation commits before it answers: nothing is queued.
        self.closed.store(true, Ordering::Release);
        self.pool.close();
    }
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.target)
            .field("open", &!self.closed.load(Ordering::Acquire))
            .field("healthy", &self.healthy.load(Ordering::Acquire))
            .finish()
    }
}

/// Where a configuration points, without its password: `host:port/dbname`.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

fn stored_user(row: &Row) -> StoredUser {
    StoredUser {
        name: row.get(0),
        credential: row.get(1),
    }
}

/// Locks the accounts of two users, in id order so that two transactions locking the same
/// pair cannot deadlock: the friend rows of a pair, and each one's count, change under it.
/// Returns how many of the two exist.
async fn lock_pair(txn: &Transaction<'_>, a: Uuid, b: Uuid) -> Result<usize, StoreError> {
    let rows = txn
        .query(
            "SELECT id FROM chat_users WHERE id = $1 OR id = $2 ORDER BY id FOR UPDATE",
            &[&a, &b],
        )
        .await
        .map_err(pg)?;
    Ok(rows.len())
}

/// Where `user` stands with `other`.
async fn standing(
    txn: &Transaction<'_>,
    user: Uuid,
    other: Uuid,
) -> Result<Option<FriendState>, StoreError> {
    let row = txn
        .query_opt(
            "SELECT state FROM chat_friends WHERE user_id = $1 AND other = $2",
            &[&user, &other],
        )
        .await
        .map_err(pg)?;
    row.map(|row| {
        let code: i16 = row.get(0);
        friend_state(u8::try_from(code).unwrap_or(u8::MAX))
    })
    .transpose()
}

/// Records where `a` stands with `b` and `b` with `a`.
async fn set_pair(
    txn: &Transaction<'_>,
    a: Uuid,
    b: Uuid,
    a_state: FriendState,
    b_state: FriendState,
) -> Result<(), StoreError> {
    for (user, other, state) in [(a, b, a_state), (b, a, b_state)] {
        let code = i16::from(friend_state_code(state));
        txn.execute(
            "INSERT INTO chat_friends (user_id, other, state) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, other) DO UPDATE SET state = EXCLUDED.state",
            &[&user, &other, &code],
        )
        .await
        .map_err(pg)?;
    }
    Ok(())
}

/// Turns a `chat_users` table of the format before accounts (salt and hash columns, names not
/// reserved) into accounts, under the schema lock: each salted SHA-256 becomes a legacy
/// credential, which the server replaces with an argon2id hash when its user next signs in,
/// and each name is reserved to its user unless a user of the same (folded) name had it first,
/// in id order.
async fn migrate(txn: &Transaction<'_>) -> Result<(), StoreError> {
    let legacy = txn
        .query_opt(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() \
             AND table_name = 'chat_users' AND column_name = 'salt'",
            &[],
        )
        .await
        .map_err(pg)?;
    if legacy.is_none() {
        return Ok(());
    }
    txn.batch_execute("ALTER TABLE chat_users ADD COLUMN IF NOT EXISTS credential TEXT")
        .await
        .map_err(pg)?;
    let rows = txn
        .query(
            "SELECT id, name, salt, hash FROM chat_users ORDER BY id",
            &[],
        )
        .await
        .map_err(pg)?;
    for row in &rows {
        let id: Uuid = row.get(0);
        let name: String = row.get(1);
        let credential = legacy_credential(row.get(2), row.get(3));
        txn.execute(
            "UPDATE chat_users SET credential = $2 WHERE id = $1",
            &[&id, &credential],
        )
        .await
        .map_err(pg)?;
        txn.execute(
            "INSERT INTO chat_names (key, id) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            &[&name_key(&name), &id],
        )
        .await
        .map_err(pg)?;
    }
    txn.batch_execute(
        "ALTER TABLE chat_users DROP COLUMN salt, DROP COLUMN hash, \
         ALTER COLUMN credential SET NOT NULL",
    )
    .await
    .map_err(pg)?;
    info!(
        users = rows.len(),
        "moved the users of the format before accounts into accounts"
    );
    Ok(())
}

/// The time now, as stored.
fn now() -> i64 {
    i64::try_from(now_ms()).unwrap_or(i64::MAX)
}

/// Locks a room's group row (made for a room from before rooms had owners: open, owned by
/// nobody, empty) and reads it, with the number the next member joins under; `None` if there
/// is no such room.
async fn lock_group(
    txn: &Transaction<'_>,
    room: &str,
) -> Result<Option<(StoredRoom, u64)>, StoreError> {
    txn.execute(
        "INSERT INTO chat_room_groups (room, owner, invite_only, member_count, next_join) \
         SELECT name, '00000000-0000-0000-0000-000000000000', FALSE, 0, 1 \
         FROM chat_rooms WHERE name = $1 ON CONFLICT (room) DO NOTHING",
        &[&room],
    )
    .await
    .map_err(pg)?;
    let row = txn
        .query_opt(
            "SELECT owner, invite_only, member_count, next_join FROM chat_room_groups \
             WHERE room = $1 FOR UPDATE",
            &[&room],
        )
        .await
        .map_err(pg)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let stored = StoredRoom {
        name: room.to_owned(),
        owner: row.get(0),
        access: if row.get(1) {
            Access::InviteOnly
        } else {
            Access::Open
        },
        member_count: unsigned(row.get(2))?,
    };
    Ok(Some((stored, unsigned(row.get(3))?)))
}

/// Writes a room's group row (locked by [`lock_group`], or new).
async fn put_group(txn: &Transaction<'_>, room: &StoredRoom, next: u64) -> Result<(), StoreError> {
    let invite_only = room.access == Access::InviteOnly;
    txn.execute(
        "INSERT INTO chat_room_groups (room, owner, invite_only, member_count, next_join) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room) DO UPDATE SET owner = $2, \
         invite_only = $3, member_count = $4, next_join = $5",
        &[
            &room.name,
            &room.owner,
            &invite_only,
            &signed(room.member_count)?,
            &signed(next)?,
        ],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Locks the count of a user's rooms (made if missing) and reads it.
async fn lock_joined(txn: &Transaction<'_>, user: Uuid) -> Result<u64, StoreError> {
    let joined: i64 = lock_row(
        txn,
        "INSERT INTO chat_rooms_joined (member, joined) VALUES ($1, 0) \
         ON CONFLICT (member) DO NOTHING",
        "SELECT joined FROM chat_rooms_joined WHERE member = $1 FOR UPDATE",
        &user,
    )
    .await?
    .get(0);
    unsigned(joined)
}

/// Makes the row of `key` (`insert`, which does nothing if it exists) and locks it (`lock`, a
/// `SELECT … FOR UPDATE`) until the transaction ends: the lock that orders the changes the row
/// guards (a mailbox's relays, a user's rooms, a room's posts).
async fn lock_row(
    txn: &Transaction<'_>,
    insert: &str,
    lock: &str,
    key: &(dyn ToSql + Sync),
) -> Result<Row, StoreError> {
    txn.execute(insert, &[key]).await.map_err(pg)?;
    txn.query_one(lock, &[key]).await.map_err(pg)
}

/// The file held under `id`, if any (read in `txn`, not locked).
async fn held_in(txn: &Transaction<'_>, id: Uuid) -> Result<Option<HeldFile>, StoreError> {
    let row = txn
        .query_opt(
            "SELECT record, received, touched_ms FROM chat_files WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(pg)?;
    row.as_ref().map(held_of).transpose()
}

/// A held file from its row (`record, received, touched_ms`): the columns, which queries read
/// and change, are authoritative over the copies in the record.
fn held_of(row: &Row) -> Result<HeldFile, StoreError> {
    let bytes: &[u8] = row.get(0);
    let mut held: HeldFile = decode(bytes)?;
    held.received = unsigned(row.get(1))?;
    held.touched_ms = unsigned(row.get(2))?;
    Ok(held)
}

/// What [`Store::begin_file`] answers for a file already held under the id.
fn begun_again(held: &HeldFile, begun: &HeldFile) -> FileBegun {
    if same_file(held, begun) {
        FileBegun::Held {
            received: held.received,
        }
    } else {
        FileBegun::OtherFile
    }
}

/// Locks the sums of the files held for `recipients` (in id order, so that two transactions
/// cannot deadlock), runs `delete` (a `DELETE FROM chat_files … RETURNING recipient, size` of
/// files of those recipients only; their pieces go with them) and takes the sizes of the files
/// deleted off their recipients' sums. Returns how many files were deleted.
async fn delete_files(
    txn: &Transaction<'_>,
    recipients: &[Uuid],
    delete: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let recipients = recipients.to_vec();
    txn.query(
        "SELECT recipient FROM chat_files_held WHERE recipient = ANY($1) \
         ORDER BY recipient FOR UPDATE",
        &[&recipients],
    )
    .await
    .map_err(pg)?;
    let rows = txn.query(delete, params).await.map_err(pg)?;
    let mut freed: BTreeMap<Uuid, i64> = BTreeMap::new();
    for row in &rows {
        let size: i64 = row.get(1);
        let sum = freed.entry(row.get(0)).or_default();
        *sum = sum.saturating_add(size);
    }
    for (recipient, size) in freed {
        txn.execute(
            "UPDATE chat_files_held SET held = GREATEST(held - $2, 0) WHERE recipient = $1",
            &[&recipient, &size],
        )
        .await
        .map_err(pg)?;
    }
    Ok(rows.len() as u64)
}

/// A count or number as stored.
fn signed(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Record(format!("a number too large: {n}")))
}

/// A stored count or number, which is never negative.
fn unsigned(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Record(format!("a negative number: {n}")))
}

/// A PostgreSQL error, told apart: a lost connection, or a server that is shutting down,
/// starting or out of resources, makes the store unavailable for now; anything else is the
/// database refusing what was asked.
fn pg(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let transient = ["08", "53", "57P", "40001", "40P01"]
            .iter()
            .any(|prefix| code.starts_with(prefix));
        return if transient {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Database(e.to_string())
        };
    }
    let io = std::error::Error::source(&e).is_some_and(|source| source.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Database(e.to_string())
    }
}
