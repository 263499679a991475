//! Load balancers: which instance of a service takes the next call.
//!
//! A [`Balancer`] is a [`Strategy`] plus the little state that strategy needs. It is sans-IO:
//! it sees the instances as [`Candidate`]s (id, weight, health, calls in flight) and returns an
//! index into that slice; its randomness comes from a generator seeded at construction, so
//! [`Balancer::with_seed`] makes every pick reproducible.
//!
//! A candidate is *eligible* when it is healthy, its weight is above zero, and its index is not
//! in [`PickContext::exclude`] (the instances this call already tried, so that a failover goes
//! somewhere else). Every strategy returns an eligible index, or `None` when there is none.
//!
//! - [`Strategy::WeightedRandom`] (the default) picks with probability proportional to weight.
//!   It keeps no state and needs no coordination between clients: the right choice when the
//!   instances are alike and many clients share them.
//! - [`Strategy::RoundRobin`] is nginx's smooth weighted round robin: in every run of `W` picks
//!   (`W` the sum of the weights) each candidate is picked exactly `weight` times, interleaved
//!   rather than in bursts. Use it for an exact, predictable spread from a single busy client.
//! - [`Strategy::LeastInFlight`] picks the candidate with the fewest calls in flight from this
//!   client, ties by weighted random. It steers away from slow instances, but all clients see
//!   the same idle instance at once; best when one client is a large share of the load.
//! - [`Strategy::PowerOfTwoChoices`] samples two distinct candidates by weight and takes the
//!   one with fewer calls in flight. Nearly as adaptive as least in-flight, without herding onto
//!   one instance: a good choice when latencies differ between instances.
//! - [`Strategy::ConsistentHash`] sends the same [`PickContext::hash_key`] to the same instance
//!   for as long as it is eligible, and when instances join or leave only about `1/n` of the
//!   keys move. Use it for affinity: caches, sessions, per-key ordering.
//!
//! ```
//! use rpc_registry::{Balancer, Candidate, PickContext, Strategy};
//!
//! let candidates = [
//!     Candidate { id: "a", weight: 100, healthy: true, in_flight: 0 },
//!     Candidate { id: "b", weight: 100, healthy: true, in_flight: 0 },
//! ];
//! let balancer = Balancer::with_seed(Strategy::RoundRobin, 1);
//! balancer.update(&candidates);
//! let first = balancer.pick(&candidates, &PickContext::default()).unwrap();
//! // The first try failed: fail over to another instance.
//! let tried = [first];
//! let cx = PickContext { exclude: &tried, ..PickContext::default() };
//! assert_ne!(balancer.pick(&candidates, &cx), Some(first));
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use crate::Instance;

/// The weight at which a candidate gets exactly `virtual_nodes` points on the hash ring.
const REFERENCE_WEIGHT: u64 = Instance::DEFAULT_WEIGHT as u64;
/// Bounds the ring's memory whatever the weights and `virtual_nodes`.
const MAX_POINTS_PER_CANDIDATE: u64 = 10_000;
/// SplitMix64's increment, 2^64 / φ.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// What a balancer sees of one candidate.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The instance's id; consistent hashing places the instance on its ring by this id.
    pub id: &'a str,
    /// Relative share of traffic; 0 takes none.
    pub weight: u32,
    /// Whether it takes traffic; unhealthy candidates are never picked.
    pub healthy: bool,
    /// Calls this client has sent to it that have not completed yet.
    pub in_flight: usize,
}

impl<'a> Candidate<'a> {
    /// The candidate view of a registry instance.
    pub fn from_instance(instance: &'a Instance, in_flight: usize) -> Self {
        Candidate {
            id: &instance.id,
            weight: instance.weight,
            healthy: instance.healthy,
            in_flight,
        }
    }
}

/// Per-call input to [`Balancer::pick`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PickContext<'a> {
    /// The key consistent hashing routes by (see [`PickContext::stable_hash`] to derive one
    /// from bytes); ignored by the other strategies. Default: none, which makes consistent
    /// hashing fall back to weighted random.
    pub hash_key: Option<u64>,
    /// Indexes of candidates already tried for this call; never picked again. Indexes out of
    /// range are ignored. Default: empty.
    pub exclude: &'a [usize],
}

