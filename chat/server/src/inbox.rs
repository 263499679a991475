//! A session's inbox: what is stored for the user first, then what arrives live.
//!
//! Relays are committed to the store before they are pushed, so the stream can start from the
//! store and let live items fill in after it: an inbox opening installs its channel first and
//! reads the mailbox second, so every message is either in the mailbox as it was then (its
//! sequence number is at most the mailbox's `last_seq`: it is replayed from the store, and its
//! live copy is skipped) or pushed to the new channel afterwards. Nothing falls between the
//! two, and nothing comes twice. The replay reads the store a page at a time as the client
//! takes the messages; one acknowledged meanwhile is simply not found.

use std::sync::{Arc, Mutex};

use chat_api::{Attachment, ChatError, Delivery, Destination, Envelope, InboxItem, Path};
use futures::StreamExt;
use rpc_core::{ServerError, ServerStream, Status};
use tokio::sync::mpsc;
use tracing::debug;
use uuid::Uuid;

use crate::state::{Session, Shared, storage_error};
use crate::store::{Mailbox, Relayed, Store};
use crate::validate;

/// How many items an inbox holds for a client that reads slowly before it is closed (the
/// client opens it again and gets what is stored).
const INBOX_BUFFER: usize = 1024;

/// How many stored messages an inbox reads from the store at a time.
const REPLAY_PAGE: usize = 256;

/// What is pushed to an open inbox.
#[derive(Debug)]
pub(crate) enum Live {
    /// A stored message, with its sequence number in the recipient's mailbox.
    Message { seq: u64, envelope: Envelope },
    /// Anything not stored: room and friend events.
    Item(InboxItem),
    /// The mailbox has messages stored by another server: read them from the store.
    Wake,
}

/// Why an inbox ended, told to its reader as the stream's error.
type CloseReason = Arc<Mutex<Option<String>>>;

/// Where a session's open inbox (if any) is pushed to.
#[derive(Debug, Default)]
pub(crate) struct InboxSlot {
    current: Mutex<Option<OpenInbox>>,
}

#[derive(Debug)]
struct OpenInbox {
    tx: mpsc::Sender<Live>,
    reason: CloseReason,
}

impl InboxSlot {
    /// Opens a new inbox, ending the one open before.
    fn open(&self) -> (mpsc::Receiver<Live>, CloseReason) {
        let (tx, rx) = mpsc::channel(INBOX_BUFFER);
        let reason = CloseReason::default();
        let old = self.lock().replace(OpenInbox {
            tx,
            reason: reason.clone(),
        });
        if let Some(old) = old {
            old.close("inbox replaced by a newer one");
        }
        (rx, reason)
    }

    /// Pushes to the open inbox; `false` if none is open or it is full (then it is closed:
    /// its reader opens it again and finds the stored messages).
    pub(crate) fn push(&self, item: Live) -> bool {
        let mut current = self.lock();
        let Some(open) = current.as_ref() else {
            return false;
        };
        match open.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(open) = current.take() {
                    open.close("inbox overflow: the client reads too slowly; open it again");
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                current.take();
                false
            }
        }
    }

    /// Whether an inbox is open and read.
    pub(crate) fn is_open(&self) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|open| !open.tx.is_closed())
    }

    /// Ends the open inbox, if any, telling its reader why.
    pub(crate) fn close(&self, reason: &str) {
        if let Some(open) = self.lock().take() {
            open.close(reason);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OpenInbox>> {
        // Every mutation is a single replace or take: a poisoned lock is still consistent.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl OpenInbox {
    fn close(self, reason: &str) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_owned());
        // Dropping the sender ends the stream after what is buffered.
        drop(self.tx);
    }
}

impl Shared {
    /// Sends a message to one user through the server: committed to the store, then pushed to
    /// the recipient's inbox if one is open.
    pub(crate) async fn relay(
        &self,
        token: &str,
        id: Uuid,
        to: Uuid,
        text: String,
        sent_at_ms: u64,
    ) -> Result<Delivery, ChatError> {
        validate::text(&text)?;
        let session = self.session(token)?;
        self.relay_as(&session, id, to, text, sent_at_ms, None)
            .await
    }

