//! `trace`: a trace-driven link, as Mahimahi's `mm-link`. The trace lists delivery
//! opportunities, one per line in Mahimahi's format: the time in ms (from the start of
//! the trace) at which the link may deliver 1504 bytes. Several lines with the same
//! time are several opportunities then; an opportunity nobody uses is wasted; a packet
//! larger than what is left of an opportunity uses the next ones too (byte-level
//! accounting, as Mahimahi's `link_queue`). A packet is charged its IP length (the
//! frame less its 14-byte Ethernet header), as Mahimahi sees IP packets.
//!
//! - `trace_ms`: the opportunities (the spec may give `trace_file`, a path to a
//!   Mahimahi trace, which the host reads into `trace_ms`).
//! - `once` (default false): play the trace once; after its last opportunity nothing
//!   is delivered (what arrives then is dropped and counted as `trace_ended`).
//!   Otherwise it loops with the period of its last timestamp, as Mahimahi does.
//! - The queue in front of the link ([`synthnet_sdk::queue`]): `queue` is `infinite`
//!   by default (Mahimahi's default), or `drop_tail` (`queue_packets`,
//!   `queue_bytes`), `codel` (`target_ms`, `interval_ms`) or `pie` (`qdelay_ref_ms`,
//!   `max_burst_ms`).
//!
//! The trace starts with the first packet the stage sees.

use synthnet_sdk::queue::{self, Fate, Queue};
use synthnet_sdk::{export_plugin, Batch, Plugin, Rng};

pub use synthnet_builtins::trace::{Config, MAX_TRACE_LEN};
use synthnet_builtins::Builtin;

/// Bytes one opportunity delivers (Mahimahi's `PACKET_SIZE`).
pub const OPPORTUNITY_BYTES: u32 = 1504;
const MS: u64 = 1_000_000;

/// Where the link is in the trace: opportunity `k` (counting across loops) with
/// `left` bytes of it unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    k: u64,
    left: u32,
}

pub struct Trace {
    trace_ns: Vec<u64>,
    period_ns: u64,
    once: bool,
    start_ns: Option<u64>,
    cursor: Cursor,
    queue: Queue,
    rng: Rng,
}

impl Trace {
    /// When opportunity `k` comes (`None`: after the end of a trace played once).
    fn time(&self, k: u64) -> Option<u64> {
        let n = self.trace_ns.len() as u64;
        let (lap, i) = (k / n, (k % n) as usize);
        if self.once && lap > 0 {
            return None;
        }
        Some(self.start_ns? + lap * self.period_ns + self.trace_ns[i])
    }

    /// The first opportunity at or after `t`.
    fn first_at(&self, t: u64) -> Option<u64> {
        let start = self.start_ns?;
        let rel = t.saturating_sub(start);
        let n = self.trace_ns.len() as u64;
        let lap = rel / self.period_ns;
        let within = rel - lap * self.period_ns;
        let i = self.trace_ns.partition_point(|&x| x < within) as u64;
        let k = lap * n + i;
        if self.once && k >= n {
            None
        } else {
            Some(k)
        }
    }

    /// When a packet of `bytes` arriving at `t` is delivered, and where the link is
    /// then (`None`: never — the trace ended).
    fn deliver(&self, t: u64, mut bytes: u32) -> Option<(u64, Cursor)> {
        let mut c = self.cursor;
        // What is left of an opportunity that came before the packet is wasted.
        if self.time(c.k)? < t {
            c = Cursor {
                k: self.first_at(t)?,
                left: OPPORTUNITY_BYTES,
            };
        }
        loop {
            let take = bytes.min(c.left);
            bytes -= take;
            c.left -= take;
            let at = self.time(c.k)?;
            if c.left == 0 {
                c = Cursor {
                    k: c.k + 1,
                    left: OPPORTUNITY_BYTES,
                };
            }
            if bytes == 0 {
                return Some((at, c));
            }
        }
    }
}

impl Plugin for Trace {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &["queue_drops", "aqm_drops", "trace_ended"];
    const STATE_VERSION: u32 = 1;

