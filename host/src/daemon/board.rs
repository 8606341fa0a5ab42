//! The board: where the engine thread publishes its counters for everyone else (the
//! HTTP API, `/metrics`, the stats stream) to read, so that no reader ever makes the
//! packet thread wait.
//!
//! At a fixed cadence ([`PUBLISH_PERIOD`]) the engine thread takes a [`Snapshot`] of
//! every counter and copies the rows of its flow tables, and pins that [`Published`]
//! on the board: one short lock to swap an `Arc` (taken with `try_lock`, so a reader
//! holding it costs a skipped publication, never a wait). Readers clone the `Arc`s of
//! the latest publication and the one before it, and derive rates from the two off the
//! packet thread.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use synthnet_config::Snapshot;
use synthnet_core::flow::FiveTuple;
use synthnet_core::flowtable::{FlowStats, FlowTable, Untracked};
use synthnet_core::Direction;

/// How often the engine publishes.
pub const PUBLISH_PERIOD: Duration = Duration::from_secs(1);
/// Flows not seen for this long leave the flow tables.
pub const FLOW_IDLE: Duration = Duration::from_secs(60);

/// One flow table's rows, copied out.
#[derive(Debug, Clone, Default)]
pub struct TableRows {
    pub rows: Vec<(FiveTuple, FlowStats)>,
    pub capacity: usize,
    pub untracked: Untracked,
}

impl TableRows {
    pub fn of(t: &FlowTable) -> TableRows {
        TableRows {
            rows: t.iter().map(|(k, s)| (*k, *s)).collect(),
            capacity: t.capacity(),
            untracked: t.untracked(),
        }
    }
}

/// Per-flow counts of one direction: at its source (before impairment) and at its sink
/// (after).
#[derive(Debug, Clone, Default)]
pub struct DirectionFlows {
    pub received: TableRows,
    pub sent: TableRows,
}

/// What the engine published at one moment.
#[derive(Debug, Clone)]
pub struct Published {
    /// Engine clock, ns since the bridge started.
    pub at_ns: u64,
    pub snapshot: Snapshot,
    /// Per direction (`None`: flow accounting is off).
    pub flows: Option<Vec<(Direction, DirectionFlows)>>,
}

/// The latest publication and the one before it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub latest: Arc<Published>,
    pub previous: Option<Arc<Published>>,
}

#[derive(Debug)]
pub struct Board {
    pair: Mutex<Pair>,
}

impl Board {
    pub fn new(first: Published) -> Board {
        Board {
            pair: Mutex::new(Pair {
                latest: Arc::new(first),
                previous: None,
            }),
        }
    }

    /// Pin a new publication (engine thread). Never waits: when a reader holds the lock
    /// this time, the publication is skipped and `false` returned.
    pub fn publish(&self, p: Published) -> bool {
        match self.pair.try_lock() {
            Ok(mut pair) => {
                let old = std::mem::replace(&mut pair.latest, Arc::new(p));
                pair.previous = Some(old);
                true
            }
            Err(_) => false,
        }
    }

    /// The latest two publications.
    pub fn read(&self) -> Pair {
        self.pair.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
