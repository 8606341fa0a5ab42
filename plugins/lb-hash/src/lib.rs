//! `lb-hash`: a hash load balancer (ECMP router, L4 balancer) in front of the real
//! server, so that what a membership change does to established connections can be
//! reproduced on demand (the seed report: ~50% of connections broken whenever an ECMP
//! target is added or removed, and IPv6 ssh sessions broken by a DSCP change).
//!
//! The balancer has `targets`, an ordered list of names. Every TCP/UDP packet (matching
//! `dst_ports`, if given) is hashed and mapped to a target by `algorithm`. A flow (its
//! 5-tuple, one direction: this stage belongs in the client → server chain) gets its
//! **home** target from its first packet (a TCP SYN starts a flow afresh). The real
//! server behind synthnet plays every target: a packet reaches it while the flow maps to
//! its home. When a membership change (the `add`, `remove` and `set` commands) or a
//! change of the hashed header fields (`hash_dscp`, the flow label under
//! `hash_policy: "l3"`) maps a flow elsewhere, the packet is **misrouted**: the target it
//! lands on has no such connection, so with `on_misroute: "rst"` the plugin answers a
//! TCP segment with the reset that target's stack would send (RFC 9293 reset
//! generation, on the reverse port, toward the sender) and drops it; with `"blackhole"`
//! (and always for UDP) it only drops it. A flow that maps home again passes again.
//! With `rehash_moves`, a flow whose hashed DSCP or flow label changed is misrouted even
//! when the new hash happens to land home (a one-session repro that never misses).
//!
//! Algorithms, over a 64-bit seeded hash `h` of the flow's fields:
//! - `hash_threshold`: Linux multipath routes (RFC 2992). The 31-bit hash `h >> 33` is
//!   compared with per-target upper bounds `round((i+1)·2^31/N) − 1`, as
//!   `fib_select_multipath` does. Adding a target, or removing the first or the last,
//!   moves ≈ 50% of the flows whatever N; removing target k (0-based) of N moves
//!   ½ − k(N−1−k)/(N(N−1)): down to ≈ 25% for the middle one (N = 10: 41% for the
//!   second, 28% for the fifth).
//! - `modulo`: `(h >> 32) mod N`. N → N±1 moves ≈ N/(N+1) of the flows.
//! - `consistent`: a consistent-hash ring (Karger et al.) with `vnodes` points per
//!   target, each at a hash of (seed, name, index); a flow goes to the first point at or
//!   after `h >> 32`. Removing a target moves exactly its own flows (≈ 1/N); adding
//!   one moves ≈ 1/(N+1) of the flows, all onto it.
//! - `resilient`: after Linux resilient nexthop groups: a table of `buckets` buckets
//!   (`h mod buckets`), each owned by a target, target i wanting
//!   `round((i+1)·B/N) − round(i·B/N)` of them. A change keeps every bucket it can: the
//!   buckets of a removed target go, in bucket order, to the first targets below their
//!   share (so removing a target breaks exactly its flows, ≈ 1/N); a target above its
//!   share gives up a bucket only when that bucket has been idle for `idle_timer_ms`
//!   (Linux's `idle_timer`, default 120 s), so adding a target breaks no active flow.
//!   The table is rebalanced again at later batches as buckets become idle
//!   (`unbalanced_timer` is 0: never forced). Which under-share target gets a bucket
//!   (the first in member order) is our choice; the kernel takes one from its list of
//!   underweight next hops, so the shares match Linux, the exact buckets may not.
//!
//! `predict` answers which flows a change would break right now without applying it:
//! the live flows that map home now and would not after the change. Applying the same
//! change at the same time breaks exactly those (the harness tests check it).
//!
//! Flows live in a fixed table of `max_flows` slots (rounded up to a power of two),
//! looked up by open addressing over at most 32 slots. A flow idle for `flow_idle_ms`
//! is forgotten (its slot is reused), and so is one the client resets. A new flow that
//! finds no free slot among its 32 is not tracked: it is never misrouted, and counted
//! `flows_untracked`. The table never grows.
//!
//! Nothing is handed over on a hot swap: a change of this stage's config (which may
//! list other targets) starts from the config's membership with no flows, and each live
//! flow gets a new home from its next packet. A reload that leaves the stage unchanged
//! keeps it running, with its flows and the membership commands made.

