//! The contract of [`Store`], written once and run against every backend: each backend's test
//! file implements [`Backend`] and calls [`run`].

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chat_api::{Destination, Envelope, FriendState, Path as MsgPath, Sender, now_ms};
use chat_server::page::PageLimits;
use chat_server::store::{
    Binding, FriendAccepted, FriendRequested, Relayed, RoomCreated, Store, StoreError,
};
use uuid::Uuid;

/// A backend under test.
pub trait Backend {
    /// Opens the database called `name`: empty the first time, and holding what was stored in
    /// it before when opened again after [`Store::close`].
    fn open(&self, name: &str) -> impl Future<Output = Arc<dyn Store>>;
}

/// Runs every case, each on a database of its own.
pub async fn run(backend: &impl Backend) {
    bind_creates_and_updates_only_from_the_expected_credential(&backend.open("bind").await).await;
    names_are_reserved_for_good_and_freed_by_a_rename(&backend.open("names").await).await;
    friends_request_accept_and_unfriend(&backend.open("friends").await).await;
    the_friends_quota_counts_both_sides(&backend.open("friend_quota").await).await;
    concurrent_claims_on_a_name_and_crossing_requests(&backend.open("races").await).await;
    relay_stores_in_order_and_is_idempotent_by_id(&backend.open("relay").await).await;
    mailbox_pages_after_a_cursor(&backend.open("mailbox").await).await;
    ack_deletes_and_is_idempotent(&backend.open("ack").await).await;
    a_full_mailbox_refuses_and_keeps_what_it_holds(&backend.open("quota").await).await;
    old_acknowledged_ids_are_forgotten(&backend.open("forget").await).await;
    rooms_are_created_once_within_a_quota(&backend.open("rooms").await).await;
    posts_are_idempotent_and_history_keeps_the_last(&backend.open("posts").await).await;
    concurrent_relays_get_consecutive_numbers(&backend.open("concurrent").await).await;
    the_node_secret_is_made_once(&backend.open("secret").await).await;
    everything_survives_close_and_reopen(backend).await;
}

fn envelope(to: Uuid, text: &str) -> Envelope {
    Envelope {
        id: Uuid::new_v4(),
        from: Sender {
            id: Uuid::new_v4(),
            name: "alice".into(),
        },
        to: Destination::User(to),
        text: text.into(),
        sent_at_ms: now_ms(),
        path: MsgPath::Stored,
    }
}

fn post(room: &str, text: &str) -> Envelope {
    Envelope {
        to: Destination::Room(room.into()),
        ..envelope(Uuid::nil(), text)
    }
}

const ALL: PageLimits = PageLimits {
    items: 1000,
    bytes: 1 << 20,
};

async fn user(store: &Arc<dyn Store>, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    assert_eq!(
        store.bind(id, name, "secret", None).await.unwrap(),
        Binding::Created
    );
    id
}

async fn relay(store: &Arc<dyn Store>, to: Uuid, message: &Envelope) -> Relayed {
    store.relay(to, message, 100).await.unwrap()
}

async fn bind_creates_and_updates_only_from_the_expected_credential(store: &Arc<dyn Store>) {
    assert!(store.is_healthy());
    let bob = Uuid::new_v4();
    assert_eq!(store.user(bob).await.unwrap(), None);
    assert_eq!(
        store.bind(bob, "bob", "c1", None).await.unwrap(),
        Binding::Created
    );
    // Made already: a caller that read no account is told to read it again.
    assert_eq!(
        store.bind(bob, "bob", "c1", None).await.unwrap(),
        Binding::Stale
    );
    assert_eq!(
        store.bind(bob, "bob", "c1", Some("c1")).await.unwrap(),
        Binding::Updated
    );
    // A rename, and a new credential (a rehash), from the right one.
    assert_eq!(
        store.bind(bob, "Bobby", "c2", Some("c1")).await.unwrap(),
        Binding::Updated
    );
    // A caller that verified an older credential changes nothing.
    assert_eq!(
        store.bind(bob, "mallory", "c3", Some("c1")).await.unwrap(),
        Binding::Stale
    );
    let stored = store.user(bob).await.unwrap().unwrap();
    assert_eq!(
        (stored.name.as_str(), stored.credential.as_str()),
        ("Bobby", "c2")
    );
    // An id that has no account, passed a credential it never had, makes none.
    let carol = Uuid::new_v4();
    assert_eq!(
        store.bind(carol, "carol", "c", Some("c")).await.unwrap(),
        Binding::Stale
    );
    assert_eq!(store.user(carol).await.unwrap(), None);
    assert_eq!(
        store.bind(carol, "carol", "c", None).await.unwrap(),
        Binding::Created
    );
    assert_eq!(store.user(carol).await.unwrap().unwrap().credential, "c");
    store.close().await;
}

