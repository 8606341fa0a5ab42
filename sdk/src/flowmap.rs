//! [`FlowMap`]: a fixed-capacity map from flow keys to per-flow state, with idle expiry
//! and a deterministic rule for when it is full. What a conntrack, a NAT or a load
//! balancer keeps per flow, without ever growing.
//!
//! - **Bounded**: all memory is allocated by [`FlowMap::new`]; nothing allocates after
//!   it (the entry array, an open-addressing index of at least twice the capacity, and
//!   the recency list are fixed).
//! - **O(1) expected** per lookup, insert and remove (linear probing at load ≤ ½ with
//!   backward-shift deletion: no tombstones, so lookups do not slow down over time).
//! - **Idle expiry, exact and lazy**: every entry has a deadline, `now + idle_ns` of its
//!   last [`FlowMap::touch`] (or insert). An entry whose deadline is at or before `now`
//!   is gone: [`FlowMap::find`] never returns it (it reclaims it on the spot, counted
//!   `expired`). Reclaiming the others is bounded work: [`FlowMap::sweep`] and a full
//!   insert do it from the least recently seen end, so [`FlowMap::len`] may count
//!   expired entries nobody looked up yet.
//! - **When full** (a new key and `len() == capacity()`), deterministically:
//!   1. if the least recently seen entry has expired, it is reclaimed (`expired`);
//!   2. else with [`WhenFull::EvictLeastRecent`], the least recently seen entry that the
//!      caller's `evictable` allows among the [`EVICT_SCAN`] least recently seen is
//!      evicted (`evicted`) — conntrack's `early_drop`, which spares assured entries;
//!   3. else the insert is refused ([`Full`], counted `refused`) and the map is unchanged.
//!
//!   With [`WhenFull::Refuse`] step 2 is skipped.
//!
//! **Reclaiming an idle table with the timer.** Expiry needs no timer to be exact, but
//! an idle table's entries are reclaimed (and a plugin's `entries` gauge falls) only when
//! something calls [`FlowMap::sweep`]. The pattern the built-ins use: after each batch,
//! `sweep(now, a few)`, and while the map is not empty `batch.wake_at(now + period)`;
//! in `tick`, a larger sweep and the same re-arm. By the SDK's timer rules (docs/ABI.md,
//! "Timers"; `sdk/tests/timers.rs`) a timer stays armed until it fires and the earliest
//! request wins, so arming on every batch never postpones the tick, and a tick's
//! `now` is at or after the time asked for (exactly it on a virtual clock): an entry
//! idle for its timeout is reclaimed within one period of its deadline.
//!
//! Recency is the order of inserts and touches, not of their timestamps, so the rules
//! depend only on the sequence of calls: the same calls give the same map on every run
//! and every build. The hash function is fixed (not seeded per process) for the same
//! reason; it decides only where entries sit, never which one is evicted.

use core::hash::{Hash, Hasher};

/// How many of the least recently seen entries a full insert examines for one to evict.
pub const EVICT_SCAN: usize = 8;

/// Largest capacity: the index holds `u32` positions, and 2^24 entries is far past any
/// plugin's memory cap.
pub const MAX_CAPACITY: usize = 1 << 24;

const NIL: u32 = u32::MAX;

/// What an insert into a full map does (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Evict the least recently seen entry the caller allows (conntrack's early drop).
    EvictLeastRecent,
    /// Refuse the new key (conntrack with no entry to drop: "table full, dropping packet").
    Refuse,
}

/// An insert found the map full and nothing it may evict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl core::fmt::Display for Full {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("flow map full")
    }
}

/// A handle to a live entry, from [`FlowMap::find`] or an insert. Valid until the next
/// call that inserts or removes (an insert, `remove`, `sweep`, a `find` that expires).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

/// What happened to entries over the map's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    /// New keys inserted.
    pub inserted: u64,
    /// Entries reclaimed after their idle deadline passed.
    pub expired: u64,
    /// Live entries evicted to make room.
    pub evicted: u64,
    /// New keys refused because the map was full.
    pub refused: u64,
    /// Entries removed by [`FlowMap::remove`] or [`FlowMap::clear`].
    pub removed: u64,
}

struct Node<K, V> {
    key: K,
    value: V,
    hash: u64,
    /// Last touch, and the deadline: gone when `now >= expires_ns`.
    last_ns: u64,
    expires_ns: u64,
    /// Recency list: `prev` toward the most recent, `next` toward the least.
    prev: u32,
    next: u32,
}

/// A fixed-capacity flow table (see the module docs).
pub struct FlowMap<K, V> {
    nodes: Vec<Node<K, V>>,
    /// Open-addressing index: positions in `nodes`, `NIL` = empty.
    index: Vec<u32>,
    mask: usize,
    capacity: usize,
    when_full: WhenFull,
    /// Most and least recently seen.
    head: u32,
    tail: u32,
    stats: MapStats,
}

