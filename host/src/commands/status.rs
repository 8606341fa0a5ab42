//! The status line `synthnet bridge` draws on a terminal: one line, redrawn in place
//! once a second (rates per direction, held packets, drops), read from the counters the
//! engine publishes on its [`Board`] — the packet thread never waits on it.
//!
//! Log lines written meanwhile clear the line first (see `main.rs`'s log format), and
//! the status is drawn again at its next second. [`StatusLine`] stops and clears it
//! when dropped.

use crate::daemon::board::Board;
use serde_json::Value;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Return to the line's start and clear it (ANSI: CR, erase line).
pub const CLEAR: &str = "\r\x1b[2K";

/// A status line being redrawn; stopped and cleared when dropped.
pub struct StatusLine {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StatusLine {
    /// Redraw a status line on stderr once a second from `board`; `verbose` adds drops
    /// by cause and the plugins' own counters.
    pub fn start(board: Arc<Board>, verbose: bool) -> std::io::Result<StatusLine> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("synthnet-status".into())
            .spawn(move || {
                let mut next = Instant::now() + Duration::from_secs(1);
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if Instant::now() < next {
                        continue;
                    }
                    next += Duration::from_secs(1);
                    let v = crate::api::views::stats(&board.read(), started.elapsed());
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "{CLEAR}{}", line(&v, verbose));
                    let _ = err.flush();
                }
            })?;
        Ok(StatusLine {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = write!(std::io::stderr(), "{CLEAR}");
    }
}

/// The status of a stats publication (`GET /api/v1/stats`' shape): per direction
/// packets in and out and bits out per second, then held packets and drops; `verbose`
/// names each drop cause and adds the plugins' counters.
pub fn line(v: &Value, verbose: bool) -> String {
    use crate::daemon::stats::{bps, pps};
    let mut parts = Vec::new();
    let mut held = 0;
    let mut drops = 0;
    let mut causes = Vec::new();
    let mut counters = Vec::new();
    for d in v["directions"].as_array().into_iter().flatten() {
        let f = |k: &str| d[k].as_f64().unwrap_or(0.0);
        let name = d["direction"].as_str().unwrap_or("?");
        parts.push(format!(
            "{name} {} in, {} {} out",
            pps(f("rx_pps")),
            pps(f("tx_pps")),
            bps(f("tx_bps"))
        ));
        held += d["held"].as_u64().unwrap_or(0);
        for (cause, n) in d["drops"].as_object().into_iter().flatten() {
            let n = n.as_u64().unwrap_or(0);
            drops += n;
            if n > 0 {
                causes.push(format!("{name} {cause}={n}"));
            }
        }
        for st in d["stages"].as_array().into_iter().flatten() {
            for (k, n) in st["plugin_counters"].as_object().into_iter().flatten() {
                if n.as_u64() == Some(0) {
                    continue;
                }
                counters.push(format!("{}.{k}={n}", st["id"].as_str().unwrap_or("?")));
            }
        }
    }
    let mut s = format!("{} | held {held} | dropped {drops}", parts.join(" | "));
    if verbose {
        if !causes.is_empty() {
            s.push_str(&format!(" ({})", causes.join(", ")));
        }
        s.push_str(&format!(" | generation {}", v["generation"]));
        if !counters.is_empty() {
            s.push_str(&format!(" | {}", counters.join(" ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::line;
    use serde_json::json;

    #[test]
    fn a_status_line_has_rates_with_units_held_and_drops() {
        let v = json!({"generation": 3, "directions": [
            {"direction": "ingress", "rx_pps": 1000.0, "tx_pps": 990.0, "tx_bps": 20e6,
             "held": 7, "drops": {"loss": 10, "io": 0},
             "stages": [{"id": "ingress/default/loss", "plugin_counters": {"lost": 10}}]},
            {"direction": "egress", "rx_pps": 0.0, "tx_pps": 0.0, "tx_bps": 0.0,
             "held": 0, "drops": {}, "stages": []}]});
        let short = line(&v, false);
        assert!(short.contains("ingress 1.0 kpps in"), "{short}");
        assert!(short.contains("20.00 Mbit/s out"), "{short}");
        assert!(short.contains("held 7 | dropped 10"), "{short}");
        assert!(!short.contains("loss=10"), "{short}");
        let long = line(&v, true);
        assert!(long.contains("(ingress loss=10)"), "{long}");
        assert!(long.contains("ingress/default/loss.lost=10"), "{long}");
        assert!(long.contains("generation 3"), "{long}");
    }
}
