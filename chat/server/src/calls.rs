//! Call signaling: invites, ringing, answers, SDP and ICE relayed between the two sides, hang
//! up, and calls nobody answers ending as missed.
//!
//! Each server keeps a view of the calls its own users take part in: the caller's server makes
//! it when the call starts, the callee's server when the invite reaches it (pushed from the
//! other node, see [`Shared::push_local`]); every later event (ringing, accepted, ended) is
//! pushed to both sides and applied to each server's view as it passes, so the two agree on
//! where the call stands. The caller's server times the answer: a call still unanswered after
//! [`CALL_ANSWER_SECS`](chat_api::CALL_ANSWER_SECS) (the server's `call_answer` setting) ends
//! as missed for both. A call ends for both when either side's
//! session ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chat_api::{
    CallEnd, CallEvent, CallMedia, CallPhase, ChatError, IceCandidate, InboxItem,
    MAX_CANDIDATE_BYTES, MAX_PUNCH_CANDIDATES, MAX_SDP_BYTES, PunchRequest, SdpKind, Sender,
    excerpt,
};
use tracing::info;
use uuid::Uuid;

use crate::state::{Session, Shared, storage_error};

/// How many calls one user may take part in at once (ringing or accepted) on one server.
pub(crate) const MAX_CALLS_PER_USER: usize = 8;

/// The calls this server's users take part in.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<Uuid, Call>,
    /// The calls of each user, for the per-user limit and for ending them with the session.
    by_user: HashMap<Uuid, Vec<Uuid>>,
}

/// One call as this server sees it.
#[derive(Debug, Clone)]
struct Call {
    caller: Sender,
    callee: Sender,
    phase: CallPhase,
}

impl Call {
    /// The other side of the call from `user`'s, or `None` if `user` is not part of it.
    fn other_side(&self, user: Uuid) -> Option<&Sender> {
        if user == self.caller.id {
            Some(&self.callee)
        } else if user == self.callee.id {
            Some(&self.caller)
        } else {
            None
        }
    }
}

impl Inner {
    fn insert(&mut self, id: Uuid, call: Call) {
        for user in [call.caller.id, call.callee.id] {
            self.by_user.entry(user).or_default().push(id);
        }
        self.by_id.insert(id, call);
    }

    fn remove(&mut self, id: Uuid) -> Option<Call> {
        let call = self.by_id.remove(&id)?;
        for user in [call.caller.id, call.callee.id] {
            if let Some(calls) = self.by_user.get_mut(&user) {
                calls.retain(|c| *c != id);
                if calls.is_empty() {
                    self.by_user.remove(&user);
                }
            }
        }
        Some(call)
    }

    fn count_of(&self, user: Uuid) -> usize {
        self.by_user.get(&user).map_or(0, Vec::len)
    }
}

impl Calls {
    /// How many calls this server's users take part in now.
    pub(crate) fn count(&self) -> usize {
        self.lock().by_id.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map holds plain data changed in single steps: a panic elsewhere leaves it whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies an event that reached this server's user `to`: an invite makes the call known
    /// here (the callee's side), an answer moves it on, an end forgets it.
    pub(crate) fn observe(&self, to: &Sender, event: &CallEvent) {
        let mut inner = self.lock();
        match event {
            CallEvent::Incoming { call, from, .. } => {
                if !inner.by_id.contains_key(call) {
                    let view = Call {
                        caller: from.clone(),
                        callee: to.clone(),
                        phase: CallPhase::Inviting,
                    };
                    inner.insert(*call, view);
                }
            }
            CallEvent::Ringing { call, .. } => {
                if let Some(view) = inner.by_id.get_mut(call)
                    && view.phase == CallPhase::Inviting
                {
                    view.phase = CallPhase::Ringing;
                }
            }
            CallEvent::Accepted { call, .. } => {
                if let Some(view) = inner.by_id.get_mut(call) {
                    view.phase = CallPhase::Accepted;
                }
            }
            CallEvent::Ended { call, .. } => {
                inner.remove(*call);
            }
            CallEvent::Sdp { .. } | CallEvent::Ice { .. } => {}
        }
    }

    /// The call `id` if `user` takes part in it.
    fn of(&self, id: Uuid, user: Uuid) -> Result<Call, ChatError> {
        match self.lock().by_id.get(&id) {
            Some(call) if call.other_side(user).is_some() => Ok(call.clone()),
            _ => Err(ChatError::NoSuchCall(id)),
        }
    }

    /// The calls `user` takes part in.
    fn all_of(&self, user: Uuid) -> Vec<Uuid> {
        self.lock().by_user.get(&user).cloned().unwrap_or_default()
    }

    /// How many calls this server knows.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_id.len()
    }
}