async fn names_are_reserved_for_good_and_freed_by_a_rename(store: &Arc<dyn Store>) {
    let bob = user(store, "Bob").await;
    // Folded: another id cannot take it in another case, online or not.
    let eve = Uuid::new_v4();
    assert_eq!(
        store.bind(eve, "BOB", "e", None).await.unwrap(),
        Binding::NameTaken
    );
    assert_eq!(store.user(eve).await.unwrap(), None);
    let (found, account) = store.user_by_name("bob").await.unwrap().unwrap();
    assert_eq!((found, account.name.as_str()), (bob, "Bob"));
    assert_eq!(store.user_by_name("nobody").await.unwrap(), None);
    // The owner may change its case.
    assert_eq!(
        store
            .bind(bob, "bob", "secret", Some("secret"))
            .await
            .unwrap(),
        Binding::Updated
    );
    // Renaming to a name another holds is refused and changes nothing.
    let carol = user(store, "carol").await;
    assert_eq!(
        store
            .bind(bob, "Carol", "secret", Some("secret"))
            .await
            .unwrap(),
        Binding::NameTaken
    );
    assert_eq!(store.user(bob).await.unwrap().unwrap().name, "bob");
    assert_eq!(store.user_by_name("carol").await.unwrap().unwrap().0, carol);
    // A rename to a free name frees the old one.
    assert_eq!(
        store
            .bind(bob, "robert", "secret", Some("secret"))
            .await
            .unwrap(),
        Binding::Updated
    );
    assert_eq!(store.user_by_name("bob").await.unwrap(), None);
    assert_eq!(store.user_by_name("Robert").await.unwrap().unwrap().0, bob);
    assert_eq!(
        store.bind(eve, "Bob", "e", None).await.unwrap(),
        Binding::Created
    );
    assert_eq!(store.user_by_name("bob").await.unwrap().unwrap().0, eve);
    store.close().await;
}

fn friend(id: Uuid, name: &str, state: FriendState) -> (Sender, FriendState) {
    let user = Sender {
        id,
        name: name.into(),
    };
    (user, state)
}

async fn sorted_friends(store: &Arc<dyn Store>, user: Uuid) -> Vec<(Sender, FriendState)> {
    let mut list = store.friends(user).await.unwrap();
    list.sort_by(|a, b| (&a.0.name, a.0.id).cmp(&(&b.0.name, b.0.id)));
    list
}

