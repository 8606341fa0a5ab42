//! `tx-stall`: a transmit path that stops for good after heavy use, as a virtio NIC
//! whose TX queue hangs after ~360 GB (the seed report; QEMU #1365, cloud-hypervisor
//! #2807, openvmm #2821: leaked TX descriptors deplete the ring until a reset).
//!
//! The stage forwards until `after_bytes / byte_scale` bytes have left since the last
//! reset (the packet that reaches the count still leaves). From then on nothing leaves:
//! the next `backlog_packets` packets (1000, the default `txqueuelen`, what `tc -s
//! qdisc` showed as `backlog 1000p`) are **parked** in the host (ABI 1.1) and the rest
//! are dropped, counted like the qdisc's `dropped`. The stage is one direction of the
//! bridge, so the other direction keeps working: put it on the direction whose
//! transmitter hangs (a host that still receives, answers nothing).
//!
//! Nothing recovers on its own (`restart veth` did not help either): every
//! `watchdog_ms` while stalled with a backlog, `tx_timeout` counts one more kernel
//! `NETDEV WATCHDOG: transmit queue 0 timed out`. Recovery is a reset:
//!
//! - the `{"cmd": "reset"}` command (HTTP API, `synthnet ctl`), or
//! - a reload that replaces the stage (any changed field; `generation` exists to change)
//!   or a restart after a fault: the new instance starts transmitting;
//!
//! and then the backlog is sent (`on_reset: "flush"`, the default; in order, before any
//! new packet) or dropped (`"drop"`). The byte count starts again: the stall comes back
//! after the same volume, as the report says ("once it happens to a veth, it will
//! happen again"). `{"cmd": "status"}` tells the state and the counters.
//!
//! Counters, as `tc -s qdisc` and `ip -s link` name them: `sent_bytes`, `sent_packets`
//! (TX bytes/packets: what left the stage, the flushed backlog included), `dropped`,
//! `backlog_packets`, `backlog_bytes` (gauges), `stalled` (gauge, 0 or 1), `stalls`,
//! `tx_timeout`, `resets`. Bytes are wire bytes: a GSO super-packet counts the bytes
//! of all its segments, and one packet.

use serde::Deserialize;
use serde_json::{json, Value};
use synthnet_sdk::{export_plugin, state, Batch, Plugin, NS_PER_MS};

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Bytes transmitted before the stall (the report: ~360 GB).
    pub after_bytes: u64,
    /// Divides `after_bytes`, to reach the trigger in a test (1000: 360 MB).
    pub byte_scale: u64,
    /// Packets held while stalled (`txqueuelen`); the rest are dropped.
    pub backlog_packets: u32,
    /// What a reset does with the backlog: "flush" (send it) or "drop".
    pub on_reset: String,
    /// How often the watchdog counts a `tx_timeout` while stalled with a backlog, ms
    /// (the kernel's `dev_watchdog` default: 5 s). 0 = never.
    pub watchdog_ms: u64,
    /// Not used by the stage: change it to make a reload replace (and so reset) it.
    pub generation: u64,
}

/// The report's volume: eth2 stopped after 359,370,007,989 bytes.
pub const REPORT_BYTES: u64 = 360_000_000_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            after_bytes: REPORT_BYTES,
            byte_scale: 1,
            backlog_packets: 1000,
            on_reset: "flush".into(),
            watchdog_ms: 5000,
            generation: 0,
        }
    }
}

/// Most packets the backlog may hold: the host's largest hold limit (2^24); the
/// stage's `limits.hold_packets` (default 65,536) bounds it further.
const MAX_BACKLOG: u32 = 1 << 24;
const MAX_WATCHDOG_MS: u64 = 86_400_000;

mod c {
    pub(crate) const SENT_BYTES: usize = 0;
    pub(crate) const SENT_PACKETS: usize = 1;
    pub(crate) const DROPPED: usize = 2;
    pub(crate) const BACKLOG_PACKETS: usize = 3;
    pub(crate) const BACKLOG_BYTES: usize = 4;
    pub(crate) const STALLED: usize = 5;
    pub(crate) const STALLS: usize = 6;
    pub(crate) const TX_TIMEOUT: usize = 7;
    pub(crate) const RESETS: usize = 8;
    pub(crate) const N: usize = 9;
}