    fn new(c: Config, seed: u64) -> Result<Self, String> {
        c.validate()?;
        // The period: the last time (validate checked it is above 0).
        let last = *c.trace_ms.last().unwrap_or(&0);
        let queue = Queue::new(queue::Params {
            kind: c.queue,
            packets: c.queue_packets,
            bytes: c.queue_bytes,
            target_ms: c.target_ms,
            interval_ms: c.interval_ms,
            qdelay_ref_ms: c.qdelay_ref_ms,
            max_burst_ms: c.max_burst_ms,
        })?;
        Ok(Trace {
            trace_ns: c.trace_ms.iter().map(|ms| ms * MS).collect(),
            period_ns: last * MS,
            once: c.once,
            start_ns: None,
            cursor: Cursor {
                k: 0,
                left: OPPORTUNITY_BYTES,
            },
            queue,
            rng: Rng::new(seed),
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        let (mut full, mut aqm, mut ended) = (0, 0, 0);
        for i in 0..batch.len() {
            let t = batch.arrival_ns(i);
            self.start_ns.get_or_insert(t);
            let bytes = batch.wire_len(i).saturating_sub(14).max(1);
            let Some((at, cursor)) = self.deliver(t, bytes) else {
                batch.discard(i);
                ended += 1;
                continue;
            };
            match self.queue.offer(t, at, bytes, &mut self.rng) {
                Fate::Enqueued => {
                    self.cursor = cursor;
                    batch.send(i, 0, at);
                }
                Fate::Full => {
                    batch.discard(i);
                    full += 1;
                }
                Fate::Aqm => {
                    batch.discard(i);
                    aqm += 1;
                }
            }
        }
        batch.count(0, full);
        batch.count(1, aqm);
        batch.count(2, ended);
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut v = self.start_ns.unwrap_or(u64::MAX).to_le_bytes().to_vec();
        v.extend_from_slice(&self.cursor.k.to_le_bytes());
        v.extend_from_slice(&self.cursor.left.to_le_bytes());
        v
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        if state.len() != 20 {
            return Err("trace state must be 20 bytes".into());
        }
        let u = |i: usize| u64::from_le_bytes(state[i..i + 8].try_into().unwrap_or([0; 8]));
        self.start_ns = Some(u(0)).filter(|&s| s != u64::MAX);
        self.cursor = Cursor {
            k: u(8),
            left: u32::from_le_bytes(state[16..20].try_into().unwrap_or([0; 4]))
                .min(OPPORTUNITY_BYTES),
        };
        Ok(())
    }
}

export_plugin!(Trace);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    fn cfg(trace: &[u64], extra: &str) -> String {
        let list: Vec<String> = trace.iter().map(|t| t.to_string()).collect();
        format!(r#"{{"trace_ms": [{}]{extra}}}"#, list.join(","))
    }

    /// A Mahimahi-style trace of `secs` seconds: per ms, 0 to 4 opportunities, with
    /// slow swings (a cellular link's capacity wanders) from a fixed seed.
    fn cellular(secs: u64) -> Vec<u64> {
        let mut rng = Rng::new(99);
        let mut out = Vec::new();
        for ms in 1..=secs * 1000 {
            // Capacity swings between ~1 and ~4 opportunities per ms over ~2 s.
            let phase = (ms as f64 / 2000.0 * std::f64::consts::PI).sin() * 1.5 + 2.5;
            let whole = phase as u64;
            let extra = (rng.next_f64() < phase - whole as f64) as u64;
            for _ in 0..whole + extra {
                out.push(ms);
            }
        }
        out
    }

    #[test]
    fn a_backlogged_link_delivers_exactly_the_traces_capacity_each_second() {
        let trace = cellular(10);
        let mut h = Harness::<Trace>::new(&cfg(&trace, ""), 1).unwrap();
        // A backlog that never runs dry: 60,000 full-size frames at t = 0.
        let n = 60_000;
        for _ in 0..n {
            h.push(&[0; 1514], 0);
        }
        let out = h.run(0);
        assert!(out.iter().all(|o| o.port.is_some()));
        for sec in 0..10u64 {
            let opps = trace
                .iter()
                .filter(|&&t| t > sec * 1000 && t <= (sec + 1) * 1000)
                .count() as f64;
            let delivered = out
                .iter()
                .filter(|o| o.at_ns > sec * 1_000_000_000 && o.at_ns <= (sec + 1) * 1_000_000_000)
                .count() as f64
                * 1500.0;
            let capacity = opps * OPPORTUNITY_BYTES as f64;
            eprintln!(
                "figures: trace second {sec}: delivered/capacity {:.5}",
                delivered / capacity
            );
            assert!(
                (delivered - capacity).abs() / capacity < 0.01,
                "second {sec}: {delivered} bytes delivered, capacity {capacity}"
            );
        }
    }

    #[test]
    fn opportunities_are_shared_wasted_and_looped_as_mahimahi() {
        // One opportunity at 1 ms and one at 3 ms; period 3 ms.
        let mut h = Harness::<Trace>::new(&cfg(&[1, 3], ""), 1).unwrap();
        // Two 500-byte IP packets share the first opportunity; a third fills it and
        // spills into the next one.
        for _ in 0..3 {
            h.push(&[0; 514], 0);
        }
        h.push(&[0; 714], 0);
        let at: Vec<u64> = h.run(0).iter().map(|o| o.at_ns / MS).collect();
        assert_eq!(at, [1, 1, 1, 3]);
        // Arriving at 3.5 ms: what was left at 3 ms is wasted; next come 4 (=1+3), 6.
        h.push(&[0; 1514], 3_500_000);
        h.push(&[0; 1514], 3_500_000);
        let at: Vec<u64> = h.run(0).iter().map(|o| o.at_ns / MS).collect();
        assert_eq!(at, [4, 6]);
    }

    #[test]
    fn a_trace_played_once_ends() {
        let mut h = Harness::<Trace>::new(&cfg(&[1, 2], r#", "once": true"#), 1).unwrap();
        for _ in 0..3 {
            h.push(&[0; 1514], 0);
        }
        let out = h.run(0);
        assert_eq!(out.iter().filter(|o| o.port.is_some()).count(), 2);
        assert_eq!(h.counters()[2].1, 1);
    }

    #[test]
    fn bad_traces_name_the_field() {
        for c in [
            r#"{"trace_ms": []}"#,
            r#"{"trace_ms": [5, 3]}"#,
            r#"{"trace_ms": [0]}"#,
        ] {
            let e = Harness::<Trace>::new(c, 1).err().unwrap();
            assert!(e.contains("trace_ms"), "{c}: {e}");
        }
    }
}