    /// Relays a message from `session`'s user, with the file the server holds for it, if any.
    pub(crate) async fn relay_as(
        &self,
        session: &Session,
        id: Uuid,
        to: Uuid,
        text: String,
        sent_at_ms: u64,
        file: Option<Attachment>,
    ) -> Result<Delivery, ChatError> {
        let reachable = self
            .session_of(to)
            .is_some_and(|recipient| recipient.inbox.is_open())
            || self.presence.node_of(to).is_some();
        let envelope = Envelope {
            id,
            from: session.sender(),
            to: Destination::User(to),
            text,
            sent_at_ms,
            path: if reachable {
                Path::Relayed
            } else {
                Path::Stored
            },
            file,
        };
        let relayed = self
            .store
            .relay(to, &envelope, self.settings.max_pending)
            .await
            .map_err(storage_error)?;
        match relayed {
            Relayed::Stored { seq } => {
                // The recipient may have registered again while the commit ran: push to whoever
                // holds the id now.
                let mut pushed = self
                    .session_of(to)
                    .is_some_and(|recipient| recipient.inbox.push(Live::Message { seq, envelope }));
                if !pushed && let Some(node) = self.presence.node_of(to) {
                    // Another server holds the recipient's session: it reads the message from
                    // the shared store.
                    pushed = self.nodes.wake(&*self.registry, &node, to, seq).await;
                }
                self.messages.relayed(pushed);
                debug!(from = %session.info.id, %to, message = %id, seq, pushed, "relayed");
                Ok(if pushed {
                    Delivery::Delivered
                } else {
                    Delivery::Stored
                })
            }
            Relayed::Duplicate { acknowledged } => {
                debug!(from = %session.info.id, %to, message = %id, "relayed again; ignored");
                Ok(if acknowledged || reachable {
                    Delivery::Delivered
                } else {
                    Delivery::Stored
                })
            }
            Relayed::UnknownRecipient => Err(ChatError::UnknownUser(to.to_string())),
            // The newest is refused rather than the oldest dropped: every message accepted
            // before was promised to its sender, and this sender learns it now.
            Relayed::MailboxFull => Err(ChatError::Quota(format!(
                "{} messages are waiting for {to}, the most one user may have waiting; \
                 try again once they have read them",
                self.settings.max_pending
            ))),
        }
    }

    /// Deletes acknowledged messages from the caller's mailbox.
    pub(crate) async fn ack(&self, token: &str, ids: Vec<Uuid>) -> Result<(), ChatError> {
        if ids.len() > validate::MAX_ACK_IDS {
            return Err(ChatError::Invalid(format!(
                "at most {} ids per ack",
                validate::MAX_ACK_IDS
            )));
        }
        let session = self.session(token)?;
        let removed = self
            .store
            .ack(session.info.id, &ids)
            .await
            .map_err(storage_error)?;
        self.messages.acknowledged(removed);
        debug!(user = %session.info.id, ids = ids.len(), removed, "acknowledged");
        Ok(())
    }

    /// Opens the caller's inbox: the stored messages in order, then live items.
    pub(crate) async fn open_inbox(&self, token: &str) -> ServerStream<InboxItem> {
        let session = match self.session(token) {
            Ok(session) => session,
            Err(e) => return error_stream(&e),
        };
        let (rx, reason) = session.inbox.open();
        let user = session.info.id;
        match self.store.mailbox(user, 0, REPLAY_PAGE).await {
            Ok(mailbox) => {
                debug!(%user, last_seq = mailbox.last_seq, "inbox opened");
                inbox_stream(self.store.clone(), user, mailbox, rx, reason)
            }
            Err(e) => {
                session.inbox.close("storage failed");
                error_stream(&storage_error(e))
            }
        }
    }
}

impl Session {
    /// Ends the session's inbox because the session ended.
    pub(crate) fn close_inbox(&self) {
        self.inbox.close(&ChatError::NoSession.to_string());
    }
}

/// A stream that ends at once with a chat error (streams carry errors as their message).
pub(crate) fn error_stream<T: Send + 'static>(error: &ChatError) -> ServerStream<T> {
    ServerStream::error(ServerError::new(
        Status::APPLICATION_ERROR,
        error.to_string(),
    ))
}

