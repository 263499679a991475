//! Lists of instances cut to size, so that no answer outgrows a frame however many instances a
//! key has: the pages `discover` answers with over RPC, and the chunks a watch's snapshots travel
//! in.

use std::io;

use serde::{Deserialize, Serialize};

use crate::model::{Change, Instance, RegistryError, Snapshot, WatchEvent};

/// Which page of a key's instances to read: those whose id sorts after `after`, in id order, as
/// many as fit both limits. A page holds at least one instance when any remain, whatever the
/// limits, so walking the pages always ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Start after the instance with this id (the previous page's [`Page::next`]); `None` for
    /// the first page.
    pub after: Option<String>,
    /// At most this many instances.
    pub limit: u32,
    /// At most about this many bytes of instances, counted as their JSON encoding, which the
    /// binary formats stay within (to 1%).
    pub max_bytes: u32,
}

impl PageRequest {
    /// The default instance limit of a page: 4,096.
    pub const DEFAULT_LIMIT: u32 = 4096;
    /// The default byte budget of a page: 1 MiB, an eighth of the default maximum frame body.
    pub const DEFAULT_MAX_BYTES: u32 = 1 << 20;

    /// The first page, with the default limits.
    pub fn first() -> Self {
        PageRequest {
            after: None,
            limit: Self::DEFAULT_LIMIT,
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }

    /// Sets where the page starts: after the instance with id `id`.
    pub fn after(mut self, id: impl Into<String>) -> Self {
        self.after = Some(id.into());
        self
    }

    /// Sets the instance limit.
    pub fn with_limit(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Sets the byte budget.
    pub fn with_max_bytes(mut self, max_bytes: u32) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

impl Default for PageRequest {
    /// [`PageRequest::first`].
    fn default() -> Self {
        Self::first()
    }
}

/// One page of a key's instances.
///
/// Pages read while the key changes can come from different states. `changed` tells: pages with
/// the same `changed` were read while the key's instances stayed as they were, so together they
/// are the key's instances at the last page's `revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The registry's revision when the page was read.
    pub revision: u64,
    /// The revision of the last change to the key's instances when the page was read (at most
    /// `revision`). A registry that does not keep it per key says `revision`, which still
    /// changes whenever the key does.
    pub changed: u64,
    /// The instances, ordered by id, all after the request's `after`.
    pub instances: Vec<Instance>,
    /// Where the next page starts (the id of the last instance here), or `None` when no
    /// instances follow.
    pub next: Option<String>,
}

impl Page {
    /// Cuts the page `request` asks for out of `instances`, which are ordered by id and may
    /// start at or before the request's `after`.
    pub(crate) fn cut<'a>(
        instances: impl IntoIterator<Item = &'a Instance>,
        request: &PageRequest,
        revision: u64,
        changed: u64,
    ) -> Page {
        let after = request.after.as_deref();
        let following = instances
            .into_iter()
            .skip_while(|i| after.is_some_and(|after| i.id.as_str() <= after));
        Self::take(following, request, revision, changed)
    }

    /// The page `request` asks for, from `following`: the instances after the request's `after`,
    /// ordered by id.
    pub(crate) fn take<'a>(
        following: impl IntoIterator<Item = &'a Instance>,
        request: &PageRequest,
        revision: u64,
        changed: u64,
    ) -> Page {
        let mut budget = Budget::new(request.limit, request.max_bytes);
        let mut instances = Vec::new();
        let mut next = None;
        for instance in following {
            if !budget.admit(instance) {
                next = instances.last().map(|i: &Instance| i.id.clone());
                break;
            }
            instances.push(instance.clone());
        }
        Page {
            revision,
            changed,
            instances,
            next,
        }
    }
}

