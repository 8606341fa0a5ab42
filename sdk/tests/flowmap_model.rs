//! Property test: [`FlowMap`] against a plain model of its documented rules (a vector
//! scanned in full, recency as a sequence number), over many seeded random sequences of
//! lookups, touches, inserts into full maps, removals, sweeps and clears, with keys
//! drawn from a small space so they collide, expire and get evicted often. After every
//! operation the two must agree on the result, the entries in recency order (keys,
//! values, deadlines) and every statistic.

use synthnet_sdk::flowmap::{FlowMap, Full, MapStats, WhenFull, EVICT_SCAN};
use synthnet_sdk::Rng;

#[derive(Clone, Debug, PartialEq)]
struct E {
    key: u16,
    value: u32,
    seq: u64,
    last: u64,
    expires: u64,
}

struct Model {
    e: Vec<E>,
    cap: usize,
    when_full: WhenFull,
    seq: u64,
    stats: MapStats,
}

impl Model {
    fn by_recency(&self) -> Vec<E> {
        let mut v = self.e.clone();
        v.sort_by_key(|e| std::cmp::Reverse(e.seq));
        v
    }
    fn pos(&self, k: u16) -> Option<usize> {
        self.e.iter().position(|e| e.key == k)
    }
    fn find(&mut self, k: u16, now: u64) -> Option<u32> {
        let p = self.pos(k)?;
        if now >= self.e[p].expires {
            self.e.remove(p);
            self.stats.expired += 1;
            return None;
        }
        Some(self.e[p].value)
    }
    fn touch(&mut self, k: u16, now: u64, idle: u64) {
        self.seq += 1;
        let p = self.pos(k).unwrap();
        let e = &mut self.e[p];
        e.seq = self.seq;
        e.last = now;
        e.expires = now.saturating_add(idle);
    }
    fn insert(
        &mut self,
        k: u16,
        v: u32,
        now: u64,
        idle: u64,
        ev: impl Fn(u32) -> bool,
    ) -> Result<(), Full> {
        if let Some(p) = self.pos(k) {
            if now < self.e[p].expires {
                self.e[p].value = v;
                self.touch(k, now, idle);
                return Ok(());
            }
            self.e.remove(p);
            self.stats.expired += 1;
        }
        if self.e.len() >= self.cap {
            let lru = self.by_recency().pop().unwrap();
            if now >= lru.expires {
                let p = self.pos(lru.key).unwrap();
                self.e.remove(p);
                self.stats.expired += 1;
            } else {
                let mut victim = None;
                if self.when_full == WhenFull::EvictLeastRecent {
                    let mut old = self.by_recency();
                    old.reverse();
                    victim = old.iter().take(EVICT_SCAN).find(|e| ev(e.value)).cloned();
                }
                match victim {
                    Some(x) => {
                        let p = self.pos(x.key).unwrap();
                        self.e.remove(p);
                        self.stats.evicted += 1;
                    }
                    None => {
                        self.stats.refused += 1;
                        return Err(Full);
                    }
                }
            }
        }
        self.seq += 1;
        self.e.push(E {
            key: k,
            value: v,
            seq: self.seq,
            last: now,
            expires: now.saturating_add(idle),
        });
        self.stats.inserted += 1;
        Ok(())
    }
    fn sweep(&mut self, now: u64, max: usize) -> usize {
        let mut old = self.by_recency();
        old.reverse();
        let gone: Vec<u16> = old
            .iter()
            .take(max)
            .filter(|e| now >= e.expires)
            .map(|e| e.key)
            .collect();
        self.e.retain(|e| !gone.contains(&e.key));
        self.stats.expired += gone.len() as u64;
        gone.len()
    }
}

fn entries(m: &FlowMap<u16, u32>) -> Vec<(u16, u32, u64, u64)> {
    m.iter().map(|(k, v, l, e)| (*k, *v, l, e)).collect()
}

fn model_entries(m: &Model) -> Vec<(u16, u32, u64, u64)> {
    m.by_recency()
        .iter()
        .map(|e| (e.key, e.value, e.last, e.expires))
        .collect()
}

fn run(seed: u64, cap: usize, keys: u32, when_full: WhenFull, ops: usize) {
    let mut rng = Rng::new(seed);
    let mut map = FlowMap::<u16, u32>::new(cap, when_full).unwrap();
    let mut model = Model {
        e: Vec::new(),
        cap,
        when_full,
        seq: 0,
        stats: MapStats::default(),
    };
    let mut now = 0u64;
    for step in 0..ops {
        now += rng.up_to(20);
        let k = rng.below(keys) as u16;
        let idle = 1 + rng.up_to(200);
        let what = rng.below(100);
        let ctx = format!("seed {seed} cap {cap} step {step} op {what} key {k} now {now}");
        match what {
            0..=29 => {
                let got = map.find(&k, now).map(|s| *map.value(s));
                assert_eq!(got, model.find(k, now), "find: {ctx}");
            }
            30..=44 => {
                if let Some(s) = map.find(&k, now) {
                    map.touch(s, now, idle);
                    *map.value_mut(s) += 1;
                    model.find(k, now).unwrap();
                    model.touch(k, now, idle);
                    let p = model.pos(k).unwrap();
                    model.e[p].value += 1;
                } else {
                    assert_eq!(model.find(k, now), None, "touch: {ctx}");
                }
            }
            45..=69 => {
                let v = rng.below(1000);
                let got = map.insert(k, v, now, idle).map(|_| ());
                assert_eq!(
                    got,
                    model.insert(k, v, now, idle, |_| true),
                    "insert: {ctx}"
                );
            }
            70..=84 => {
                let v = rng.below(1000);
                let ev = |x: u32| !x.is_multiple_of(3);
                let got = map
                    .insert_evicting(k, v, now, idle, |_, x| ev(*x))
                    .map(|_| ());
                assert_eq!(got, model.insert(k, v, now, idle, ev), "evicting: {ctx}");
            }
            85..=91 => {
                let got = map.remove(&k);
                let want = model.pos(k).map(|p| model.e.remove(p).value);
                if want.is_some() {
                    model.stats.removed += 1;
                }
                assert_eq!(got, want, "remove: {ctx}");
            }
            92..=98 => {
                let max = rng.below(cap as u32 + 2) as usize;
                assert_eq!(map.sweep(now, max), model.sweep(now, max), "sweep: {ctx}");
            }
            _ => {
                map.clear();
                model.stats.removed += model.e.len() as u64;
                model.e.clear();
            }
        }
        assert!(map.len() <= cap, "{ctx}");
        assert_eq!(map.len(), model.e.len(), "len: {ctx}");
        assert_eq!(entries(&map), model_entries(&model), "entries: {ctx}");
        assert_eq!(map.stats(), model.stats, "stats: {ctx}");
        for key in 0..keys as u16 {
            let live = model.pos(key).is_some_and(|p| now < model.e[p].expires);
            assert_eq!(map.contains(&key, now), live, "contains {key}: {ctx}");
        }
    }
}

#[test]
fn flowmap_agrees_with_its_model() {
    for seed in 0..300u64 {
        let cap = 1 + (seed as usize * 7) % 40;
        let keys = (cap as u32 * 2).max(3);
        let when_full = if seed.is_multiple_of(3) {
            WhenFull::Refuse
        } else {
            WhenFull::EvictLeastRecent
        };
        run(seed, cap, keys, when_full, 600);
    }
}

#[test]
fn a_large_map_stays_bounded_and_consistent() {
    run(7, 4096, 20_000, WhenFull::EvictLeastRecent, 20_000);
}