async fn friends_request_accept_and_unfriend(store: &Arc<dyn Store>) {
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let cat = user(store, "cat").await;
    assert_eq!(
        store.request_friend(ann, Uuid::new_v4(), 10).await.unwrap(),
        FriendRequested::UnknownUser
    );
    assert_eq!(
        store.accept_friend(bob, ann).await.unwrap(),
        FriendAccepted::NoRequest
    );
    assert_eq!(
        store.request_friend(ann, bob, 10).await.unwrap(),
        FriendRequested::Requested
    );
    assert_eq!(
        store.request_friend(ann, bob, 10).await.unwrap(),
        FriendRequested::Unchanged(FriendState::RequestSent)
    );
    // Only the one asked may accept.
    assert_eq!(
        store.accept_friend(ann, bob).await.unwrap(),
        FriendAccepted::NoRequest
    );
    assert_eq!(
        sorted_friends(store, bob).await,
        [friend(ann, "ann", FriendState::RequestReceived)]
    );
    assert_eq!(
        store.accept_friend(bob, ann).await.unwrap(),
        FriendAccepted::Accepted
    );
    assert_eq!(
        store.accept_friend(bob, ann).await.unwrap(),
        FriendAccepted::AlreadyFriends
    );
    assert_eq!(
        store.request_friend(bob, ann, 10).await.unwrap(),
        FriendRequested::Unchanged(FriendState::Friends)
    );
    // Asking one who asked already makes friends at once.
    assert_eq!(
        store.request_friend(cat, ann, 10).await.unwrap(),
        FriendRequested::Requested
    );
    assert_eq!(
        store.request_friend(ann, cat, 10).await.unwrap(),
        FriendRequested::Accepted
    );
    assert_eq!(
        sorted_friends(store, ann).await,
        [
            friend(bob, "bob", FriendState::Friends),
            friend(cat, "cat", FriendState::Friends)
        ]
    );
    // The list shows names as last registered.
    store
        .bind(bob, "Zed", "secret", Some("secret"))
        .await
        .unwrap();
    assert_eq!(
        sorted_friends(store, ann).await,
        [
            friend(bob, "Zed", FriendState::Friends),
            friend(cat, "cat", FriendState::Friends)
        ]
    );
    // Unfriending ends it for both, and is idempotent.
    assert_eq!(
        store.unfriend(bob, ann).await.unwrap(),
        Some(FriendState::Friends)
    );
    assert_eq!(store.unfriend(bob, ann).await.unwrap(), None);
    assert_eq!(sorted_friends(store, bob).await, []);
    assert_eq!(
        sorted_friends(store, ann).await,
        [friend(cat, "cat", FriendState::Friends)]
    );
    // Withdrawing and declining requests.
    store.request_friend(bob, cat, 10).await.unwrap();
    assert_eq!(
        store.unfriend(bob, cat).await.unwrap(),
        Some(FriendState::RequestSent)
    );
    store.request_friend(bob, cat, 10).await.unwrap();
    assert_eq!(
        store.unfriend(cat, bob).await.unwrap(),
        Some(FriendState::RequestReceived)
    );
    assert_eq!(sorted_friends(store, bob).await, []);
    store.close().await;
}

async fn the_friends_quota_counts_both_sides(store: &Arc<dyn Store>) {
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let cat = user(store, "cat").await;
    let dan = user(store, "dan").await;
    assert_eq!(
        store.request_friend(ann, bob, 2).await.unwrap(),
        FriendRequested::Requested
    );
    assert_eq!(
        store.request_friend(cat, ann, 2).await.unwrap(),
        FriendRequested::Requested
    );
    // Ann has two: she may not ask, nor be asked, for more.
    assert_eq!(
        store.request_friend(ann, dan, 2).await.unwrap(),
        FriendRequested::QuotaReached { requester: true }
    );
    assert_eq!(
        store.request_friend(dan, ann, 2).await.unwrap(),
        FriendRequested::QuotaReached { requester: false }
    );
    assert_eq!(sorted_friends(store, dan).await, []);
    // Accepting one that counts already is not refused.
    assert_eq!(
        store.request_friend(ann, cat, 2).await.unwrap(),
        FriendRequested::Accepted
    );
    store.unfriend(ann, bob).await.unwrap();
    assert_eq!(
        store.request_friend(dan, ann, 2).await.unwrap(),
        FriendRequested::Requested
    );
    store.close().await;
}