use serde::Deserialize;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, Ipv6Addr};
use synthnet_sdk::build::{tcp_rst_for, TCP_RST_MAX_LEN};
use synthnet_sdk::wire::{ethertype, ipproto, tcpflags};
use synthnet_sdk::{duration_ms, export_plugin, Access, Batch, Plugin, MAX_DELAY_MS, REVERSE};

/// Membership changes: the `add`, `remove`, `set` and `predict` commands.
mod commands;
use commands::Change;

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    HashThreshold,
    Modulo,
    Consistent,
    Resilient,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::HashThreshold => "hash_threshold",
            Algorithm::Modulo => "modulo",
            Algorithm::Consistent => "consistent",
            Algorithm::Resilient => "resilient",
        }
    }
}

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnMisroute {
    /// Answer a misrouted TCP segment with a reset toward the sender, and drop it.
    #[default]
    Rst,
    /// Drop misrouted packets silently (a target that is gone, or a firewall).
    Blackhole,
}

#[derive(Deserialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HashPolicy {
    /// Addresses, protocol and ports (Linux `fib_multipath_hash_policy` 1).
    #[default]
    L4,
    /// Addresses and protocol, and for IPv6 the flow label (Linux policy 0).
    L3,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The initial members, in order (order matters for `hash_threshold` and `modulo`).
    pub targets: Vec<String>,
    pub algorithm: Algorithm,
    pub hash_policy: HashPolicy,
    /// Seed of the flow hash (a router's random hash key): same seed, same mapping.
    pub hash_seed: u64,
    /// Hash the DSCP (IPv4 TOS, IPv6 traffic class) too, as Linux before 4.18 hashed
    /// IPv6 `flowinfo`: a flow whose DSCP changes mid-session (ssh) is re-hashed.
    pub hash_dscp: bool,
    /// A flow whose hashed DSCP or flow label changed since its first packet is always
    /// misrouted, whatever the hash says: a single ssh session then fails every time,
    /// not 9 times in 10 (the research's `force_move_on_trigger`).
    pub rehash_moves: bool,
    /// Only packets to these destination ports are balanced; empty = every TCP/UDP packet.
    pub dst_ports: Vec<u16>,
    pub on_misroute: OnMisroute,
    /// `consistent`: ring points per target.
    pub vnodes: u32,
    /// `resilient`: buckets in the table.
    pub buckets: u32,
    /// `resilient`: how long a bucket must be idle before it may move to a new owner.
    pub idle_timer_ms: f64,
    /// Flow table slots (rounded up to a power of two).
    pub max_flows: u32,
    /// A flow idle this long is forgotten.
    pub flow_idle_ms: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            targets: Vec::new(),
            algorithm: Algorithm::HashThreshold,
            hash_policy: HashPolicy::L4,
            hash_seed: 0x5EED_1234,
            hash_dscp: false,
            rehash_moves: false,
            dst_ports: Vec::new(),
            on_misroute: OnMisroute::Rst,
            vnodes: 160,
            buckets: 128,
            idle_timer_ms: 120_000.0,
            max_flows: 65_536,
            flow_idle_ms: 300_000.0,
        }
    }
}

/// Most members at once, and most distinct names ever seen (ids are never reused, so a
/// flow's home stays meaningful across changes).
const MAX_TARGETS: usize = 256;
const MAX_NAMES: usize = 1024;
const MAX_NAME_LEN: usize = 64;
const MAX_VNODES: u32 = 4096;
const MAX_BUCKETS: u32 = 65_536;
/// A slot is 72 bytes: 2^19 slots are 36 MiB, within the 64 MiB a plugin may use by
/// default (`limits.plugin_memory_mib`).
const MAX_FLOWS: u32 = 1 << 19;
/// Slots a lookup probes: bounds the work per packet whatever the table holds.
const PROBES: usize = 32;
/// `resilient`: how often an unbalanced table looks for idle buckets to move (Linux
/// schedules its upkeep similarly, at most as often as buckets can become idle).
const UPKEEP_NS: u64 = 100_000_000;
/// Flows listed by `predict` unless it gives `limit`.
const DEFAULT_LIST_LIMIT: usize = 1000;

