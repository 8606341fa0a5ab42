//! The virtual clock: the one driver that runs an [`Engine`] offline, used by replay and
//! by the tests alike. It breathes at every deadline in turn (sources' next packets,
//! held packets, plugin timers), jumping time forward in between, so a minute of
//! traffic takes as long as the work it carries.

use crate::engine::Engine;

/// Breaths at one instant, after which a run counts as stuck: every breath at the same
/// time must make progress, and a link that stays full would loop forever.
const MAX_BREATHS_AT_ONE_TIME: u32 = 1000;

/// An engine made no progress at one virtual instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    pub at_ns: u64,
}

impl std::error::Error for Stalled {}

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the engine made no progress at t = {} ns ({MAX_BREATHS_AT_ONE_TIME} breaths at one instant: a link stays full)",
            self.at_ns
        )
    }
}

/// A clock that only moves when told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtualClock {
    pub now_ns: u64,
}

impl VirtualClock {
    pub fn at(now_ns: u64) -> Self {
        VirtualClock { now_ns }
    }

    /// Breathe at every deadline up to `end_ns`; afterwards `now_ns` is the time of the
    /// last breath. Returns the number of breaths.
    pub fn run(&mut self, engine: &mut Engine, end_ns: u64) -> Result<u64, Stalled> {
        self.run_until(engine, end_ns, |_| false)
    }

    /// [`VirtualClock::run`], stopping early once `done` says so (checked before every
    /// breath). Packets still on links at the end get the breaths they need to settle.
    pub fn run_until(
        &mut self,
        engine: &mut Engine,
        end_ns: u64,
        mut done: impl FnMut(&Engine) -> bool,
    ) -> Result<u64, Stalled> {
        let mut breaths = 0;
        let mut same_time = 0;
        while !done(engine) {
            let Some(t) = engine.next_deadline().filter(|&t| t <= end_ns) else {
                break;
            };
            if t > self.now_ns {
                self.now_ns = t;
                same_time = 0;
            } else {
                same_time += 1;
                if same_time > MAX_BREATHS_AT_ONE_TIME {
                    return Err(Stalled { at_ns: self.now_ns });
                }
            }
            engine.breathe(self.now_ns);
            breaths += 1;
        }
        let mut settle = 0;
        while engine.links_busy() {
            settle += 1;
            if settle > MAX_BREATHS_AT_ONE_TIME {
                return Err(Stalled { at_ns: self.now_ns });
            }
            engine.breathe(self.now_ns);
            breaths += 1;
        }
        Ok(breaths)
    }
}
