//! The contract of [`Store`], written once and run against every backend: each backend's test
//! file implements [`Backend`] and calls [`run`].

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_api::{
    Access, Attachment, Destination, Envelope, FriendState, Membership, Path as MsgPath, Sender,
    now_ms,
};
use chat_server::page::PageLimits;
use chat_server::store::{
    Admission, Binding, FileAppended, FileBegun, FriendAccepted, FriendRequested, HeldFile,
    Invited, Joined, Left, Posted, Relayed, RoomFilter, RoomQuotas, Store, StoreError,
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
    groups_admit_members_by_invitation_and_the_owner(&backend.open("groups").await).await;
    ownership_passes_to_the_longest_standing_member(&backend.open("owners").await).await;
    membership_is_within_quotas(&backend.open("memberships").await).await;
    rooms_are_listed_as_the_caller_may_see_them(&backend.open("listing").await).await;
    posts_fan_out_into_every_members_mailbox(&backend.open("fanout").await).await;
    concurrent_posts_reach_every_mailbox_in_history_order(&backend.open("order").await).await;
    concurrent_relays_get_consecutive_numbers(&backend.open("concurrent").await).await;
    the_node_secret_is_made_once(&backend.open("secret").await).await;
    files(&backend.open("files").await).await;
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
        file: None,
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

const QUOTAS: RoomQuotas = RoomQuotas {
    max_created: 2,
    max_joined: 100,
    max_members: 100,
};

async fn join(store: &Arc<dyn Store>, room: &str, user: Uuid, how: Admission) -> Joined {
    store.join_room(room, user, how, QUOTAS).await.unwrap()
}

/// Makes a room owned by `owner`, checking what the store answers.
async fn make(store: &Arc<dyn Store>, room: &str, owner: Uuid, access: Access) {
    match join(store, room, owner, Admission::Create(access)).await {
        Joined::Joined {
            room: made,
            created: true,
        } => {
            assert_eq!(
                (made.owner, made.access, made.member_count),
                (owner, access, 1)
            );
        }
        other => panic!("making {room}: {other:?}"),
    }
}

/// Whether a post was stored (not refused, not a duplicate).
async fn posted(store: &Arc<dyn Store>, room: &str, from: Uuid, p: &Envelope, keep: usize) -> bool {
    match store.post(room, from, p, keep, 100).await.unwrap() {
        Posted::Posted { .. } => true,
        Posted::Duplicate => false,
        other => panic!("posting in {room}: {other:?}"),
    }
}

async fn standing(store: &Arc<dyn Store>, room: &str, user: Uuid) -> Membership {
    store.room(room, user).await.unwrap().unwrap().membership
}

async fn names(store: &Arc<dyn Store>, user: Uuid, filter: RoomFilter) -> Vec<String> {
    let listed = store.room_list(user, filter, None, 100).await.unwrap();
    listed.into_iter().map(|l| l.room.name).collect()
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
    let carol = user(store, "carol").await;
    make(store, "lobby", carol, Access::Open).await;
    let p = post("lobby", "p");
    assert!(posted(store, "lobby", carol, &p, 10).await);
    // Nothing is a day old.
    assert_eq!(store.forget_old_ids(24 * 3600 * 1000).await.unwrap(), 0);
    assert_eq!(
        relay(store, bob, &acked).await,
        Relayed::Duplicate { acknowledged: true }
    );
    // Once the clock has moved on, everything is older than 0 ms: the acknowledged id and the
    // post's id are forgotten; the ids of messages still waiting (the post in carol's mailbox
    // too) are not.
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
    // Posted again in the room; carol, who has it waiting, does not get it twice.
    assert_eq!(
        store.post("lobby", carol, &p, 10, 100).await.unwrap(),
        Posted::Posted { delivered: vec![] }
    );
    let history = store.history("lobby", 0, ALL).await.unwrap();
    assert_eq!(history.items, vec![p.clone(), p]);
    assert_eq!(store.mailbox(carol, 0, 10).await.unwrap().messages.len(), 1);
    store.close().await;
}

async fn rooms_are_created_once_within_a_quota(store: &Arc<dyn Store>) {
    let (bob, carol) = (user(store, "bob").await, user(store, "carol").await);
    assert!(store.rooms().await.unwrap().is_empty());
    let create = |room: &'static str, who: Uuid| async move {
        join(store, room, who, Admission::Create(Access::Open)).await
    };
    assert!(matches!(create("lobby", bob).await, Joined::Joined { .. }));
    assert_eq!(create("lobby", bob).await, Joined::Exists);
    assert_eq!(create("lobby", carol).await, Joined::Exists);
    assert!(matches!(create("hall", bob).await, Joined::Joined { .. }));
    assert_eq!(create("attic", bob).await, Joined::TooManyCreated);
    // Joining a room that does not exist makes it, within the same quota.
    assert_eq!(
        join(store, "attic", bob, Admission::Join).await,
        Joined::TooManyCreated
    );
    // An existing room is reported as such even past the quota.
    assert_eq!(create("hall", bob).await, Joined::Exists);
    // Quotas are per creator.
    assert!(matches!(
        create("attic", carol).await,
        Joined::Joined { .. }
    ));
    match join(store, "Attic", carol, Admission::Join).await {
        Joined::Joined { room, created } => {
            assert!(created);
            assert_eq!((room.owner, room.access), (carol, Access::Open));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.rooms().await.unwrap(),
        ["Attic", "attic", "hall", "lobby"]
    );
    store.close().await;
}

async fn groups_admit_members_by_invitation_and_the_owner(store: &Arc<dyn Store>) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let never = Uuid::new_v4();
    make(store, "g", alice, Access::InviteOnly).await;
    assert_eq!(standing(store, "g", alice).await, Membership::Owner);
    assert_eq!(standing(store, "g", bob).await, Membership::Outsider);
    assert_eq!(
        join(store, "g", bob, Admission::Join).await,
        Joined::NotInvited
    );
    // Only members invite, and only users that exist.
    assert_eq!(
        store.invite("g", carol, bob).await.unwrap(),
        Invited::NotAMember
    );
    assert_eq!(
        store.invite("g", alice, never).await.unwrap(),
        Invited::UnknownUser
    );
    assert_eq!(
        store.invite("nowhere", alice, bob).await.unwrap(),
        Invited::UnknownRoom
    );
    assert!(matches!(
        store.invite("g", alice, bob).await.unwrap(),
        Invited::Invited(_)
    ));
    assert_eq!(
        store.invite("g", alice, bob).await.unwrap(),
        Invited::AlreadyIn
    );
    assert_eq!(
        store.invite("g", alice, alice).await.unwrap(),
        Invited::AlreadyIn
    );
    assert_eq!(standing(store, "g", bob).await, Membership::Invited);
    match join(store, "g", bob, Admission::Join).await {
        Joined::Joined { room, created } => {
            assert!(!created);
            assert_eq!((room.owner, room.member_count), (alice, 2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(standing(store, "g", bob).await, Membership::Member);
    assert!(matches!(
        join(store, "g", bob, Admission::Join).await,
        Joined::AlreadyMember(_)
    ));
    // Joining used the invitation up: once gone, bob needs another.
    assert!(matches!(
        store.leave_room("g", bob, None).await.unwrap(),
        Left::Left { .. }
    ));
    assert_eq!(
        join(store, "g", bob, Admission::Join).await,
        Joined::NotInvited
    );
    // The owner adds and removes; nobody else does.
    assert_eq!(
        join(store, "g", carol, Admission::AddedBy(bob)).await,
        Joined::NotTheOwner
    );
    assert!(matches!(
        join(store, "g", carol, Admission::AddedBy(alice)).await,
        Joined::Joined { .. }
    ));
    assert!(matches!(
        join(store, "g", carol, Admission::AddedBy(alice)).await,
        Joined::AlreadyMember(_)
    ));
    assert_eq!(
        join(store, "g", never, Admission::AddedBy(alice)).await,
        Joined::UnknownUser
    );
    assert_eq!(
        join(store, "nowhere", carol, Admission::AddedBy(alice)).await,
        Joined::UnknownRoom
    );
    let mut expected = vec![
        Sender {
            id: alice,
            name: "alice".into(),
        },
        Sender {
            id: carol,
            name: "carol".into(),
        },
    ];
    expected.sort_by_key(|s| s.id);
    assert_eq!(store.members("g").await.unwrap(), expected);
    assert_eq!(
        store.leave_room("g", carol, Some(bob)).await.unwrap(),
        Left::NotTheOwner
    );
    match store.leave_room("g", carol, Some(alice)).await.unwrap() {
        Left::Left { room } => assert_eq!((room.owner, room.member_count), (alice, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store.leave_room("g", carol, Some(alice)).await.unwrap(),
        Left::NotAMember
    );
    assert_eq!(
        store.leave_room("g", bob, None).await.unwrap(),
        Left::NotAMember
    );
    assert_eq!(
        store.leave_room("nowhere", bob, None).await.unwrap(),
        Left::UnknownRoom
    );
    assert_eq!(standing(store, "g", carol).await, Membership::Outsider);
    assert!(store.room("nowhere", alice).await.unwrap().is_none());
    store.close().await;
}

async fn ownership_passes_to_the_longest_standing_member(store: &Arc<dyn Store>) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    make(store, "g", alice, Access::InviteOnly).await;
    // Carol joins before bob, whatever their ids.
    for who in [carol, bob] {
        assert!(matches!(
            join(store, "g", who, Admission::AddedBy(alice)).await,
            Joined::Joined { .. }
        ));
    }
    match store.leave_room("g", alice, None).await.unwrap() {
        Left::Left { room } => assert_eq!((room.owner, room.member_count), (carol, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(standing(store, "g", carol).await, Membership::Owner);
    assert_eq!(standing(store, "g", bob).await, Membership::Member);
    // The old owner is an outsider now, and may not come back uninvited.
    assert_eq!(standing(store, "g", alice).await, Membership::Outsider);
    assert_eq!(
        join(store, "g", alice, Admission::Join).await,
        Joined::NotInvited
    );
    // The owner may remove themselves: that is leaving.
    assert!(matches!(
        store.leave_room("g", carol, Some(carol)).await.unwrap(),
        Left::Left { .. }
    ));
    assert_eq!(standing(store, "g", bob).await, Membership::Owner);
    // The last member leaving keeps the room, empty, with its owner, who may join it again.
    match store.leave_room("g", bob, None).await.unwrap() {
        Left::Left { room } => assert_eq!((room.owner, room.member_count), (bob, 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        join(store, "g", carol, Admission::Join).await,
        Joined::NotInvited
    );
    assert!(matches!(
        join(store, "g", bob, Admission::Join).await,
        Joined::Joined { created: false, .. }
    ));
    assert_eq!(standing(store, "g", bob).await, Membership::Owner);
    store.close().await;
}

async fn membership_is_within_quotas(store: &Arc<dyn Store>) {
    let quotas = RoomQuotas {
        max_created: 10,
        max_joined: 2,
        max_members: 2,
    };
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let admit = |room: &'static str, who: Uuid, how: Admission| async move {
        store.join_room(room, who, how, quotas).await.unwrap()
    };
    let create = Admission::Create(Access::Open);
    assert!(matches!(
        admit("a", alice, create).await,
        Joined::Joined { .. }
    ));
    assert!(matches!(
        admit("b", alice, create).await,
        Joined::Joined { .. }
    ));
    // No room is made that its maker could not be in.
    assert_eq!(admit("c", alice, create).await, Joined::TooManyJoined);
    assert_eq!(
        admit("c", alice, Admission::Join).await,
        Joined::TooManyJoined
    );
    assert_eq!(store.rooms().await.unwrap(), ["a", "b"]);
    assert!(matches!(
        admit("a", bob, Admission::Join).await,
        Joined::Joined { .. }
    ));
    assert_eq!(admit("a", carol, Admission::Join).await, Joined::RoomFull);
    assert_eq!(
        admit("a", carol, Admission::AddedBy(alice)).await,
        Joined::RoomFull
    );
    // Leaving frees a place in the room and a slot of the user's.
    store.leave_room("a", alice, None).await.unwrap();
    assert!(matches!(
        admit("a", carol, Admission::Join).await,
        Joined::Joined { .. }
    ));
    assert!(matches!(
        admit("c", alice, create).await,
        Joined::Joined { .. }
    ));
    store.close().await;
}

async fn rooms_are_listed_as_the_caller_may_see_them(store: &Arc<dyn Store>) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let quotas = RoomQuotas {
        max_created: 10,
        ..QUOTAS
    };
    for (room, access) in [
        ("d-open", Access::Open),
        ("a-group", Access::InviteOnly),
        ("c-group", Access::InviteOnly),
        ("b-open", Access::Open),
    ] {
        let how = Admission::Create(access);
        let joined = store.join_room(room, alice, how, quotas).await.unwrap();
        assert!(matches!(joined, Joined::Joined { .. }), "{joined:?}");
    }
    store.invite("c-group", alice, bob).await.unwrap();
    let visible = |who| names(store, who, RoomFilter::Visible);
    let mine = |who| names(store, who, RoomFilter::Mine);
    assert_eq!(
        visible(alice).await,
        ["a-group", "b-open", "c-group", "d-open"]
    );
    assert_eq!(visible(bob).await, ["b-open", "d-open"]);
    assert_eq!(
        mine(alice).await,
        ["a-group", "b-open", "c-group", "d-open"]
    );
    assert_eq!(mine(bob).await, ["c-group"]);
    let listed = store
        .room_list(bob, RoomFilter::Mine, None, 10)
        .await
        .unwrap();
    assert_eq!(listed[0].membership, Membership::Invited);
    assert_eq!(listed[0].room.owner, alice);
    assert_eq!(listed[0].room.access, Access::InviteOnly);
    join(store, "c-group", bob, Admission::Join).await;
    join(store, "b-open", bob, Admission::Join).await;
    assert_eq!(visible(bob).await, ["b-open", "c-group", "d-open"]);
    assert_eq!(mine(bob).await, ["b-open", "c-group"]);
    // Pages: after a name, at most `limit`.
    let page = store
        .room_list(alice, RoomFilter::Visible, Some("a-group".into()), 2)
        .await
        .unwrap();
    let page: Vec<_> = page.into_iter().map(|l| l.room.name).collect();
    assert_eq!(page, ["b-open", "c-group"]);
    let page = store
        .room_list(bob, RoomFilter::Mine, Some("b-open".into()), 2)
        .await
        .unwrap();
    let page: Vec<_> = page.into_iter().map(|l| l.room.name).collect();
    assert_eq!(page, ["c-group"]);
    let page = store
        .room_list(bob, RoomFilter::Visible, Some("zzz".into()), 2)
        .await
        .unwrap();
    assert!(page.is_empty());
    store.close().await;
}

async fn posts_fan_out_into_every_members_mailbox(store: &Arc<dyn Store>) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    make(store, "lobby", alice, Access::Open).await;
    join(store, "lobby", bob, Admission::Join).await;
    let p1 = post("lobby", "one");
    assert_eq!(
        store.post("lobby", carol, &p1, 10, 100).await.unwrap(),
        Posted::NotAMember
    );
    assert_eq!(
        store.post("nowhere", alice, &p1, 10, 100).await.unwrap(),
        Posted::UnknownRoom
    );
    // Bob has a relayed message waiting: the post comes after it in his mailbox.
    let relayed = envelope(bob, "relayed");
    relay(store, bob, &relayed).await;
    let mut expected = vec![(alice, 1), (bob, 2)];
    expected.sort();
    assert_eq!(
        store.post("lobby", alice, &p1, 10, 100).await.unwrap(),
        Posted::Posted {
            delivered: expected
        }
    );
    assert_eq!(
        store.post("lobby", alice, &p1, 10, 100).await.unwrap(),
        Posted::Duplicate
    );
    let bobs = store.mailbox(bob, 0, 10).await.unwrap();
    assert_eq!(bobs.messages, vec![(1, relayed), (2, p1.clone())]);
    assert_eq!(
        store.mailbox(alice, 0, 10).await.unwrap().messages,
        vec![(1, p1.clone())]
    );
    assert!(
        store
            .mailbox(carol, 0, 10)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    // A post is acknowledged like any message.
    assert_eq!(store.ack(bob, &[p1.id]).await.unwrap(), 1);
    assert_eq!(store.ack(alice, &[p1.id]).await.unwrap(), 1);
    // A member whose mailbox is full (bob, with the relayed message) does not get the post;
    // the history has it.
    let p2 = post("lobby", "two");
    assert_eq!(
        store.post("lobby", bob, &p2, 10, 1).await.unwrap(),
        Posted::Posted {
            delivered: vec![(alice, 2)]
        }
    );
    let history = store.history("lobby", 0, ALL).await.unwrap().items;
    assert_eq!(history, vec![p1, p2]);
    // One who left gets no more posts.
    store.leave_room("lobby", bob, None).await.unwrap();
    let p4 = post("lobby", "four");
    assert_eq!(
        store.post("lobby", alice, &p4, 10, 100).await.unwrap(),
        Posted::Posted {
            delivered: vec![(alice, 3)]
        }
    );
    store.close().await;
}

async fn concurrent_posts_reach_every_mailbox_in_history_order(store: &Arc<dyn Store>) {
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    make(store, "lobby", alice, Access::Open).await;
    make(store, "hall", bob, Access::Open).await;
    join(store, "lobby", bob, Admission::Join).await;
    join(store, "hall", alice, Admission::Join).await;
    // Posts in two rooms with the same members, each twice, all at once.
    let posts: Vec<_> = (0..30)
        .map(|i| {
            let room = if i % 2 == 0 { "lobby" } else { "hall" };
            (room, post(room, &format!("p{i}")))
        })
        .collect();
    let tasks = posts.iter().chain(posts.iter()).map(|(room, p)| {
        let (store, room, p) = (store.clone(), *room, p.clone());
        let from = if room == "lobby" { alice } else { bob };
        tokio::spawn(async move { store.post(room, from, &p, 100, 1000).await })
    });
    let mut stored = 0;
    for done in futures::future::join_all(tasks).await {
        match done.unwrap().unwrap() {
            Posted::Posted { delivered } => {
                assert_eq!(delivered.len(), 2);
                stored += 1;
            }
            Posted::Duplicate => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 30);
    for who in [alice, bob] {
        let mailbox = store.mailbox(who, 0, 1000).await.unwrap().messages;
        assert_eq!(mailbox.len(), 30);
        for room in ["lobby", "hall"] {
            let history: Vec<Uuid> = store
                .history(room, 0, ALL)
                .await
                .unwrap()
                .items
                .iter()
                .map(|p| p.id)
                .collect();
            let got: Vec<Uuid> = mailbox
                .iter()
                .filter(|(_, p)| p.to == Destination::Room(room.into()))
                .map(|(_, p)| p.id)
                .collect();
            assert_eq!(got, history);
        }
    }
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
    let alice = user(store, "alice").await;
    make(store, "lobby", alice, Access::Open).await;
    make(store, "hall", alice, Access::Open).await;
    let posts: Vec<_> = (0..5).map(|i| post("lobby", &i.to_string())).collect();
    for p in &posts {
        assert!(posted(store, "lobby", alice, p, 3).await);
    }
    assert!(!posted(store, "lobby", alice, &posts[4], 3).await);
    // A post no longer kept is still known by its id.
    assert!(!posted(store, "lobby", alice, &posts[0], 3).await);
    // Ids are per room.
    assert!(posted(store, "hall", alice, &posts[0], 3).await);
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
    assert!(posted(store, "lobby", alice, &newest, 1).await);
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
    let carol = user(&store, "carol").await;
    let dave = user(&store, "dave").await;
    let one = RoomQuotas {
        max_created: 1,
        ..QUOTAS
    };
    let made = store
        .join_room("lobby", bob, Admission::Create(Access::InviteOnly), one)
        .await
        .unwrap();
    assert!(matches!(made, Joined::Joined { created: true, .. }));
    join(&store, "lobby", carol, Admission::AddedBy(bob)).await;
    store.invite("lobby", carol, dave).await.unwrap();
    let hello = post("lobby", "hello");
    assert!(posted(&store, "lobby", bob, &hello, 10).await);
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
    assert_eq!(
        mailbox.messages,
        vec![(2, m[1].clone()), (3, m[2].clone()), (4, hello.clone())]
    );
    assert_eq!(mailbox.last_seq, 4);
    assert_eq!(
        relay(&store, bob, &m[0]).await,
        Relayed::Duplicate { acknowledged: true }
    );
    assert_eq!(
        relay(&store, bob, &envelope(bob, "m3")).await,
        Relayed::Stored { seq: 5 }
    );
    assert_eq!(store.rooms().await.unwrap(), ["lobby"]);
    // The creator's count survives too.
    assert_eq!(
        store
            .join_room("hall", bob, Admission::Create(Access::Open), one)
            .await
            .unwrap(),
        Joined::TooManyCreated
    );
    assert_eq!(
        store.history("lobby", 0, ALL).await.unwrap().items,
        vec![hello.clone()]
    );
    assert!(!posted(&store, "lobby", bob, &hello, 10).await);
    // Membership, ownership and invitations are kept.
    let lobby = store.room("lobby", bob).await.unwrap().unwrap();
    assert_eq!(lobby.membership, Membership::Owner);
    assert_eq!(
        (lobby.room.access, lobby.room.member_count),
        (Access::InviteOnly, 2)
    );
    assert_eq!(standing(&store, "lobby", carol).await, Membership::Member);
    assert_eq!(standing(&store, "lobby", dave).await, Membership::Invited);
    let carols = store.mailbox(carol, 0, 10).await.unwrap().messages;
    assert_eq!(carols, vec![(1, hello)]);
    store.close().await;
}

/// A file of `size` bytes that `from` sends `to`, as the sender declares it (`hash` stands for
/// its SHA-256: the store compares it, never computes it).
fn held(from: Uuid, to: Uuid, size: u64, hash: char) -> HeldFile {
    HeldFile {
        from: Sender {
            id: from,
            name: "ann".into(),
        },
        to,
        file: Attachment {
            name: "notes.txt".into(),
            size,
            sha256: hash.to_string().repeat(64),
        },
        received: 0,
        touched_ms: 0,
    }
}

/// Files held for their recipient: begun once within a quota, written in order by their
/// sender, read a piece at a time, and gone when acknowledged, deleted or expired.
async fn files(store: &Arc<dyn Store>) {
    const QUOTA: u64 = 25;
    let ann = user(store, "ann").await;
    let bob = user(store, "bob").await;
    let cat = user(store, "cat").await;
    let id = Uuid::new_v4();
    let notes = held(ann, bob, 10, 'a');
    assert_eq!(store.held_file(id).await.unwrap(), None);
    let before = now_ms();
    assert_eq!(
        store.begin_file(id, &notes, QUOTA).await.unwrap(),
        FileBegun::Held { received: 0 }
    );
    let stored = store.held_file(id).await.unwrap().unwrap();
    assert_eq!(
        (&stored.from.id, &stored.to, &stored.file, stored.received),
        (&ann, &bob, &notes.file, 0)
    );
    assert!(
        (before..=now_ms()).contains(&stored.touched_ms),
        "{}",
        stored.touched_ms
    );
    // Begun again with the same details (the name may differ): the same file.
    let renamed = HeldFile {
        file: Attachment {
            name: "other.txt".into(),
            ..notes.file.clone()
        },
        ..notes.clone()
    };
    assert_eq!(
        store.begin_file(id, &renamed, QUOTA).await.unwrap(),
        FileBegun::Held { received: 0 }
    );
    assert_eq!(
        store.held_file(id).await.unwrap().unwrap().file.name,
        "notes.txt"
    );
    // Another size, hash, sender or recipient under the same id is another file.
    for other in [
        held(ann, bob, 11, 'a'),
        held(ann, bob, 10, 'b'),
        held(cat, bob, 10, 'a'),
        held(ann, cat, 10, 'a'),
    ] {
        assert_eq!(
            store.begin_file(id, &other, QUOTA).await.unwrap(),
            FileBegun::OtherFile
        );
    }
    let nobody = Uuid::new_v4();
    assert_eq!(
        store
            .begin_file(Uuid::new_v4(), &held(ann, nobody, 1, 'a'), QUOTA)
            .await
            .unwrap(),
        FileBegun::UnknownRecipient
    );
    // The declared sizes count against the recipient's quota, whatever has arrived.
    let (big_id, big) = (Uuid::new_v4(), held(cat, bob, 20, 'c'));
    assert_eq!(
        store.begin_file(big_id, &big, QUOTA).await.unwrap(),
        FileBegun::QuotaReached { held: 10 }
    );
    assert_eq!(store.held_file(big_id).await.unwrap(), None);
    // Another recipient's quota is their own.
    let (cats_id, cats) = (Uuid::new_v4(), held(bob, cat, 20, 'd'));
    assert_eq!(
        store.begin_file(cats_id, &cats, QUOTA).await.unwrap(),
        FileBegun::Held { received: 0 }
    );

    // Appends, from where the held bytes end and within the declared size, by the sender.
    let append = |from: Uuid, offset: u64, data: &'static [u8]| {
        let store = store.clone();
        async move {
            store
                .append_file(id, from, offset, Bytes::from_static(data))
                .await
                .unwrap()
        }
    };
    assert_eq!(
        append(ann, 0, b"hello").await,
        FileAppended::Appended { received: 5 }
    );
    assert_eq!(
        append(ann, 0, b"hello").await,
        FileAppended::WrongOffset { received: 5 }
    );
    assert_eq!(
        append(ann, 7, b"ld").await,
        FileAppended::WrongOffset { received: 5 }
    );
    assert_eq!(
        append(ann, 5, b"world!").await,
        FileAppended::WrongOffset { received: 5 }
    );
    assert_eq!(append(cat, 5, b"world").await, FileAppended::UnknownFile);
    assert_eq!(
        store
            .append_file(Uuid::new_v4(), ann, 0, Bytes::from_static(b"x"))
            .await
            .unwrap(),
        FileAppended::UnknownFile
    );
    assert_eq!(store.held_file(id).await.unwrap().unwrap().received, 5);
    let before = now_ms();
    assert_eq!(
        append(ann, 5, b"world").await,
        FileAppended::Appended { received: 10 }
    );
    let stored = store.held_file(id).await.unwrap().unwrap();
    assert_eq!(stored.received, 10);
    assert!(stored.touched_ms >= before, "{}", stored.touched_ms);
    // Resuming tells how much has arrived.
    assert_eq!(
        store.begin_file(id, &notes, QUOTA).await.unwrap(),
        FileBegun::Held { received: 10 }
    );

    // Reads go up to the end of the piece that holds the offset, at most `max` bytes.
    let read = |offset: u64, max: usize| {
        let store = store.clone();
        async move { store.read_file(id, offset, max).await.unwrap() }
    };
    assert_eq!(read(0, 100).await.as_deref(), Some(&b"hello"[..]));
    assert_eq!(read(2, 100).await.as_deref(), Some(&b"llo"[..]));
    assert_eq!(read(3, 100).await.as_deref(), Some(&b"lo"[..]));
    assert_eq!(read(5, 100).await.as_deref(), Some(&b"world"[..]));
    assert_eq!(read(7, 100).await.as_deref(), Some(&b"rld"[..]));
    assert_eq!(read(1, 2).await.as_deref(), Some(&b"el"[..]));
    assert_eq!(read(6, 3).await.as_deref(), Some(&b"orl"[..]));
    assert_eq!(read(10, 100).await.as_deref(), Some(&b""[..]));
    assert_eq!(read(11, 100).await.as_deref(), Some(&b""[..]));
    assert_eq!(read(u64::MAX, 100).await.as_deref(), Some(&b""[..]));
    assert_eq!(store.read_file(Uuid::new_v4(), 0, 100).await.unwrap(), None);
    // A file of which nothing has arrived reads empty.
    assert_eq!(
        store.read_file(cats_id, 0, 100).await.unwrap().as_deref(),
        Some(&b""[..])
    );

    // Acknowledging the message with the file's id deletes it, for its recipient only.
    let message = Envelope {
        id,
        ..envelope(bob, "notes.txt")
    };
    assert_eq!(
        relay(store, bob, &message).await,
        Relayed::Stored { seq: 1 }
    );
    assert_eq!(
        relay(store, cat, &message).await,
        Relayed::Stored { seq: 1 }
    );
    assert_eq!(store.ack(cat, &[id]).await.unwrap(), 1);
    assert_eq!(store.ack(ann, &[id]).await.unwrap(), 0);
    assert_eq!(store.held_file(id).await.unwrap().unwrap().received, 10);
    assert_eq!(read(0, 100).await.as_deref(), Some(&b"hello"[..]));
    assert_eq!(store.ack(bob, &[id]).await.unwrap(), 1);
    assert_eq!(store.held_file(id).await.unwrap(), None);
    assert_eq!(store.read_file(id, 0, 100).await.unwrap(), None);
    assert_eq!(append(ann, 10, b"").await, FileAppended::UnknownFile);
    assert!(!store.delete_file(id).await.unwrap());
    // Its size no longer counts against bob's quota: what was refused now fits.
    assert_eq!(
        store.begin_file(big_id, &big, QUOTA).await.unwrap(),
        FileBegun::Held { received: 0 }
    );
    assert_eq!(
        store
            .append_file(big_id, cat, 0, Bytes::from_static(b"abc"))
            .await
            .unwrap(),
        FileAppended::Appended { received: 3 }
    );

    // Deleted once; its pieces with it, and its size off the quota.
    assert!(store.delete_file(big_id).await.unwrap());
    assert!(!store.delete_file(big_id).await.unwrap());
    assert_eq!(store.held_file(big_id).await.unwrap(), None);
    assert_eq!(store.read_file(big_id, 0, 100).await.unwrap(), None);
    let (full_id, full) = (Uuid::new_v4(), held(ann, bob, QUOTA, 'e'));
    assert_eq!(
        store.begin_file(full_id, &full, QUOTA).await.unwrap(),
        FileBegun::Held { received: 0 }
    );
    assert_eq!(
        store
            .begin_file(Uuid::new_v4(), &held(ann, bob, 1, 'f'), QUOTA)
            .await
            .unwrap(),
        FileBegun::QuotaReached { held: QUOTA }
    );

    // Nothing is a day old; once the clock has moved on, everything is older than 0 ms.
    assert_eq!(store.expire_files(24 * 3600 * 1000).await.unwrap(), 0);
    assert!(store.held_file(full_id).await.unwrap().is_some());
    assert!(store.held_file(cats_id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(store.expire_files(0).await.unwrap(), 2);
    assert_eq!(store.held_file(full_id).await.unwrap(), None);
    assert_eq!(store.held_file(cats_id).await.unwrap(), None);
    assert_eq!(store.expire_files(0).await.unwrap(), 0);
    // The quotas are free again.
    assert_eq!(
        store.begin_file(full_id, &full, QUOTA).await.unwrap(),
        FileBegun::Held { received: 0 }
    );
    assert_eq!(
        store.begin_file(cats_id, &cats, QUOTA).await.unwrap(),
        FileBegun::Held { received: 0 }
    );

    // Concurrent begins for one recipient cannot pass the quota together, and concurrent
    // appends at one offset cannot both be kept.
    let dan = user(store, "dan").await;
    let begins = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            let id = Uuid::new_v4();
            let begun = store
                .begin_file(id, &held(ann, dan, 10, 'g'), 35)
                .await
                .unwrap();
            (id, begun)
        })
    });
    let begun: Vec<(Uuid, FileBegun)> = futures::future::join_all(begins)
        .await
        .into_iter()
        .map(|begun| begun.unwrap())
        .collect();
    let kept: Vec<Uuid> = begun
        .iter()
        .filter(|(_, b)| *b == FileBegun::Held { received: 0 })
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(kept.len(), 3, "{begun:?}");
    assert!(
        begun
            .iter()
            .all(|(id, b)| kept.contains(id) || *b == FileBegun::QuotaReached { held: 30 }),
        "{begun:?}"
    );
    let target = kept[0];
    let appends = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .append_file(target, ann, 0, Bytes::from_static(b"abcd"))
                .await
                .unwrap()
        })
    });
    let appended: Vec<FileAppended> = futures::future::join_all(appends)
        .await
        .into_iter()
        .map(|appended| appended.unwrap())
        .collect();
    let firsts = appended
        .iter()
        .filter(|a| **a == FileAppended::Appended { received: 4 })
        .count();
    assert_eq!(firsts, 1, "{appended:?}");
    assert!(
        appended.iter().all(|a| matches!(
            a,
            FileAppended::Appended { received: 4 } | FileAppended::WrongOffset { received: 4 }
        )),
        "{appended:?}"
    );
    assert_eq!(
        store.read_file(target, 0, 100).await.unwrap().as_deref(),
        Some(&b"abcd"[..])
    );
    store.close().await;
}