impl PickContext<'_> {
    /// A stable 64-bit hash of `bytes` (FNV-1a, then the SplitMix64 finalizer), for
    /// [`hash_key`](Self::hash_key): unlike std's hasher it is the same in every process, so
    /// every client routes a key to the same instance.
    pub fn stable_hash(bytes: &[u8]) -> u64 {
        mix64(fnv1a(bytes))
    }
}

/// How a [`Balancer`] chooses among the eligible candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Probability proportional to weight. Stateless; for alike instances shared by many
    /// clients. The default.
    #[default]
    WeightedRandom,
    /// Smooth weighted round robin (nginx's): each candidate in turn, `weight` times in every
    /// `sum of weights` picks. For an exact, predictable spread.
    RoundRobin,
    /// The fewest calls in flight from this client; ties by weighted random. Steers away from
    /// slow instances; best when this client is a large share of their load.
    LeastInFlight,
    /// The fewer calls in flight of two distinct candidates sampled by weight (ties: the first
    /// sampled). Adaptive like least in-flight without every client herding onto the same
    /// idle instance.
    PowerOfTwoChoices,
    /// A hash ring over the candidates' ids, walked clockwise from the call's
    /// [`hash_key`](PickContext::hash_key) to the first eligible candidate: the same key goes
    /// to the same instance while it is eligible, and only about `1/n` of the keys move when an
    /// instance joins or leaves. For affinity (caches, sessions). Without a key, weighted random.
    ///
    /// A candidate of weight `w > 0` gets `virtual_nodes × w / 100` points on the ring (rounded,
    /// at least 1, at most 10,000), so at the default weight exactly `virtual_nodes`; 100 to 200
    /// spreads keys within a few percent. Its points are the first outputs of SplitMix64 seeded
    /// with the FNV-1a hash of its id, and a key sits at the SplitMix64 finalizer of its value:
    /// every process builds the same ring from the same instances, in any order.
    ConsistentHash {
        /// Points per candidate at the default weight.
        virtual_nodes: u32,
    },
}

/// A [`Strategy`] plus the state it needs: the round-robin weights, the hash ring of the
/// current candidates, and a random generator.
///
/// Call [`update`](Self::update) whenever the candidate list changes and
/// [`pick`](Self::pick) on every call. Both take `&self`; picks take no lock except for round
/// robin (a short mutex) and consistent hashing (a read lock on the ring).
pub struct Balancer {
    strategy: Strategy,
    /// A SplitMix64 state: every pick that needs randomness takes the next output as the seed
    /// of its own generator, so concurrent picks share nothing but one atomic add.
    rng_state: AtomicU64,
    round_robin: Mutex<RoundRobin>,
    ring: RwLock<Ring>,
}

impl Balancer {
    /// A balancer seeded from the thread's random generator.
    pub fn new(strategy: Strategy) -> Self {
        Self::with_seed(strategy, fastrand::u64(..))
    }

    /// A balancer whose random choices are determined by `seed`, for reproducible tests.
    pub fn with_seed(strategy: Strategy, seed: u64) -> Self {
        Balancer {
            strategy,
            rng_state: AtomicU64::new(seed),
            round_robin: Mutex::new(RoundRobin::default()),
            ring: RwLock::new(Ring::default()),
        }
    }

