//! `conntrack-race`: the first packets of a new connectionless flow lost to a conntrack
//! insertion race, as between containers on one Linux bridge (moby/moby#39123; the
//! kernel's "clash resolution on insertion race" commit; kubernetes#56903's DNS delays).
//!
//! Linux conntrack creates an *unconfirmed* entry for a packet of a new flow and inserts
//! ("confirms") it only when the packet leaves the last netfilter hook. Two packets of
//! one flow processed at the same time each get an unconfirmed entry; the second insert
//! fails, and its packet is dropped in `nf_hook_slow` (`conntrack -S`: `insert_failed`,
//! `drop`). For UDP nothing serializes the two ends: A→B and B→A sent at the same moment
//! (an all-to-all ping from one port) race, the later one loses. The entry then lives for
//! the UDP timeouts — 30 s (`nf_conntrack_udp_timeout`), 120 s once assured
//! (`nf_conntrack_udp_timeout_stream`) — so an immediate re-run finds it and loses
//! nothing, a run spaced out never races, and a run after the timeout loses again.
//!
//! The model, per packet of a tracked protocol (UDP by default; ICMP is untouched, the
//! report's observation), keyed by the flow's bidirectional canonical 5-tuple:
//!
//! - **No live entry**: a new entry, unconfirmed for `race_window_us` from this packet's
//!   arrival. With `delay_unconfirmed` (the default) the packet leaves when its entry is
//!   confirmed, at the end of the window, as in the kernel, where the insert happens
//!   before the packet leaves: so a reply, which needs the packet delivered first, can
//!   never race its own flow's entry — only a packet sent independently can.
//! - **Unconfirmed entry**: a packet from the other end (the reply tuple) loses the race
//!   and is dropped (`insert_failed`, `drop`), with probability `clash_probability`
//!   (seeded). With `clash: "any"` a second packet from the same end loses too (kernels
//!   before clash resolution, or NAT; since 4.19 the kernel resolves same-tuple UDP
//!   clashes). A packet that does not lose leaves no earlier than the confirmation, so
//!   the flow stays in order.
//! - **Confirmed entry** (`found`): forwarded; it refreshes the entry's timeout:
//!   `udp_timeout_ms` until the flow has been seen both ways and is older than
//!   `stream_after_ms`, then `udp_timeout_stream_ms` (assured) — the kernel's rules.
//! - An entry idle past its timeout is gone (`expired`): the next packet is new again.
//! - The table holds at most `max_entries` (`nf_conntrack_max`): a new flow in a full
//!   table evicts the least recently seen unassured entry among the 8 oldest
//!   (`early_drop`), else its packet is dropped (`drop`).
//!
//! The stage sees one direction of the bridge: put it where both ends of the flows
//! cross it in the same direction (behind a router, see docs/scenarios/conntrack-race.md)
//! or accept that only flows whose both ends it sees can race.
//!
//! A reload that changes the stage (a new window, new timeouts) hands the table over:
//! every flow keeps its state, recency and deadline (a smaller `max_entries` keeps the
//! most recently seen), so a config change does not make every flow new again.
//!
//! Commands: `{"cmd": "status"}` (counters and up to `limit` flows, most recent first),
//! `{"cmd": "flush"}` (`conntrack -F`: every entry gone, the next packets are new).

use serde::Deserialize;
use serde_json::{json, Value};
use synthnet_sdk::flow::{self, Family, FlowKey, Side};
use synthnet_sdk::flowmap::{FlowMap, WhenFull};
use synthnet_sdk::wire::ipproto;
use synthnet_sdk::{export_plugin, state, Access, Batch, Chance, Plugin, Rng, NS_PER_MS};

/// Which racing first packets lose.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Clash {
    /// A packet of the reply tuple racing the entry (A→B against B→A): the seed's case.
    #[default]
    Reply,
    /// Any second packet of the flow while its entry is unconfirmed.
    Any,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Tracked protocols: "udp", "tcp", "icmp" (ICMP and ICMPv6), "udplite", "sctp",
    /// "dccp". Others pass untouched (`ignore`).
    pub protocols: Vec<String>,
    /// How long a new entry stays unconfirmed, µs: the race window.
    pub race_window_us: u64,
    /// Packets of an unconfirmed entry leave when it is confirmed (see the module docs).
    pub delay_unconfirmed: bool,
    /// "reply" (the default) or "any": see [`Clash`].
    pub clash: String,
    /// Chance that a racing packet loses (the kernel race is a matter of timing).
    pub clash_probability: f64,
    /// `nf_conntrack_udp_timeout`: an entry not (yet) assured, ms.
    pub udp_timeout_ms: u64,
    /// `nf_conntrack_udp_timeout_stream`: an assured entry, ms.
    pub udp_timeout_stream_ms: u64,
    /// A flow seen both ways becomes assured once older than this, ms (the kernel: 2 s).
    pub stream_after_ms: u64,
    /// `nf_conntrack_max`.
    pub max_entries: u32,
    /// What a new flow finds in a full table: "early_drop" (the default) evicts the
    /// least recently seen unassured entry of the 8 oldest, else drops the packet, as
    /// the kernel does; "drop" drops the packet.
    pub table_full: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            protocols: vec!["udp".into()],
            race_window_us: 1000,
            delay_unconfirmed: true,
            clash: "reply".into(),
            clash_probability: 1.0,
            udp_timeout_ms: 30_000,
            udp_timeout_stream_ms: 120_000,
            stream_after_ms: 2_000,
            max_entries: 65_536,
            table_full: "early_drop".into(),
        }
    }
}