fn mix(mut h: u64) -> u64 {
    // splitmix64's finalizer: every input bit reaches every output bit.
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

fn hash_words(seed: u64, words: &[u64]) -> u64 {
    let mut h = mix(seed ^ 0x9E37_79B9_7F4A_7C15);
    for &w in words {
        h = mix(h ^ w);
    }
    h
}

fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = mix(seed ^ bytes.len() as u64);
    for c in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w));
    }
    h
}

/// A flow: one direction of a 5-tuple. IPv4 addresses sit in the first 4 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Key {
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    proto: u8,
    v6: bool,
}

impl Key {
    fn words(&self) -> [u64; 5] {
        let w = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        [
            w(&self.src[..8]),
            w(&self.src[8..]),
            w(&self.dst[..8]),
            w(&self.dst[8..]),
            (self.src_port as u64) << 32
                | (self.dst_port as u64) << 16
                | (self.proto as u64) << 8
                | self.v6 as u64,
        ]
    }

    fn addr(&self, a: &[u8; 16]) -> String {
        if self.v6 {
            Ipv6Addr::from(*a).to_string()
        } else {
            Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
        }
    }
}

/// What the balancer reads of one packet.
struct Pkt {
    key: Key,
    /// The hashed fields that may change within a flow: DSCP (with `hash_dscp`) and the
    /// IPv6 flow label (with `hash_policy: "l3"`).
    var: u32,
    /// TCP flags; `None` for UDP.
    tcp_flags: Option<u8>,
}

/// Read Ethernet (one optional VLAN tag), IPv4/IPv6, TCP/UDP. `None`: not balanced
/// (not IP, another protocol, an IPv4 fragment past the first, IPv6 extension headers,
/// or cut short).
fn classify(f: &[u8]) -> Option<Pkt> {
    let mut et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let mut l3 = 14;
    if et == ethertype::VLAN {
        et = u16::from_be_bytes([*f.get(16)?, *f.get(17)?]);
        l3 = 18;
    }
    let mut key = Key::default();
    let (l4, dscp, label) = match et {
        ethertype::IPV4 => {
            let h = f.get(l3..l3 + 20)?;
            if h[0] >> 4 != 4 || u16::from_be_bytes([h[6], h[7]]) & 0x1FFF != 0 {
                return None;
            }
            key.proto = h[9];
            key.src[..4].copy_from_slice(&h[12..16]);
            key.dst[..4].copy_from_slice(&h[16..20]);
            (l3 + (h[0] & 0xF) as usize * 4, h[1] >> 2, 0)
        }
        ethertype::IPV6 => {
            let h = f.get(l3..l3 + 40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let first = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
            key.v6 = true;
            key.proto = h[6];
            key.src.copy_from_slice(&h[8..24]);
            key.dst.copy_from_slice(&h[24..40]);
            (l3 + 40, (first >> 22) as u8, first & 0xF_FFFF)
        }
        _ => return None,
    };
    if key.proto != ipproto::TCP && key.proto != ipproto::UDP {
        return None;
    }
    let t = f.get(l4..l4 + 4)?;
    key.src_port = u16::from_be_bytes([t[0], t[1]]);
    key.dst_port = u16::from_be_bytes([t[2], t[3]]);
    let tcp_flags = if key.proto == ipproto::TCP {
        Some(*f.get(l4 + 13)?)
    } else {
        None
    };
    Some(Pkt {
        key,
        var: (dscp as u32) << 20 | label,
        tcp_flags,
    })
}

/// Membership and the tables the algorithm maps with. A change builds a new one.
#[derive(Clone, Debug)]
struct Mapper {
    algo: Algorithm,
    /// Target ids, in order.
    members: Vec<u16>,
    /// `hash_threshold`: each member's upper bound of the 31-bit hash.
    bounds: Vec<u32>,
    /// `consistent`: (point, id), sorted.
    ring: Vec<(u32, u16)>,
    /// `resilient`: the owner of each bucket.
    buckets: Vec<u16>,
}

impl Mapper {
    fn map(&self, h: u64) -> u16 {
        match self.algo {
            Algorithm::HashThreshold => {
                let h31 = (h >> 33) as u32;
                let i = self.bounds.partition_point(|&b| b < h31);
                self.members[i.min(self.members.len() - 1)]
            }
            Algorithm::Modulo => self.members[((h >> 32) % self.members.len() as u64) as usize],
            Algorithm::Consistent => {
                let h32 = (h >> 32) as u32;
                let i = self.ring.partition_point(|&(p, _)| p < h32);
                self.ring[if i == self.ring.len() { 0 } else { i }].1
            }
            Algorithm::Resilient => self.buckets[(h % self.buckets.len() as u64) as usize],
        }
    }
}

/// `round(a / b)` for the shares, as the kernel's `DIV_ROUND_CLOSEST_ULL`.
fn div_round(a: u64, b: u64) -> u64 {
    (a + b / 2) / b
}

/// A flow table slot.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    key: Key,
    /// Ever used: a lookup stops only at a slot never used, so forgetting a flow never
    /// cuts another flow's probe chain.
    used: bool,
    /// Forgotten (reset by the client), reusable.
    dead: bool,
    home: u16,
    var: u32,
    /// `var` at the flow's first packet (for `rehash_moves`).
    var0: u32,
    hash: u64,
    last_ns: u64,
}

