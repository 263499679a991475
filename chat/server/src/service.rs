//! The `chat.Signal` service: each call checks its input and hands over to the server's state.

use std::sync::Arc;

use chat_api::{
    Access, Attachment, CallMedia, ChatError, Delivery, DeviceKey, Envelope, Friend, FriendState,
    IceCandidate, IceServer, InboxItem, LoginRequest, NatReport, Page, PresenceEvent,
    RegisterRequest, Rendezvous, RoomInfo, SdpKind, Sender, Session, Signal, UserInfo, excerpt,
};
use rpc_core::{CallContext, PeerAddr, ServerStream};
use uuid::Uuid;

use crate::by_name::NameCursor;
use crate::presence;
use crate::state::Shared;
use crate::store::RoomFilter;

/// Implements [`Signal`] over the server's shared state.
#[derive(Debug, Clone)]
pub(crate) struct ChatService {
    shared: Arc<Shared>,
    /// The `host:port` of the STUN service clients are told about, if there is one.
    stun: Option<String>,
}

impl ChatService {
    pub(crate) fn new(shared: Arc<Shared>, stun: Option<String>) -> Self {
        ChatService { shared, stun }
    }
}

impl Signal for ChatService {
    async fn register(
        &self,
        ctx: CallContext,
        request: RegisterRequest,
    ) -> Result<Session, ChatError> {
        self.shared.register(observed(ctx.peer()), request).await
    }

    async fn login(&self, ctx: CallContext, request: LoginRequest) -> Result<Session, ChatError> {
        self.shared.login(observed(ctx.peer()), request).await
    }

    async fn heartbeat(&self, token: String) -> Result<(), ChatError> {
        self.shared.heartbeat(&token).await
    }

    async fn leave(&self, token: String) -> Result<(), ChatError> {
        self.shared.leave(&token).await
    }

    async fn lookup(&self, token: String, user: String) -> Result<UserInfo, ChatError> {
        self.shared.lookup(&token, &user).await
    }

    async fn online(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<UserInfo>, ChatError> {
        self.shared.session(&token)?;
        let after = after.as_deref().map(NameCursor::parse).transpose()?;
        let limits = self.shared.settings.page(limit);
        Ok(self.shared.presence.page(after.as_ref(), limits))
    }

    async fn presence(&self, token: String) -> ServerStream<PresenceEvent> {
        presence::stream(self.shared.clone(), &token)
    }

    async fn relay(
        &self,
        token: String,
        id: Uuid,
        to: Uuid,
        text: String,
        sent_at_ms: u64,
    ) -> Result<Delivery, ChatError> {
        self.shared.relay(&token, id, to, text, sent_at_ms).await
    }

    async fn inbox(&self, token: String) -> ServerStream<InboxItem> {
        self.shared.open_inbox(&token).await
    }

    async fn ack(&self, token: String, ids: Vec<Uuid>) -> Result<(), ChatError> {
        self.shared.ack(&token, ids).await
    }

    async fn create_room(
        &self,
        token: String,
        room: String,
        access: Access,
    ) -> Result<RoomInfo, ChatError> {
        let session = self.shared.session(&token)?;
        self.shared
            .rooms
            .create(&self.shared, &session, room, access)
            .await
    }

    async fn join(&self, token: String, room: String) -> Result<RoomInfo, ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.rooms.join(&self.shared, &session, room).await
    }