/// The longest race window, timeout or stream delay accepted: a day (a longer one is
/// almost surely a unit mistake).
const MAX_MS: u64 = 86_400_000;

/// One conntrack entry.
#[derive(Clone, Copy, Debug)]
struct Entry {
    created_ns: u64,
    /// End of the race window: from then on the entry is confirmed.
    confirm_ns: u64,
    /// The side whose packet created the entry (conntrack's "original" direction).
    orig: Side,
    /// Packets seen per side (`Side::index`).
    packets: [u64; 2],
    assured: bool,
}

/// Counter indices (see `COUNTERS`).
mod c {
    pub(crate) const ENTRIES: usize = 0;
    pub(crate) const FOUND: usize = 1;
    pub(crate) const NEW: usize = 2;
    pub(crate) const INSERT: usize = 3;
    pub(crate) const INSERT_FAILED: usize = 4;
    pub(crate) const DROP: usize = 5;
    pub(crate) const EARLY_DROP: usize = 6;
    pub(crate) const EXPIRED: usize = 7;
    pub(crate) const IGNORE: usize = 8;
    pub(crate) const INVALID: usize = 9;
    pub(crate) const DELAYED: usize = 10;
    pub(crate) const N: usize = 11;
}

/// Entries reclaimed per batch or tick at most: bounded work on the packet path.
const SWEEP_PER_BATCH: usize = 16;
/// A tick reclaims idle entries this often while the table is not empty, so `entries`
/// and `expired` follow an idle table.
const SWEEP_EVERY_NS: u64 = 500 * NS_PER_MS;
const SWEEP_PER_TICK: usize = 4096;

pub struct ConntrackRace {
    tracked: [bool; 256],
    window_ns: u64,
    delay: bool,
    clash: Clash,
    chance: Chance,
    timeout_ns: u64,
    stream_timeout_ns: u64,
    stream_after_ns: u64,
    table: FlowMap<FlowKey, Entry>,
    rng: Rng,
    /// Counter values: totals, and `entries` as the table's size when last published.
    values: [u64; c::N],
    /// What the host has been told of them (its counters only add).
    published: [u64; c::N],
    /// Expiries of the map already counted.
    map_expired: u64,
}

fn ms(field: &str, v: u64, positive: bool) -> Result<u64, String> {
    if v > MAX_MS || (positive && v == 0) {
        return Err(format!(
            "{field}: must be {} ms and at most a day ({MAX_MS}), got {v}",
            if positive { "at least 1" } else { "at least 0" }
        ));
    }
    Ok(v * NS_PER_MS)
}

fn proto(name: &str) -> Option<&'static [u8]> {
    Some(match name {
        "udp" => &[ipproto::UDP],
        "tcp" => &[ipproto::TCP],
        "icmp" => &[ipproto::ICMP, ipproto::ICMPV6],
        "udplite" => &[136],
        "sctp" => &[132],
        "dccp" => &[33],
        _ => return None,
    })
}

fn state_name(e: &Entry, now: u64) -> &'static str {
    if now < e.confirm_ns {
        "unconfirmed"
    } else if e.assured {
        "assured"
    } else if e.packets[e.orig.other().index()] > 0 {
        "replied"
    } else {
        "unreplied"
    }
}

impl ConntrackRace {
    fn count(&mut self, idx: usize) {
        self.values[idx] += 1;
    }

    /// Publish counts, and `entries` as a gauge (the host's counters only add, so the
    /// difference is added, wrapping).
    fn publish(&mut self, batch: &mut Batch<'_>) {
        let expired = self.table.stats().expired;
        self.values[c::EXPIRED] += expired - self.map_expired;
        self.map_expired = expired;
        self.values[c::ENTRIES] = self.table.len() as u64;
        batch.publish(&self.values, &mut self.published);
        if !self.table.is_empty() {
            batch.wake_at(batch.now_ns() + SWEEP_EVERY_NS);
        }
    }

