//! Why each packet: a record of what became of every packet at every stage, for
//! `synthnet replay --log` and pcapng comments. Off unless someone attaches a
//! [`Trace`]: an app holds an `Option<Trace>` and checks it once per batch, so the
//! live packet path pays one branch per batch and nothing per packet.
//!
//! Packets are named by their buffer id, which is theirs from the moment they enter
//! (the capture source records [`What::Arrived`]) until they leave or are dropped; a
//! copy gets its own buffer and a [`What::Copied`] event naming the original's. The
//! reader of a trace ([`Trace::take`]) turns ids back into packet numbers.

use crate::packet::PacketId;
use std::sync::{Arc, Mutex};

/// What happened to a packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum What {
    /// It entered synthnet (input frame number `frame`).
    Arrived { frame: u64 },
    /// A stage sent it on now.
    Forwarded,
    /// A stage holds it until `until_ns`.
    Delayed { until_ns: u64 },
    /// A stage parked it: it waits in the host until the plugin releases or drops it
    /// (link ABI 1.1).
    Parked,
    /// A stage (its plugin, or the host on its behalf) dropped it, for `cause` (a
    /// drop cause's name: `plugin`, `no_verdict`, `plugin_fault`, …).
    Dropped { cause: &'static str },
    /// A stage made this packet as a copy of packet `of` (a duplicate).
    Copied { of: PacketId },
    /// A stage made this packet from nothing (an injected packet).
    Injected,
    /// It left synthnet.
    Departed,
}

/// One event: when, which packet, which stage (none for arrival and departure), what,
/// and whether the stage changed the packet's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub at_ns: u64,
    pub packet: PacketId,
    pub stage: Option<Arc<str>>,
    pub what: What,
    pub modified: bool,
}

/// A shared, growing list of events. Cloning shares it.
#[derive(Clone, Debug, Default)]
pub struct Trace(Arc<Mutex<Vec<Event>>>);

impl Trace {
    pub fn new() -> Trace {
        Trace::default()
    }

    /// Add events (one lock for all of them).
    pub fn record(&self, events: impl IntoIterator<Item = Event>) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.extend(events);
    }

    /// Every event so far, in order; the trace is empty afterwards.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// What a stage's verdict for a packet means: dropped on `drop_port`, held when due
    /// after `now_ns`, else forwarded now.
    pub fn verdict(now_ns: u64, port: u16, at_ns: u64, drop_port: u16) -> What {
        if port == drop_port {
            What::Dropped { cause: "plugin" }
        } else if at_ns > now_ns {
            What::Delayed { until_ns: at_ns }
        } else {
            What::Forwarded
        }
    }
}
