//! What the server knows: sessions by token and by user, presence, rooms, the store, and the
//! session lifecycle (register, heartbeat, leave, expiry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chat_api::{
    ChatError, DEVICE_KEY_CONTEXT, DeviceKey, LoginRequest, NatReport, RegisterRequest, Sender,
    Session as SessionReply, UserInfo, excerpt,
};
use rpc_registry::{LeaseId, Registry, RegistryError};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::calls::Calls;
use crate::config::PasswordHashing;
use crate::inbox::InboxSlot;
use crate::message_counts::MessageCounts;
use crate::nodes::NodeLinks;
use crate::page::PageLimits;
use crate::password::{Passwords, Verdict};
use crate::presence::{self, Presence};
use crate::rooms::Rooms;
use crate::store::{Binding, Store, StoreError};
use crate::validate::{self, name_key};

/// How many times a registration reads an account again that another server changed while it
/// verified the password, before it gives up.
const BIND_ATTEMPTS: usize = 3;

/// Registrations, leaves and room changes of one user run one at a time; users are spread
/// over this many locks.
const USER_LOCKS: usize = 256;

/// The settings the running server uses.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) presence_ttl: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) room_history: usize,
    pub(crate) max_pending: u64,
    pub(crate) max_rooms_created: u32,
    pub(crate) max_rooms_joined: u32,
    pub(crate) max_room_members: u32,
    pub(crate) max_page_items: usize,
    pub(crate) max_page_bytes: usize,
    pub(crate) max_friends: u32,
    pub(crate) call_answer: Duration,
    pub(crate) max_held_file: u64,
    pub(crate) held_files_quota: u64,
    pub(crate) password_hashing: PasswordHashing,
}

