//! Queue disciplines for plugins that decide each packet's departure when it arrives
//! (the `rate` shaper and the `trace` link): the host holds the packets, the plugin
//! keeps a *virtual* queue — the departure times it handed out — and the discipline
//! decides which packets enter it and which are dropped.
//!
//! - `drop_tail`: a packet that finds `queue_packets` packets or `queue_bytes` bytes
//!   still waiting is dropped.
//! - `codel` (RFC 8289, Mahimahi's `codel` with `target` and `interval`): a packet is
//!   dropped *at its dequeue time* when the sojourn times have stayed above
//!   `target_ms` for an `interval_ms`, then at intervals shrinking as 1/√count. The
//!   dequeue time and sojourn of a packet are known when it arrives (its departure),
//!   and FIFO order makes the dequeue order the arrival order, so the state machine
//!   runs exactly as at dequeue. A dropped packet uses no link time: the caller does
//!   not charge it. One approximation: RFC 8289 does not drop when less than an MTU is
//!   queued; here "queued" is what the packet found on arrival.
//! - `pie` (RFC 8033, Mahimahi's `pie` with `qdelay_ref` and `max_burst`): the drop
//!   probability is updated every 15 ms from the queueing delay (α = 0.125, β = 1.25,
//!   with the RFC's scaling for small probabilities and its decay when idle), and a
//!   packet is dropped on arrival with that probability unless a burst is allowed, the
//!   delay is low, or less than two MTUs are queued. The queueing delay is exact here:
//!   the packet's own wait.
//! - `infinite`: nothing is dropped (the host's `hold_packets` still bounds memory).
//! - `drop_head` (Mahimahi's `drophead`) cannot be a virtual queue: when a packet
//!   finds the queue full, it drops the packet at the head — one whose departure was
//!   handed out at its arrival and sits in the host's delay line, beyond any verdict —
//!   and whether a packet is dropped depends on arrivals *after* it. A plugin builds
//!   it on link ABI 1.1's parking instead (the `rate` plugin does): it parks every
//!   packet that finds the link busy, releases the head when the link is free, and
//!   drops the oldest parked one when a new one finds the queue full. [`Queue::new`]
//!   refuses it, naming the field.
//!
//! Every discipline also honours `queue_packets`/`queue_bytes` as a hard bound.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Which discipline.
#[derive(Deserialize, Serialize, Debug, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    DropTail,
    Codel,
    Pie,
    Infinite,
    /// Refused by [`Queue::new`] (see the module's docs): here so the error can say why.
    DropHead,
}

/// A discipline's settings, as a plugin's config carries them (units in the names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub kind: Kind,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    pub target_ms: f64,
    pub interval_ms: f64,
    pub qdelay_ref_ms: f64,
    pub max_burst_ms: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            kind: Kind::DropTail,
            packets: None,
            bytes: None,
            target_ms: 5.0,
            interval_ms: 100.0,
            qdelay_ref_ms: 15.0,
            max_burst_ms: 150.0,
        }
    }
}

/// What became of an arriving packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// In the queue: it leaves at the departure it was given.
    Enqueued,
    /// Dropped: the queue was full.
    Full,
    /// Dropped by the AQM (CoDel at its dequeue, PIE at its arrival).
    Aqm,
}

const MS: f64 = 1e6;
/// PIE's update period, α and β (RFC 8033).
const PIE_T_UPDATE_NS: u64 = 15_000_000;
const PIE_ALPHA: f64 = 0.125;
const PIE_BETA: f64 = 1.25;
/// A full-size packet, for the MTU guards.
const MTU: u64 = 1514;

#[derive(Debug, Clone, Default)]
struct Codel {
    first_above_ns: u64,
    dropping: bool,
    drop_next_ns: u64,
    count: u32,
    last_count: u32,
}

#[derive(Debug, Clone, Default)]
struct Pie {
    drop_prob: f64,
    qdelay_old_ns: u64,
    burst_allowance_ns: u64,
    last_update_ns: Option<u64>,
}

/// A virtual queue with its discipline.
#[derive(Debug, Clone)]
pub struct Queue {
    p: Params,
    /// Departure times and sizes of the packets still waiting.
    waiting: BinaryHeap<Reverse<(u64, u32)>>,
    waiting_bytes: u64,
    codel: Codel,
    pie: Pie,
}