pub struct LbHash {
    algo: Algorithm,
    policy: HashPolicy,
    seed: u64,
    hash_dscp: bool,
    rehash_moves: bool,
    dst_ports: Vec<u16>,
    on_misroute: OnMisroute,
    vnodes: u32,
    idle_timer_ns: u64,
    flow_idle_ns: u64,
    /// Every name ever a member; a target's id is its index.
    names: Vec<String>,
    /// Hash of each name, for the ring.
    name_hashes: Vec<u64>,
    mapper: Mapper,
    /// `resilient`: when each bucket last carried a packet (`u64::MAX`: never).
    bucket_used_ns: Vec<u64>,
    /// `resilient`: some member owns more than its share; rebalance as buckets idle.
    unbalanced: bool,
    next_upkeep_ns: u64,
    flows: Vec<Flow>,
    mask: usize,
    /// Counts since the last batch, added to the host's counters at its end.
    counters: [u64; 7],
    rst: [u8; TCP_RST_MAX_LEN],
}

mod ctr {
    pub(crate) const FLOWS_NEW: usize = 0;
    pub(crate) const MISROUTED: usize = 1;
    pub(crate) const RST_SENT: usize = 2;
    pub(crate) const BLACKHOLED: usize = 3;
    pub(crate) const REHASHED: usize = 4;
    pub(crate) const UNTRACKED: usize = 5;
    pub(crate) const CHANGES: usize = 6;
}

/// What became of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Not balanced, or at home.
    Pass,
    /// Misrouted: answer with a reset, drop.
    Reset,
    /// Misrouted: drop.
    Drop,
}

fn check_name(field: &str, n: &str) -> Result<(), String> {
    if n.is_empty() || n.len() > MAX_NAME_LEN || n.chars().any(char::is_control) {
        return Err(format!(
            "{field}: a target name must be 1..={MAX_NAME_LEN} bytes without control characters, got {n:?}"
        ));
    }
    Ok(())
}

impl LbHash {
    fn id_of(&self, name: &str) -> Option<u16> {
        self.names.iter().position(|n| n == name).map(|i| i as u16)
    }