impl Settings {
    /// The limits of a page asked for with `limit` items.
    pub(crate) fn page(&self, limit: u32) -> PageLimits {
        PageLimits::asked(limit, self.max_page_items, self.max_page_bytes)
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<dyn Registry>,
    /// Tells this server's presence instances from those of other servers on the same
    /// registry.
    pub(crate) server_id: String,
    /// What the servers sharing the store prove to each other that they do with (see
    /// [`Store::node_secret`]).
    pub(crate) node_secret: String,
    pub(crate) presence: Presence,
    pub(crate) rooms: Rooms,
    pub(crate) calls: Calls,
    /// Messages relayed, stored and acknowledged, for metrics.
    pub(crate) messages: MessageCounts,
    /// Clients of the other chat servers on the same registry.
    pub(crate) nodes: NodeLinks,
    passwords: Passwords,
    sessions: Mutex<Sessions>,
    next_serial: AtomicU64,
    user_locks: Vec<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Sessions {
    by_token: HashMap<String, Arc<Session>>,
    by_user: HashMap<Uuid, Arc<Session>>,
}

/// One registered session.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) token: String,
    /// Numbers sessions; travels in the presence instance's metadata so that a registry event
    /// can be matched to the session it is about.
    pub(crate) serial: u64,
    pub(crate) info: UserInfo,
    pub(crate) lease: LeaseId,
    /// The registry's revision after the session's instance was registered.
    pub(crate) revision: u64,
    pub(crate) inbox: InboxSlot,
    /// Cancelled when the session ends (ends its presence streams).
    pub(crate) ended: CancellationToken,
    /// What the user last reported about their NAT (`report_nat`), for `nat_of`.
    pub(crate) nat: Mutex<Option<NatReport>>,
    /// The identity key of the device this session is on, once it bound one.
    pub(crate) device_key: Mutex<Option<[u8; 32]>>,
}

impl Session {
    /// The user as a message sender.
    pub(crate) fn sender(&self) -> Sender {
        Sender {
            id: self.info.id,
            name: self.info.name.clone(),
        }
    }
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The user called `leave`.
    Left,
    /// The presence lease expired (no heartbeats).
    Expired,
}

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        store: Arc<dyn Store>,
        registry: Arc<dyn Registry>,
        node_secret: String,
        node_tls: Option<rpc_core::tls::ClientTls>,
    ) -> Self {
        Shared {
            passwords: Passwords::new(settings.password_hashing),
            settings,
            store,
            registry,
            server_id: Uuid::new_v4().simple().to_string(),
            node_secret,
            presence: Presence::new(),
            rooms: Rooms::default(),
            calls: Calls::default(),
            messages: MessageCounts::default(),
            nodes: NodeLinks::new(node_tls),
            sessions: Mutex::default(),
            next_serial: AtomicU64::new(1),
            user_locks: (0..USER_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// Registers a user and opens a session, replacing the user's previous one.
    pub(crate) async fn register(
        &self,
        observed: String,
        request: RegisterRequest,
    ) -> Result<SessionReply, ChatError> {
        validate::display_name(&request.name)?;
        validate::secret(&request.secret)?;
        let advertised = validate::endpoint(request.endpoint)?;
        let id = request.id;
        let _user = self.lock_user(id).await;
        self.bind_account(id, &request.name, &request.secret)
            .await?;
        let info = UserInfo {
            id,
            name: request.name,
            advertised,
            observed,
        };
        self.open_session(info).await
    }

    /// Opens a session on the account with this name if the password is right.
    pub(crate) async fn login(
        &self,
        observed: String,
        request: LoginRequest,
    ) -> Result<SessionReply, ChatError> {
        validate::display_name(&request.name)?;
        validate::secret(&request.password)?;
        let advertised = validate::endpoint(request.endpoint)?;
        let found = self
            .store
            .user_by_name(&request.name)
            .await
            .map_err(storage_error)?;
        let Some((id, _)) = found else {
            // As long as a wrong password takes: the answer does not tell which it was.
            self.passwords.verify_nothing(&request.password).await?;
            info!(name = %excerpt(&request.name), "login with an unknown name");
            return Err(ChatError::WrongLogin);
        };
        let _user = self.lock_user(id).await;
        // Read again under the user's lock: the account may have changed meanwhile.
        let Some(account) = self.store.user(id).await.map_err(storage_error)? else {
            return Err(ChatError::WrongLogin);
        };
        if name_key(&account.name) != name_key(&request.name) {
            // Renamed since it was found.
            return Err(ChatError::WrongLogin);
        }
        match self
            .bind_account(id, &account.name, &request.password)
            .await
        {
            Ok(()) => {}
            Err(ChatError::WrongSecret(_) | ChatError::NameTaken(_)) => {
                warn!(user = %id, "login with a wrong password");
                return Err(ChatError::WrongLogin);
            }
            Err(e) => return Err(e),
        }
        let info = UserInfo {
            id,
            name: account.name,
            advertised,
            observed,
        };
        self.open_session(info).await
    }

    /// Opens a session for a user whose account checked out, replacing their previous one.
    /// The caller holds the user's lock.
    async fn open_session(&self, info: UserInfo) -> Result<SessionReply, ChatError> {
        let id = info.id;
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        let (lease, revision) = self.announce(&info, serial).await?;
        let session = Arc::new(Session {
            token: new_token(),
            serial,
            info: info.clone(),
            lease,
            revision,
            inbox: InboxSlot::default(),
            ended: CancellationToken::new(),
            nat: Mutex::new(None),
            device_key: Mutex::new(None),
        });
        let old = {
            let mut sessions = self.sessions();
            let old = sessions.by_user.insert(id, session.clone());
            sessions
                .by_token
                .insert(session.token.clone(), session.clone());
            if let Some(old) = &old {
                sessions.by_token.remove(&old.token);
            }
            old
        };
        if let Some(old) = old {
            // The same user again (a new connection, a restarted client): the old token stops
            // working, the user stays online.
            old.inbox.close("session replaced by a newer registration");
            old.ended.cancel();
            // The instance now lives under the new lease: revoking the old one removes nothing.
            if let Err(e) = self.registry.revoke(old.lease).await {
                warn!(user = %id, "revoking the replaced session's lease: {e}");
            }
        }
        self.presence.upsert(info.clone(), None);
        info!(user = %id, name = %info.name, observed = %info.observed, "registered");
        Ok(SessionReply {
            token: session.token.clone(),
            user: info,
            heartbeat_ms: millis(self.settings.heartbeat),
            presence_ttl_ms: millis(self.settings.presence_ttl),
        })
    }

    /// Renews the session's presence lease.
    pub(crate) async fn heartbeat(&self, token: &str) -> Result<(), ChatError> {
        let session = self.session(token)?;
        match self.registry.keep_alive(session.lease).await {
            Ok(_) => Ok(()),
            Err(RegistryError::LeaseNotFound(_)) => {
                self.end_session(&session, Ending::Expired).await;
                Err(ChatError::NoSession)
            }
            Err(e) => Err(ChatError::Storage(format!("presence registry: {e}"))),
        }
    }

    /// Ends the caller's session at once.
    pub(crate) async fn leave(&self, token: &str) -> Result<(), ChatError> {
        let session = self.session(token)?;
        self.end_session(&session, Ending::Left).await;
        Ok(())
    }

    /// One user by id (online or not) or by name (online only).
    pub(crate) async fn lookup(&self, token: &str, user: &str) -> Result<UserInfo, ChatError> {
        self.session(token)?;
        let Ok(id) = Uuid::parse_str(user) else {
            return self
                .presence
                .find_name(&name_key(user))
                .ok_or_else(|| ChatError::UnknownUser(excerpt(user).into_owned()));
        };
        if let Some(info) = self.presence.get(id) {
            return Ok(info);
        }
        match self.store.user(id).await.map_err(storage_error)? {
            // Offline: where it was is no use to anyone now.
            Some(stored) => Ok(UserInfo {
                id,
                name: stored.name,
                advertised: None,
                observed: String::new(),
            }),
            None => Err(ChatError::UnknownUser(excerpt(user).into_owned())),
        }
    }

    /// What an online user (by id or name) reported about their NAT. Reports live with the
    /// session on the server that holds it: a user online through another node is known to
    /// be online but their report is not here, so the answer is `None`.
    pub(crate) fn nat_of(&self, token: &str, user: &str) -> Result<Option<NatReport>, ChatError> {
        self.session(token)?;
        Ok(self.online_here(user)?.and_then(|session| {
            session
                .nat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }))
    }

    /// Binds the caller's device key to its session, if the proof is the key's signature of
    /// the context and the token.
    pub(crate) fn bind_device_key(&self, token: &str, key: DeviceKey) -> Result<(), ChatError> {
        let session = self.session(token)?;
        let public: [u8; 32] = key.public.as_slice().try_into().map_err(|_| {
            ChatError::Invalid(format!(
                "a device key has 32 bytes, not {}",
                key.public.len()
            ))
        })?;
        let mut signed = DEVICE_KEY_CONTEXT.to_vec();
        signed.extend_from_slice(token.as_bytes());
        if !rpc_core::transport::quic::verify(&public, &signed, &key.proof) {
            return Err(ChatError::Invalid(
                "the device key's proof is not its signature of this session".into(),
            ));
        }
        *session.device_key.lock().unwrap_or_else(|e| e.into_inner()) = Some(public);
        Ok(())
    }

    /// The device key bound to an online user's session, if any.
    pub(crate) fn device_key_of(
        &self,
        token: &str,
        user: &str,
    ) -> Result<Option<[u8; 32]>, ChatError> {
        self.session(token)?;
        Ok(self
            .online_here(user)?
            .and_then(|session| *session.device_key.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// The session of an online user (by id as text, or display name) if this server holds
    /// it; `None` if the user is online through another server; `UnknownUser` if not online.
    fn online_here(&self, user: &str) -> Result<Option<Arc<Session>>, ChatError> {
        let unknown = || ChatError::UnknownUser(excerpt(user).into_owned());
        let id = match Uuid::parse_str(user) {
            Ok(id) => id,
            Err(_) => {
                self.presence
                    .find_name(&name_key(user))
                    .ok_or_else(unknown)?
                    .id
            }
        };
        if let Some(session) = self.session_of(id) {
            return Ok(Some(session));
        }
        if self.presence.get(id).is_some() {
            return Ok(None);
        }
        Err(unknown())
    }

    /// Ends a session, if it is still the user's current one: the inbox and presence streams
    /// end, watchers see the user leave, rooms are told.
    pub(crate) async fn end_session(&self, session: &Arc<Session>, ending: Ending) {
        let id = session.info.id;
        let _user = self.lock_user(id).await;
        let current = {
            let mut sessions = self.sessions();
            let current = sessions
                .by_user
                .get(&id)
                .is_some_and(|s| s.serial == session.serial);
            if current {
                sessions.by_user.remove(&id);
                sessions.by_token.remove(&session.token);
            }
            current
        };
        if !current {
            return;
        }
        session.close_inbox();
        session.ended.cancel();
        match ending {
            Ending::Left => info!(user = %id, name = %session.info.name, "left"),
            Ending::Expired => info!(user = %id, name = %session.info.name, "presence expired"),
        }
        // The user stays a member of their rooms: membership is stored, not bound to presence.
        self.presence.remove(id, true);
        self.end_calls_of(id).await;
        if ending == Ending::Left {
            // Expired leases are gone already.
            if let Err(e) = self.registry.revoke(session.lease).await {
                warn!(user = %id, "revoking the lease: {e}");
            }
        }
    }

    /// Ends every session without telling anyone (the server is stopping): revokes their
    /// leases so that a shared registry drops them now.
    pub(crate) async fn close_all(&self) {
        let sessions: Vec<_> = {
            let mut sessions = self.sessions();
            sessions.by_token.clear();
            sessions.by_user.drain().map(|(_, s)| s).collect()
        };
        let revokes = sessions.iter().map(|session| {
            session.close_inbox();
            session.ended.cancel();
            let registry = self.registry.clone();
            let lease = session.lease;
            async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), registry.revoke(lease)).await;
            }
        });
        futures::future::join_all(revokes).await;
    }

    /// The session a token stands for.
    pub(crate) fn session(&self, token: &str) -> Result<Arc<Session>, ChatError> {
        self.sessions()
            .by_token
            .get(token)
            .cloned()
            .ok_or(ChatError::NoSession)
    }

    /// The current session of a user, if online here.
    pub(crate) fn session_of(&self, user: Uuid) -> Option<Arc<Session>> {
        self.sessions().by_user.get(&user).cloned()
    }

    /// The current sessions, for reconciling with a registry snapshot.
    pub(crate) fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions().by_user.values().cloned().collect()
    }

    /// Waits for the lock of a user's lifecycle changes.
    pub(crate) async fn lock_user(&self, id: Uuid) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = (id.as_u128() % self.user_locks.len() as u128) as usize;
        self.user_locks[stripe].lock().await
    }

    /// Checks the password of the account `id` (or, the first time, makes the account) and
    /// records `name` as its name, which must not be reserved to another account. A password
    /// hashed the old way or with other parameters is hashed again. The caller holds the
    /// user's lock.
    async fn bind_account(&self, id: Uuid, name: &str, password: &str) -> Result<(), ChatError> {
        for _ in 0..BIND_ATTEMPTS {
            let stored = self.store.user(id).await.map_err(storage_error)?;
            let (expected, credential) = match &stored {
                None => {
                    // A taken name is refused before the hash is paid for.
                    let owner = self.store.user_by_name(name).await.map_err(storage_error)?;
                    if owner.is_some_and(|(owner, _)| owner != id) {
                        return Err(ChatError::NameTaken(name.to_owned()));
                    }
                    (None, self.passwords.hash(password).await?)
                }
                Some(user) => match self.passwords.verify(&user.credential, password).await? {
                    Verdict::Wrong => {
                        warn!(user = %id, "registration with a wrong secret");
                        return Err(ChatError::WrongSecret(id));
                    }
                    // The common case, a known user with an unchanged name, needs no write.
                    Verdict::Right if user.name == name => return Ok(()),
                    Verdict::Right => (Some(user.credential.as_str()), user.credential.clone()),
                    Verdict::Outdated => (
                        Some(user.credential.as_str()),
                        self.passwords.hash(password).await?,
                    ),
                },
            };
            match self
                .store
                .bind(id, name, &credential, expected)
                .await
                .map_err(storage_error)?
            {
                Binding::Created => {
                    info!(user = %id, "new account");
                    return Ok(());
                }
                Binding::Updated => return Ok(()),
                Binding::NameTaken => return Err(ChatError::NameTaken(name.to_owned())),
                Binding::Stale => {}
            }
        }
        warn!(user = %id, "the account kept changing during registration");
        Err(ChatError::Storage(
            "the account changed during registration; try again".into(),
        ))
    }

    /// Puts the user's presence in the registry under a new lease.
    async fn announce(&self, info: &UserInfo, serial: u64) -> Result<(LeaseId, u64), ChatError> {
        let unavailable = |e: RegistryError| {
            error!(user = %info.id, "presence registry: {e}");
            ChatError::Storage(format!("presence registry: {e}"))
        };
        let lease = self
            .registry
            .grant(self.settings.presence_ttl)
            .await
            .map_err(unavailable)?;
        let instance = presence::instance(info, &self.server_id, serial);
        match self.registry.register(instance, lease.id).await {
            Ok(revision) => Ok((lease.id, revision)),
            Err(e) => {
                let _ = self.registry.revoke(lease.id).await;
                Err(unavailable(e))
            }
        }
    }

    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        // Every mutation completes under the lock without panicking paths in between.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A storage failure as the caller sees it (the details go to the log).
pub(crate) fn storage_error(e: StoreError) -> ChatError {
    match e {
        StoreError::Unavailable(e) => {
            warn!("store unavailable: {e}");
            ChatError::StorageUnavailable
        }
        e => {
            error!("store: {e}");
            ChatError::Storage(e.to_string())
        }
    }
}

/// 244 random bits from the OS generator, as 64 hex digits.
fn new_token() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