async fn concurrent_claims_on_a_name_and_crossing_requests(store: &Arc<dyn Store>) {
    // Ten new ids claim one name at once: one gets it.
    let claims = (0..10).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let name = if i % 2 == 0 { "Race" } else { "race" };
            store.bind(Uuid::new_v4(), name, "c", None).await.unwrap()
        })
    });
    let outcomes: Vec<Binding> = futures::future::join_all(claims)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created = outcomes.iter().filter(|b| **b == Binding::Created).count();
    let taken = outcomes
        .iter()
        .filter(|b| **b == Binding::NameTaken)
        .count();
    assert_eq!((created, taken), (1, 9), "{outcomes:?}");

    // Two users ask each other at once: one request, one acceptance, friends either way.
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let (a, b) = tokio::join!(
        store.request_friend(ann, bob, 10),
        store.request_friend(bob, ann, 10)
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| *o == FriendRequested::Accepted);
    assert_eq!(
        outcomes,
        [FriendRequested::Requested, FriendRequested::Accepted]
    );
    assert_eq!(
        sorted_friends(store, ann).await,
        [friend(bob, "bob", FriendState::Friends)]
    );
    assert_eq!(
        sorted_friends(store, bob).await,
        [friend(ann, "ann", FriendState::Friends)]
    );
    store.close().await;
}

async fn relay_stores_in_order_and_is_idempotent_by_id(store: &Arc<dyn Store>) {
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let m: Vec<_> = (0..3).map(|i| envelope(bob, &format!("m{i}"))).collect();
    for (i, message) in m.iter().enumerate() {
        let seq = u64::try_from(i).unwrap() + 1;
        assert_eq!(relay(store, bob, message).await, Relayed::Stored { seq });
    }
    assert_eq!(
        relay(store, bob, &m[1]).await,
        Relayed::Duplicate {
            acknowledged: false
        }
    );
    // Sequences and ids are per recipient: the same message for another user is stored.
    assert_eq!(relay(store, carol, &m[1]).await, Relayed::Stored { seq: 1 });
    assert_eq!(
        relay(store, Uuid::new_v4(), &m[0]).await,
        Relayed::UnknownRecipient
    );
    let mailbox = store.mailbox(bob, 0, 100).await.unwrap();
    assert_eq!(mailbox.last_seq, 3);
    assert_eq!(
        mailbox.messages,
        vec![(1, m[0].clone()), (2, m[1].clone()), (3, m[2].clone())]
    );
    let mailbox = store.mailbox(carol, 0, 100).await.unwrap();
    assert_eq!(
        (mailbox.messages, mailbox.last_seq),
        (vec![(1, m[1].clone())], 1)
    );
    store.close().await;
}