pub struct TxStall {
    threshold_bytes: u64,
    backlog_max: u32,
    flush_on_reset: bool,
    watchdog_ns: u64,
    /// Bytes sent since the last reset.
    since_reset_bytes: u64,
    /// When the stall began, if stalled.
    stalled_since: Option<u64>,
    backlog: u64,
    backlog_bytes: u64,
    /// The first call resets: a new instance (reload, restart) may find packets its
    /// predecessor parked. `Some((packets, bytes))` when known from the hand-over.
    first_call: Option<Option<(u64, u64)>>,
    /// Counter values: totals, and what the host has been told.
    values: [u64; c::N],
    published: [u64; c::N],
}

impl TxStall {
    fn gauges(&mut self) {
        self.values[c::BACKLOG_PACKETS] = self.backlog;
        self.values[c::BACKLOG_BYTES] = self.backlog_bytes;
        self.values[c::STALLED] = self.stalled_since.is_some() as u64;
    }

    /// Tell the host what changed. Its counters only add, so gauges go as the
    /// difference to the last value published (wrapping).
    fn publish(&mut self, batch: &mut Batch<'_>) {
        self.gauges();
        batch.publish(&self.values, &mut self.published);
    }

    /// Resume: the backlog is sent or dropped, and the byte count starts again.
    /// `known`: the backlog's size when this instance knows it (else: whatever the host
    /// holds, uncounted).
    fn reset(&mut self, batch: &mut Batch<'_>, known: Option<(u64, u64)>) -> (u64, u64) {
        let (n, bytes) = known.unwrap_or((self.backlog, self.backlog_bytes));
        if self.flush_on_reset {
            batch.release_parked(batch.now_ns(), 0);
            self.values[c::SENT_PACKETS] += n;
            self.values[c::SENT_BYTES] += bytes;
        } else {
            batch.drop_parked(0);
            self.values[c::DROPPED] += n;
        }
        self.values[c::RESETS] += 1;
        self.backlog = 0;
        self.backlog_bytes = 0;
        self.stalled_since = None;
        self.since_reset_bytes = 0;
        batch.cancel_wake();
        (n, bytes)
    }

    fn first_call(&mut self, batch: &mut Batch<'_>) {
        if let Some(known) = self.first_call.take() {
            self.reset(batch, known);
            // Only a predecessor's backlog makes this a reset worth counting.
            if known.is_none() {
                self.values[c::RESETS] -= 1;
            }
        }
    }

    fn status(&self, now: u64) -> Value {
        let names = <Self as Plugin>::COUNTERS;
        let counters: serde_json::Map<String, Value> = names
            .iter()
            .enumerate()
            .map(|(i, n)| ((*n).to_string(), self.values[i].into()))
            .collect();
        json!({
            "state": if self.stalled_since.is_some() { "stalled" } else { "running" },
            "stalled_for_ms": self.stalled_since.map(|s| now.saturating_sub(s) / NS_PER_MS),
            "bytes_until_stall": self.threshold_bytes.saturating_sub(self.since_reset_bytes),
            "backlog_packets": self.backlog,
            "backlog_bytes": self.backlog_bytes,
            "backlog_limit_packets": self.backlog_max,
            "counters": counters,
        })
    }
}

