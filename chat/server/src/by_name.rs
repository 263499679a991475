//! Users (online users, a room's members) kept by id and listed a page at a time in name
//! order, with cursors that name the last user of a page.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use chat_api::{ChatError, Page, Sender, UserInfo};
use uuid::Uuid;

use crate::page::{ContentLen, PageBuilder, PageLimits};

/// What [`ByName`] keeps: something with an id and a name.
pub(crate) trait Named {
    fn id(&self) -> Uuid;
    fn name(&self) -> &str;
}

impl Named for Sender {
    fn id(&self) -> Uuid {
        self.id
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for UserInfo {
    fn id(&self) -> Uuid {
        self.id
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Values by id, in (name, id) order.
#[derive(Debug)]
pub(crate) struct ByName<V> {
    by_id: HashMap<Uuid, V>,
    order: BTreeSet<(String, Uuid)>,
}

impl<V> Default for ByName<V> {
    fn default() -> Self {
        ByName {
            by_id: HashMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<V: Named> ByName<V> {
    /// Adds or replaces the value with this id; returns the one replaced.
    pub(crate) fn insert(&mut self, value: V) -> Option<V> {
        let id = value.id();
        self.order.insert((value.name().to_owned(), id));
        let old = self.by_id.insert(id, value)?;
        if self
            .by_id
            .get(&id)
            .is_some_and(|new| new.name() != old.name())
        {
            self.order.remove(&(old.name().to_owned(), id));
        }
        Some(old)
    }

    pub(crate) fn remove(&mut self, id: &Uuid) -> Option<V> {
        let old = self.by_id.remove(id)?;
        self.order.remove(&(old.name().to_owned(), *id));
        Some(old)
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<&V> {
        self.by_id.get(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &V> {
        self.by_id.values()
    }

    /// The page after `after` (from the start for `None`), each value shown as `show` makes it.
    pub(crate) fn page<T: ContentLen>(
        &self,
        after: Option<&NameCursor>,
        limits: PageLimits,
        show: impl Fn(&V) -> T,
    ) -> Page<T> {
        let start = match after {
            Some(cursor) => Bound::Excluded((cursor.name.clone(), cursor.id)),
            None => Bound::Unbounded,
        };
        let mut page = PageBuilder::new(limits);
        let mut last = None;
        for key in self.order.range((start, Bound::Unbounded)) {
            let Some(value) = self.by_id.get(&key.1) else {
                continue;
            };
            if page.push(show(value)).is_err() {
                return page.finish(last.map(|(name, id)| NameCursor::encode(name, id)));
            }
            last = Some((&key.0, key.1));
        }
        page.finish(None)
    }
}

/// Where a page in name order ends: the name and id of its last user. On the wire, the id
/// (hyphenated) then the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NameCursor {
    name: String,
    id: Uuid,
}

impl NameCursor {
    /// The longest cursor: an id and the longest name.
    const MAX_LEN: usize = 36 + 4 * chat_api::MAX_NAME_CHARS;

    /// Reads a cursor a client passed back.
    pub(crate) fn parse(cursor: &str) -> Result<NameCursor, ChatError> {
        let bad = || ChatError::Invalid("not a cursor this list gave".into());
        if cursor.len() > Self::MAX_LEN || !cursor.is_char_boundary(36.min(cursor.len())) {
            return Err(bad());
        }
        let (id, name) = cursor.split_at(36.min(cursor.len()));
        let id = Uuid::try_parse(id).map_err(|_| bad())?;
        Ok(NameCursor {
            name: name.to_owned(),
            id,
        })
    }

    fn encode(name: &str, id: Uuid) -> String {
        format!("{}{name}", id.hyphenated())
    }
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

    fn limits(items: usize) -> PageLimits {
        PageLimits {
            items,
            bytes: 1 << 20,
        }
    }

    fn names(page: &Page<Sender>) -> Vec<&str> {
        page.items.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn pages_follow_name_order_and_a_cursor_survives_changes() {
        let mut all = ByName::default();
        for name in ["dan", "ann", "cat", "bob", "eve"] {
            all.insert(sender(name));
        }
        let first = all.page(None, limits(2), Sender::clone);
        assert_eq!(names(&first), ["ann", "bob"]);
        let cursor = NameCursor::parse(first.next.as_deref().unwrap()).unwrap();
        // Someone before the cursor leaves, someone after it comes: neither is missed.
        let ann = first.items[0].id;
        all.remove(&ann);
        all.insert(sender("cay"));
        let second = all.page(Some(&cursor), limits(2), Sender::clone);
        assert_eq!(names(&second), ["cat", "cay"]);
        let cursor = NameCursor::parse(second.next.as_deref().unwrap()).unwrap();
        let third = all.page(Some(&cursor), limits(2), Sender::clone);
        assert_eq!(names(&third), ["dan", "eve"]);
        assert_eq!(third.next, None);
    }

    #[test]
    fn a_rename_moves_a_user_in_the_order() {
        let mut all = ByName::default();
        let mut zed = sender("zed");
        all.insert(zed.clone());
        all.insert(sender("max"));
        zed.name = "abe".into();
        all.insert(zed);
        let page = all.page(None, limits(10), Sender::clone);
        assert_eq!(names(&page), ["abe", "max"]);
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn cursors_that_no_list_gave_are_refused() {
        for bad in [
            "",
            "x",
            "not-a-uuid-at-all-but-36-characters!",
            &"é".repeat(40),
        ] {
            assert!(NameCursor::parse(bad).is_err(), "{bad:?}");
        }
        let id = Uuid::new_v4();
        let cursor = NameCursor::parse(&NameCursor::encode("Zoë", id)).unwrap();
        assert_eq!(
            cursor,
            NameCursor {
                name: "Zoë".into(),
                id
            }
        );
    }
}