    /// The id of `name`, registering it if new.
    fn intern(&mut self, field: &str, name: &str) -> Result<u16, String> {
        check_name(field, name)?;
        if let Some(id) = self.id_of(name) {
            return Ok(id);
        }
        if self.names.len() >= MAX_NAMES {
            return Err(format!(
                "{field}: {MAX_NAMES} distinct target names have been used; reuse one"
            ));
        }
        self.names.push(name.to_string());
        self.name_hashes
            .push(hash_bytes(self.seed, name.as_bytes()));
        Ok((self.names.len() - 1) as u16)
    }

    fn name(&self, id: u16) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    /// The mapper for `members`, keeping what `resilient` keeps of the current table at
    /// `now_ns` (`prev` is `None` when building the first table).
    fn build(&self, members: Vec<u16>, prev: Option<&[u16]>, now_ns: u64) -> (Mapper, bool) {
        let n = members.len() as u64;
        let mut m = Mapper {
            algo: self.algo,
            members,
            bounds: Vec::new(),
            ring: Vec::new(),
            buckets: Vec::new(),
        };
        let mut unbalanced = false;
        match self.algo {
            Algorithm::HashThreshold => {
                m.bounds = (1..=n)
                    .map(|w| (div_round(w << 31, n) - 1) as u32)
                    .collect();
            }
            Algorithm::Modulo => {}
            Algorithm::Consistent => {
                for &id in &m.members {
                    let nh = self.name_hashes[id as usize];
                    for v in 0..self.vnodes {
                        let p = (hash_words(self.seed, &[nh, v as u64]) >> 32) as u32;
                        m.ring.push((p, id));
                    }
                }
                m.ring.sort_unstable();
            }
            Algorithm::Resilient => {
                let nb = self.bucket_used_ns.len();
                let pos = |id: u16| m.members.iter().position(|&x| x == id);
                let wants: Vec<usize> = (0..n)
                    .map(|i| {
                        (div_round((i + 1) * nb as u64, n) - div_round(i * nb as u64, n)) as usize
                    })
                    .collect();
                let mut counts = vec![0usize; m.members.len()];
                let mut owner: Vec<Option<usize>> = vec![None; nb];
                if let Some(prev) = prev {
                    for (b, &id) in prev.iter().enumerate() {
                        owner[b] = pos(id);
                        if let Some(p) = owner[b] {
                            counts[p] += 1;
                        }
                    }
                }
                for (o, &used) in owner.iter_mut().zip(&self.bucket_used_ns) {
                    let idle =
                        used == u64::MAX || now_ns.saturating_sub(used) >= self.idle_timer_ns;
                    let movable = match *o {
                        None => true,
                        Some(p) => counts[p] > wants[p] && idle,
                    };
                    if !movable {
                        continue;
                    }
                    if let Some(u) = (0..counts.len()).find(|&u| counts[u] < wants[u]) {
                        if let Some(p) = *o {
                            counts[p] -= 1;
                        }
                        counts[u] += 1;
                        *o = Some(u);
                    }
                }
                unbalanced = counts.iter().zip(&wants).any(|(c, w)| c > w);
                m.buckets = owner.iter().map(|o| m.members[o.unwrap_or(0)]).collect();
            }
        }
        (m, unbalanced)
    }

    fn flow_hash(&self, key: &Key, var: u32) -> u64 {
        let mut w = key.words();
        if self.policy == HashPolicy::L3 {
            w[4] = (key.proto as u64) << 8 | key.v6 as u64;
        }
        hash_words(self.seed, &[w[0], w[1], w[2], w[3], w[4], var as u64])
    }

    fn slot_of(&self, key: &Key) -> usize {
        // The table's own hash, independent of the balancer's seed.
        (hash_words(0x7AB1E, &key.words()) as usize) & self.mask
    }

    fn expired(&self, f: &Flow, now_ns: u64) -> bool {
        f.dead || now_ns.saturating_sub(f.last_ns) > self.flow_idle_ns
    }

