//! Call signaling: the typed messages two users' devices exchange through the server to set up
//! a WebRTC call (audio, video, screen sharing, a data channel), after SIP's call flow:
//! invite, ringing, accept (or reject, busy), then SDP offer and answer and ICE candidates,
//! and hang up.
//!
//! A call has an id (the server's) and moves through [`CallPhase`]s; the server ends it as
//! missed when it is not answered within [`CALL_ANSWER_SECS`], and answering, ringing or
//! signaling on a call that has ended is refused with
//! [`ChatError::NoSuchCall`](crate::ChatError::NoSuchCall).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Sender;

/// How long a call may ring before the server ends it as missed, in seconds.
pub const CALL_ANSWER_SECS: u64 = 30;
/// The longest SDP offer or answer, in bytes.
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// The longest ICE candidate line (and its media id and fragment), in bytes.
pub const MAX_CANDIDATE_BYTES: usize = 1024;

/// What a call carries; an invite names one or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallMedia {
    /// Sound.
    Audio,
    /// A camera.
    Video,
    /// A shared screen or window.
    Screen,
    /// A data channel (text or files between the two browsers).
    Data,
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallPhase {
    /// The caller invited; no device of the callee has said it rings yet.
    Inviting,
    /// A device of the callee rings.
    Ringing,
    /// The callee accepted: the two exchange SDP and ICE and talk.
    Accepted,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallEnd {
    /// The callee declined.
    Rejected,
    /// The callee is busy (in another call).
    Busy,
    /// The caller gave up before it was answered.
    Cancelled,
    /// Nobody answered within [`CALL_ANSWER_SECS`].
    Missed,
    /// One side hung up after it was accepted.
    HungUp,
    /// One side went offline (left, or its session expired).
    Gone,
}

/// Which half of the SDP exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SdpKind {
    /// The offer (usually the caller's, once accepted).
    Offer,
    /// The answer to an offer.
    Answer,
}

/// One ICE candidate, as a browser's `RTCIceCandidate` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` line; empty for the end of candidates.
    pub candidate: String,
    /// The media stream's id (`sdpMid`).
    pub sdp_mid: Option<String>,
    /// The media line's index (`sdpMLineIndex`).
    pub sdp_m_line_index: Option<u16>,
    /// The ICE username fragment (`usernameFragment`).
    pub username_fragment: Option<String>,
}

/// A call event, pushed to the inbox of the user it concerns (to every device of theirs that
/// is online, so that the others stop ringing when one answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallEvent {
    /// `from` calls the user.
    Incoming {
        /// The call.
        call: Uuid,
        /// The caller.
        from: Sender,
        /// What the call carries.
        media: Vec<CallMedia>,
    },
    /// A device of the callee rings (to the caller).
    Ringing {
        /// The call.
        call: Uuid,
        /// The callee.
        by: Sender,
    },
    /// The callee accepted (to both, so that the callee's other devices stop ringing).
    Accepted {
        /// The call.
        call: Uuid,
        /// The callee.
        by: Sender,
    },
    /// An SDP offer or answer from the other side.
    Sdp {
        /// The call.
        call: Uuid,
        /// Who sent it.
        from: Sender,
        /// Offer or answer.
        kind: SdpKind,
        /// The session description.
        sdp: String,
    },
    /// An ICE candidate from the other side.
    Ice {
        /// The call.
        call: Uuid,
        /// Who sent it.
        from: Sender,
        /// The candidate.
        candidate: IceCandidate,
    },
    /// The call is over (to both).
    Ended {
        /// The call.
        call: Uuid,
        /// Who ended it; `None` when the server did (missed, gone).
        by: Option<Sender>,
        /// Why.
        reason: CallEnd,
    },
}

impl CallEvent {
    /// The call the event is about.
    pub fn call(&self) -> Uuid {
        match self {
            CallEvent::Incoming { call, .. }
            | CallEvent::Ringing { call, .. }
            | CallEvent::Accepted { call, .. }
            | CallEvent::Sdp { call, .. }
            | CallEvent::Ice { call, .. }
            | CallEvent::Ended { call, .. } => *call,
        }
    }
}
