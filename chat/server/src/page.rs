//! Pages of the lists that grow with the users (who is online, rooms, a room's members, a
//! room's history): how many items and how many bytes of content one page may hold.
//!
//! A page holds at most its item limit and stops before the content of its items passes its
//! byte budget, so that no answer grows with what other users did; it always holds at least
//! one item (when there is one), so that a list always moves forward. The content of an item
//! is [`ContentLen::content_len`]: the bytes of its strings plus [`ITEM_OVERHEAD`]; whatever the
//! serializer, an encoded page is at most a small multiple of it (see
//! [`PAGE_EXPANSION`]).

use chat_api::{Destination, Envelope, Friend, Page, RoomInfo, Sender, UserInfo};

/// What an item counts for beside its strings: its ids, numbers and field names.
pub const ITEM_OVERHEAD: usize = 64;
/// The smallest byte budget of a page: more than the largest item (a post of
/// [`MAX_TEXT_BYTES`](chat_api::MAX_TEXT_BYTES) from a long name in a long room), so
/// that the one item a page always takes is within the budget too.
pub const MIN_PAGE_BYTES: usize = 8 << 10;
/// How much larger than its content a page may be once encoded, at most: JSON escapes a
/// control character in 6 bytes, and an item's ids, numbers and field names take less than
/// 3 × [`ITEM_OVERHEAD`] in any of the serializers. A server's frame limit must be at least
/// this many times its page budget.
pub const PAGE_EXPANSION: usize = 8;

/// How much of a list one answer may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimits {
    /// The most items.
    pub items: usize,
    /// The most content bytes ([`ContentLen`]), unless one item alone is larger.
    pub bytes: usize,
}

impl PageLimits {
    /// The limits of a page asked for with `limit` items (0: as many as the server allows) from
    /// a server that allows `max_items` and `max_bytes`.
    pub fn asked(limit: u32, max_items: usize, max_bytes: usize) -> Self {
        let asked = usize::try_from(limit).unwrap_or(usize::MAX);
        PageLimits {
            items: if asked == 0 {
                max_items
            } else {
                asked.min(max_items)
            },
            bytes: max_bytes,
        }
        .at_least_one()
    }

    fn at_least_one(self) -> Self {
        PageLimits {
            items: self.items.max(1),
            bytes: self.bytes,
        }
    }
}

/// The size an item counts for in a page: the bytes of its strings plus [`ITEM_OVERHEAD`].
pub trait ContentLen {
    /// The item's content, in bytes.
    fn content_len(&self) -> usize;
}

impl ContentLen for UserInfo {
    fn content_len(&self) -> usize {
        ITEM_OVERHEAD
            + self.name.len()
            + self.advertised.as_ref().map_or(0, String::len)
            + self.observed.len()
    }
}

impl ContentLen for Sender {
    fn content_len(&self) -> usize {
        ITEM_OVERHEAD + self.name.len()
    }
}

impl ContentLen for Friend {
    fn content_len(&self) -> usize {
        self.user.content_len()
    }
}

impl ContentLen for RoomInfo {
    fn content_len(&self) -> usize {
        // The owner's id as text, and the access and membership by their longest names
        // ("InviteOnly", "Outsider"), as a text format spells them.
        const OWNER_AND_STANDING: usize = 36 + 2 * 10;
        ITEM_OVERHEAD + self.name.len() + OWNER_AND_STANDING
    }
}

impl ContentLen for Envelope {
    fn content_len(&self) -> usize {
        let room = match &self.to {
            Destination::Room(room) => room.len(),
            Destination::User(_) => 0,
        };
        ITEM_OVERHEAD + self.from.name.len() + room + self.text.len()
    }
}

/// A page being filled.
#[derive(Debug)]
pub struct PageBuilder<T> {
    limits: PageLimits,
    items: Vec<T>,
    bytes: usize,
}