    /// The flow's slot and whether it is new, or `None` when the table has no room.
    fn lookup(&mut self, key: &Key, now_ns: u64) -> Option<(usize, bool)> {
        let start = self.slot_of(key);
        let mut free = None;
        for i in 0..PROBES {
            let s = (start + i) & self.mask;
            let f = &self.flows[s];
            if !f.used {
                return Some((free.unwrap_or(s), true));
            }
            if f.key == *key {
                return Some((s, self.expired(f, now_ns)));
            }
            if free.is_none() && self.expired(f, now_ns) {
                free = Some(s);
            }
        }
        free.map(|s| (s, true))
    }

    /// Decide one packet (the hot path: a table lookup and one mapping).
    fn packet(&mut self, frame: &[u8], now_ns: u64) -> Fate {
        let Some(p) = classify(frame) else {
            return Fate::Pass;
        };
        if !self.dst_ports.is_empty() && !self.dst_ports.contains(&p.key.dst_port) {
            return Fate::Pass;
        }
        let var = if self.hash_dscp {
            p.var
        } else {
            p.var & 0xF_FFFF
        };
        let var = if self.policy == HashPolicy::L3 && p.key.v6 {
            var
        } else {
            var & !0xF_FFFF
        };
        let syn = p
            .tcp_flags
            .is_some_and(|f| f & (tcpflags::SYN | tcpflags::ACK) == tcpflags::SYN);
        let Some((s, mut new)) = self.lookup(&p.key, now_ns) else {
            self.counters[ctr::UNTRACKED] += 1;
            return Fate::Pass;
        };
        // A SYN opens a new connection on this 5-tuple: it gets a home afresh.
        new |= syn;
        let hash = if new || self.flows[s].var != var {
            if !new {
                self.counters[ctr::REHASHED] += 1;
            }
            self.flow_hash(&p.key, var)
        } else {
            self.flows[s].hash
        };
        let now_at = self.mapper.map(hash);
        if self.algo == Algorithm::Resilient {
            let nb = self.bucket_used_ns.len() as u64;
            self.bucket_used_ns[(hash % nb) as usize] = now_ns;
        }
        let f = &mut self.flows[s];
        if new {
            *f = Flow {
                key: p.key,
                used: true,
                dead: false,
                home: now_at,
                var,
                var0: var,
                hash,
                last_ns: now_ns,
            };
            self.counters[ctr::FLOWS_NEW] += 1;
            return Fate::Pass;
        }
        f.var = var;
        f.hash = hash;
        f.last_ns = now_ns;
        if p.tcp_flags.is_some_and(|fl| fl & tcpflags::RST != 0) {
            // The client gave up on the connection: forget it (and let its reset through
            // when it is at home; a misrouted one is dropped like any other packet).
            f.dead = true;
        }
        if now_at == f.home && !(self.rehash_moves && f.var != f.var0) {
            return Fate::Pass;
        }
        self.counters[ctr::MISROUTED] += 1;
        match (self.on_misroute, p.tcp_flags) {
            (OnMisroute::Rst, Some(fl)) if fl & tcpflags::RST == 0 => Fate::Reset,
            _ => Fate::Drop,
        }
    }
}

