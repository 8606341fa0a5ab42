//! Supervision of a plugin instance: faults, restarts with backoff, and the backoff
//! forgetting old faults once the instance has been healthy for a while.
//!
//! A fault (trap, CPU deadline, memory cap, garbage verdict) takes the instance down;
//! it is restarted after a backoff that starts at [`BACKOFF_MIN_NS`] and doubles with
//! every fault up to [`BACKOFF_MAX_NS`]. A fault more than [`HEALTHY_NS`] after the
//! previous one starts again from the minimum: a plugin that faults once an hour is not
//! punished with five-second outages forever.

/// Backoff before restarting a faulted instance: 1 ms, doubling to 5 s.
pub const BACKOFF_MIN_NS: u64 = 1_000_000;
pub const BACKOFF_MAX_NS: u64 = 5_000_000_000;
/// After this long without a fault, the next fault's backoff starts from the minimum.
pub const HEALTHY_NS: u64 = 10_000_000_000;

/// Fault and restart bookkeeping of one stage.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    pub faults: u64,
    pub restarts: u64,
    pub swaps: u64,
    pub last_error: Option<String>,
    #[serde(skip)]
    backoff_ns: u64,
    #[serde(skip)]
    retry_at_ns: u64,
    #[serde(skip)]
    last_fault_ns: Option<u64>,
}

impl Health {
    /// Record a fault at `now_ns`; returns when to try a restart.
    pub fn fault(&mut self, now_ns: u64, msg: String) -> u64 {
        self.faults += 1;
        self.last_error = Some(msg);
        let healthy = self
            .last_fault_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= HEALTHY_NS);
        self.backoff_ns = if healthy {
            BACKOFF_MIN_NS
        } else {
            (self.backoff_ns * 2).clamp(BACKOFF_MIN_NS, BACKOFF_MAX_NS)
        };
        self.last_fault_ns = Some(now_ns);
        self.retry_at_ns = now_ns.saturating_add(self.backoff_ns);
        self.retry_at_ns
    }

    /// When a restart may next be tried.
    pub fn retry_at_ns(&self) -> u64 {
        self.retry_at_ns
    }

    pub fn restarted(&mut self) {
        self.restarts += 1;
    }

    /// A new instance replaced the running one: a clean slate for the backoff.
    pub fn swapped(&mut self) {
        self.swaps += 1;
        self.backoff_ns = 0;
        self.last_fault_ns = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_decays_after_a_healthy_period() {
        let mut h = Health::default();
        let mut t = 0;
        let mut waits = vec![];
        for _ in 0..4 {
            let at = h.fault(t, "x".into());
            waits.push(at - t);
            t = at;
        }
        assert_eq!(waits, [1_000_000, 2_000_000, 4_000_000, 8_000_000]);
        for _ in 0..20 {
            t = h.fault(t, "x".into());
        }
        assert_eq!(h.fault(t, "x".into()) - t, BACKOFF_MAX_NS);
        let later = t + HEALTHY_NS;
        assert_eq!(h.fault(later, "x".into()) - later, BACKOFF_MIN_NS);
        assert_eq!(h.faults, 26);
    }
}
