//! A server stream's inbox on the client: the connection's reader fills it a batch at a time
//! ([`StreamBatcher`]), and the stream's consumer empties it a batch at a time.
//!
//! The reader and the consumer meet on one lock per batch, not per item: the reader collects
//! the items one read brought in for a stream and hands them over together, and the consumer
//! takes everything waiting in one swap. The consumer is woken only when it had found the inbox
//! empty and said so.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::Bytes;
use rpc_codec::Status;

use crate::reader::Disconnect;

/// The reader hands a stream's items over at least this often within one read.
const READER_BATCH: usize = 64;

/// How a stream ended, as the reader saw it.
pub(super) enum End {
    /// A StreamEnd (or a Response, for a stream that failed before it started).
    Frame(Status, Bytes),
    /// The connection closed (or the call was forgotten) before the end came.
    Lost,
}

/// What the reader and the consumer share.
#[derive(Default)]
pub(super) struct Inbox {
    pub(super) items: VecDeque<Bytes>,
    pub(super) end: Option<End>,
    /// Items the server may still send: the credit granted and not yet used.
    pub(super) credit: u64,
    /// Items handed over so far.
    pub(super) delivered: u64,
    /// The consumer found the inbox empty and waits for this waker to be woken.
    pub(super) waiting: Option<Waker>,
}

/// A stream's inbox, shared by the pending-call map (through [`InboxTx`]), the reader's batcher
/// and the [`ClientStream`](super::stream::ClientStream).
pub(crate) struct StreamInbox(Mutex<Inbox>);

impl StreamInbox {
    /// An inbox that accepts `credit` items before a grant.
    pub(super) fn new(credit: u64) -> Arc<Self> {
        Arc::new(StreamInbox(Mutex::new(Inbox {
            credit,
            ..Inbox::default()
        })))
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inbox> {
        // Nothing panics while holding the lock, so poisoning carries no meaning here.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands over items for the consumer. Fails when they exceed the credit the client gave
    /// (the items within it are handed over).
    fn deliver(&self, items: &mut Vec<Bytes>) -> Result<(), ()> {
        let count = items.len() as u64;
        let (waker, within) = {
            let mut inbox = self.lock();
            if inbox.end.is_some() {
                // Nobody reads them any more (the call was cancelled or forgotten).
                items.clear();
                return Ok(());
            }
            let within = count.min(inbox.credit);
            inbox.credit -= within;
            inbox.delivered += within;
            inbox.items.extend(items.drain(..within as usize));
            items.clear();
            (inbox.waiting.take(), within == count)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        if within { Ok(()) } else { Err(()) }
    }

    /// Records the end (the first one given counts) and wakes the consumer.
    fn finish(&self, end: End) {
        let waker = {
            let mut inbox = self.lock();
            if inbox.end.is_none() {
                inbox.end = Some(end);
            }
            inbox.waiting.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The pending-call map's handle on a stream: the reader ends the stream through it, and
/// dropping it (the connection closed, or the call was forgotten) ends it as lost.
pub(crate) struct InboxTx(pub(super) Arc<StreamInbox>);

impl InboxTx {
    /// Ends the stream with a StreamEnd's (or an early Response's) status and body.
    pub(crate) fn end(self, status: Status, body: Bytes) {
        self.0.finish(End::Frame(status, body));
    }

    pub(crate) fn inbox(&self) -> &Arc<StreamInbox> {
        &self.0
    }
}

impl Drop for InboxTx {
    fn drop(&mut self) {
        self.0.finish(End::Lost);
    }
}

/// The reader's side: collects the items one read brings in for the stream it last saw and
/// hands them over in batches. Handing over happens before any other frame is handled, at the
/// end of the read, and every [`READER_BATCH`] items.
#[derive(Default)]
pub(crate) struct StreamBatcher {
    /// The stream the collected items belong to, and its inbox.
    current: Option<(u64, Arc<StreamInbox>)>,
    items: Vec<Bytes>,
}

impl StreamBatcher {
    /// Collects an item of stream `id`; `lookup` finds the stream's inbox when it is not the
    /// current one (`None` when the call is no longer pending: the item is dropped).
    pub(crate) fn push(
        &mut self,
        id: u64,
        body: Bytes,
        lookup: impl FnOnce() -> Option<Arc<StreamInbox>>,
    ) -> Result<(), Disconnect> {
        if self
            .current
            .as_ref()
            .is_none_or(|(current, _)| *current != id)
        {
            self.flush()?;
            match lookup() {
                Some(inbox) => self.current = Some((id, inbox)),
                None => {
                    self.current = None;
                    return Ok(());
                }
            }
        }
        self.items.push(body);
        if self.items.len() >= READER_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands the collected items over.
    pub(crate) fn flush(&mut self) -> Result<(), Disconnect> {
        if self.items.is_empty() {
            return Ok(());
        }
        let Some((id, inbox)) = &self.current else {
            self.items.clear();
            return Ok(());
        };
        inbox.deliver(&mut self.items).map_err(|()| {
            Disconnect::Protocol(format!("server sent more than its credit on stream {id}"))
        })
    }

    /// Forgets the current stream (after its end, so that its inbox is not kept alive).
    pub(crate) fn forget(&mut self, id: u64) {
        if self
            .current
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            self.current = None;
        }
    }
}