/// A fixed 64-bit hash (FxHash's multiply-rotate with a final avalanche), the same on
/// every run and target.
struct FlowHasher(u64);

impl Hasher for FlowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.0 =
                (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn finish(&self) -> u64 {
        // murmur3's fmix64: the index uses the low bits.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

fn hash_of<K: Hash>(k: &K) -> u64 {
    let mut h = FlowHasher(0);
    k.hash(&mut h);
    h.finish()
}

impl<K: Hash + Eq, V> FlowMap<K, V> {
    /// A map for at most `capacity` entries (1..=[`MAX_CAPACITY`]); the error names the
    /// bound. All its memory is allocated here.
    pub fn new(capacity: usize, when_full: WhenFull) -> Result<Self, String> {
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(format!(
                "flow map capacity must be within 1..={MAX_CAPACITY}, got {capacity}"
            ));
        }
        let slots = (2 * capacity).next_power_of_two().max(8);
        Ok(FlowMap {
            nodes: Vec::with_capacity(capacity),
            index: vec![NIL; slots],
            mask: slots - 1,
            capacity,
            when_full,
            head: NIL,
            tail: NIL,
            stats: MapStats::default(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held, including expired ones not yet reclaimed (see [`FlowMap::sweep`]).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn stats(&self) -> MapStats {
        self.stats
    }

    /// Index position of `key`, if present (expired or not).
    fn position(&self, key: &K, hash: u64) -> Option<usize> {
        let mut p = hash as usize & self.mask;
        loop {
            let i = self.index[p];
            if i == NIL {
                return None;
            }
            let n = &self.nodes[i as usize];
            if n.hash == hash && n.key == *key {
                return Some(p);
            }
            p = (p + 1) & self.mask;
        }
    }

    /// The live entry for `key`. An entry past its deadline is reclaimed here (counted
    /// `expired`) and `None` returned. Looking up does not refresh the entry: call
    /// [`FlowMap::touch`] when the packet counts as activity.
    pub fn find(&mut self, key: &K, now_ns: u64) -> Option<Slot> {
        let hash = hash_of(key);
        let p = self.position(key, hash)?;
        let i = self.index[p];
        if now_ns >= self.nodes[i as usize].expires_ns {
            self.stats.expired += 1;
            self.remove_at(p);
            return None;
        }
        Some(Slot(i))
    }

    /// Whether `key` has a live entry (no side effects: an expired one stays until
    /// reclaimed).
    pub fn contains(&self, key: &K, now_ns: u64) -> bool {
        self.position(key, hash_of(key))
            .is_some_and(|p| now_ns < self.nodes[self.index[p] as usize].expires_ns)
    }

    pub fn key(&self, s: Slot) -> &K {
        &self.nodes[s.0 as usize].key
    }

    pub fn value(&self, s: Slot) -> &V {
        &self.nodes[s.0 as usize].value
    }

    pub fn value_mut(&mut self, s: Slot) -> &mut V {
        &mut self.nodes[s.0 as usize].value
    }

    /// When the entry was last touched (or inserted).
    pub fn last_seen_ns(&self, s: Slot) -> u64 {
        self.nodes[s.0 as usize].last_ns
    }

    /// When the entry expires unless touched again.
    pub fn expires_ns(&self, s: Slot) -> u64 {
        self.nodes[s.0 as usize].expires_ns
    }

    /// Activity on the entry: it becomes the most recently seen, and expires at
    /// `now_ns + idle_ns` (saturating) unless touched again.
    pub fn touch(&mut self, s: Slot, now_ns: u64, idle_ns: u64) {
        let i = s.0;
        self.unlink(i);
        self.push_front(i);
        let n = &mut self.nodes[i as usize];
        n.last_ns = now_ns;
        n.expires_ns = now_ns.saturating_add(idle_ns);
    }

    /// Insert `key` → `value`, expiring at `now_ns + idle_ns`, as the most recently seen.
    /// A live entry for `key` gets the new value. When the map is full the rule of the
    /// module docs applies, with every entry evictable.
    pub fn insert(&mut self, key: K, value: V, now_ns: u64, idle_ns: u64) -> Result<Slot, Full> {
        self.insert_evicting(key, value, now_ns, idle_ns, |_, _| true)
    }

    /// [`FlowMap::insert`], where a full map evicts only an entry `evictable` allows
    /// (e.g. conntrack spares assured flows).
    pub fn insert_evicting(
        &mut self,
        key: K,
        value: V,
        now_ns: u64,
        idle_ns: u64,
        mut evictable: impl FnMut(&K, &V) -> bool,
    ) -> Result<Slot, Full> {
        let hash = hash_of(&key);
        if let Some(p) = self.position(&key, hash) {
            let i = self.index[p];
            if now_ns < self.nodes[i as usize].expires_ns {
                self.nodes[i as usize].value = value;
                self.touch(Slot(i), now_ns, idle_ns);
                return Ok(Slot(i));
            }
            self.stats.expired += 1;
            self.remove_at(p);
        }
        if self.nodes.len() >= self.capacity {
            self.make_room(now_ns, &mut evictable)?;
        }
        let i = self.nodes.len() as u32;
        self.nodes.push(Node {
            key,
            value,
            hash,
            last_ns: now_ns,
            expires_ns: now_ns.saturating_add(idle_ns),
            prev: NIL,
            next: NIL,
        });
        self.push_front(i);
        let mut p = hash as usize & self.mask;
        while self.index[p] != NIL {
            p = (p + 1) & self.mask;
        }
        self.index[p] = i;
        self.stats.inserted += 1;
        Ok(Slot(i))
    }

    fn make_room(
        &mut self,
        now_ns: u64,
        evictable: &mut impl FnMut(&K, &V) -> bool,
    ) -> Result<(), Full> {
        let t = self.tail;
        if now_ns >= self.nodes[t as usize].expires_ns {
            self.stats.expired += 1;
            self.remove_node(t);
            return Ok(());
        }
        if self.when_full == WhenFull::EvictLeastRecent {
            let mut i = t;
            for _ in 0..EVICT_SCAN {
                if i == NIL {
                    break;
                }
                let n = &self.nodes[i as usize];
                if evictable(&n.key, &n.value) {
                    self.stats.evicted += 1;
                    self.remove_node(i);
                    return Ok(());
                }
                i = n.prev;
            }
        }
        self.stats.refused += 1;
        Err(Full)
    }

    /// Remove `key`'s entry (live or expired), returning its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let p = self.position(key, hash_of(key))?;
        self.stats.removed += 1;
        Some(self.remove_at(p))
    }

    /// Remove every entry (conntrack -F). Counted `removed`.
    pub fn clear(&mut self) {
        self.stats.removed += self.nodes.len() as u64;
        self.nodes.clear();
        self.index.iter_mut().for_each(|i| *i = NIL);
        self.head = NIL;
        self.tail = NIL;
    }

    /// Reclaim expired entries among the `max` least recently seen (bounded work, e.g. a
    /// few per batch); returns how many were reclaimed. `sweep(now, usize::MAX)` reclaims
    /// every expired entry.
    pub fn sweep(&mut self, now_ns: u64, max: usize) -> usize {
        let (mut i, mut n) = (self.tail, 0);
        for _ in 0..max {
            if i == NIL {
                break;
            }
            let prev = self.nodes[i as usize].prev;
            if now_ns >= self.nodes[i as usize].expires_ns {
                // Removing moves the last node into `i`; `prev` may be that node.
                let last = self.nodes.len() as u32 - 1;
                self.stats.expired += 1;
                self.remove_node(i);
                n += 1;
                i = if prev == last { i } else { prev };
            } else {
                i = prev;
            }
        }
        n
    }

    /// Entries from the most to the least recently seen (expired ones included): key,
    /// value, last seen, deadline.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V, u64, u64)> + '_ {
        let mut i = self.head;
        core::iter::from_fn(move || {
            let n = self.nodes.get(i as usize)?;
            i = n.next;
            Some((&n.key, &n.value, n.last_ns, n.expires_ns))
        })
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let n = &mut self.nodes[i as usize];
            n.prev = NIL;
            n.next = old;
        }
        if old != NIL {
            self.nodes[old as usize].prev = i;
        } else {
            self.tail = i;
        }
        self.head = i;
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = {
            let x = &self.nodes[i as usize];
            (x.prev, x.next)
        };
        if p != NIL {
            self.nodes[p as usize].next = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.nodes[n as usize].prev = p;
        } else {
            self.tail = p;
        }
    }

    /// Remove node `i`, wherever its index entry is.
    fn remove_node(&mut self, i: u32) {
        let hash = self.nodes[i as usize].hash;
        let mut p = hash as usize & self.mask;
        while self.index[p] != i {
            p = (p + 1) & self.mask;
        }
        self.remove_at(p);
    }

    /// Remove the entry at index position `p`: unlink it, close the gap in the index
    /// (backward shift), and move the last node into its place.
    fn remove_at(&mut self, mut p: usize) -> V {
        let i = self.index[p];
        self.unlink(i);
        // Backward-shift deletion keeps every probe sequence unbroken.
        let mut q = (p + 1) & self.mask;
        while self.index[q] != NIL {
            let home = self.nodes[self.index[q] as usize].hash as usize & self.mask;
            // The entry at q may fill p unless its home lies cyclically in (p, q].
            if (q.wrapping_sub(home) & self.mask) >= (q.wrapping_sub(p) & self.mask) {
                self.index[p] = self.index[q];
                p = q;
            }
            q = (q + 1) & self.mask;
        }
        self.index[p] = NIL;
        let last = self.nodes.len() as u32 - 1;
        if i != last {
            // The last node moves into i: fix its index entry and its neighbours.
            let hash = self.nodes[last as usize].hash;
            let mut r = hash as usize & self.mask;
            while self.index[r] != last {
                r = (r + 1) & self.mask;
            }
            self.index[r] = i;
            let (pv, nx) = {
                let n = &self.nodes[last as usize];
                (n.prev, n.next)
            };
            if pv != NIL {
                self.nodes[pv as usize].next = i;
            } else {
                self.head = i;
            }
            if nx != NIL {
                self.nodes[nx as usize].prev = i;
            } else {
                self.tail = i;
            }
        }
        self.nodes.swap_remove(i as usize).value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_touch_expire() {
        let mut m = FlowMap::<u32, &str>::new(4, WhenFull::EvictLeastRecent).unwrap();
        let s = m.insert(1, "a", 0, 100).unwrap();
        assert_eq!(*m.value(s), "a");
        assert!(m.find(&1, 99).is_some());
        // Deadline 100: gone at 100, reclaimed by the lookup.
        assert!(m.find(&1, 100).is_none());
        assert_eq!((m.len(), m.stats().expired), (0, 1));
        let s = m.insert(2, "b", 0, 100).unwrap();
        m.touch(s, 90, 100);
        assert!(m.find(&2, 189).is_some());
        let s = m.find(&2, 0).unwrap();
        assert_eq!(m.expires_ns(s), 190);
        assert!(!m.contains(&2, 190));
    }

    #[test]
    fn full_map_reclaims_expired_then_evicts_least_recent_or_refuses() {
        let mut m = FlowMap::<u32, bool>::new(3, WhenFull::EvictLeastRecent).unwrap();
        for k in 0..3 {
            m.insert(k, k == 0, k as u64, 1000).unwrap();
        }
        // Touch 0: recency order is now 0, 2, 1 (most → least).
        let s = m.find(&0, 10).unwrap();
        m.touch(s, 10, 1000);
        m.insert(3, false, 20, 1000).unwrap();
        assert!(m.find(&1, 20).is_none(), "1 was the least recently seen");
        assert_eq!(m.stats().evicted, 1);
        // Only entries whose value is false may go: 2 is next, then 3; 0 never.
        m.insert_evicting(4, false, 30, 1000, |_, v| !*v).unwrap();
        assert!(!m.contains(&2, 30));
        m.insert_evicting(5, false, 30, 1000, |_, v| !*v).unwrap();
        assert!(!m.contains(&3, 30) && m.contains(&0, 30));
        assert_eq!(
            m.insert_evicting(6, false, 30, 1000, |_, _| false),
            Err(Full)
        );
        assert_eq!(m.stats().refused, 1);
        // An expired least-recent entry is reclaimed, whatever `evictable` says.
        let s = m.find(&4, 30).unwrap();
        m.touch(s, 30, 5000);
        let s = m.find(&5, 30).unwrap();
        m.touch(s, 30, 5000);
        assert_eq!(
            m.insert_evicting(7, false, 1010, 10, |_, _| false)
                .map(|_| ()),
            Ok(())
        );
        assert!(!m.contains(&0, 1010));
        let mut r = FlowMap::<u32, ()>::new(1, WhenFull::Refuse).unwrap();
        r.insert(1, (), 0, 10).unwrap();
        assert_eq!(r.insert(2, (), 5, 10), Err(Full));
        assert!(r.insert(2, (), 10, 10).is_ok(), "1 expired at 10");
    }

    #[test]
    fn sweep_is_bounded_and_clear_empties() {
        let mut m = FlowMap::<u32, ()>::new(100, WhenFull::Refuse).unwrap();
        for k in 0..100 {
            m.insert(k, (), 0, if k % 2 == 0 { 10 } else { 1000 })
                .unwrap();
        }
        assert_eq!(m.sweep(10, 10), 5);
        assert_eq!(m.sweep(10, usize::MAX), 45);
        assert_eq!(m.len(), 50);
        assert!(m.iter().all(|(k, ..)| k % 2 == 1));
        m.clear();
        assert!(m.is_empty() && m.find(&1, 0).is_none());
        assert!(FlowMap::<u32, ()>::new(0, WhenFull::Refuse)
            .err()
            .unwrap()
            .contains("capacity"));
    }
}