    /// The verdict time of one tracked packet at `t`: `Some(deliver_at)` or `None` to drop.
    fn track(&mut self, key: FlowKey, t: u64) -> Option<u64> {
        let (ck, side) = key.canonical();
        let Some(s) = self.table.find(&ck, t) else {
            self.count(c::NEW);
            let mut e = Entry {
                created_ns: t,
                confirm_ns: t.saturating_add(self.window_ns),
                orig: side,
                packets: [0; 2],
                assured: false,
            };
            e.packets[side.index()] = 1;
            let evicted = self.table.stats().evicted;
            let inserted = self
                .table
                .insert_evicting(ck, e, t, self.timeout_ns, |_, x| !x.assured);
            return match inserted {
                Ok(_) => {
                    if self.table.stats().evicted > evicted {
                        self.count(c::EARLY_DROP);
                    }
                    self.count(c::INSERT);
                    if self.delay && self.window_ns > 0 {
                        self.count(c::DELAYED);
                        Some(e.confirm_ns)
                    } else {
                        Some(t)
                    }
                }
                Err(_) => {
                    self.count(c::DROP);
                    None
                }
            };
        };
        let e = *self.table.value(s);
        if t < e.confirm_ns {
            let races = side != e.orig || self.clash == Clash::Any;
            if races && self.chance.roll(&mut self.rng) {
                self.count(c::INSERT_FAILED);
                self.count(c::DROP);
                return None;
            }
            // It waits on the same insert: not before the confirmation, in order.
            let v = self.table.value_mut(s);
            v.packets[side.index()] += 1;
            self.table.touch(s, t, self.timeout_ns);
            if self.delay {
                self.count(c::DELAYED);
                return Some(e.confirm_ns);
            }
            return Some(t);
        }
        self.count(c::FOUND);
        let stream_due = t >= e.created_ns.saturating_add(self.stream_after_ns);
        let v = self.table.value_mut(s);
        v.packets[side.index()] += 1;
        let both = v.packets[0] > 0 && v.packets[1] > 0;
        if both && stream_due {
            v.assured = true;
        }
        let idle = if v.assured {
            self.stream_timeout_ns
        } else {
            self.timeout_ns
        };
        self.table.touch(s, t, idle);
        Some(t)
    }

    fn status(&self, now: u64, limit: usize) -> Value {
        let names = <Self as Plugin>::COUNTERS;
        let mut counters = serde_json::Map::new();
        for (i, n) in names.iter().enumerate() {
            let v = if i == c::ENTRIES {
                self.table.len() as u64
            } else {
                self.values[i]
            };
            counters.insert((*n).into(), v.into());
        }
        let flows: Vec<Value> = self
            .table
            .iter()
            .filter(|(_, _, _, exp)| now < *exp)
            .take(limit)
            .map(|(k, e, _, exp)| {
                let orig = if e.orig == Side::A { *k } else { k.reversed() };
                json!({
                    "flow": orig.to_string(),
                    "state": state_name(e, now),
                    "packets_orig": e.packets[e.orig.index()],
                    "packets_reply": e.packets[e.orig.other().index()],
                    "expires_in_ms": (exp - now) / NS_PER_MS,
                })
            })
            .collect();
        json!({
            "entries": self.table.len(),
            "max_entries": self.table.capacity(),
            "counters": counters,
            "flows": flows,
        })
    }
}

/// Hand-over words: the RNG (4), the entry count, then per entry from the least to the
/// most recently seen: key (5 words), entry (5), last seen, deadline.
const STATE_HEAD: usize = 5;
const STATE_ENTRY: usize = 12;

fn addr_words(a: &[u8; 16]) -> [u64; 2] {
    [
        u64::from_le_bytes(a[..8].try_into().unwrap_or([0; 8])),
        u64::from_le_bytes(a[8..].try_into().unwrap_or([0; 8])),
    ]
}

fn words_addr(w: &[u64]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..8].copy_from_slice(&w[0].to_le_bytes());
    a[8..].copy_from_slice(&w[1].to_le_bytes());
    a
}

fn encode_entry(k: &FlowKey, e: &Entry, last: u64, exp: u64, out: &mut Vec<u64>) {
    let fam = (k.family == Family::V6) as u64;
    out.push(fam << 40 | (k.proto as u64) << 32 | (k.src_port as u64) << 16 | k.dst_port as u64);
    out.extend_from_slice(&addr_words(&k.src));
    out.extend_from_slice(&addr_words(&k.dst));
    out.push(e.created_ns);
    out.push(e.confirm_ns);
    out.push((e.orig == Side::B) as u64 | (e.assured as u64) << 1);
    out.extend_from_slice(&e.packets);
    out.push(last);
    out.push(exp);
}