async fn mailbox_pages_after_a_cursor(store: &Arc<dyn Store>) {
    let bob = user(store, "bob").await;
    let empty = store.mailbox(bob, 0, 10).await.unwrap();
    assert_eq!((empty.messages.len(), empty.last_seq), (0, 0));
    let unknown = store.mailbox(Uuid::new_v4(), 0, 10).await.unwrap();
    assert_eq!((unknown.messages.len(), unknown.last_seq), (0, 0));
    let m: Vec<_> = (0..5).map(|i| envelope(bob, &format!("m{i}"))).collect();
    for message in &m {
        relay(store, bob, message).await;
    }
    let first = store.mailbox(bob, 0, 2).await.unwrap();
    assert_eq!(first.messages, vec![(1, m[0].clone()), (2, m[1].clone())]);
    assert_eq!(first.last_seq, 5);
    let second = store.mailbox(bob, 2, 2).await.unwrap();
    assert_eq!(second.messages, vec![(3, m[2].clone()), (4, m[3].clone())]);
    let last = store.mailbox(bob, 4, 2).await.unwrap();
    assert_eq!(last.messages, vec![(5, m[4].clone())]);
    assert!(store.mailbox(bob, 5, 2).await.unwrap().messages.is_empty());
    assert!(
        store
            .mailbox(bob, u64::MAX, 2)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    // A cursor past an acknowledged message skips the gap.
    store.ack(bob, &[m[2].id]).await.unwrap();
    let around = store.mailbox(bob, 2, 2).await.unwrap();
    assert_eq!(around.messages, vec![(4, m[3].clone()), (5, m[4].clone())]);
    store.close().await;
}

async fn ack_deletes_and_is_idempotent(store: &Arc<dyn Store>) {
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let m: Vec<_> = (0..3).map(|i| envelope(bob, &format!("m{i}"))).collect();
    for message in &m {
        relay(store, bob, message).await;
    }
    // Unknown ids, and ids of another user's mailbox, are ignored.
    assert_eq!(store.ack(carol, &[m[0].id]).await.unwrap(), 0);
    assert_eq!(
        store
            .ack(bob, &[m[0].id, m[0].id, Uuid::new_v4()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.ack(bob, &[m[0].id]).await.unwrap(), 0);
    assert_eq!(store.ack(bob, &[]).await.unwrap(), 0);
    assert_eq!(
        relay(store, bob, &m[0]).await,
        Relayed::Duplicate { acknowledged: true }
    );
    let mailbox = store.mailbox(bob, 0, 100).await.unwrap();
    assert_eq!(mailbox.messages, vec![(2, m[1].clone()), (3, m[2].clone())]);
    assert_eq!(mailbox.last_seq, 3);
    assert_eq!(store.ack(bob, &[m[2].id, m[1].id]).await.unwrap(), 2);
    let mailbox = store.mailbox(bob, 0, 100).await.unwrap();
    assert_eq!((mailbox.messages.len(), mailbox.last_seq), (0, 3));
    // Numbers are never given twice, even once every message is acknowledged.
    let next = envelope(bob, "next");
    assert_eq!(relay(store, bob, &next).await, Relayed::Stored { seq: 4 });
    store.close().await;
}

async fn a_full_mailbox_refuses_and_keeps_what_it_holds(store: &Arc<dyn Store>) {
    let bob = user(store, "bob").await;
    let m: Vec<_> = (0..4).map(|i| envelope(bob, &format!("m{i}"))).collect();
    for (i, message) in m[..3].iter().enumerate() {
        let seq = u64::try_from(i).unwrap() + 1;
        assert_eq!(
            store.relay(bob, message, 3).await.unwrap(),
            Relayed::Stored { seq }
        );
    }
    assert_eq!(
        store.relay(bob, &m[3], 3).await.unwrap(),
        Relayed::MailboxFull
    );
    // A duplicate is still recognised as such when the mailbox is full.
    assert_eq!(
        store.relay(bob, &m[0], 3).await.unwrap(),
        Relayed::Duplicate {
            acknowledged: false
        }
    );
    let mailbox = store.mailbox(bob, 0, 100).await.unwrap();
    assert_eq!(
        mailbox
            .messages
            .iter()
            .map(|(_, e)| e.id)
            .collect::<Vec<_>>(),
        m[..3].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert_eq!(mailbox.last_seq, 3);
    // An acknowledgement makes room.
    store.ack(bob, &[m[1].id]).await.unwrap();
    assert_eq!(
        store.relay(bob, &m[3], 3).await.unwrap(),
        Relayed::Stored { seq: 4 }
    );
    assert_eq!(
        store.relay(bob, &envelope(bob, "more"), 3).await.unwrap(),
        Relayed::MailboxFull
    );
    store.close().await;
}

async fn old_acknowledged_ids_are_forgotten(store: &Arc<dyn Store>) {
    let bob = user(store, "bob").await;
    let (acked, waiting) = (envelope(bob, "acked"), envelope(bob, "waiting"));
    relay(store, bob, &acked).await;
    relay(store, bob, &waiting).await;
    store.ack(bob, &[acked.id]).await.unwrap();
    let posted = post("lobby", "p");
    assert!(store.post("lobby", &posted, 10).await.unwrap());
    // Nothing is a day old.
    assert_eq!(store.forget_old_ids(24 * 3600 * 1000).await.unwrap(), 0);
    assert_eq!(
        relay(store, bob, &acked).await,
        Relayed::Duplicate { acknowledged: true }
    );
    // Once the clock has moved on, everything is older than 0 ms: the acknowledged id and the
    // post's id are forgotten; the id of a message still waiting is not.
    let t = now_ms();
    while now_ms() <= t {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(store.forget_old_ids(0).await.unwrap(), 2);
    assert_eq!(relay(store, bob, &acked).await, Relayed::Stored { seq: 3 });
    assert_eq!(
        relay(store, bob, &waiting).await,
        Relayed::Duplicate {
            acknowledged: false
        }
    );
    assert!(store.post("lobby", &posted, 10).await.unwrap());
    let history = store.history("lobby", 0, ALL).await.unwrap();
    assert_eq!(history.items, vec![posted.clone(), posted]);
    store.close().await;
}

async fn rooms_are_created_once_within_a_quota(store: &Arc<dyn Store>) {
    let (bob, carol) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(store.rooms().await.unwrap().is_empty());
    let create = |room: &'static str, who: Uuid| async move {
        store.create_room(room, who, 2).await.unwrap()
    };
    assert_eq!(create("lobby", bob).await, RoomCreated::Created);
    assert_eq!(create("lobby", bob).await, RoomCreated::Exists);
    assert_eq!(create("lobby", carol).await, RoomCreated::Exists);
    assert_eq!(create("hall", bob).await, RoomCreated::Created);
    assert_eq!(create("attic", bob).await, RoomCreated::QuotaReached);
    // An existing room is reported as such even past the quota.
    assert_eq!(create("hall", bob).await, RoomCreated::Exists);
    // Quotas are per creator.
    assert_eq!(create("attic", carol).await, RoomCreated::Created);
    assert_eq!(create("Attic", carol).await, RoomCreated::Created);
    assert_eq!(
        store.rooms().await.unwrap(),
        ["Attic", "attic", "hall", "lobby"]
    );
    store.close().await;
}

async fn posts_are_idempotent_and_history_keeps_the_last(store: &Arc<dyn Store>) {
    assert!(
        store
            .history("lobby", 0, ALL)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let posts: Vec<_> = (0..5).map(|i| post("lobby", &i.to_string())).collect();
    for p in &posts {
        assert!(store.post("lobby", p, 3).await.unwrap());
    }
    assert!(!store.post("lobby", &posts[4], 3).await.unwrap());
    // A post no longer kept is still known by its id.
    assert!(!store.post("lobby", &posts[0], 3).await.unwrap());
    // Ids are per room.
    assert!(store.post("hall", &posts[0], 3).await.unwrap());
    let history = store.history("lobby", 0, ALL).await.unwrap();
    assert_eq!((history.items, history.next), (posts[2..].to_vec(), None));
    let two = PageLimits { items: 2, ..ALL };
    let first = store.history("lobby", 0, two).await.unwrap();
    assert_eq!(first.items, posts[2..4].to_vec());
    let after: u64 = first.next.unwrap().parse().unwrap();
    let rest = store.history("lobby", after, two).await.unwrap();
    assert_eq!((rest.items, rest.next), (posts[4..].to_vec(), None));
    assert!(
        store
            .history("lobby", u64::MAX, ALL)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let hall = store.history("hall", 0, ALL).await.unwrap();
    assert_eq!(hall.items, posts[..1].to_vec());
    // Keeping fewer drops the oldest.
    let newest = post("lobby", "newest");
    assert!(store.post("lobby", &newest, 1).await.unwrap());
    let history = store.history("lobby", 0, ALL).await.unwrap();
    assert_eq!(history.items, vec![newest]);
    store.close().await;
}

async fn concurrent_relays_get_consecutive_numbers(store: &Arc<dyn Store>) {
    let bob = user(store, "bob").await;
    let messages: Vec<_> = (0..40).map(|i| envelope(bob, &format!("m{i}"))).collect();
    // Every message twice, all at once: each is stored exactly once.
    let relays = messages.iter().chain(messages.iter()).map(|m| {
        let store = store.clone();
        let m = m.clone();
        tokio::spawn(async move { store.relay(bob, &m, 1000).await })
    });
    let mut seqs = Vec::new();
    let mut duplicates = 0;
    for relayed in futures::future::join_all(relays).await {
        match relayed.unwrap().unwrap() {
            Relayed::Stored { seq } => seqs.push(seq),
            Relayed::Duplicate {
                acknowledged: false,
            } => duplicates += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    assert_eq!(duplicates, 40);
    let mailbox = store.mailbox(bob, 0, 1000).await.unwrap();
    assert_eq!(mailbox.last_seq, 40);
    assert_eq!(mailbox.messages.len(), 40);
    let mut ids: Vec<_> = mailbox.messages.iter().map(|(_, m)| m.id).collect();
    let mut expected: Vec<_> = messages.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    store.close().await;
}

async fn the_node_secret_is_made_once(store: &Arc<dyn Store>) {
    let asks = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.node_secret().await.unwrap() })
    });
    let secrets: Vec<String> = futures::future::join_all(asks)
        .await
        .into_iter()
        .map(|secret| secret.unwrap())
        .collect();
    assert!(secrets[0].len() >= 32, "{:?}", secrets[0]);
    assert!(secrets.iter().all(|s| *s == secrets[0]), "{secrets:?}");
}

async fn everything_survives_close_and_reopen(backend: &impl Backend) {
    let store = backend.open("reopen").await;
    let bob = user(&store, "bob").await;
    let ann = user(&store, "ann").await;
    let cat = user(&store, "cat").await;
    store.request_friend(ann, bob, 10).await.unwrap();
    store.request_friend(cat, bob, 10).await.unwrap();
    store.accept_friend(bob, ann).await.unwrap();
    let m: Vec<_> = (0..3).map(|i| envelope(bob, &format!("m{i}"))).collect();
    for message in &m {
        relay(&store, bob, message).await;
    }
    store.ack(bob, &[m[0].id]).await.unwrap();
    let secret = store.node_secret().await.unwrap();
    assert_eq!(
        store.create_room("lobby", bob, 1).await.unwrap(),
        RoomCreated::Created
    );
    let posted = post("lobby", "hello");
    assert!(store.post("lobby", &posted, 10).await.unwrap());
    store.close().await;
    assert_eq!(store.mailbox(bob, 0, 10).await, Err(StoreError::Closed));
    assert_eq!(
        store.relay(bob, &envelope(bob, "late"), 10).await,
        Err(StoreError::Closed)
    );
    assert!(!store.is_healthy());

    let store = backend.open("reopen").await;
    assert!(store.is_healthy());
    assert_eq!(store.node_secret().await.unwrap(), secret);
    let user = store.user(bob).await.unwrap().unwrap();
    assert_eq!(user.name, "bob");
    assert_eq!(user.credential, "secret");
    // Names stay reserved, and friends stay friends.
    assert_eq!(store.user_by_name("ANN").await.unwrap().unwrap().0, ann);
    assert_eq!(
        store.bind(Uuid::new_v4(), "bob", "x", None).await.unwrap(),
        Binding::NameTaken
    );
    assert_eq!(
        sorted_friends(&store, bob).await,
        [
            friend(ann, "ann", FriendState::Friends),
            friend(cat, "cat", FriendState::RequestReceived)
        ]
    );
    let mailbox = store.mailbox(bob, 0, 10).await.unwrap();
    assert_eq!(mailbox.messages, vec![(2, m[1].clone()), (3, m[2].clone())]);
    assert_eq!(mailbox.last_seq, 3);
    assert_eq!(
        relay(&store, bob, &m[0]).await,
        Relayed::Duplicate { acknowledged: true }
    );
    assert_eq!(
        relay(&store, bob, &envelope(bob, "m3")).await,
        Relayed::Stored { seq: 4 }
    );
    assert_eq!(store.rooms().await.unwrap(), ["lobby"]);
    // The creator's count survives too.
    assert_eq!(
        store.create_room("hall", bob, 1).await.unwrap(),
        RoomCreated::QuotaReached
    );
    assert_eq!(
        store.history("lobby", 0, ALL).await.unwrap().items,
        vec![posted.clone()]
    );
    assert!(!store.post("lobby", &posted, 10).await.unwrap());
    store.close().await;
}