    /// The strategy it was built with.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Takes in a new candidate list. Consistent hashing rebuilds its ring from the ids and
    /// weights; round robin carries each remaining candidate's turn over by id, so frequent
    /// updates do not restart the rotation.
    pub fn update(&self, candidates: &[Candidate<'_>]) {
        match self.strategy {
            Strategy::RoundRobin => lock(&self.round_robin).update(candidates),
            Strategy::ConsistentHash { virtual_nodes } => {
                let ring = Ring::build(candidates, virtual_nodes);
                *self.ring.write().unwrap_or_else(PoisonError::into_inner) = ring;
            }
            _ => {}
        }
    }

    /// The index of the chosen candidate, or `None` when no candidate is eligible (healthy,
    /// weight above zero, not excluded).
    ///
    /// `candidates` should be the list last passed to [`update`](Self::update); if it is not,
    /// the pick is still eligible, only less well placed (consistent hashing finds ring members
    /// by id and falls back to weighted random for candidates missing from the ring).
    pub fn pick(&self, candidates: &[Candidate<'_>], cx: &PickContext<'_>) -> Option<usize> {
        match self.strategy {
            Strategy::WeightedRandom => self.weighted_random(candidates, cx),
            Strategy::RoundRobin => lock(&self.round_robin).pick(candidates, cx),
            Strategy::LeastInFlight => self.least_in_flight(candidates, cx),
            Strategy::PowerOfTwoChoices => self.power_of_two_choices(candidates, cx),
            Strategy::ConsistentHash { .. } => match cx.hash_key {
                Some(key) => self.consistent_hash(candidates, cx, key),
                // Nothing to route by.
                None => self.weighted_random(candidates, cx),
            },
        }
    }

    fn weighted_random(&self, candidates: &[Candidate<'_>], cx: &PickContext<'_>) -> Option<usize> {
        let total = total_weight(candidates, cx);
        draw(&mut self.rng(), candidates, cx, total, |_, _| true)
    }

    fn least_in_flight(&self, candidates: &[Candidate<'_>], cx: &PickContext<'_>) -> Option<usize> {
        let (mut least, mut total) = (usize::MAX, 0_u64);
        for (_, c) in eligible(candidates, cx) {
            if c.in_flight < least {
                (least, total) = (c.in_flight, 0);
            }
            if c.in_flight == least {
                total = total.saturating_add(c.weight.into());
            }
        }
        draw(&mut self.rng(), candidates, cx, total, |_, c| {
            c.in_flight == least
        })
    }

    fn power_of_two_choices(
        &self,
        candidates: &[Candidate<'_>],
        cx: &PickContext<'_>,
    ) -> Option<usize> {
        let total = total_weight(candidates, cx);
        let mut rng = self.rng();
        let first = draw(&mut rng, candidates, cx, total, |_, _| true)?;
        let first_weight = candidates.get(first).map_or(0, |c| u64::from(c.weight));
        let Some(second) = draw(
            &mut rng,
            candidates,
            cx,
            total.saturating_sub(first_weight),
            |i, _| i != first,
        ) else {
            // The only eligible candidate.
            return Some(first);
        };
        let in_flight = |i: usize| candidates.get(i).map_or(usize::MAX, |c| c.in_flight);
        Some(if in_flight(second) < in_flight(first) {
            second
        } else {
            first
        })
    }

    fn consistent_hash(
        &self,
        candidates: &[Candidate<'_>],
        cx: &PickContext<'_>,
        key: u64,
    ) -> Option<usize> {
        let on_ring = {
            let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
            ring.pick(candidates, cx, key)
        };
        // Only candidates missing from the ring (a list never passed to `update`) are left.
        on_ring.or_else(|| self.weighted_random(candidates, cx))
    }

    /// A generator for one pick: the next SplitMix64 output of the shared state as its seed.
    fn rng(&self) -> fastrand::Rng {
        let state = self.rng_state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed);
        fastrand::Rng::with_seed(mix64(state.wrapping_add(GOLDEN_GAMMA)))
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ring = self.ring.read().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Balancer")
            .field("strategy", &self.strategy)
            .field("ring_members", &ring.members.len())
            .field("ring_points", &ring.points.len())
            .finish_non_exhaustive()
    }
}

/// Smooth weighted round robin state: each candidate's current weight, by index, with the ids
/// of the last update to carry the weights over when the list changes.
#[derive(Debug, Default)]
struct RoundRobin {
    ids: Vec<Box<str>>,
    current: Vec<i64>,
}

impl RoundRobin {
    fn update(&mut self, candidates: &[Candidate<'_>]) {
        let previous: HashMap<&str, i64> = self
            .ids
            .iter()
            .map(|id| &**id)
            .zip(self.current.iter().copied())
            .collect();
        let current = candidates
            .iter()
            .map(|c| previous.get(c.id).copied().unwrap_or(0))
            .collect();
        self.current = current;
        self.ids = candidates.iter().map(|c| c.id.into()).collect();
    }

    /// nginx's algorithm: every eligible candidate's current weight grows by its weight, the
    /// largest wins and pays back the sum of the weights.
    fn pick(&mut self, candidates: &[Candidate<'_>], cx: &PickContext<'_>) -> Option<usize> {
        // A list that was not passed to `update`: keep what lines up by index.
        self.current.resize(candidates.len(), 0);
        let (mut best, mut total) = (None::<usize>, 0_i64);
        for (i, c) in eligible(candidates, cx) {
            let weight = i64::from(c.weight);
            self.current[i] = self.current[i].saturating_add(weight);
            total = total.saturating_add(weight);
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] = self.current[best].saturating_sub(total);
        Some(best)
    }
}

/// A consistent-hash ring: points sorted by hash, each naming a member.
#[derive(Debug, Default)]
struct Ring {
    points: Vec<Point>,
    members: Vec<Member>,
}

#[derive(Debug, Clone, Copy)]
struct Point {
    hash: u64,
    member: usize,
}

#[derive(Debug)]
struct Member {
    id: Box<str>,
    /// Its index in the list the ring was built from.
    index: usize,
}

impl Ring {
    fn build(candidates: &[Candidate<'_>], virtual_nodes: u32) -> Ring {
        let (mut points, mut members) = (Vec::new(), Vec::new());
        let mut seen = HashSet::new();
        for (index, c) in candidates.iter().enumerate() {
            if c.weight == 0 || !seen.insert(c.id) {
                continue;
            }
            let scaled = u64::from(virtual_nodes) * u64::from(c.weight);
            let count = ((scaled + REFERENCE_WEIGHT / 2) / REFERENCE_WEIGHT)
                .clamp(1, MAX_POINTS_PER_CANDIDATE);
            let member = members.len();
            let mut state = fnv1a(c.id.as_bytes());
            for _ in 0..count {
                state = state.wrapping_add(GOLDEN_GAMMA);
                points.push(Point {
                    hash: mix64(state),
                    member,
                });
            }
            members.push(Member {
                id: c.id.into(),
                index,
            });
        }
        // Ties between ids broken by id, so that the order of the list does not matter.
        points.sort_unstable_by(|a, b| {
            (a.hash, &members[a.member].id).cmp(&(b.hash, &members[b.member].id))
        });
        Ring { points, members }
    }

    /// The first eligible member clockwise from the key's position.
    fn pick(&self, candidates: &[Candidate<'_>], cx: &PickContext<'_>, key: u64) -> Option<usize> {
        let len = self.points.len();
        let position = mix64(key);
        let start = self.points.partition_point(|p| p.hash < position);
        // Allocated only once a member turned out ineligible, to skip its other points.
        let mut tried = Vec::new();
        for step in 0..len {
            let member = self.points[(start + step) % len].member;
            if tried.get(member) == Some(&true) {
                continue;
            }
            if let Some(index) = self.resolve(member, candidates)
                && is_eligible(candidates, index, cx)
            {
                return Some(index);
            }
            if tried.is_empty() {
                tried = vec![false; self.members.len()];
            }
            tried[member] = true;
        }
        None
    }

    /// The member's index in `candidates`: where it was at the last update, or else found by id.
    fn resolve(&self, member: usize, candidates: &[Candidate<'_>]) -> Option<usize> {
        let Member { id, index } = self.members.get(member)?;
        match candidates.get(*index) {
            Some(c) if c.id == &**id => Some(*index),
            _ => candidates.iter().position(|c| c.id == &**id),
        }
    }
}

fn lock(mutex: &Mutex<RoundRobin>) -> std::sync::MutexGuard<'_, RoundRobin> {
    // Nothing panics while holding it, and its state is valid at every step anyway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_eligible(candidates: &[Candidate<'_>], index: usize, cx: &PickContext<'_>) -> bool {
    candidates
        .get(index)
        .is_some_and(|c| c.healthy && c.weight > 0 && !cx.exclude.contains(&index))
}

fn eligible<'a>(
    candidates: &[Candidate<'a>],
    cx: &PickContext<'_>,
) -> impl Iterator<Item = (usize, Candidate<'a>)> {
    candidates
        .iter()
        .enumerate()
        .filter(|&(i, _)| is_eligible(candidates, i, cx))
        .map(|(i, c)| (i, *c))
}

fn total_weight(candidates: &[Candidate<'_>], cx: &PickContext<'_>) -> u64 {
    eligible(candidates, cx).fold(0, |sum, (_, c)| sum.saturating_add(c.weight.into()))
}

/// A weighted draw among the eligible candidates that `keep` accepts, whose weights add up to
/// `total`.
fn draw(
    rng: &mut fastrand::Rng,
    candidates: &[Candidate<'_>],
    cx: &PickContext<'_>,
    total: u64,
    keep: impl Fn(usize, &Candidate<'_>) -> bool,
) -> Option<usize> {
    if total == 0 {
        return None;
    }
    let mut target = rng.u64(..total);
    for (i, c) in eligible(candidates, cx).filter(|(i, c)| keep(*i, c)) {
        let weight = u64::from(c.weight);
        if target < weight {
            return Some(i);
        }
        target -= weight;
    }
    None
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The SplitMix64 finalizer: a bijection that spreads nearby inputs over the whole range.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::collection::vec;
    use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_assert_ne, prop_oneof};
    use proptest::proptest;
    use proptest::strategy::Strategy as PropStrategy;

    use super::*;
    use crate::ServiceKey;

    const IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    const CONSISTENT: Strategy = Strategy::ConsistentHash { virtual_nodes: 160 };

    fn all_strategies(virtual_nodes: u32) -> [Strategy; 5] {
        [
            Strategy::WeightedRandom,
            Strategy::RoundRobin,
            Strategy::LeastInFlight,
            Strategy::PowerOfTwoChoices,
            Strategy::ConsistentHash { virtual_nodes },
        ]
    }

    fn candidate(id: &str, weight: u32) -> Candidate<'_> {
        Candidate {
            id,
            weight,
            healthy: true,
            in_flight: 0,
        }
    }

    fn weighted(weights: &[u32]) -> Vec<Candidate<'static>> {
        IDS.iter()
            .zip(weights)
            .map(|(id, &w)| candidate(id, w))
            .collect()
    }

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:7000")).collect()
    }

    fn as_candidates(ids: &[String]) -> Vec<Candidate<'_>> {
        ids.iter().map(|id| candidate(id, 100)).collect()
    }

    fn key(k: u64) -> PickContext<'static> {
        PickContext {
            hash_key: Some(k),
            exclude: &[],
        }
    }

    fn pick(b: &Balancer, candidates: &[Candidate<'_>]) -> usize {
        b.pick(candidates, &PickContext::default()).unwrap()
    }

    /// How often each candidate is picked in `picks` picks.
    fn counts(b: &Balancer, candidates: &[Candidate<'_>], picks: usize) -> Vec<usize> {
        let mut counts = vec![0; candidates.len()];
        for _ in 0..picks {
            counts[pick(b, candidates)] += 1;
        }
        counts
    }

    fn share(count: usize, of: usize) -> f64 {
        count as f64 / of as f64
    }

    /// The id consistent hashing routes each of the keys `0..keys` to.
    fn route<'a>(candidates: &[Candidate<'a>], keys: u64) -> Vec<&'a str> {
        let b = Balancer::with_seed(CONSISTENT, 0);
        b.update(candidates);
        (0..keys)
            .map(|k| candidates[b.pick(candidates, &key(k)).unwrap()].id)
            .collect()
    }

    fn eligible_indexes(candidates: &[Candidate<'_>], exclude: &[usize]) -> Vec<usize> {
        (0..candidates.len())
            .filter(|&i| {
                let c = &candidates[i];
                c.healthy && c.weight > 0 && !exclude.contains(&i)
            })
            .collect()
    }

    fn arb_candidates() -> impl PropStrategy<Value = Vec<Candidate<'static>>> {
        let weight = prop_oneof![Just(0_u32), 1..1000_u32, Just(u32::MAX)];
        vec((weight, any::<bool>(), 0..6_usize), 0..=IDS.len()).prop_map(|specs| {
            specs
                .into_iter()
                .zip(IDS)
                .map(|((weight, healthy, in_flight), id)| Candidate {
                    id,
                    weight,
                    healthy,
                    in_flight,
                })
                .collect()
        })
    }

    #[test]
    fn weighted_random_follows_the_weights() {
        let c = weighted(&[1, 2, 7]);
        let b = Balancer::with_seed(Strategy::WeightedRandom, 42);
        let counts = counts(&b, &c, 100_000);
        for (&count, expected) in counts.iter().zip([0.1, 0.2, 0.7]) {
            assert!(
                (share(count, 100_000) - expected).abs() < 0.015,
                "{counts:?}"
            );
        }
    }

    #[test]
    fn nothing_eligible_gives_none() {
        let unhealthy = Candidate {
            healthy: false,
            ..candidate("a", 100)
        };
        let cases: [(&[Candidate<'_>], &[usize]); 4] = [
            (&[], &[]),
            (&weighted(&[0, 0]), &[]),
            (&[unhealthy], &[]),
            (&weighted(&[1, 1]), &[1, 0]),
        ];
        for strategy in all_strategies(16) {
            let b = Balancer::with_seed(strategy, 1);
            for (c, exclude) in cases {
                b.update(c);
                let cx = PickContext {
                    hash_key: Some(7),
                    exclude,
                };
                assert_eq!(b.pick(c, &cx), None, "{strategy:?} {c:?} {exclude:?}");
            }
            // Indexes out of range are ignored.
            let c = weighted(&[1]);
            b.update(&c);
            let cx = PickContext {
                hash_key: Some(7),
                exclude: &[1, usize::MAX],
            };
            assert_eq!(b.pick(&c, &cx), Some(0), "{strategy:?}");
        }
    }

    #[test]
    fn round_robin_is_fair_with_equal_weights() {
        for n in 1..=8 {
            let c = weighted(&vec![100; n]);
            let b = Balancer::with_seed(Strategy::RoundRobin, 0);
            b.update(&c);
            let mut counts = vec![0_usize; n];
            for _ in 0..n * 1000 {
                counts[pick(&b, &c)] += 1;
                let spread = counts.iter().max().unwrap() - counts.iter().min().unwrap();
                assert!(spread <= 1, "{counts:?}");
            }
            assert_eq!(counts, vec![1000; n]);
        }
    }

    #[test]
    fn round_robin_interleaves_by_weight() {
        let c = weighted(&[5, 1, 1]);
        let b = Balancer::with_seed(Strategy::RoundRobin, 0);
        b.update(&c);
        let picked: Vec<usize> = (0..7000).map(|_| pick(&b, &c)).collect();
        // nginx's documented sequence for weights { a: 5, b: 1, c: 1 }, in every run of 7.
        for run in picked.chunks(7) {
            assert_eq!(run, [0, 0, 1, 0, 2, 0, 0]);
        }
    }

    #[test]
    fn round_robin_keeps_its_turns_across_updates() {
        // Restarting the rotation on every update would never reach the last candidates.
        let mut c = weighted(&[100; 4]);
        let b = Balancer::with_seed(Strategy::RoundRobin, 0);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for i in 0..4000 {
            if i % 3 == 0 {
                b.update(&c);
            }
            *counts.entry(c[pick(&b, &c)].id).or_default() += 1;
        }
        assert!(counts.values().all(|&n| n == 1000), "{counts:?}");
        // The same with the list in a new order at every update: turns follow the ids.
        counts.clear();
        for i in 0..4000 {
            if i % 3 == 0 {
                c.reverse();
                b.update(&c);
            }
            *counts.entry(c[pick(&b, &c)].id).or_default() += 1;
        }
        assert!(
            counts.values().all(|&n| n.abs_diff(1000) <= 1),
            "{counts:?}"
        );
    }

    #[test]
    fn least_in_flight_breaks_ties_by_weight() {
        let mut c = weighted(&[1, 3, 100]);
        c[2].in_flight = 1;
        let b = Balancer::with_seed(Strategy::LeastInFlight, 5);
        let counts = counts(&b, &c, 40_000);
        assert_eq!(counts[2], 0);
        assert!((share(counts[0], 40_000) - 0.25).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn power_of_two_choices_takes_the_better_of_two_distinct_samples() {
        // The pairs {0, 1}, {0, 2}, {1, 2} are equally likely: 0 wins two, 1 wins one, 2 none.
        let mut c = weighted(&[100, 100, 100]);
        (c[0].in_flight, c[1].in_flight, c[2].in_flight) = (0, 5, 10);
        let b = Balancer::with_seed(Strategy::PowerOfTwoChoices, 9);
        let counts = counts(&b, &c, 30_000);
        assert_eq!(counts[2], 0);
        assert!(
            (share(counts[0], 30_000) - 2.0 / 3.0).abs() < 0.02,
            "{counts:?}"
        );
    }

    #[test]
    fn consistent_hash_routes_a_key_to_the_same_candidate() {
        let ids = nodes(5);
        let c = as_candidates(&ids);
        let routed = route(&c, 1000);
        // Again, from another balancer with another seed, given the list in reverse order.
        let mut reversed = c.clone();
        reversed.reverse();
        let b = Balancer::with_seed(CONSISTENT, 99);
        b.update(&reversed);
        for (k, &id) in (0..).zip(&routed) {
            assert_eq!(reversed[b.pick(&reversed, &key(k)).unwrap()].id, id);
            assert_eq!(reversed[b.pick(&reversed, &key(k)).unwrap()].id, id);
        }
        for id in &ids {
            assert!(routed.contains(&id.as_str()), "no key on {id}");
        }
    }

    #[test]
    fn consistent_hash_adding_a_node_moves_about_one_nth_of_the_keys() {
        let ids = nodes(6);
        let before = route(&as_candidates(&ids[..5]), 10_000);
        let after = route(&as_candidates(&ids), 10_000);
        let moved: Vec<&str> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|(_, &a)| a)
            .collect();
        assert!(moved.iter().all(|&to| to == ids[5]));
        let moved = share(moved.len(), 10_000);
        assert!((0.5 / 6.0..=1.6 / 6.0).contains(&moved), "moved {moved}");
    }

    #[test]
    fn consistent_hash_removing_a_node_moves_only_its_keys() {
        let ids = nodes(6);
        let all = as_candidates(&ids);
        let before = route(&all, 10_000);
        let rest: Vec<Candidate<'_>> = all.iter().filter(|c| c.id != ids[2]).copied().collect();
        let after = route(&rest, 10_000);
        let mut on_removed = 0;
        for (&b, &a) in before.iter().zip(&after) {
            if b == ids[2] {
                on_removed += 1;
                assert_ne!(a, b);
            } else {
                assert_eq!(a, b);
            }
        }
        assert!(on_removed > 0);
    }

    #[test]
    fn consistent_hash_fails_over_to_the_next_node_on_the_ring() {
        // Excluding the chosen node, or its turning unhealthy, is the same as removing it.
        let ids = nodes(5);
        let c = as_candidates(&ids);
        let without: Vec<Vec<&str>> = (0..c.len())
            .map(|i| {
                let rest: Vec<Candidate<'_>> =
                    c.iter().filter(|x| x.id != c[i].id).copied().collect();
                route(&rest, 1000)
            })
            .collect();
        let b = Balancer::with_seed(CONSISTENT, 3);
        b.update(&c);
        for k in 0..1000 {
            let first = b.pick(&c, &key(k)).unwrap();
            let tried = [first];
            let cx = PickContext {
                hash_key: Some(k),
                exclude: &tried,
            };
            let next = b.pick(&c, &cx).unwrap();
            assert_ne!(next, first);
            assert_eq!(b.pick(&c, &cx), Some(next));
            let mut unhealthy = c.clone();
            unhealthy[first].healthy = false;
            assert_eq!(b.pick(&unhealthy, &key(k)), Some(next));
            assert_eq!(c[next].id, without[first][k as usize]);
        }
    }

    #[test]
    fn consistent_hash_gives_heavier_nodes_more_keys() {
        let c = [candidate("x", 100), candidate("y", 300)];
        let routed = route(&c, 10_000);
        let on_y = routed.iter().filter(|&&id| id == "y").count();
        assert!((share(on_y, 10_000) - 0.75).abs() < 0.06, "{on_y}");
    }

    #[test]
    fn consistent_hash_without_a_key_is_weighted_random() {
        let c = weighted(&[1, 3]);
        let b = Balancer::with_seed(CONSISTENT, 4);
        b.update(&c);
        let counts = counts(&b, &c, 20_000);
        assert!((share(counts[1], 20_000) - 0.75).abs() < 0.02, "{counts:?}");
    }

    #[test]
    fn consistent_hash_finds_members_by_id_in_a_list_it_was_not_given() {
        let ids = nodes(4);
        let c = as_candidates(&ids);
        let routed = route(&c, 1000);
        let b = Balancer::with_seed(CONSISTENT, 0);
        b.update(&c);
        let stale = [c[3], c[1], candidate("new", 100)];
        for (k, &id) in (0..).zip(&routed) {
            let picked = stale[b.pick(&stale, &key(k)).unwrap()].id;
            if id == ids[3] || id == ids[1] {
                assert_eq!(picked, id);
            } else {
                assert_ne!(picked, "new", "reached through the ring's other members");
            }
        }
    }

    #[test]
    fn consistent_hash_ring_is_the_same_everywhere() {
        // Pinned: a change to the hashes or the layout of the ring would move every key of
        // every client that is not upgraded at the same time.
        // Values from an independent implementation (FNV-1a 64, SplitMix64 finalizer, ring).
        assert_eq!(PickContext::stable_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(
            PickContext::stable_hash(b"demo.Greeter/42"),
            0x27d2_c293_6632_b0fc
        );
        let (a, b, c) = ("10.0.0.0:7000", "10.0.0.1:7000", "10.0.0.2:7000");
        assert_eq!(
            route(&as_candidates(&nodes(3)), 8),
            [b, b, b, a, b, c, c, c]
        );
    }

    #[test]
    fn candidate_from_instance() {
        let instance = Instance::new(ServiceKey::new("demo.Greeter"), "tcp://10.0.0.7:7000")
            .with_weight(7)
            .with_health(false);
        let c = Candidate::from_instance(&instance, 3);
        assert_eq!(
            (c.id, c.weight, c.healthy, c.in_flight),
            ("tcp://10.0.0.7:7000", 7, false, 3)
        );
    }

    #[test]
    fn balancer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Balancer>();
        assert_eq!(Balancer::new(CONSISTENT).strategy(), CONSISTENT);
    }

    proptest! {
        #[test]
        fn every_pick_is_eligible(
            c in arb_candidates(),
            mut stale in arb_candidates(),
            reverse_stale in any::<bool>(),
            exclude in vec(0..10_usize, 0..4),
            hash_key in any::<Option<u64>>(),
            seed in any::<u64>(),
            virtual_nodes in prop_oneof![Just(0_u32), 1..200_u32, Just(u32::MAX)],
        ) {
            if reverse_stale {
                stale.reverse();
            }
            let ok = eligible_indexes(&c, &exclude);
            let cx = PickContext { hash_key, exclude: &exclude };
            for strategy in all_strategies(virtual_nodes) {
                // Updated with this list, and with another one.
                for update in [&c, &stale] {
                    let b = Balancer::with_seed(strategy, seed);
                    b.update(update);
                    for _ in 0..3 {
                        match b.pick(&c, &cx) {
                            Some(i) => prop_assert!(ok.contains(&i), "{strategy:?} picked {i}"),
                            None => prop_assert!(ok.is_empty(), "{strategy:?} picked none"),
                        }
                    }
                }
            }
        }

        #[test]
        fn least_in_flight_picks_a_minimum(
            c in arb_candidates(),
            exclude in vec(0..10_usize, 0..4),
            seed in any::<u64>(),
        ) {
            let least = eligible_indexes(&c, &exclude).into_iter().map(|i| c[i].in_flight).min();
            let b = Balancer::with_seed(Strategy::LeastInFlight, seed);
            let cx = PickContext { hash_key: None, exclude: &exclude };
            prop_assert_eq!(b.pick(&c, &cx).map(|i| c[i].in_flight), least);
        }

        #[test]
        fn power_of_two_choices_never_picks_the_unique_worst(
            c in arb_candidates(),
            exclude in vec(0..10_usize, 0..4),
            seed in any::<u64>(),
        ) {
            let ok = eligible_indexes(&c, &exclude);
            let worst = ok.iter().map(|&i| c[i].in_flight).max();
            let at_worst: Vec<usize> =
                ok.iter().copied().filter(|&i| Some(c[i].in_flight) == worst).collect();
            if ok.len() >= 2 && at_worst.len() == 1 {
                let b = Balancer::with_seed(Strategy::PowerOfTwoChoices, seed);
                let cx = PickContext { hash_key: None, exclude: &exclude };
                for _ in 0..10 {
                    prop_assert_ne!(b.pick(&c, &cx), Some(at_worst[0]));
                }
            }
        }
    }
}