/// What the `rpc.Registry` service's watch sends: the watch's events, with each snapshot cut into
/// chunks that fit a frame. [`RemoteRegistry`](crate::RemoteRegistry) puts the chunks back
/// together, so its watch yields [`WatchEvent`]s like every registry's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchItem {
    /// Part of a snapshot. The chunks of one snapshot come one after another with nothing in
    /// between, carry its revision and its instances in id order, and the last one says `last`;
    /// a snapshot without instances is one empty last chunk.
    SnapshotChunk {
        /// The snapshot's revision.
        revision: u64,
        /// The next instances of the snapshot.
        instances: Vec<Instance>,
        /// Whether this chunk ends the snapshot.
        last: bool,
    },
    /// One change, at its revision.
    Change {
        /// The revision the change created.
        revision: u64,
        /// The change.
        change: Change,
    },
}

impl WatchItem {
    /// The items that carry `event`: a change as it is, a snapshot in chunks of at most `limit`
    /// instances and about `max_bytes` bytes (counted as JSON; at least one instance each).
    pub(crate) fn split(event: WatchEvent, limit: u32, max_bytes: u32) -> Vec<WatchItem> {
        let snapshot = match event {
            WatchEvent::Change { revision, change } => {
                return vec![WatchItem::Change { revision, change }];
            }
            WatchEvent::Snapshot(snapshot) => snapshot,
        };
        let revision = snapshot.revision;
        let mut items = Vec::new();
        let mut chunk = Vec::new();
        let mut budget = Budget::new(limit, max_bytes);
        for instance in snapshot.instances {
            if !budget.admit(&instance) {
                items.push(WatchItem::SnapshotChunk {
                    revision,
                    instances: std::mem::take(&mut chunk),
                    last: false,
                });
                budget = Budget::new(limit, max_bytes);
                // The first instance of a budget always fits.
                budget.admit(&instance);
            }
            chunk.push(instance);
        }
        items.push(WatchItem::SnapshotChunk {
            revision,
            instances: chunk,
            last: true,
        });
        items
    }
}

/// Puts the chunks of snapshots back together: the receiving half of [`WatchItem::split`].
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    /// The snapshot whose chunks are arriving.
    partial: Option<Snapshot>,
}

impl Reassembly {
    /// Takes the next item of a watch; yields an event when one is complete. Fails when the item
    /// cannot follow the ones before it.
    pub(crate) fn push(&mut self, item: WatchItem) -> Result<Option<WatchEvent>, RegistryError> {
        match item {
            WatchItem::SnapshotChunk {
                revision,
                instances,
                last,
            } => {
                let snapshot = self.partial.get_or_insert_with(|| Snapshot {
                    revision,
                    instances: Vec::new(),
                });
                if snapshot.revision != revision {
                    let expected = snapshot.revision;
                    return Err(RegistryError::Unavailable(format!(
                        "the registry sent a snapshot chunk of revision {revision} inside the \
                         snapshot of revision {expected}"
                    )));
                }
                snapshot.instances.extend(instances);
                Ok(if last {
                    self.partial.take().map(WatchEvent::Snapshot)
                } else {
                    None
                })
            }
            WatchItem::Change { revision, change } => {
                if self.partial.is_some() {
                    return Err(RegistryError::Unavailable(
                        "the registry sent a change inside a snapshot".into(),
                    ));
                }
                Ok(Some(WatchEvent::Change { revision, change }))
            }
        }
    }

    /// Whether a snapshot has begun and not ended.
    pub(crate) fn is_partial(&self) -> bool {
        self.partial.is_some()
    }
}

/// What is left of a page's (or a chunk's) limits while it fills.
#[derive(Debug)]
struct Budget {
    count: u32,
    bytes: u64,
    taken: u32,
    used: u64,
}

impl Budget {
    /// A budget of `count` instances (at least one) and about `bytes` bytes.
    fn new(count: u32, bytes: u32) -> Self {
        Budget {
            count: count.max(1),
            bytes: u64::from(bytes),
            taken: 0,
            used: 0,
        }
    }

    /// Takes `instance` if it fits. The first instance always fits, so that every page and
    /// chunk makes progress.
    fn admit(&mut self, instance: &Instance) -> bool {
        if self.taken >= self.count {
            return false;
        }
        let len = encoded_len(instance);
        if self.taken > 0 && self.used.saturating_add(len) > self.bytes {
            return false;
        }
        self.taken += 1;
        self.used = self.used.saturating_add(len);
        true
    }
}