    async fn leave_room(&self, token: String, room: String) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.rooms.leave(&self.shared, &session, room).await
    }

    async fn rooms(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<RoomInfo>, ChatError> {
        let session = self.shared.session(&token)?;
        let limits = self.shared.settings.page(limit);
        self.shared
            .rooms
            .page(&self.shared, &session, RoomFilter::Visible, after, limits)
            .await
    }

    async fn members(
        &self,
        token: String,
        room: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Sender>, ChatError> {
        let session = self.shared.session(&token)?;
        let limits = self.shared.settings.page(limit);
        self.shared
            .rooms
            .members(&self.shared, &session, &room, after, limits)
            .await
    }

    async fn post(
        &self,
        token: String,
        room: String,
        id: Uuid,
        text: String,
        sent_at_ms: u64,
    ) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared
            .rooms
            .post(&self.shared, &session, room, (id, text, sent_at_ms))
            .await
    }

    async fn history(
        &self,
        token: String,
        room: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Envelope>, ChatError> {
        let session = self.shared.session(&token)?;
        let limits = self.shared.settings.page(limit);
        self.shared
            .rooms
            .history(&self.shared, &session, &room, after, limits)
            .await
    }

    async fn invite(&self, token: String, room: String, user: Uuid) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared
            .rooms
            .invite(&self.shared, &session, room, user)
            .await
    }

    async fn add_member(&self, token: String, room: String, user: Uuid) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared
            .rooms
            .add_member(&self.shared, &session, room, user)
            .await
    }

    async fn remove_member(
        &self,
        token: String,
        room: String,
        user: Uuid,
    ) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared
            .rooms
            .remove_member(&self.shared, &session, room, user)
            .await
    }

    async fn my_rooms(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<RoomInfo>, ChatError> {
        let session = self.shared.session(&token)?;
        let limits = self.shared.settings.page(limit);
        self.shared
            .rooms
            .page(&self.shared, &session, RoomFilter::Mine, after, limits)
            .await
    }

    async fn request_friend(&self, token: String, user: Uuid) -> Result<FriendState, ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.request_friend(&session, user).await
    }

    async fn accept_friend(&self, token: String, user: Uuid) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.accept_friend(&session, user).await
    }

    async fn unfriend(&self, token: String, user: Uuid) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.unfriend(&session, user).await
    }

    async fn friends(
        &self,
        token: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Page<Friend>, ChatError> {
        let session = self.shared.session(&token)?;
        let limits = self.shared.settings.page(limit);
        self.shared.friends(&session, after, limits).await
    }

    async fn call(
        &self,
        token: String,
        user: Uuid,
        media: Vec<CallMedia>,
    ) -> Result<Uuid, ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.call(&session, user, media).await
    }

    async fn ringing(&self, token: String, call: Uuid) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.ringing(&session, call).await
    }

    async fn accept_call(&self, token: String, call: Uuid) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.accept_call(&session, call).await
    }

    async fn reject_call(&self, token: String, call: Uuid, busy: bool) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.reject_call(&session, call, busy).await
    }

    async fn hang_up(&self, token: String, call: Uuid) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.hang_up(&session, call).await
    }

    async fn send_sdp(
        &self,
        token: String,
        call: Uuid,
        kind: SdpKind,
        sdp: String,
    ) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.send_sdp(&session, call, kind, sdp).await
    }

    async fn send_ice(
        &self,
        token: String,
        call: Uuid,
        candidate: IceCandidate,
    ) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared.send_ice(&session, call, candidate).await
    }

    async fn punch(
        &self,
        token: String,
        to: Uuid,
        attempt: Uuid,
        candidates: Vec<String>,
        answer: bool,
    ) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        self.shared
            .punch(&session, to, attempt, candidates, answer)
            .await
    }

    async fn rendezvous(&self) -> Rendezvous {
        let stun: Vec<String> = self.stun.iter().cloned().collect();
        let ice_servers = stun
            .iter()
            .map(|address| IceServer {
                urls: vec![format!("stun:{address}")],
                username: None,
                credential: None,
            })
            .collect();
        Rendezvous { stun, ice_servers }
    }

    async fn report_nat(&self, token: String, report: NatReport) -> Result<(), ChatError> {
        let session = self.shared.session(&token)?;
        if let Some(public) = &report.public
            && public.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ChatError::Invalid(format!(
                "the public address {:?} is not ip:port",
                excerpt(public)
            )));
        }
        *session.nat.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
        Ok(())
    }

    async fn nat_of(&self, token: String, user: String) -> Result<Option<NatReport>, ChatError> {
        self.shared.nat_of(&token, &user)
    }

    async fn bind_device_key(&self, token: String, key: DeviceKey) -> Result<(), ChatError> {
        self.shared.bind_device_key(&token, key)
    }

    async fn device_key_of(
        &self,
        token: String,
        user: String,
    ) -> Result<Option<Vec<u8>>, ChatError> {
        Ok(self
            .shared
            .device_key_of(&token, &user)?
            .map(|key| key.to_vec()))
    }

    async fn upload_file(
        &self,
        token: String,
        id: Uuid,
        to: Uuid,
        file: Attachment,
    ) -> Result<u64, ChatError> {
        self.shared.upload_file(&token, id, to, file).await
    }

    async fn upload_chunk(
        &self,
        token: String,
        id: Uuid,
        offset: u64,
        data: bytes::Bytes,
    ) -> Result<(), ChatError> {
        self.shared.upload_chunk(&token, id, offset, data).await
    }

    async fn finish_upload(
        &self,
        token: String,
        id: Uuid,
        sent_at_ms: u64,
    ) -> Result<Delivery, ChatError> {
        self.shared.finish_upload(&token, id, sent_at_ms).await
    }

    async fn download(
        &self,
        token: String,
        id: Uuid,
        offset: u64,
        limit: u32,
    ) -> Result<bytes::Bytes, ChatError> {
        self.shared.download(&token, id, offset, limit).await
    }
}

/// The caller's address as this server saw it: `ip:port` for TCP and TLS (the user's public
/// address when it comes through a NAT), the transport's own description otherwise.
fn observed(peer: &PeerAddr) -> String {
    match peer {
        PeerAddr::Tcp(addr) | PeerAddr::Tls { addr, .. } => addr.to_string(),
        other => other.to_string(),
    }
}