/// Where an inbox stream is: replaying the stored messages (up to `upto`: the last sequence
/// number the mailbox had when the inbox opened, or no bound when another server said more were
/// stored), or passing on what arrives.
enum Phase {
    Replay {
        page: std::vec::IntoIter<(u64, Envelope)>,
        /// The sequence number of the last message read from the store.
        last: u64,
        /// Whether the store may have more after this page.
        more: bool,
        /// The last sequence number to replay; later ones come live.
        upto: u64,
    },
    Live,
}

/// What an inbox stream carries from one item to the next.
struct InboxState {
    phase: Phase,
    rx: mpsc::Receiver<Live>,
    reason: CloseReason,
    /// The highest sequence number sent or to be sent by the replay under way: a message at or
    /// below it that also comes live is not sent twice.
    high: u64,
}

/// The inbox stream: the stored messages, read from the store a page at a time as the client
/// takes them (so that a full mailbox is never all in memory at once), then live items.
fn inbox_stream(
    store: Arc<dyn Store>,
    user: Uuid,
    first: Mailbox,
    rx: mpsc::Receiver<Live>,
    reason: CloseReason,
) -> ServerStream<InboxItem> {
    let state = InboxState {
        phase: Phase::Replay {
            more: first.messages.len() >= REPLAY_PAGE,
            page: first.messages.into_iter(),
            last: 0,
            upto: first.last_seq,
        },
        rx,
        reason,
        high: first.last_seq,
    };
    let stream = futures::stream::unfold(Some(state), move |state| {
        let store = store.clone();
        async move {
            let mut state = state?;
            loop {
                match &mut state.phase {
                    Phase::Replay {
                        page,
                        last,
                        more,
                        upto,
                    } => {
                        if let Some((seq, envelope)) = page.next() {
                            *last = seq;
                            state.high = state.high.max(seq);
                            let item = Ok(InboxItem::Message(envelope));
                            return Some((item, Some(state)));
                        }
                        if !*more || *last >= *upto {
                            state.phase = Phase::Live;
                            continue;
                        }
                        match store.mailbox(user, *last, REPLAY_PAGE).await {
                            Ok(next) => {
                                *more = next.messages.len() >= REPLAY_PAGE;
                                // Later ones come live.
                                let upto = *upto;
                                let kept: Vec<_> = next
                                    .messages
                                    .into_iter()
                                    .filter(|(seq, _)| *seq <= upto)
                                    .collect();
                                *page = kept.into_iter();
                            }
                            Err(e) => {
                                let message = storage_error(e).to_string();
                                let error = ServerError::new(Status::APPLICATION_ERROR, message);
                                return Some((Err(error), None));
                            }
                        }
                    }
                    Phase::Live => match state.rx.recv().await {
                        // Already sent, from the store or live.
                        Some(Live::Message { seq, .. }) if seq <= state.high => continue,
                        Some(Live::Message { seq, envelope }) if seq == state.high + 1 => {
                            state.high = seq;
                            let item = Ok(InboxItem::Message(envelope));
                            return Some((item, Some(state)));
                        }
                        Some(Live::Item(item)) => return Some((Ok(item), Some(state))),
                        // A message past a gap: the messages before it were stored by another
                        // node, whose wake is still on its way, or committed at the same time
                        // and pushed out of order (posts in two rooms, relays from two senders). Sending this one first would
                        // move `high` past them and the wake would find nothing after it, so
                        // read them all from the store, in order, as a wake does.
                        Some(Live::Message { .. } | Live::Wake) => {
                            state.phase = Phase::Replay {
                                page: Vec::new().into_iter(),
                                last: state.high,
                                more: true,
                                upto: u64::MAX,
                            };
                        }
                        None => {
                            let why = state
                                .reason
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .take()?;
                            let error = ServerError::new(Status::APPLICATION_ERROR, why);
                            return Some((Err(error), None));
                        }
                    },
                }
            }
        }
    });
    ServerStream::try_new(stream.boxed())
}