impl Shared {
    /// Calls `user`: they must be online; every device of theirs is told.
    pub(crate) async fn call(
        self: &Arc<Self>,
        session: &Session,
        user: Uuid,
        media: Vec<CallMedia>,
    ) -> Result<Uuid, ChatError> {
        let me = session.sender();
        if user == me.id {
            return Err(ChatError::Invalid("you cannot call yourself".into()));
        }
        let media = distinct_media(media)?;
        let Some(callee) = self.presence.get(user) else {
            return match self.store.user(user).await.map_err(storage_error)? {
                Some(_) => Err(ChatError::Offline(user.to_string())),
                None => Err(ChatError::UnknownUser(user.to_string())),
            };
        };
        let callee = Sender {
            id: callee.id,
            name: callee.name,
        };
        let id = Uuid::new_v4();
        {
            let mut inner = self.calls.lock();
            for who in [&me, &callee] {
                if inner.count_of(who.id) >= MAX_CALLS_PER_USER {
                    return Err(ChatError::Quota(format!(
                        "{} in {MAX_CALLS_PER_USER} calls already, the most allowed",
                        if who.id == me.id {
                            "you are".to_owned()
                        } else {
                            format!("user {} is", who.id)
                        }
                    )));
                }
            }
            let view = Call {
                caller: me.clone(),
                callee: callee.clone(),
                phase: CallPhase::Inviting,
            };
            inner.insert(id, view);
        }
        let invite = CallEvent::Incoming {
            call: id,
            from: me.clone(),
            media: media.clone(),
        };
        if self
            .push_everywhere(&[user], &InboxItem::Call(invite))
            .await
            == 0
        {
            // Online a moment ago, but no inbox took it: gone, or between connections.
            self.calls.lock().remove(id);
            return Err(ChatError::Offline(user.to_string()));
        }
        info!(call = %id, caller = %me.id, callee = %user, ?media, "call");
        let shared = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(shared.settings.call_answer).await;
            let unanswered = shared
                .calls
                .lock()
                .by_id
                .get(&id)
                .is_some_and(|call| call.phase != CallPhase::Accepted);
            if unanswered {
                shared.end_call(id, None, CallEnd::Missed).await;
            }
        });
        Ok(id)
    }

    /// The callee's device rings: the caller is told.
    pub(crate) async fn ringing(&self, session: &Session, id: Uuid) -> Result<(), ChatError> {
        let me = session.sender();
        let call = self.callee_call(id, me.id)?;
        if call.phase != CallPhase::Accepted {
            let event = CallEvent::Ringing { call: id, by: me };
            self.calls.observe(&call.callee, &event);
            self.push_everywhere(&[call.caller.id], &InboxItem::Call(event))
                .await;
        }
        Ok(())
    }

    /// The callee accepts: both sides are told (the callee's other devices stop ringing).
    pub(crate) async fn accept_call(&self, session: &Session, id: Uuid) -> Result<(), ChatError> {
        let me = session.sender();
        let call = self.callee_call(id, me.id)?;
        if call.phase == CallPhase::Accepted {
            // An answer lost on the way, sent again.
            return Ok(());
        }
        info!(call = %id, callee = %me.id, "call accepted");
        let event = CallEvent::Accepted { call: id, by: me };
        self.calls.observe(&call.callee, &event);
        self.push_everywhere(&[call.caller.id, call.callee.id], &InboxItem::Call(event))
            .await;
        Ok(())
    }

    /// The callee declines (busy or not); a call already accepted is hung up instead.
    pub(crate) async fn reject_call(
        &self,
        session: &Session,
        id: Uuid,
        busy: bool,
    ) -> Result<(), ChatError> {
        let me = session.sender();
        let call = self.callee_call(id, me.id)?;
        let reason = match (call.phase, busy) {
            (CallPhase::Accepted, _) => CallEnd::HungUp,
            (_, true) => CallEnd::Busy,
            (_, false) => CallEnd::Rejected,
        };
        self.end_call(id, Some(me), reason).await;
        Ok(())
    }

    /// Either side ends the call: the caller cancels an unanswered call, the callee declines
    /// it, and after it was accepted either hangs up.
    pub(crate) async fn hang_up(&self, session: &Session, id: Uuid) -> Result<(), ChatError> {
        let me = session.sender();
        let call = self.calls.of(id, me.id)?;
        let reason = match call.phase {
            CallPhase::Accepted => CallEnd::HungUp,
            _ if me.id == call.caller.id => CallEnd::Cancelled,
            _ => CallEnd::Rejected,
        };
        self.end_call(id, Some(me), reason).await;
        Ok(())
    }

    /// Relays an SDP offer or answer to the other side.
    pub(crate) async fn send_sdp(
        &self,
        session: &Session,
        id: Uuid,
        kind: SdpKind,
        sdp: String,
    ) -> Result<(), ChatError> {
        if sdp.is_empty() || sdp.len() > MAX_SDP_BYTES {
            return Err(ChatError::Invalid(format!(
                "an SDP must have 1 to {MAX_SDP_BYTES} bytes, not {}",
                sdp.len()
            )));
        }
        let me = session.sender();
        let call = self.calls.of(id, me.id)?;
        let to = other_side(&call, me.id);
        let event = CallEvent::Sdp {
            call: id,
            from: me,
            kind,
            sdp,
        };
        self.push_everywhere(&[to], &InboxItem::Call(event)).await;
        Ok(())
    }

    /// Relays an ICE candidate to the other side.
    pub(crate) async fn send_ice(
        &self,
        session: &Session,
        id: Uuid,
        candidate: IceCandidate,
    ) -> Result<(), ChatError> {
        let size = candidate.candidate.len()
            + candidate.sdp_mid.as_ref().map_or(0, String::len)
            + candidate.username_fragment.as_ref().map_or(0, String::len);
        if size > MAX_CANDIDATE_BYTES {
            return Err(ChatError::Invalid(format!(
                "an ICE candidate may have at most {MAX_CANDIDATE_BYTES} bytes, not {size}"
            )));
        }
        if candidate.candidate.contains(['\r', '\n']) {
            return Err(ChatError::Invalid(format!(
                "an ICE candidate is one line: {}",
                excerpt(&candidate.candidate)
            )));
        }
        let me = session.sender();
        let call = self.calls.of(id, me.id)?;
        let to = other_side(&call, me.id);
        let event = CallEvent::Ice {
            call: id,
            from: me,
            candidate,
        };
        self.push_everywhere(&[to], &InboxItem::Call(event)).await;
        Ok(())
    }

    /// Passes a hole-punching request or answer to `to`, wherever their session is.
    pub(crate) async fn punch(
        &self,
        session: &Session,
        to: Uuid,
        attempt: Uuid,
        candidates: Vec<String>,
        answer: bool,
    ) -> Result<(), ChatError> {
        if candidates.len() > MAX_PUNCH_CANDIDATES {
            return Err(ChatError::Invalid(format!(
                "at most {MAX_PUNCH_CANDIDATES} candidates, not {}",
                candidates.len()
            )));
        }
        for candidate in &candidates {
            if candidate.len() > 64 || candidate.parse::<std::net::SocketAddr>().is_err() {
                return Err(ChatError::Invalid(format!(
                    "a candidate is ip:port, not {:?}",
                    excerpt(candidate)
                )));
            }
        }
        if self.session_of(to).is_none() && self.presence.node_of(to).is_none() {
            return Err(ChatError::Offline(to.to_string()));
        }
        let request = PunchRequest {
            from: session.sender(),
            attempt,
            candidates,
            answer,
            nat: session
                .nat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        if self
            .push_everywhere(&[to], &InboxItem::Punch(request))
            .await
            == 0
        {
            return Err(ChatError::Offline(to.to_string()));
        }
        Ok(())
    }

    /// Ends every call of `user`, whose session ended: the other sides are told.
    pub(crate) async fn end_calls_of(&self, user: Uuid) {
        for id in self.calls.all_of(user) {
            self.end_call(id, None, CallEnd::Gone).await;
        }
    }

    /// Ends a call, if it has not ended yet: both sides are told.
    async fn end_call(&self, id: Uuid, by: Option<Sender>, reason: CallEnd) {
        let Some(call) = self.calls.lock().remove(id) else {
            return;
        };
        info!(call = %id, ?reason, by = ?by.as_ref().map(|s| s.id), "call ended");
        let event = CallEvent::Ended {
            call: id,
            by,
            reason,
        };
        self.push_everywhere(&[call.caller.id, call.callee.id], &InboxItem::Call(event))
            .await;
    }

    /// The call `id` if `user` is its callee (only the callee rings, accepts or rejects).
    fn callee_call(&self, id: Uuid, user: Uuid) -> Result<Call, ChatError> {
        let call = self.calls.of(id, user)?;
        if call.callee.id != user {
            return Err(ChatError::Invalid(format!(
                "only the user called may answer call {id}; hang up to cancel it"
            )));
        }
        Ok(call)
    }
}

