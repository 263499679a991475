//! The call table of one server connection, sans-IO.
//!
//! A call that outlives the read step that brought its request in lives here from that moment
//! until its handler and its stream have both ended. Control frames reach calls only through
//! the table, so a Cancel or a StreamCredit that arrives right behind its Request — in the same
//! read, before the handler has been spawned or the stream set up — applies to that call rather
//! than being lost. Calls that finish inside the read step never need an entry: no other frame
//! of the connection can be handled in between.
//!
//! The table decides and the connection driver acts: it is given events (a call opened, a
//! Cancel, a StreamCredit, deadlines passing, a call's task ending, the connection closing) and
//! applies them to
//! each call's [`CallControl`], a handle the call's task watches. It touches no socket, clock
//! or task, so every ordering of those events is a unit test below.

use std::collections::HashMap;

use tokio::time::Instant;

use crate::id_hash::IdHash;

/// What the table can do to a running call.
pub(crate) trait CallControl {
    /// Stops the call: its handler or stream is dropped and nothing more is sent for it.
    fn cancel(&self);
    /// Lets the call's stream send `credit` more items (bounded by the stream's credit cap).
    fn grant(&self, credit: u32);
    /// The call's deadline, if its caller gave one.
    fn deadline(&self) -> Option<Instant>;
    /// Stops the call because its deadline passed: it ends with DEADLINE_EXCEEDED.
    fn deadline_passed(&self);
}

/// The open calls of one connection, by request id.
#[derive(Debug)]
pub(crate) struct CallTable<C> {
    open: HashMap<u64, Entry<C>, IdHash>,
    next_serial: u64,
    closed: bool,
}

#[derive(Debug)]
struct Entry<C> {
    serial: u64,
    control: C,
}

/// A call's claim on its entry, given when it opens and used to end it. The serial tells this
/// call from a later one that reuses its request id once this one has been cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallKey {
    id: u64,
    serial: u64,
}

/// Why a call could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Another open call has this request id: the client broke the protocol.
    Duplicate,
    /// The connection is closing; the call must not start.
    Closed,
}

impl<C: CallControl> CallTable<C> {
    pub(crate) fn new() -> Self {
        CallTable {
            open: HashMap::default(),
            next_serial: 0,
            closed: false,
        }
    }