fn decode_entry(w: &[u64]) -> (FlowKey, Entry, u64, u64) {
    let key = FlowKey {
        family: if w[0] >> 40 & 1 == 1 {
            Family::V6
        } else {
            Family::V4
        },
        proto: (w[0] >> 32) as u8,
        src_port: (w[0] >> 16) as u16,
        dst_port: w[0] as u16,
        src: words_addr(&w[1..3]),
        dst: words_addr(&w[3..5]),
    };
    let e = Entry {
        created_ns: w[5],
        confirm_ns: w[6],
        orig: if w[7] & 1 == 1 { Side::B } else { Side::A },
        assured: w[7] & 2 != 0,
        packets: [w[8], w[9]],
    };
    (key, e, w[10], w[11])
}

impl Plugin for ConntrackRace {
    type Config = Config;
    // Ethernet, two VLAN tags, IPv6 and a few extension headers, the ports.
    const ACCESS: Access = Access::Headers(128);
    const COUNTERS: &'static [&'static str] = &[
        "entries",
        "found",
        "new",
        "insert",
        "insert_failed",
        "drop",
        "early_drop",
        "expired",
        "ignore",
        "invalid",
        "delayed",
    ];

    /// The table (see [`STATE_HEAD`]).
    const STATE_VERSION: u32 = 1;

    fn new(cfg: Config, seed: u64) -> Result<Self, String> {
        let mut tracked = [false; 256];
        if cfg.protocols.is_empty() {
            return Err("protocols: name at least one (\"udp\", \"tcp\", \"icmp\", …)".into());
        }
        for (i, p) in cfg.protocols.iter().enumerate() {
            let nums = proto(p).ok_or_else(|| {
                format!(
                    "protocols[{i}]: unknown protocol {p:?} \
                     (udp, tcp, icmp, udplite, sctp, dccp)"
                )
            })?;
            for n in nums {
                tracked[*n as usize] = true;
            }
        }
        if cfg.race_window_us > MAX_MS * 1000 {
            return Err(format!(
                "race_window_us: must be at most a day ({} µs), got {}",
                MAX_MS * 1000,
                cfg.race_window_us
            ));
        }
        if !(0.0..=1.0).contains(&cfg.clash_probability) {
            return Err(format!(
                "clash_probability: must be within 0..=1, got {}",
                cfg.clash_probability
            ));
        }
        let timeout_ns = ms("udp_timeout_ms", cfg.udp_timeout_ms, true)?;
        let stream_timeout_ns = ms("udp_timeout_stream_ms", cfg.udp_timeout_stream_ms, true)?;
        let stream_after_ns = ms("stream_after_ms", cfg.stream_after_ms, false)?;
        let window_ns = cfg.race_window_us * 1000;
        if window_ns >= timeout_ns {
            return Err(format!(
                "race_window_us: {} µs must be shorter than udp_timeout_ms ({} ms)",
                cfg.race_window_us, cfg.udp_timeout_ms
            ));
        }
        if cfg.max_entries == 0 || cfg.max_entries > 1 << 22 {
            return Err(format!(
                "max_entries: must be within 1..={}, got {}",
                1 << 22,
                cfg.max_entries
            ));
        }
        let clash = match cfg.clash.as_str() {
            "reply" => Clash::Reply,
            "any" => Clash::Any,
            other => return Err(format!("clash: \"reply\" or \"any\", got {other:?}")),
        };
        let when_full = match cfg.table_full.as_str() {
            "early_drop" => WhenFull::EvictLeastRecent,
            "drop" => WhenFull::Refuse,
            other => {
                return Err(format!(
                    "table_full: \"early_drop\" or \"drop\", got {other:?}"
                ))
            }
        };
        Ok(ConntrackRace {
            tracked,
            window_ns,
            delay: cfg.delay_unconfirmed,
            clash,
            chance: Chance::new(cfg.clash_probability),
            timeout_ns,
            stream_timeout_ns,
            stream_after_ns,
            table: FlowMap::new(cfg.max_entries as usize, when_full)?,
            rng: Rng::new(seed),
            values: [0; c::N],
            published: [0; c::N],
            map_expired: 0,
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        for i in 0..batch.len() {
            let t = batch.arrival_ns(i);
            let key = match flow::of(batch, i) {
                Ok(p) => p.key,
                Err(flow::NotFlow::NotIp(_)) => {
                    self.count(c::IGNORE);
                    batch.forward(i);
                    continue;
                }
                Err(flow::NotFlow::Truncated) => {
                    self.count(c::INVALID);
                    batch.forward(i);
                    continue;
                }
            };
            if !self.tracked[key.proto as usize] {
                self.count(c::IGNORE);
                batch.forward(i);
                continue;
            }
            match self.track(key, t) {
                Some(at) => batch.send(i, 0, at),
                None => batch.discard(i),
            }
        }
        self.table.sweep(batch.now_ns(), SWEEP_PER_BATCH);
        self.publish(batch);
    }

    fn tick(&mut self, batch: &mut Batch<'_>) {
        self.table.sweep(batch.now_ns(), SWEEP_PER_TICK);
        self.publish(batch);
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(STATE_HEAD + STATE_ENTRY * self.table.len());
        w.extend_from_slice(&self.rng.state());
        w.push(self.table.len() as u64);
        let mut entries: Vec<_> = self.table.iter().collect();
        entries.reverse();
        for (k, e, last, exp) in entries {
            encode_entry(k, e, last, exp, &mut w);
        }
        state::encode(&w)
    }

    fn restore(&mut self, s: &[u8]) -> Result<(), String> {
        let n = s.len() / 8;
        if !s.len().is_multiple_of(8)
            || n < STATE_HEAD
            || !(n - STATE_HEAD).is_multiple_of(STATE_ENTRY)
        {
            return Err(format!(
                "conntrack-race state must be {STATE_HEAD} + {STATE_ENTRY} × entries words, got {} bytes",
                s.len()
            ));
        }
        let w: Vec<u64> = s
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        if w[4] as usize != (n - STATE_HEAD) / STATE_ENTRY {
            return Err(format!(
                "conntrack-race state says {} entries and holds {}",
                w[4],
                (n - STATE_HEAD) / STATE_ENTRY
            ));
        }
        self.rng = Rng::from_state([w[0], w[1], w[2], w[3]]);
        self.table.clear();
        for chunk in w[STATE_HEAD..].chunks_exact(STATE_ENTRY) {
            let (k, e, last, exp) = decode_entry(chunk);
            // Least recent first: a smaller table keeps the most recently seen.
            let _ = self.table.insert(k, e, last, exp.saturating_sub(last));
        }
        Ok(())
    }

    fn command(&mut self, cmd: &Value, batch: &mut Batch<'_>) -> Result<Value, String> {
        let name = cmd
            .get("cmd")
            .and_then(Value::as_str)
            .or_else(|| cmd.as_str())
            .ok_or("a command is {\"cmd\": \"status\"} or {\"cmd\": \"flush\"}")?;
        let now = batch.now_ns();
        let reply = match name {
            "status" => {
                let limit = match cmd.get("limit") {
                    None => 100,
                    Some(l) => l
                        .as_u64()
                        .filter(|l| *l <= 100_000)
                        .ok_or("limit: must be a number of flows within 0..=100000")?
                        as usize,
                };
                self.table.sweep(now, usize::MAX);
                self.publish(batch);
                self.status(now, limit)
            }
            "flush" => {
                let n = self.table.len();
                self.table.clear();
                self.publish(batch);
                json!({"flushed": n})
            }
            other => {
                return Err(format!(
                    "unknown command {other:?}: conntrack-race takes \"status\" and \"flush\""
                ))
            }
        };
        Ok(reply)
    }
}

export_plugin!(ConntrackRace);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    const MS: u64 = NS_PER_MS;

    /// Ethernet + IPv4 + UDP from 10.0.0.`a`:`pa` to 10.0.0.`b`:`pb`.
    fn udp(a: u8, pa: u16, b: u8, pb: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, b, 2, 0, 0, 0, 0, a, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 32, 0, 1, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, a, 10, 0, 0, b]);
        f.extend_from_slice(&pa.to_be_bytes());
        f.extend_from_slice(&pb.to_be_bytes());
        f.extend_from_slice(&[0, 12, 0, 0, b'p', b'i', b'n', b'g']);
        f
    }

    fn icmp_echo(a: u8, b: u8, id: u16) -> Vec<u8> {
        let mut f = udp(a, 0, b, 0);
        f[23] = 1;
        f[34..38].copy_from_slice(&[8, 0, 0, 0]);
        f[38..40].copy_from_slice(&id.to_be_bytes());
        f
    }

    fn counter(h: &mut Harness<ConntrackRace>, name: &str) -> u64 {
        h.counters()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// One packet at `t`: its delivery time, or None when dropped.
    fn one(h: &mut Harness<ConntrackRace>, f: &[u8], t: u64) -> Option<u64> {
        h.push(f, t);
        let out = h.run(t);
        let o = out.iter().find(|o| o.input == Some(0)).unwrap();
        o.port.map(|_| o.at_ns)
    }

    /// An all-to-all ping among hosts 1..=n from port 7000 to port 7000, every first
    /// packet sent at `start` (+`gap_ns` × the peer's index) and each delivered one
    /// answered by a pong 1 ms after its delivery; returns the pings lost.
    fn all_to_all(h: &mut Harness<ConntrackRace>, n: u8, start: u64, gap_ns: u64) -> usize {
        // Events: (time, from, to, is_pong).
        let mut ev: Vec<(u64, u8, u8, bool)> = Vec::new();
        for a in 1..=n {
            for b in 1..=n {
                if a != b {
                    ev.push((start + b as u64 * gap_ns, a, b, false));
                }
            }
        }
        let mut lost = 0;
        while !ev.is_empty() {
            ev.sort();
            let (t, a, b, pong) = ev.remove(0);
            match one(h, &udp(a, 7000, b, 7000), t) {
                Some(at) if !pong => ev.push((at + MS, b, a, true)),
                Some(_) => {}
                None if !pong => lost += 1,
                None => panic!("a pong was lost at {t}"),
            }
        }
        lost
    }

    #[test]
    fn simultaneous_first_packets_race_and_the_later_loses() {
        let mut h = Harness::<ConntrackRace>::new("{}", 1).unwrap();
        // A→B at 0, B→A 0.5 ms later: inside the 1 ms window.
        assert_eq!(one(&mut h, &udp(1, 7000, 2, 7000), 0), Some(MS));
        assert_eq!(one(&mut h, &udp(2, 7000, 1, 7000), MS / 2), None);
        assert_eq!(counter(&mut h, "insert_failed"), 1);
        assert_eq!(counter(&mut h, "drop"), 1);
        // After the confirmation both ways pass at once.
        assert_eq!(one(&mut h, &udp(2, 7000, 1, 7000), MS), Some(MS));
        assert_eq!(one(&mut h, &udp(1, 7000, 2, 7000), 2 * MS), Some(2 * MS));
        assert_eq!(counter(&mut h, "found"), 2);
        assert_eq!(counter(&mut h, "entries"), 1);
        // Just outside the window: no race.
        assert_eq!(one(&mut h, &udp(3, 7000, 4, 7000), 10 * MS), Some(11 * MS));
        assert_eq!(one(&mut h, &udp(4, 7000, 3, 7000), 11 * MS), Some(11 * MS));
        assert_eq!(counter(&mut h, "insert_failed"), 1);
    }

    #[test]
    fn same_direction_packets_wait_in_order_unless_clash_any() {
        let mut h = Harness::<ConntrackRace>::new("{}", 1).unwrap();
        assert_eq!(one(&mut h, &udp(1, 5, 2, 6), 0), Some(MS));
        assert_eq!(one(&mut h, &udp(1, 5, 2, 6), 100), Some(MS));
        assert_eq!(counter(&mut h, "delayed"), 2);
        let mut h = Harness::<ConntrackRace>::new(r#"{"clash": "any"}"#, 1).unwrap();
        assert_eq!(one(&mut h, &udp(1, 5, 2, 6), 0), Some(MS));
        assert_eq!(one(&mut h, &udp(1, 5, 2, 6), 100), None);
        let mut h = Harness::<ConntrackRace>::new(r#"{"delay_unconfirmed": false}"#, 1).unwrap();
        assert_eq!(one(&mut h, &udp(1, 5, 2, 6), 0), Some(0));
        assert_eq!(one(&mut h, &udp(1, 5, 2, 6), 100), Some(100));
        assert_eq!(one(&mut h, &udp(2, 6, 1, 5), 200), None);
    }

    #[test]
    fn the_seed_experiment_fresh_rerun_spaced_and_after_timeout() {
        let mut h = Harness::<ConntrackRace>::new("{}", 1).unwrap();
        // Fresh: every pair races, one ping of each pair lost: 6 of 12 with 4 hosts.
        assert_eq!(all_to_all(&mut h, 4, 0, 0), 6);
        assert_eq!(counter(&mut h, "insert_failed"), 6);
        assert_eq!(counter(&mut h, "entries"), 6);
        // An immediate re-run finds the entries: nothing lost.
        assert_eq!(all_to_all(&mut h, 4, 1_000 * MS, 0), 0);
        // Within the 30 s timeout of the last packet, still nothing.
        assert_eq!(all_to_all(&mut h, 4, 30_000 * MS, 0), 0);
        // That run found flows seen both ways and older than 2 s: assured, 120 s.
        assert_eq!(all_to_all(&mut h, 4, 60_000 * MS, 0), 0);
        assert_eq!(all_to_all(&mut h, 4, 181_000 * MS, 0), 6);
        assert!(counter(&mut h, "expired") >= 6);
        // Spaced 100 ms apart in a common order, a fresh table never races.
        let mut h = Harness::<ConntrackRace>::new("{}", 2).unwrap();
        assert_eq!(all_to_all(&mut h, 4, 0, 100 * MS), 0);
        assert_eq!(counter(&mut h, "insert_failed"), 0);
    }

    #[test]
    fn unassured_entries_live_30_s_assured_120_s() {
        let mut h = Harness::<ConntrackRace>::new("{}", 1).unwrap();
        // Unreplied: 30 s after the last packet it is gone.
        one(&mut h, &udp(1, 1, 2, 2), 0);
        assert_eq!(
            one(&mut h, &udp(1, 1, 2, 2), 29_000 * MS),
            Some(29_000 * MS)
        );
        assert_eq!(
            one(&mut h, &udp(1, 1, 2, 2), 59_000 * MS),
            Some(59_001 * MS)
        );
        assert_eq!(counter(&mut h, "expired"), 1);
        // Replied within 2 s: still the 30 s timeout; a packet both ways after 2 s
        // makes it assured: 120 s.
        one(&mut h, &udp(3, 1, 4, 2), 0);
        one(&mut h, &udp(4, 2, 3, 1), 10 * MS);
        assert_eq!(one(&mut h, &udp(3, 1, 4, 2), 3_000 * MS), Some(3_000 * MS));
        let st = h.command(r#"{"cmd": "status"}"#, 3_000 * MS).unwrap();
        let f = st["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["flow"] == "udp 10.0.0.3:1 > 10.0.0.4:2")
            .unwrap()
            .clone();
        assert_eq!(f["state"], "assured");
        assert_eq!(f["expires_in_ms"], 120_000);
        assert_eq!(
            (f["packets_orig"].as_u64(), f["packets_reply"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(
            one(&mut h, &udp(4, 2, 3, 1), 122_999 * MS),
            Some(122_999 * MS)
        );
        assert_eq!(
            one(&mut h, &udp(4, 2, 3, 1), 243_000 * MS),
            Some(243_001 * MS)
        );
    }

    #[test]
    fn icmp_and_non_ip_pass_untouched_unless_tracked() {
        let mut h = Harness::<ConntrackRace>::new("{}", 1).unwrap();
        assert_eq!(one(&mut h, &icmp_echo(1, 2, 9), 0), Some(0));
        assert_eq!(one(&mut h, &icmp_echo(2, 1, 9), 10), Some(10));
        let mut arp = udp(1, 1, 2, 2);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(one(&mut h, &arp, 20), Some(20));
        assert_eq!(one(&mut h, &udp(1, 1, 2, 2)[..20], 30), Some(30));
        assert_eq!(counter(&mut h, "ignore"), 3);
        assert_eq!(counter(&mut h, "invalid"), 1);
        assert_eq!(counter(&mut h, "entries"), 0);
        // Tracked, an echo request and a racing request with the same id clash.
        let mut h = Harness::<ConntrackRace>::new(r#"{"protocols": ["icmp"]}"#, 1).unwrap();
        assert_eq!(one(&mut h, &icmp_echo(1, 2, 9), 0), Some(MS));
        assert_eq!(one(&mut h, &icmp_echo(2, 1, 9), 10), None);
        assert_eq!(one(&mut h, &udp(1, 1, 2, 2), 20), Some(20));
    }

    #[test]
    fn clash_probability_is_seeded() {
        let run = |seed| {
            let mut h =
                Harness::<ConntrackRace>::new(r#"{"clash_probability": 0.5}"#, seed).unwrap();
            (0..400u16)
                .map(|p| {
                    one(&mut h, &udp(1, p, 2, p), p as u64 * 10 * MS);
                    one(&mut h, &udp(2, p, 1, p), p as u64 * 10 * MS + 1).is_none()
                })
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        assert_ne!(a, run(8));
        let lost = a.iter().filter(|x| **x).count();
        assert!((170..=230).contains(&lost), "{lost} of 400");
    }

    #[test]
    fn a_full_table_early_drops_unassured_entries_else_drops_the_packet() {
        let mut h = Harness::<ConntrackRace>::new(r#"{"max_entries": 2}"#, 1).unwrap();
        one(&mut h, &udp(1, 1, 2, 1), 0);
        one(&mut h, &udp(1, 2, 2, 2), 0);
        assert!(one(&mut h, &udp(1, 3, 2, 3), 10 * MS).is_some());
        assert_eq!(counter(&mut h, "early_drop"), 1);
        assert_eq!(counter(&mut h, "entries"), 2);
        // Assure both: both ways, 2 s old.
        for p in [2u16, 3] {
            one(&mut h, &udp(2, p, 1, p), 20 * MS);
            one(&mut h, &udp(1, p, 2, p), 3_000 * MS);
        }
        assert_eq!(one(&mut h, &udp(1, 4, 2, 4), 3_001 * MS), None);
        assert_eq!(counter(&mut h, "drop"), 1);
        let mut h = Harness::<ConntrackRace>::new(r#"{"max_entries": 1, "table_full": "drop"}"#, 1)
            .unwrap();
        one(&mut h, &udp(1, 1, 2, 1), 0);
        assert_eq!(one(&mut h, &udp(1, 2, 2, 2), 10 * MS), None);
    }

    #[test]
    fn flush_forgets_every_flow_and_status_reports() {
        let mut h = Harness::<ConntrackRace>::new("{}", 1).unwrap();
        one(&mut h, &udp(1, 1, 2, 2), 0);
        one(&mut h, &udp(2, 2, 1, 1), 5 * MS);
        let st = h.command(r#"{"cmd": "status"}"#, 6 * MS).unwrap();
        assert_eq!(st["entries"], 1);
        assert_eq!(st["flows"][0]["state"], "replied");
        assert_eq!(st["flows"][0]["flow"], "udp 10.0.0.1:1 > 10.0.0.2:2");
        assert_eq!(st["counters"]["new"], 1);
        assert_eq!(st["counters"]["found"], 1);
        assert_eq!(h.command(r#""flush""#, 7 * MS).unwrap()["flushed"], 1);
        assert_eq!(counter(&mut h, "entries"), 0);
        // Flushed: the next pair races again.
        one(&mut h, &udp(1, 1, 2, 2), 8 * MS);
        assert_eq!(one(&mut h, &udp(2, 2, 1, 1), 8 * MS), None);
        let e = h.command(r#"{"cmd": "reset"}"#, 9 * MS).unwrap_err();
        assert!(e.contains("\"status\" and \"flush\""), "{e}");
        assert!(h
            .command(r#"{"cmd": "status", "limit": -1}"#, 9 * MS)
            .unwrap_err()
            .contains("limit"));
        assert!(h.command("{}", 9 * MS).unwrap_err().contains("cmd"));
    }

    #[test]
    fn idle_entries_are_reclaimed_by_the_timer() {
        let mut h = Harness::<ConntrackRace>::new(r#"{"udp_timeout_ms": 1000}"#, 1).unwrap();
        for p in 0..50u16 {
            one(&mut h, &udp(1, p, 2, p), 0);
        }
        assert_eq!(counter(&mut h, "entries"), 50);
        assert_eq!(h.wake_at(), Some(SWEEP_EVERY_NS));
        let mut t = 0;
        while let Some(w) = h.wake_at() {
            t = w;
            h.run(t);
        }
        assert_eq!(
            t,
            1_000 * MS,
            "reclaimed at the first tick after the timeout"
        );
        assert_eq!(counter(&mut h, "entries"), 0);
        assert_eq!(counter(&mut h, "expired"), 50);
    }

    #[test]
    fn a_reload_hands_the_table_over() {
        let mut old = Harness::<ConntrackRace>::new("{}", 1).unwrap();
        assert_eq!(all_to_all(&mut old, 4, 0, 0), 6);
        let v6 = {
            let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xDD];
            f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&[0x13, 0x88, 0x13, 0x89, 0, 8, 0, 0]);
            f
        };
        one(&mut old, &v6, 10 * MS);
        let state = old.snapshot();
        // A new window: the flows are still known, so a re-run loses nothing.
        let mut new = Harness::<ConntrackRace>::new(r#"{"race_window_us": 5000}"#, 1).unwrap();
        new.restore(&state).unwrap();
        let st = new.command(r#""status""#, 20 * MS).unwrap();
        assert_eq!(st["entries"], 7, "{st}");
        assert_eq!(
            st["flows"][0]["flow"],
            "udp [fd00::1]:5000 > [fd00::2]:5001"
        );
        assert_eq!(all_to_all(&mut new, 4, 1_000 * MS, 0), 0);
        assert_eq!(new.snapshot().len(), state.len());
        // Deadlines survive: 30 s after the last packets they are gone.
        assert_eq!(all_to_all(&mut new, 4, 40_000 * MS, 0), 6);
        // A smaller table keeps the most recently seen.
        let mut small = Harness::<ConntrackRace>::new(r#"{"max_entries": 1}"#, 1).unwrap();
        small.restore(&state).unwrap();
        let st = small.command(r#""status""#, 20 * MS).unwrap();
        assert_eq!(
            st["flows"][0]["flow"],
            "udp [fd00::1]:5000 > [fd00::2]:5001"
        );
        assert!(small.restore(&[0; 41]).unwrap_err().contains("words"));
        let mut bad = state.clone();
        bad[32] = 9;
        assert!(small.restore(&bad).unwrap_err().contains("entries"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (c, f) in [
            (r#"{"protocols": []}"#, "protocols"),
            (r#"{"protocols": ["udp", "gre"]}"#, "protocols[1]"),
            (r#"{"clash_probability": 1.5}"#, "clash_probability"),
            (r#"{"udp_timeout_ms": 0}"#, "udp_timeout_ms"),
            (
                r#"{"udp_timeout_stream_ms": 100000000}"#,
                "udp_timeout_stream_ms",
            ),
            (r#"{"stream_after_ms": 100000000}"#, "stream_after_ms"),
            (r#"{"race_window_us": 40000000}"#, "race_window_us"),
            (r#"{"max_entries": 0}"#, "max_entries"),
            (r#"{"clash": "some"}"#, "clash"),
            (r#"{"table_full": "panic"}"#, "table_full"),
            (r#"{"window": 1}"#, "window"),
        ] {
            let e = Harness::<ConntrackRace>::new(c, 1).err().unwrap();
            assert!(e.contains(f), "{c}: {e}");
        }
    }
}
