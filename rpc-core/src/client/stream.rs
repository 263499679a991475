//! The client's end of a server stream: [`ClientStream`] takes its items from the stream's
//! inbox and grants credit back as its caller reads them.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use rpc_codec::{HEADER_LEN, STREAM_WINDOW, Status, StreamCredit, WINDOWED_STREAM_CREDIT};
use tokio::time::Instant;

use super::conn::Conn;
use super::inbox::{End, InboxTx, StreamInbox};
use crate::caller::error_from_body;
use crate::error::RpcError;
use crate::writer::Outgoing;

/// Until the server is known to keep the byte window, credit is given back every this many
/// items consumed: a server that does not know the window started the stream with 256.
const ITEM_GRANT: u64 = STREAM_WINDOW as u64 / 2;

/// A new stream's two ends: the handle for the pending-call map and the stream for the caller.
///
/// `window` is the byte window the call announced, if it did.
pub(crate) fn stream_channel(
    conn: Arc<Conn>,
    id: u64,
    deadline: Option<Instant>,
    window: Option<u64>,
) -> (InboxTx, ClientStream) {
    // The most a server may send before a grant: the larger credit of a server that keeps the
    // window, if one was announced.
    let credit = match window {
        Some(_) => WINDOWED_STREAM_CREDIT,
        None => STREAM_WINDOW,
    };
    let inbox = StreamInbox::new(u64::from(credit));
    let stream = ClientStream {
        conn,
        id,
        inbox: inbox.clone(),
        local: VecDeque::new(),
        window,
        windowed: false,
        granted: 0,
        received: 0,
        consumed: 0,
        since_items: 0,
        since_bytes: 0,
        done: false,
        deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
    };
    (InboxTx(inbox), stream)
}

/// The client's end of a server stream: yields item bodies, grants credit as they are consumed,
/// and cancels the stream on the server when dropped early or when its deadline passes.
pub(crate) struct ClientStream {
    conn: Arc<Conn>,
    id: u64,
    inbox: Arc<StreamInbox>,
    /// Items taken from the inbox in one swap, handed out one by one.
    local: VecDeque<Bytes>,
    /// The byte window announced with the call, if it was.
    window: Option<u64>,
    /// Whether the server is known to keep the window: more items arrived than a server that
    /// counts only 256 items could have sent.
    windowed: bool,
    /// Credit granted so far (beyond the initial).
    granted: u64,
    /// Items the reader had received when the inbox was last emptied.
    received: u64,
    /// Items handed to the caller so far.
    consumed: u64,
    /// Items (and their frames' bytes) handed out since the last grant.
    since_items: u64,
    since_bytes: u64,
    done: bool,
    /// The call's deadline, if it has one. The server ends the stream then too; this side does
    /// not count on it.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ClientStream {
    /// Counts one item handed out and grants credit back when it is due.
    ///
    /// Credit is given back item for item as they are consumed, so what the server may send
    /// stays what it started with: 256 items for a server that counts items only, the byte
    /// window for one that keeps it. A grant is due once a quarter of the window's bytes has
    /// been consumed or, until the server is known to keep the window, every 128 items.
    fn consumed_one(&mut self, item: &Bytes) {
        self.consumed += 1;
        self.since_items += 1;
        self.since_bytes += (item.len() + HEADER_LEN) as u64;
        if !self.windowed && self.window.is_some() {
            self.windowed = self.received > u64::from(STREAM_WINDOW) + self.granted;
        }
        let due = match self.window {
            Some(window) if self.windowed => {
                self.since_bytes >= window / 4
                    || self.since_items >= u64::from(WINDOWED_STREAM_CREDIT / 4)
            }
            Some(window) => self.since_bytes >= window / 4 || self.since_items >= ITEM_GRANT,
            None => self.since_items >= ITEM_GRANT,
        };
        if !due {
            return;
        }
        let grant = u32::try_from(self.since_items).unwrap_or(u32::MAX);
        self.since_items = 0;
        self.since_bytes = 0;
        // Credit first, then the frame: the items it lets through can only come after it.
        self.inbox.lock().credit += u64::from(grant);
        self.granted += u64::from(grant);
        let mut fb = crate::frame_buf::FrameBuf::with_capacity(StreamCredit::LEN);
        StreamCredit(grant).put(fb.body());
        if let Ok(frame) = fb.finish(
            rpc_codec::FrameKind::StreamCredit,
            rpc_codec::SerializerId::NONE,
            Status::OK,
            self.id,
            usize::MAX,
        ) {
            let _ = self.conn.tx.send(Outgoing::frame(frame));
        }
    }

    fn next_item(&mut self) -> Option<Bytes> {
        let item = self.local.pop_front()?;
        self.consumed_one(&item);
        Some(item)
    }
}

impl Stream for ClientStream {
    type Item = Result<Bytes, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(item) = self.next_item() {
            return Poll::Ready(Some(Ok(item)));
        }
        let this = &mut *self;
        let end = {
            let mut inbox = this.inbox.lock();
            if !inbox.items.is_empty() {
                std::mem::swap(&mut inbox.items, &mut this.local);
                this.received = inbox.delivered;
                None
            } else if let Some(end) = inbox.end.take() {
                Some(end)
            } else {
                match &inbox.waiting {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => inbox.waiting = Some(cx.waker().clone()),
                }
                drop(inbox);
                let passed = match &mut this.deadline {
                    Some(sleep) => sleep.as_mut().poll(cx).is_ready(),
                    None => false,
                };
                if !passed {
                    return Poll::Pending;
                }
                this.done = true;
                this.conn.cancel(this.id);
                return Poll::Ready(Some(Err(RpcError::DeadlineExceeded)));
            }
        };
        match end {
            None => Poll::Ready(this.next_item().map(Ok)),
            Some(End::Frame(status, body)) => {
                this.done = true;
                if status.is_ok() {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(error_from_body(status, &body, |b| Ok(b.message)))))
                }
            }
            Some(End::Lost) => {
                this.done = true;
                Poll::Ready(Some(Err(this.conn.lost())))
            }
        }
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        if !self.done {
            self.conn.cancel(self.id);
        }
    }
}