impl Plugin for LbHash {
    type Config = Config;
    /// Ethernet with a VLAN tag, IPv6, and TCP's header up to its flags: 18 + 40 + 14.
    /// The reset is built from the IP length fields, so the payload is never needed.
    const ACCESS: Access = Access::Headers(128);
    const OUTPUTS: u16 = 2;
    /// Each packet may be answered by one reset.
    const EMIT_CAP: u32 = Self::MAX_BATCH * TCP_RST_MAX_LEN as u32;
    const COUNTERS: &'static [&'static str] = &[
        "flows_new",
        "misrouted",
        "rst_sent",
        "blackholed",
        "rehashed",
        "flows_untracked",
        "changes",
    ];

    fn new(c: Config, _seed: u64) -> Result<Self, String> {
        if c.targets.is_empty() {
            return Err("targets: at least one target name is needed".into());
        }
        if c.targets.len() > MAX_TARGETS {
            return Err(format!(
                "targets: at most {MAX_TARGETS}, got {}",
                c.targets.len()
            ));
        }
        if c.algorithm == Algorithm::Consistent && !(1..=MAX_VNODES).contains(&c.vnodes) {
            return Err(format!(
                "vnodes: must be within 1..={MAX_VNODES}, got {}",
                c.vnodes
            ));
        }
        if c.algorithm == Algorithm::Resilient && !(1..=MAX_BUCKETS).contains(&c.buckets) {
            return Err(format!(
                "buckets: must be within 1..={MAX_BUCKETS}, got {}",
                c.buckets
            ));
        }
        if c.algorithm == Algorithm::Resilient && (c.buckets as usize) < c.targets.len() {
            return Err(format!(
                "buckets: must be at least the number of targets ({}), got {}",
                c.targets.len(),
                c.buckets
            ));
        }
        if !(1..=MAX_FLOWS).contains(&c.max_flows) {
            return Err(format!(
                "max_flows: must be within 1..={MAX_FLOWS} (72 bytes a slot), got {}",
                c.max_flows
            ));
        }
        let idle_timer_ns = duration_ms("idle_timer_ms", c.idle_timer_ms, MAX_DELAY_MS)?;
        let flow_idle_ns = duration_ms("flow_idle_ms", c.flow_idle_ms, MAX_DELAY_MS)?;
        if flow_idle_ns == 0 {
            return Err("flow_idle_ms: must be above 0 (0 would forget every flow at once)".into());
        }
        if c.rehash_moves && !c.hash_dscp && c.hash_policy == HashPolicy::L4 {
            return Err(
                "rehash_moves: needs a field that can change within a flow: hash_dscp, or hash_policy \"l3\" (the IPv6 flow label)"
                    .into(),
            );
        }
        if c.dst_ports.contains(&0) {
            return Err("dst_ports: port 0 is not a destination port".into());
        }
        let slots = (c.max_flows as usize).next_power_of_two();
        let nb = if c.algorithm == Algorithm::Resilient {
            c.buckets as usize
        } else {
            0
        };
        let mut lb = LbHash {
            algo: c.algorithm,
            policy: c.hash_policy,
            seed: c.hash_seed,
            hash_dscp: c.hash_dscp,
            rehash_moves: c.rehash_moves,
            dst_ports: c.dst_ports,
            on_misroute: c.on_misroute,
            vnodes: c.vnodes,
            idle_timer_ns,
            flow_idle_ns,
            names: Vec::new(),
            name_hashes: Vec::new(),
            mapper: Mapper {
                algo: c.algorithm,
                members: Vec::new(),
                bounds: Vec::new(),
                ring: Vec::new(),
                buckets: Vec::new(),
            },
            bucket_used_ns: vec![u64::MAX; nb],
            unbalanced: false,
            next_upkeep_ns: 0,
            flows: vec![Flow::default(); slots],
            mask: slots - 1,
            counters: [0; 7],
            rst: [0; TCP_RST_MAX_LEN],
        };
        let members = lb.members_after(&Change::Set {
            targets: c.targets.clone(),
        })?;
        let (m, _) = lb.build(members, None, 0);
        lb.mapper = m;
        Ok(lb)
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let now = batch.now_ns();
        self.upkeep(now);
        for i in 0..batch.len() {
            let fate = self.packet(batch.data(i), batch.arrival_ns(i));
            match fate {
                Fate::Pass => batch.forward(i),
                Fate::Reset => {
                    match tcp_rst_for(batch.data(i), &mut self.rst) {
                        Ok(n) => {
                            batch.inject(REVERSE, 0, &self.rst[..n]);
                            self.counters[ctr::RST_SENT] += 1;
                        }
                        Err(_) => self.counters[ctr::BLACKHOLED] += 1,
                    }
                    batch.discard(i);
                }
                Fate::Drop => {
                    self.counters[ctr::BLACKHOLED] += 1;
                    batch.discard(i);
                }
            }
        }
        self.flush_counters(batch);
    }

    fn command(&mut self, cmd: &Value, batch: &mut Batch<'_>) -> Result<Value, String> {
        let r = self.handle_command(cmd, batch.now_ns());
        self.flush_counters(batch);
        r
    }
}

export_plugin!(LbHash);