/// The length of `instance` encoded as JSON: what page and chunk budgets count.
///
/// The server does not know which format its answer will be encoded in, so it counts one that is
/// never much smaller than the others: MessagePack and postcard drop the field names and
/// punctuation JSON writes, and spend at most a byte or two more than JSON's quotes on the
/// length of a long string. The proptest below holds the built-in formats within 1% (plus a few
/// bytes) of this count.
pub(crate) fn encoded_len(instance: &Instance) -> u64 {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and an `Instance` (strings, integers, a string map)
    // always serializes.
    let _ = serde_json::to_writer(&mut counter, instance);
    counter.0
}

/// Counts the bytes written to it.
struct Counter(u64);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rpc_core::Format;

    use super::*;
    use crate::model::ServiceKey;

    fn instances(n: usize) -> Vec<Instance> {
        (0..n)
            .map(|i| Instance::new(ServiceKey::new("s"), format!("tcp://10.0.0.{i:03}:7000")))
            .collect()
    }

    fn walk(all: &[Instance], request: PageRequest) -> Vec<Page> {
        let mut pages = Vec::new();
        let mut request = request;
        loop {
            let page = Page::cut(all, &request, 7, 5);
            let next = page.next.clone();
            pages.push(page);
            match next {
                Some(after) => request.after = Some(after),
                None => return pages,
            }
        }
    }

    #[test]
    fn pages_cover_every_instance_once_in_order() {
        let all = instances(10);
        let pages = walk(&all, PageRequest::first().with_limit(3));
        let sizes: Vec<usize> = pages.iter().map(|p| p.instances.len()).collect();
        assert_eq!(sizes, [3, 3, 3, 1]);
        let joined: Vec<Instance> = pages.into_iter().flat_map(|p| p.instances).collect();
        assert_eq!(joined, all);
    }

    #[test]
    fn a_full_last_page_says_nothing_follows() {
        let all = instances(6);
        let pages = walk(&all, PageRequest::first().with_limit(3));
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[0].next.as_deref(), Some(all[2].id.as_str()));
        assert_eq!(pages[1].next, None);
    }

    #[test]
    fn the_byte_budget_cuts_pages_but_never_below_one_instance() {
        let all = instances(5);
        let one = encoded_len(&all[0]);
        let two = u32::try_from(2 * one).unwrap();
        let pages = walk(&all, PageRequest::first().with_max_bytes(two));
        let sizes: Vec<usize> = pages.iter().map(|p| p.instances.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let pages = walk(&all, PageRequest::first().with_max_bytes(0).with_limit(0));
        assert_eq!(pages.len(), 5);
    }

    #[test]
    fn a_cursor_between_ids_starts_at_the_next_one() {
        let all = instances(4);
        let page = Page::cut(
            &all,
            &PageRequest::first().after("tcp://10.0.0.001:7000x"),
            1,
            1,
        );
        assert_eq!(page.instances, all[2..]);
        let page = Page::cut(&all, &PageRequest::first().after("zzz"), 1, 1);
        assert!(page.instances.is_empty());
        assert_eq!(page.next, None);
    }

    #[test]
    fn the_count_is_the_json_length() {
        let instance = instances(1).remove(0).with_metadata("zone", "é\n");
        let json = serde_json::to_vec(&instance).unwrap();
        assert_eq!(encoded_len(&instance), json.len() as u64);
    }

    fn instance() -> impl Strategy<Value = Instance> {
        (
            ".{1,300}",
            ".{0,20}",
            ".{0,300}",
            any::<u32>(),
            prop::collection::btree_map(".{0,300}", ".{0,300}", 0..8),
            any::<bool>(),
        )
            .prop_map(|(service, id, endpoint, weight, metadata, healthy)| {
                let mut i =
                    Instance::new(ServiceKey::new(service).with_group(id.clone()), endpoint)
                        .with_id(id)
                        .with_weight(weight)
                        .with_health(healthy);
                i.metadata = metadata;
                i
            })
    }

    fn chunk_lens(items: &[WatchItem]) -> Vec<(usize, bool)> {
        items
            .iter()
            .map(|item| match item {
                WatchItem::SnapshotChunk {
                    instances, last, ..
                } => (instances.len(), *last),
                WatchItem::Change { .. } => panic!("a change from a snapshot"),
            })
            .collect()
    }

    #[test]
    fn a_snapshot_travels_in_chunks_the_last_one_marked() {
        let snapshot = Snapshot {
            revision: 3,
            instances: instances(7),
        };
        let items = WatchItem::split(WatchEvent::Snapshot(snapshot), 3, u32::MAX);
        assert_eq!(chunk_lens(&items), [(3, false), (3, false), (1, true)]);
        let empty = Snapshot {
            revision: 4,
            instances: Vec::new(),
        };
        let items = WatchItem::split(WatchEvent::Snapshot(empty), 3, u32::MAX);
        assert_eq!(chunk_lens(&items), [(0, true)]);
    }

    #[test]
    fn reassembly_refuses_what_cannot_follow() {
        let chunk = |revision, last| WatchItem::SnapshotChunk {
            revision,
            instances: instances(1),
            last,
        };
        let change = WatchItem::Change {
            revision: 9,
            change: Change::Insert(instances(1).remove(0)),
        };
        let mut r = Reassembly::default();
        assert_eq!(r.push(chunk(5, false)).unwrap(), None);
        assert!(r.is_partial());
        assert!(r.push(chunk(6, true)).is_err());

        let mut r = Reassembly::default();
        assert_eq!(r.push(chunk(5, false)).unwrap(), None);
        assert!(r.push(change.clone()).is_err());

        let mut r = Reassembly::default();
        assert!(matches!(
            r.push(change),
            Ok(Some(WatchEvent::Change { .. }))
        ));
        assert!(!r.is_partial());
    }

    fn small_instance() -> impl Strategy<Value = Instance> {
        (
            "[a-z]{1,8}",
            prop::collection::btree_map(".{0,40}", ".{0,40}", 0..3),
        )
            .prop_map(|(id, metadata)| {
                let mut i = Instance::new(ServiceKey::new("s"), "tcp://h:1").with_id(id);
                i.metadata = metadata;
                i
            })
    }

    proptest! {
        #[test]
        fn chunks_fit_their_budget_and_reassemble_to_the_snapshot(
            all in prop::collection::vec(small_instance(), 0..40),
            limit in 0u32..10,
            max_bytes in 0u32..4000,
            revision in any::<u64>(),
        ) {
            let mut all = all;
            all.sort_by(|a, b| a.id.cmp(&b.id));
            let snapshot = Snapshot { revision, instances: all };
            let items = WatchItem::split(WatchEvent::Snapshot(snapshot.clone()), limit, max_bytes);
            let lens = chunk_lens(&items);
            prop_assert!(lens[..lens.len() - 1].iter().all(|(len, last)| *len > 0 && !last));
            prop_assert!(lens[lens.len() - 1].1);
            for item in &items {
                let WatchItem::SnapshotChunk { instances, .. } = item else { unreachable!() };
                let bytes: u64 = instances.iter().map(encoded_len).sum();
                prop_assert!(instances.len() <= limit.max(1) as usize);
                prop_assert!(instances.len() == 1 || bytes <= u64::from(max_bytes));
            }
            let mut reassembly = Reassembly::default();
            let mut events = Vec::new();
            for item in items {
                if let Some(event) = reassembly.push(item).unwrap() {
                    events.push(event);
                }
            }
            prop_assert_eq!(events, vec![WatchEvent::Snapshot(snapshot)]);
        }

        #[test]
        fn the_binary_formats_stay_within_the_json_count(instance in instance()) {
            let counted = encoded_len(&instance);
            for format in [Format::MessagePack, Format::Postcard] {
                let len = format.to_bytes(&instance).unwrap().len() as u64;
                prop_assert!(len <= counted + counted / 100 + 8, "{len} > {counted}");
            }
        }
    }
}