fn other_side(call: &Call, user: Uuid) -> Uuid {
    call.other_side(user).map_or(user, |other| other.id)
}

/// The media of an invite, each once, in a fixed order; at least one.
fn distinct_media(media: Vec<CallMedia>) -> Result<Vec<CallMedia>, ChatError> {
    let order = [
        CallMedia::Audio,
        CallMedia::Video,
        CallMedia::Screen,
        CallMedia::Data,
    ];
    let distinct: Vec<CallMedia> = order.into_iter().filter(|m| media.contains(m)).collect();
    if distinct.is_empty() {
        return Err(ChatError::Invalid(
            "a call carries audio, video, screen or data: name at least one".into(),
        ));
    }
    Ok(distinct)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(name: &str) -> Sender {
        Sender {
            id: Uuid::new_v4(),
            name: name.into(),
        }
    }

    #[test]
    fn the_callees_server_learns_the_call_from_the_invite_and_forgets_it_at_the_end() {
        let calls = Calls::default();
        let (alice, bob) = (sender("alice"), sender("bob"));
        let id = Uuid::new_v4();
        let invite = CallEvent::Incoming {
            call: id,
            from: alice.clone(),
            media: vec![CallMedia::Audio],
        };
        calls.observe(&bob, &invite);
        calls.observe(&bob, &invite);
        assert_eq!(calls.len(), 1);
        let call = calls.of(id, bob.id).unwrap();
        assert_eq!((call.caller.id, call.callee.id), (alice.id, bob.id));
        assert_eq!(call.phase, CallPhase::Inviting);
        assert!(matches!(
            calls.of(id, Uuid::new_v4()),
            Err(ChatError::NoSuchCall(c)) if c == id
        ));

        calls.observe(
            &alice,
            &CallEvent::Ringing {
                call: id,
                by: bob.clone(),
            },
        );
        assert_eq!(calls.of(id, alice.id).unwrap().phase, CallPhase::Ringing);
        calls.observe(
            &alice,
            &CallEvent::Accepted {
                call: id,
                by: bob.clone(),
            },
        );
        // A late ringing does not take an accepted call back.
        calls.observe(
            &alice,
            &CallEvent::Ringing {
                call: id,
                by: bob.clone(),
            },
        );
        assert_eq!(calls.of(id, alice.id).unwrap().phase, CallPhase::Accepted);
        assert_eq!(calls.all_of(alice.id), vec![id]);

        let end = CallEvent::Ended {
            call: id,
            by: Some(alice.clone()),
            reason: CallEnd::HungUp,
        };
        calls.observe(&bob, &end);
        calls.observe(&alice, &end);
        assert_eq!(calls.len(), 0);
        assert!(calls.all_of(alice.id).is_empty() && calls.all_of(bob.id).is_empty());
        assert!(calls.lock().by_user.is_empty());
    }

    #[test]
    fn an_invite_names_its_media_once_each_and_at_least_one() {
        assert_eq!(
            distinct_media(vec![CallMedia::Video, CallMedia::Audio, CallMedia::Video]).unwrap(),
            vec![CallMedia::Audio, CallMedia::Video]
        );
        assert!(matches!(distinct_media(vec![]), Err(ChatError::Invalid(_))));
    }
}