fn positive_ms(field: &str, v: f64) -> Result<f64, String> {
    if v.is_finite() && v > 0.0 && v <= 60_000.0 {
        Ok(v)
    } else {
        Err(format!(
            "{field}: must be within 0..=60000 ms and above 0, got {v}"
        ))
    }
}

impl Queue {
    pub fn new(p: Params) -> Result<Queue, String> {
        if p.kind == Kind::DropHead {
            return Err("queue: drop_head is not a virtual queue: its head packet would already have its departure time in the host's delay line, beyond any verdict; build it on parking (as the rate plugin does) or use drop_tail, codel or pie (see the SDK's queue module)".into());
        }
        if p.packets == Some(0) {
            return Err("queue_packets: must be at least 1".into());
        }
        if p.bytes == Some(0) {
            return Err("queue_bytes: must be at least 1".into());
        }
        positive_ms("target_ms", p.target_ms)?;
        positive_ms("interval_ms", p.interval_ms)?;
        positive_ms("qdelay_ref_ms", p.qdelay_ref_ms)?;
        if !(p.max_burst_ms.is_finite() && (0.0..=60_000.0).contains(&p.max_burst_ms)) {
            return Err(format!(
                "max_burst_ms: must be within 0..=60000 ms, got {}",
                p.max_burst_ms
            ));
        }
        let pie = Pie {
            burst_allowance_ns: (p.max_burst_ms * MS) as u64,
            ..Pie::default()
        };
        Ok(Queue {
            p,
            waiting: BinaryHeap::new(),
            waiting_bytes: 0,
            codel: Codel::default(),
            pie,
        })
    }

    /// Packets and bytes waiting at `now_ns` (after forgetting those gone by then).
    pub fn backlog(&mut self, now_ns: u64) -> (usize, u64) {
        while let Some(Reverse((t, b))) = self.waiting.peek().copied() {
            if t > now_ns {
                break;
            }
            self.waiting.pop();
            self.waiting_bytes -= u64::from(b);
        }
        (self.waiting.len(), self.waiting_bytes)
    }

    /// Decide the fate of a packet of `bytes` arriving at `arrival_ns` that would leave
    /// at `depart_ns`; an enqueued packet is counted as waiting until then.
    pub fn offer(&mut self, arrival_ns: u64, depart_ns: u64, bytes: u32, rng: &mut Rng) -> Fate {
        let (n, b) = self.backlog(arrival_ns);
        let full = self.p.packets.is_some_and(|l| n as u64 >= l)
            || self.p.bytes.is_some_and(|l| b + u64::from(bytes) > l);
        if full {
            return Fate::Full;
        }
        let sojourn = depart_ns.saturating_sub(arrival_ns);
        let aqm = match self.p.kind {
            Kind::Codel => self.codel_drops(depart_ns, sojourn, b),
            Kind::Pie => self.pie_drops(arrival_ns, sojourn, b, rng),
            Kind::DropTail | Kind::Infinite | Kind::DropHead => false,
        };
        if aqm {
            return Fate::Aqm;
        }
        if depart_ns > arrival_ns {
            self.waiting.push(Reverse((depart_ns, bytes)));
            self.waiting_bytes += u64::from(bytes);
        }
        Fate::Enqueued
    }

    fn codel_control_law(&self, t: u64, count: u32) -> u64 {
        t + (self.p.interval_ms * MS / f64::from(count.max(1)).sqrt()) as u64
    }

    /// CoDel's decision for the packet dequeued at `now` after `sojourn`.
    fn codel_drops(&mut self, now: u64, sojourn: u64, backlog_bytes: u64) -> bool {
        let target = (self.p.target_ms * MS) as u64;
        let interval = (self.p.interval_ms * MS) as u64;
        let c = &mut self.codel;
        let ok_to_drop = if sojourn < target || backlog_bytes <= MTU {
            c.first_above_ns = 0;
            false
        } else if c.first_above_ns == 0 {
            c.first_above_ns = now + interval;
            false
        } else {
            now >= c.first_above_ns
        };
        if c.dropping {
            if !ok_to_drop {
                c.dropping = false;
                return false;
            }
            if now >= c.drop_next_ns {
                c.count = c.count.saturating_add(1);
                let (next, count) = (c.drop_next_ns, c.count);
                self.codel.drop_next_ns = self.codel_control_law(next, count);
                return true;
            }
            false
        } else if ok_to_drop {
            c.dropping = true;
            let delta = c.count.saturating_sub(c.last_count);
            c.count = if delta > 1 && now.saturating_sub(c.drop_next_ns) < 16 * interval {
                delta
            } else {
                1
            };
            c.last_count = c.count;
            let count = c.count;
            self.codel.drop_next_ns = self.codel_control_law(now, count);
            true
        } else {
            false
        }
    }