impl<T: ContentLen> PageBuilder<T> {
    /// An empty page with these limits.
    pub fn new(limits: PageLimits) -> Self {
        PageBuilder {
            limits: limits.at_least_one(),
            items: Vec::new(),
            bytes: 0,
        }
    }

    /// Adds an item if the page has room for it; if not, gives it back (the page is full, and
    /// the list goes on after the last item added).
    pub fn push(&mut self, item: T) -> Result<(), T> {
        let len = item.content_len();
        let full = self.items.len() >= self.limits.items
            || (!self.items.is_empty() && self.bytes.saturating_add(len) > self.limits.bytes);
        if full {
            return Err(item);
        }
        self.bytes = self.bytes.saturating_add(len);
        self.items.push(item);
        Ok(())
    }

    /// The items added so far.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// The page, with the cursor of the next one (`None`: the list ends here).
    pub fn finish(self, next: Option<String>) -> Page<T> {
        Page {
            items: self.items,
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use chat_api::Path;

    fn post(text_len: usize) -> Envelope {
        Envelope {
            id: Uuid::new_v4(),
            from: Sender {
                id: Uuid::new_v4(),
                name: "ann".into(),
            },
            to: Destination::Room("lobby".into()),
            text: "x".repeat(text_len),
            sent_at_ms: 0,
            path: Path::Room,
            file: None,
        }
    }

    #[test]
    fn a_page_stops_at_its_item_limit_or_its_byte_budget() {
        let mut page = PageBuilder::new(PageLimits {
            items: 3,
            bytes: 1 << 20,
        });
        for _ in 0..3 {
            page.push(post(10)).unwrap();
        }
        assert!(page.push(post(10)).is_err());

        let mut page = PageBuilder::new(PageLimits {
            items: 100,
            bytes: 10_000,
        });
        let mut added = 0;
        while page.push(post(4096)).is_ok() {
            added += 1;
        }
        assert_eq!(added, 2);
        let bytes: usize = page.items().iter().map(ContentLen::content_len).sum();
        assert!(bytes <= 10_000);
    }

    #[test]
    fn a_page_always_takes_one_item_however_large() {
        let mut page = PageBuilder::new(PageLimits { items: 0, bytes: 1 });
        page.push(post(4096)).unwrap();
        assert!(page.push(post(1)).is_err());
        assert_eq!(page.finish(None).items.len(), 1);
    }

    #[test]
    fn the_asked_limit_is_clamped_to_the_servers() {
        assert_eq!(PageLimits::asked(0, 500, 9).items, 500);
        assert_eq!(PageLimits::asked(20, 500, 9).items, 20);
        assert_eq!(PageLimits::asked(u32::MAX, 500, 9).items, 500);
        assert_eq!(PageLimits::asked(7, 0, 9).items, 1);
    }

    #[test]
    fn an_encoded_page_is_within_its_expansion_of_its_budget() {
        // The worst case for JSON: texts of control characters, each escaped in 6 bytes.
        let budget = MIN_PAGE_BYTES;
        let mut page = PageBuilder::new(PageLimits {
            items: 1000,
            bytes: budget,
        });
        let mut worst = post(0);
        worst.text = "\u{1}".repeat(chat_api::MAX_TEXT_BYTES);
        worst.from.name = "\u{1F600}".repeat(chat_api::MAX_NAME_CHARS);
        worst.to = Destination::Room("\u{1F600}".repeat(chat_api::MAX_ROOM_CHARS));
        assert!(worst.content_len() <= MIN_PAGE_BYTES);
        while page.push(worst.clone()).is_ok() {}
        let page = page.finish(Some("cursor".into()));
        for format in [
            rpc_core::Format::Json,
            rpc_core::Format::MessagePack,
            rpc_core::Format::Postcard,
        ] {
            let encoded = format.to_bytes(&page).unwrap().len();
            assert!(
                encoded <= PAGE_EXPANSION * budget,
                "{}: {encoded} bytes",
                format.name()
            );
        }
    }
}