impl Plugin for TxStall {
    type Config = Config;
    const COUNTERS: &'static [&'static str] = &[
        "sent_bytes",
        "sent_packets",
        "dropped",
        "backlog_packets",
        "backlog_bytes",
        "stalled",
        "stalls",
        "tx_timeout",
        "resets",
    ];
    /// The backlog's size goes to the next instance, so a reload that resets counts
    /// what it flushes or drops.
    const STATE_VERSION: u32 = 1;

    fn new(cfg: Config, _seed: u64) -> Result<Self, String> {
        if cfg.byte_scale == 0 {
            return Err("byte_scale: must be at least 1 (it divides after_bytes)".into());
        }
        if cfg.after_bytes / cfg.byte_scale == 0 {
            return Err(format!(
                "after_bytes: {} bytes / byte_scale {} is 0: the stage would stall at once",
                cfg.after_bytes, cfg.byte_scale
            ));
        }
        if cfg.backlog_packets > MAX_BACKLOG {
            return Err(format!(
                "backlog_packets: must be within 0..={MAX_BACKLOG}, got {}",
                cfg.backlog_packets
            ));
        }
        let flush_on_reset = match cfg.on_reset.as_str() {
            "flush" => true,
            "drop" => false,
            other => return Err(format!("on_reset: \"flush\" or \"drop\", got {other:?}")),
        };
        if cfg.watchdog_ms > MAX_WATCHDOG_MS {
            return Err(format!(
                "watchdog_ms: must be at most a day ({MAX_WATCHDOG_MS}), got {}",
                cfg.watchdog_ms
            ));
        }
        Ok(TxStall {
            threshold_bytes: cfg.after_bytes / cfg.byte_scale,
            backlog_max: cfg.backlog_packets,
            flush_on_reset,
            watchdog_ns: cfg.watchdog_ms * NS_PER_MS,
            since_reset_bytes: 0,
            stalled_since: None,
            backlog: 0,
            backlog_bytes: 0,
            first_call: Some(None),
            values: [0; c::N],
            published: [0; c::N],
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        self.first_call(batch);
        for i in 0..batch.len() {
            let len = batch.wire_len(i) as u64;
            if self.stalled_since.is_none() {
                batch.forward(i);
                self.values[c::SENT_PACKETS] += 1;
                self.values[c::SENT_BYTES] += len;
                self.since_reset_bytes += len;
                if self.since_reset_bytes >= self.threshold_bytes {
                    let t = batch.arrival_ns(i);
                    self.stalled_since = Some(t);
                    self.values[c::STALLS] += 1;
                    if self.watchdog_ns > 0 {
                        batch.wake_at(t + self.watchdog_ns);
                    }
                }
            } else if self.backlog < self.backlog_max as u64 {
                batch.park(i, 0);
                self.backlog += 1;
                self.backlog_bytes += len;
            } else {
                batch.discard(i);
                self.values[c::DROPPED] += 1;
            }
        }
        self.publish(batch);
    }

    fn tick(&mut self, batch: &mut Batch<'_>) {
        self.first_call(batch);
        if self.stalled_since.is_some() && self.watchdog_ns > 0 {
            if self.backlog > 0 {
                self.values[c::TX_TIMEOUT] += 1;
            }
            batch.wake_at(batch.now_ns() + self.watchdog_ns);
        }
        self.publish(batch);
    }

    fn command(&mut self, cmd: &Value, batch: &mut Batch<'_>) -> Result<Value, String> {
        let name = cmd
            .get("cmd")
            .and_then(Value::as_str)
            .or_else(|| cmd.as_str())
            .ok_or("a command is {\"cmd\": \"status\"} or {\"cmd\": \"reset\"}")?;
        self.first_call(batch);
        let reply = match name {
            "status" => self.status(batch.now_ns()),
            "reset" => {
                let was = if self.stalled_since.is_some() {
                    "stalled"
                } else {
                    "running"
                };
                let (n, bytes) = self.reset(batch, None);
                json!({
                    "was": was,
                    if self.flush_on_reset { "flushed_packets" } else { "dropped_packets" }: n,
                    "backlog_bytes": bytes,
                })
            }
            other => {
                return Err(format!(
                    "unknown command {other:?}: tx-stall takes \"status\" and \"reset\""
                ))
            }
        };
        self.publish(batch);
        Ok(reply)
    }

    fn snapshot(&self) -> Vec<u8> {
        state::encode(&[self.backlog, self.backlog_bytes])
    }

    fn restore(&mut self, s: &[u8]) -> Result<(), String> {
        let [n, bytes] = state::decode::<2>(s, "tx-stall")?;
        self.first_call = Some(Some((n, bytes)));
        Ok(())
    }
}

export_plugin!(TxStall);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::{Harness, Output};

    const MS: u64 = NS_PER_MS;

    fn counter(h: &mut Harness<TxStall>, name: &str) -> u64 {
        h.counters()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// `n` packets of `len` bytes, numbered in their first 4 bytes from `first`, one per
    /// µs from `t`; the outputs of one run at the last arrival.
    fn send(h: &mut Harness<TxStall>, first: u32, n: u32, len: usize, t: u64) -> Vec<Output> {
        for k in 0..n {
            let mut p = vec![0u8; len];
            p[..4].copy_from_slice(&(first + k).to_be_bytes());
            h.push(&p, t + k as u64 * 1000);
        }
        h.run(t + n as u64 * 1000)
    }

    fn ids(out: &[Output]) -> Vec<u32> {
        out.iter()
            .filter(|o| o.port.is_some())
            .map(|o| u32::from_be_bytes(o.bytes[..4].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn stalls_after_the_byte_count_parks_the_backlog_and_drops_the_rest() {
        // 100 kB at scale 1000 = 100 bytes: the packet that reaches it still leaves.
        let cfg = r#"{"after_bytes": 100000, "byte_scale": 1000, "backlog_packets": 5}"#;
        let mut h = Harness::<TxStall>::new(cfg, 1).unwrap();
        let out = send(&mut h, 0, 4, 30, 0);
        assert_eq!(ids(&out), [0, 1, 2, 3]);
        assert_eq!(counter(&mut h, "stalled"), 1);
        assert_eq!(counter(&mut h, "stalls"), 1);
        let out = send(&mut h, 4, 8, 30, MS);
        assert!(ids(&out).is_empty(), "nothing leaves while stalled");
        assert_eq!(h.parked(), 5);
        assert_eq!(out.iter().filter(|o| o.port.is_none()).count(), 3);
        for (name, v) in [
            ("sent_packets", 4),
            ("sent_bytes", 120),
            ("backlog_packets", 5),
            ("backlog_bytes", 150),
            ("dropped", 3),
        ] {
            assert_eq!(counter(&mut h, name), v, "{name}");
        }
        // Still stalled much later: no self-recovery.
        let out = send(&mut h, 12, 2, 30, 60_000 * MS);
        assert!(ids(&out).is_empty());
        assert_eq!(counter(&mut h, "dropped"), 5);
    }

    #[test]
    fn reset_flushes_the_backlog_in_order_then_traffic_flows_until_the_next_stall() {
        let cfg = r#"{"after_bytes": 100, "backlog_packets": 3}"#;
        let mut h = Harness::<TxStall>::new(cfg, 1).unwrap();
        send(&mut h, 0, 2, 50, 0);
        send(&mut h, 2, 5, 50, MS);
        let st = h.command(r#"{"cmd": "status"}"#, 2 * MS).unwrap();
        assert_eq!(st["state"], "stalled");
        assert_eq!(st["backlog_packets"], 3);
        let r = h.command(r#"{"cmd": "reset"}"#, 3 * MS).unwrap();
        assert_eq!(r["was"], "stalled");
        assert_eq!(r["flushed_packets"], 3);
        let flushed = h.take_outputs();
        assert_eq!(ids(&flushed), [2, 3, 4]);
        assert!(flushed.iter().all(|o| o.at_ns == 3 * MS));
        assert_eq!(h.parked(), 0);
        assert_eq!(counter(&mut h, "sent_packets"), 5);
        assert_eq!(counter(&mut h, "backlog_packets"), 0);
        assert_eq!(counter(&mut h, "stalled"), 0);
        assert_eq!(counter(&mut h, "resets"), 1);
        // The count starts again: 100 more bytes, then stalled again.
        let out = send(&mut h, 10, 3, 50, 4 * MS);
        assert_eq!(ids(&out), [10, 11]);
        assert_eq!(h.parked(), 1);
        assert_eq!(counter(&mut h, "stalls"), 2);
    }

    #[test]
    fn reset_with_on_reset_drop_drops_the_backlog() {
        let cfg = r#"{"after_bytes": 10, "on_reset": "drop"}"#;
        let mut h = Harness::<TxStall>::new(cfg, 1).unwrap();
        send(&mut h, 0, 1, 60, 0);
        send(&mut h, 1, 1500, 60, MS);
        assert_eq!(h.parked(), 1000, "the default backlog: txqueuelen 1000");
        assert_eq!(counter(&mut h, "dropped"), 500);
        let r = h.command(r#""reset""#, 10 * MS).unwrap();
        assert_eq!(r["dropped_packets"], 1000);
        assert!(h.take_outputs().is_empty());
        assert_eq!((h.parked(), counter(&mut h, "dropped")), (0, 1500));
        let r = h.command(r#""reset""#, 11 * MS).unwrap();
        assert_eq!(
            (r["was"].as_str(), r["dropped_packets"].as_u64()),
            (Some("running"), Some(0))
        );
    }

    #[test]
    fn the_watchdog_counts_tx_timeouts_while_stalled_with_a_backlog() {
        let cfg = r#"{"after_bytes": 10, "watchdog_ms": 5000}"#;
        let mut h = Harness::<TxStall>::new(cfg, 1).unwrap();
        send(&mut h, 0, 1, 60, 0);
        assert_eq!(h.wake_at(), Some(5000 * MS));
        h.run(5000 * MS);
        assert_eq!(counter(&mut h, "tx_timeout"), 0, "no backlog yet");
        send(&mut h, 1, 1, 60, 6000 * MS);
        h.run(10_000 * MS);
        h.run(15_000 * MS);
        assert_eq!(counter(&mut h, "tx_timeout"), 2);
        h.command(r#""reset""#, 16_000 * MS).unwrap();
        assert_eq!(h.wake_at(), None, "a reset disarms the watchdog");
    }

    #[test]
    fn a_new_instance_resets_what_its_predecessor_parked() {
        let cfg = r#"{"after_bytes": 10, "backlog_packets": 4}"#;
        let mut old = Harness::<TxStall>::new(cfg, 1).unwrap();
        send(&mut old, 0, 1, 60, 0);
        send(&mut old, 1, 4, 60, MS);
        assert_eq!(old.parked(), 4);
        let state = old.snapshot();
        // A reload: the new instance takes the hand-over and, at its first call,
        // releases everything parked (the host keeps the packets across the swap).
        let mut new =
            Harness::<TxStall>::new(&cfg.replace('}', r#", "generation": 1}"#), 1).unwrap();
        new.restore(&state).unwrap();
        let out = new.run(2 * MS);
        assert_eq!(
            out.iter().filter(|o| o.port.is_some()).count(),
            0,
            "the new harness has no parked packets of its own"
        );
        assert_eq!(counter(&mut new, "sent_packets"), 4);
        assert_eq!(counter(&mut new, "resets"), 1);
        // Without a hand-over (a restart after a fault) it still releases all.
        let mut fresh = Harness::<TxStall>::new(cfg, 1).unwrap();
        fresh.run(0);
        assert_eq!(counter(&mut fresh, "resets"), 0);
        assert!(new
            .restore(&[1, 2, 3])
            .unwrap_err()
            .contains("tx-stall state"));
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (c, f) in [
            (r#"{"byte_scale": 0}"#, "byte_scale"),
            (r#"{"after_bytes": 10, "byte_scale": 100}"#, "after_bytes"),
            (r#"{"backlog_packets": 20000000}"#, "backlog_packets"),
            (r#"{"on_reset": "keep"}"#, "on_reset"),
            (r#"{"watchdog_ms": 100000000000}"#, "watchdog_ms"),
            (r#"{"after_packets": 1}"#, "after_packets"),
        ] {
            let e = Harness::<TxStall>::new(c, 1).err().unwrap();
            assert!(e.contains(f), "{c}: {e}");
        }
        let mut h = Harness::<TxStall>::new("{}", 1).unwrap();
        assert!(h
            .command(r#"{"cmd": "fix"}"#, 0)
            .unwrap_err()
            .contains("\"reset\""));
        assert!(h.command("[]", 0).unwrap_err().contains("cmd"));
    }
}