    /// A call whose request was just read outlives the read step.
    pub(crate) fn open(&mut self, id: u64, control: C) -> Result<CallKey, OpenError> {
        if self.closed {
            return Err(OpenError::Closed);
        }
        if self.open.contains_key(&id) {
            return Err(OpenError::Duplicate);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.open.insert(id, Entry { serial, control });
        Ok(CallKey { id, serial })
    }

    /// A Cancel frame: the call stops and its id is free for a new call at once. False if no
    /// call with that id is open (it may just have ended); that is not an error.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        match self.open.remove(&id) {
            Some(entry) => {
                entry.control.cancel();
                true
            }
            None => false,
        }
    }

    /// A StreamCredit frame. Credit for a call whose stream has not started yet is kept for it.
    /// False if no call with that id is open.
    pub(crate) fn credit(&mut self, id: u64, credit: u32) -> bool {
        match self.open.get(&id) {
            Some(entry) => {
                entry.control.grant(credit);
                true
            }
            None => false,
        }
    }

    /// The call's task is done (its last frame is queued, or it was cancelled). Ends only the
    /// call the key was given to, never a later call that reuses the id.
    pub(crate) fn end(&mut self, key: CallKey) -> bool {
        match self.open.get(&key.id) {
            Some(entry) if entry.serial == key.serial => {
                self.open.remove(&key.id);
                true
            }
            _ => false,
        }
    }

    /// Tells every open call whose deadline is `now` or before that it passed (each stays open
    /// until its task ends it), and gives the earliest deadline still ahead: the connection keeps
    /// one timer for all its calls, set to that.
    pub(crate) fn deadlines_passed(&mut self, now: Instant) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for entry in self.open.values() {
            match entry.control.deadline() {
                Some(deadline) if deadline <= now => entry.control.deadline_passed(),
                Some(deadline) if earliest.is_none_or(|e| deadline < e) => {
                    earliest = Some(deadline);
                }
                _ => {}
            }
        }
        earliest
    }

    /// The connection is closing: every open call is cancelled and no new one opens. Returns
    /// how many were cancelled.
    pub(crate) fn close(&mut self) -> usize {
        self.closed = true;
        let cancelled = self.open.len();
        for (_, entry) in self.open.drain() {
            entry.control.cancel();
        }
        cancelled
    }

    /// Whether a call with this id is open.
    pub(crate) fn is_open(&self, id: u64) -> bool {
        self.open.contains_key(&id)
    }

    /// How many calls are open.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// What happened to one call, as its task would see it.
    #[derive(Debug, Default)]
    struct Seen {
        cancelled: bool,
        credit: u64,
        deadline: Option<Instant>,
        deadline_passed: bool,
    }

    #[derive(Debug, Clone, Default)]
    struct Probe(Rc<RefCell<Seen>>);

    impl CallControl for Probe {
        fn cancel(&self) {
            self.0.borrow_mut().cancelled = true;
        }
        fn grant(&self, credit: u32) {
            self.0.borrow_mut().credit += u64::from(credit);
        }
        fn deadline(&self) -> Option<Instant> {
            self.0.borrow().deadline
        }
        fn deadline_passed(&self) {
            self.0.borrow_mut().deadline_passed = true;
        }
    }

    impl Probe {
        fn cancelled(&self) -> bool {
            self.0.borrow().cancelled
        }
        fn credit(&self) -> u64 {
            self.0.borrow().credit
        }
    }

    /// A call's life in the table, one event at a time, in any order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        Cancel,
        Credit,
        End,
        Close,
    }

    fn run(events: &[Event]) -> (CallTable<Probe>, Probe) {
        let mut table = CallTable::new();
        let probe = Probe::default();
        let key = table.open(7, probe.clone()).unwrap();
        for event in events {
            match event {
                Event::Cancel => {
                    table.cancel(7);
                }
                Event::Credit => {
                    table.credit(7, 10);
                }
                Event::End => {
                    table.end(key);
                }
                Event::Close => {
                    table.close();
                }
            }
        }
        (table, probe)
    }

    #[test]
    fn a_cancel_right_behind_the_request_reaches_the_call() {
        // The request opened the call; its handler has not run yet when the Cancel is read.
        let (table, probe) = run(&[Event::Cancel]);
        assert!(probe.cancelled());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn credit_before_the_stream_starts_is_kept_for_it() {
        let (table, probe) = run(&[Event::Credit, Event::Credit]);
        assert_eq!(probe.credit(), 20);
        assert!(!probe.cancelled());
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn control_frames_after_the_end_are_ignored() {
        let (mut table, probe) = run(&[Event::End]);
        assert!(!table.cancel(7));
        assert!(!table.credit(7, 5));
        assert!(!probe.cancelled());
        assert_eq!(probe.credit(), 0);
    }

    #[test]
    fn every_ordering_of_cancel_credit_end_and_close() {
        // All orderings of the four events (each at most once, any subset): the call is
        // cancelled exactly when a Cancel or a Close comes before its End, credit reaches it
        // only while it is open, and nothing is left in the table once it has ended or closed.
        let all = [Event::Cancel, Event::Credit, Event::End, Event::Close];
        let mut orderings = vec![Vec::new()];
        let mut frontier = vec![Vec::new()];
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for o in &frontier {
                for e in all.into_iter().filter(|e| !o.contains(e)) {
                    let mut longer: Vec<Event> = o.clone();
                    longer.push(e);
                    next.push(longer);
                }
            }
            orderings.extend(next.iter().cloned());
            frontier = next;
        }
        // 1 + 4 + 12 + 24 + 24 sequences of distinct events.
        assert_eq!(orderings.len(), 65);
        for events in orderings {
            let (table, probe) = run(&events);
            let position = |e: Event| events.iter().position(|x| *x == e);
            let end = position(Event::End).unwrap_or(usize::MAX);
            let stop = [position(Event::Cancel), position(Event::Close)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(usize::MAX);
            assert_eq!(probe.cancelled(), stop < end, "{events:?}");
            let credited = position(Event::Credit).is_some_and(|c| c < end && c < stop);
            assert_eq!(probe.credit(), if credited { 10 } else { 0 }, "{events:?}");
            let left = end == usize::MAX && stop == usize::MAX;
            assert_eq!(table.len(), usize::from(left), "{events:?}");
        }
    }

    #[test]
    fn a_reused_id_is_refused_while_its_call_is_open() {
        let mut table = CallTable::new();
        let first = Probe::default();
        let key = table.open(1, first.clone()).unwrap();
        assert_eq!(
            table.open(1, Probe::default()).unwrap_err(),
            OpenError::Duplicate
        );
        assert!(!first.cancelled(), "the open call is not disturbed");
        assert!(table.end(key));
        assert!(table.open(1, Probe::default()).is_ok());
    }

    #[test]
    fn a_cancelled_call_ending_late_does_not_end_the_call_that_reused_its_id() {
        let mut table = CallTable::new();
        let old = Probe::default();
        let old_key = table.open(3, old.clone()).unwrap();
        assert!(table.cancel(3));
        // The client may reuse the id as soon as it has cancelled.
        let new = Probe::default();
        let new_key = table.open(3, new.clone()).unwrap();
        // The old call's task notices its cancel only now.
        assert!(!table.end(old_key));
        assert!(table.is_open(3));
        assert!(table.credit(3, 4));
        assert_eq!(new.credit(), 4);
        assert!(!new.cancelled());
        assert!(table.end(new_key));
        assert!(!table.is_open(3));
    }

    #[test]
    fn close_cancels_every_open_call_and_refuses_new_ones() {
        let mut table = CallTable::new();
        let probes: Vec<Probe> = (0..5).map(|_| Probe::default()).collect();
        let keys: Vec<CallKey> = probes
            .iter()
            .enumerate()
            .map(|(i, p)| table.open(i as u64, p.clone()).unwrap())
            .collect();
        assert!(table.end(keys[2]));
        assert_eq!(table.close(), 4);
        for (i, p) in probes.iter().enumerate() {
            assert_eq!(p.cancelled(), i != 2, "call {i}");
        }
        let late = Probe::default();
        assert_eq!(table.open(9, late.clone()).unwrap_err(), OpenError::Closed);
        assert!(!table.end(keys[0]));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn calls_past_their_deadline_are_told_and_the_earliest_ahead_is_next() {
        let mut table = CallTable::new();
        let start = Instant::now();
        let at = |secs| Some(start + std::time::Duration::from_secs(secs));
        let probes: Vec<Probe> = [at(1), at(5), None, at(3), at(2)]
            .into_iter()
            .map(|deadline| {
                let probe = Probe::default();
                probe.0.borrow_mut().deadline = deadline;
                probe
            })
            .collect();
        let keys: Vec<CallKey> = probes
            .iter()
            .enumerate()
            .map(|(i, p)| table.open(i as u64, p.clone()).unwrap())
            .collect();
        // The call due at 2 s has ended already: it is not told, nor counted.
        assert!(table.end(keys[4]));
        let passed = |p: &Probe| p.0.borrow().deadline_passed;
        assert_eq!(table.deadlines_passed(start), at(1));
        assert!(probes.iter().all(|p| !passed(p)));
        assert_eq!(table.deadlines_passed(at(3).unwrap()), at(5));
        let told: Vec<bool> = probes.iter().map(passed).collect();
        assert_eq!(told, [true, false, false, true, false]);
        // Told calls stay open until their tasks end them; none is cancelled.
        assert!(table.is_open(0) && table.is_open(3));
        assert!(probes.iter().all(|p| !p.cancelled()));
        assert!(table.end(keys[0]) && table.end(keys[1]) && table.end(keys[3]));
        assert_eq!(table.deadlines_passed(at(9).unwrap()), None);
    }
}