    /// PIE's decision for a packet arriving at `now` that will wait `qdelay`.
    fn pie_drops(&mut self, now: u64, qdelay: u64, backlog_bytes: u64, rng: &mut Rng) -> bool {
        let qref = self.p.qdelay_ref_ms * MS;
        let max_burst = (self.p.max_burst_ms * MS) as u64;
        let pie = &mut self.pie;
        let last = *pie.last_update_ns.get_or_insert(now);
        // Every update period that ended by now, with the delay this packet sees (the
        // queue's delay then); a long idle time is at most a few thousand updates.
        let periods = ((now - last) / PIE_T_UPDATE_NS).min(4096);
        for _ in 0..periods {
            let q = qdelay as f64;
            let old = pie.qdelay_old_ns as f64;
            let mut p = PIE_ALPHA * (q - qref) / 1e9 + PIE_BETA * (q - old) / 1e9;
            p /= match pie.drop_prob {
                d if d < 0.000_001 => 2048.0,
                d if d < 0.000_01 => 512.0,
                d if d < 0.000_1 => 128.0,
                d if d < 0.001 => 32.0,
                d if d < 0.01 => 8.0,
                d if d < 0.1 => 2.0,
                _ => 1.0,
            };
            pie.drop_prob = (pie.drop_prob + p).clamp(0.0, 1.0);
            if qdelay == 0 && pie.qdelay_old_ns == 0 {
                pie.drop_prob *= 0.98;
            }
            pie.qdelay_old_ns = qdelay;
            pie.burst_allowance_ns = pie.burst_allowance_ns.saturating_sub(PIE_T_UPDATE_NS);
            if pie.drop_prob == 0.0 && (qdelay as f64) < qref / 2.0 && old < qref / 2.0 {
                pie.burst_allowance_ns = max_burst;
            }
        }
        if periods > 0 {
            pie.last_update_ns = Some(last + periods * PIE_T_UPDATE_NS);
            if now - last >= 4096 * PIE_T_UPDATE_NS {
                pie.last_update_ns = Some(now);
            }
        }
        if pie.burst_allowance_ns > 0
            || ((pie.qdelay_old_ns as f64) < qref / 2.0 && pie.drop_prob < 0.2)
            || backlog_bytes <= 2 * MTU
        {
            return false;
        }
        rng.next_f64() < pie.drop_prob
    }

    /// The current drop probability (PIE) and drop count (CoDel), for counters and tests.
    pub fn aqm_state(&self) -> (f64, u32) {
        (self.pie.drop_prob, self.codel.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_tail_counts_packets_and_bytes_still_waiting() {
        let mut q = Queue::new(Params {
            packets: Some(2),
            bytes: Some(2500),
            ..Params::default()
        })
        .unwrap();
        let mut rng = Rng::new(1);
        assert_eq!(q.offer(0, 100, 1000, &mut rng), Fate::Enqueued);
        assert_eq!(q.offer(0, 200, 1000, &mut rng), Fate::Enqueued);
        assert_eq!(q.offer(0, 300, 100, &mut rng), Fate::Full);
        // At 100 the first has left: room again, but not for 1600 bytes.
        assert_eq!(q.offer(100, 300, 1600, &mut rng), Fate::Full);
        assert_eq!(q.offer(100, 300, 1000, &mut rng), Fate::Enqueued);
        assert_eq!(q.backlog(250), (1, 1000));
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (p, field) in [
            (
                Params {
                    packets: Some(0),
                    ..Params::default()
                },
                "queue_packets",
            ),
            (
                Params {
                    target_ms: 0.0,
                    ..Params::default()
                },
                "target_ms",
            ),
            (
                Params {
                    kind: Kind::DropHead,
                    ..Params::default()
                },
                "queue: drop_head is not a virtual queue",
            ),
            (
                Params {
                    interval_ms: f64::NAN,
                    ..Params::default()
                },
                "interval_ms",
            ),
            (
                Params {
                    max_burst_ms: -1.0,
                    ..Params::default()
                },
                "max_burst_ms",
            ),
        ] {
            assert!(Queue::new(p).unwrap_err().contains(field));
        }
    }
}
