//! [`Throttle`]: at most so many log lines of one kind per second, then one line that
//! says how many were left out — so that a client repeating a bad request, or a
//! stream of accept errors, cannot fill the log (plugin logs are limited the same way,
//! in the runtime).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A per-second budget of lines for one kind of message.
pub struct Throttle {
    per_sec: u32,
    state: Mutex<Window>,
}

struct Window {
    start: Option<Instant>,
    lines: u32,
    dropped: u64,
}

impl Throttle {
    pub const fn new(per_sec: u32) -> Throttle {
        Throttle {
            per_sec,
            state: Mutex::new(Window {
                start: None,
                lines: 0,
                dropped: 0,
            }),
        }
    }

    /// Whether a line may be logged now. When a new second begins after lines were
    /// left out, `say_dropped` is called once with how many.
    pub fn allow(&self, say_dropped: impl FnOnce(u64)) -> bool {
        self.allow_at(Instant::now(), say_dropped)
    }

    fn allow_at(&self, now: Instant, say_dropped: impl FnOnce(u64)) -> bool {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if w.start
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            if w.dropped > 0 {
                say_dropped(w.dropped);
            }
            *w = Window {
                start: Some(now),
                lines: 0,
                dropped: 0,
            };
        }
        if w.lines >= self.per_sec {
            w.dropped += 1;
            return false;
        }
        w.lines += 1;
        true
    }
}

/// `log::log!` at `$level` through a [`Throttle`] declared at the call site: at most
/// `$n` lines a second from that place, then a count of the ones left out.
#[macro_export]
macro_rules! log_throttled {
    ($level:expr, $n:expr, $($arg:tt)+) => {{
        static THROTTLE: $crate::daemon::throttle::Throttle =
            $crate::daemon::throttle::Throttle::new($n);
        if THROTTLE.allow(|d| {
            log::log!($level, "{d} similar lines left out in the last second (rate limit)")
        }) {
            log::log!($level, $($arg)+);
        }
    }};
}

/// [`log_throttled!`] at the warning level.
#[macro_export]
macro_rules! warn_throttled {
    ($n:expr, $($arg:tt)+) => {
        $crate::log_throttled!(log::Level::Warn, $n, $($arg)+)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_budget_are_counted_then_reported_once() {
        let t = Throttle::new(3);
        let t0 = Instant::now();
        let mut reported = vec![];
        let allowed = (0..10)
            .filter(|_| t.allow_at(t0, |d| reported.push(d)))
            .count();
        assert_eq!(allowed, 3);
        assert!(reported.is_empty());
        assert!(t.allow_at(t0 + Duration::from_millis(1100), |d| reported.push(d)));
        assert_eq!(reported, vec![7]);
    }
}
