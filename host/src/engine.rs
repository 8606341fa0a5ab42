//! The engine: apps joined by links, run one *breath* at a time.
//!
//! A breath is one pass over the apps in the order they were added (deterministic, and
//! topological for the chains synthnet builds): sources inhale a bounded batch, every
//! other app processes what its input links hold and releases what its delay lines have
//! due. The engine never reads a clock: every breath is given `now_ns`, so the same
//! engine runs live (monotonic clock) and offline (virtual clock, tests, replay), and
//! [`Engine::next_deadline`] tells the driver when anything is due next.

use crate::link::{Link, LinkStats};
use crate::packet::{Packet, PacketPool};
use serde::Serialize;
use std::any::Any;

/// Why a packet was dropped. Every drop is counted under exactly one cause.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropCause {
    /// An output link was full.
    LinkFull,
    /// The plugin said drop (loss, a full shaper queue, …).
    Plugin,
    /// The plugin gave the packet no verdict.
    NoVerdict,
    /// The plugin's batch held an invalid verdict; the whole batch was dropped.
    BadVerdict,
    /// The plugin trapped, ran out of time or memory during the batch.
    PluginFault,
    /// The plugin was down (restarting after a fault).
    PluginDown,
    /// A delay line was at its limit.
    HoldFull,
    /// The packet pool was exhausted.
    PoolEmpty,
    /// The packet did not fit (too long for a buffer, or refused by the interface).
    TooBig,
    /// Anything the I/O layer refused (link down, no buffers, …).
    Io,
    /// The kernel's receive ring was full (counted by the kernel).
    RingFull,
}

impl DropCause {
    pub const ALL: [DropCause; 11] = [
        DropCause::LinkFull,
        DropCause::Plugin,
        DropCause::NoVerdict,
        DropCause::BadVerdict,
        DropCause::PluginFault,
        DropCause::PluginDown,
        DropCause::HoldFull,
        DropCause::PoolEmpty,
        DropCause::TooBig,
        DropCause::Io,
        DropCause::RingFull,
    ];
    pub fn name(self) -> &'static str {
        match self {
            DropCause::LinkFull => "link_full",
            DropCause::Plugin => "plugin",
            DropCause::NoVerdict => "no_verdict",
            DropCause::BadVerdict => "bad_verdict",
            DropCause::PluginFault => "plugin_fault",
            DropCause::PluginDown => "plugin_down",
            DropCause::HoldFull => "hold_full",
            DropCause::PoolEmpty => "pool_empty",
            DropCause::TooBig => "too_big",
            DropCause::Io => "io",
            DropCause::RingFull => "ring_full",
        }
    }
}

/// Per-app counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropCause::ALL.len()],
}

impl Counters {
    #[inline(always)]
    pub fn drop(&mut self, cause: DropCause, n: u64) {
        self.drops[cause as usize] += n;
    }
    pub fn dropped(&self, cause: DropCause) -> u64 {
        self.drops[cause as usize]
    }
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// What an app sees during a breath: the pool, its links, the time.
pub struct Ctx<'a> {
    pub pool: &'a mut PacketPool,
    links: &'a mut [Link],
    inputs: &'a [usize],
    outputs: &'a [usize],
    pub now_ns: u64,
}

impl Ctx<'_> {
    pub fn n_inputs(&self) -> usize {
        self.inputs.len()
    }
    pub fn n_outputs(&self) -> usize {
        self.outputs.len()
    }
    #[inline(always)]
    pub fn input(&mut self, port: usize) -> Option<&mut Link> {
        let i = *self.inputs.get(port)?;
        self.links.get_mut(i)
    }
    #[inline(always)]
    pub fn output(&mut self, port: usize) -> Option<&mut Link> {
        let i = *self.outputs.get(port)?;
        self.links.get_mut(i)
    }
    #[inline(always)]
    pub fn receive(&mut self, port: usize) -> Option<Packet> {
        self.input(port)?.receive()
    }
    /// Packets waiting on input `port`.
    #[inline(always)]
    pub fn pending(&self, port: usize) -> usize {
        self.inputs
            .get(port)
            .and_then(|&i| self.links.get(i))
            .map_or(0, Link::len)
    }
    /// Room left on output `port` (0 if unconnected).
    #[inline(always)]
    pub fn room(&self, port: usize) -> usize {
        self.outputs
            .get(port)
            .and_then(|&i| self.links.get(i))
            .map_or(0, |l| l.capacity() - l.len())
    }
    /// Send `ps` on output `port`, in order. What does not fit is freed and counted as
    /// `LinkFull` drops in `counters`.
    pub fn transmit_all(&mut self, port: usize, ps: &[Packet], counters: &mut Counters) {
        let sent = match self.outputs.get(port).and_then(|&i| self.links.get_mut(i)) {
            Some(link) => link.transmit_slice(ps),
            None => 0,
        };
        counters.tx_packets += sent as u64;
        counters.tx_bytes += ps[..sent].iter().map(|p| p.len as u64).sum::<u64>();
        for p in &ps[sent..] {
            self.pool.free(*p);
        }
        counters.drop(DropCause::LinkFull, (ps.len() - sent) as u64);
    }

    /// Move up to `out.len()` packets from input `port` into `out`; returns how many.
    pub fn receive_into(&mut self, port: usize, out: &mut [Packet]) -> usize {
        match self.input(port) {
            Some(link) => link.receive_into(out),
            None => 0,
        }
    }

    /// Send `p` on output `port`. A full or unconnected output frees the packet and
    /// counts a `LinkFull` drop in `counters`.
    #[inline(always)]
    pub fn transmit(&mut self, port: usize, p: Packet, counters: &mut Counters) {
        let bytes = p.len as u64;
        let sent = match self.outputs.get(port).and_then(|&i| self.links.get_mut(i)) {
            Some(link) => link.transmit(p).is_ok(),
            None => false,
        };
        if sent {
            counters.tx_packets += 1;
            counters.tx_bytes += bytes;
        } else {
            self.pool.free(p);
            counters.drop(DropCause::LinkFull, 1);
        }
    }
}

/// A node of the graph. Sources have no inputs; sinks have no outputs.
pub trait App: Any {
    /// Do one breath's work.
    fn breathe(&mut self, cx: &mut Ctx<'_>);
    /// The earliest time this app has something to do without new input.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
    fn counters(&self) -> &Counters;
    /// Extra named counters (a plugin's own, fault counts, …).
    fn extra_counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// Packets this app holds (delay lines, queues).
    fn held(&self) -> usize {
        0
    }
    /// Give up every held packet, in departure order (the app is being removed).
    fn drain_held(&mut self) -> Vec<Packet> {
        Vec::new()
    }
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// Handle of an app in an [`Engine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppId(pub usize);

struct Node {
    name: String,
    app: Box<dyn App>,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    /// Breathes after every other app (transmitters: what the chains produced this
    /// breath leaves in this breath).
    late: bool,
}

/// What [`Engine::dismantle`] hands back: every app, and every packet that was still on
/// a link, with the app and input port it was going to.
pub struct Parts {
    pub apps: Vec<(String, Box<dyn App>, bool)>,
    pub in_links: Vec<(String, usize, Vec<Packet>)>,
    /// For each app, the apps its outputs fed, by port.
    pub downstream: Vec<(String, Vec<String>)>,
}

/// A snapshot of one app's counters, for reports.
#[derive(Clone, Debug, Serialize)]
pub struct AppReport {
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub held: usize,
    pub drops: Vec<(&'static str, u64)>,
    pub extra: Vec<(String, u64)>,
}

pub struct Engine {
    pub pool: PacketPool,
    links: Vec<Link>,
    nodes: Vec<Node>,
    link_capacity: usize,
}

/// Default link capacity: a few batches, so one breath can never overflow a link in a
/// chain that runs in order.
pub const LINK_CAPACITY: usize = 2048;

impl Engine {
    pub fn new(pool: PacketPool) -> Self {
        Engine {
            pool,
            links: Vec::new(),
            nodes: Vec::new(),
            link_capacity: LINK_CAPACITY,
        }
    }

    pub fn add(&mut self, name: impl Into<String>, app: Box<dyn App>) -> AppId {
        self.nodes.push(Node {
            name: name.into(),
            app,
            inputs: Vec::new(),
            outputs: Vec::new(),
            late: false,
        });
        AppId(self.nodes.len() - 1)
    }

    /// Add an app that breathes after all others, whenever it was added.
    pub fn add_late(&mut self, name: impl Into<String>, app: Box<dyn App>) -> AppId {
        let id = self.add(name, app);
        self.nodes[id.0].late = true;
        id
    }

    /// Take the graph apart, keeping the pool: every app and every packet still on a
    /// link come back, to be put together again (a reload that changes the graph).
    pub fn dismantle(&mut self) -> Parts {
        let nodes = std::mem::take(&mut self.nodes);
        let links = std::mem::take(&mut self.links);
        let mut feeds: Vec<Option<(usize, usize)>> = vec![None; links.len()];
        for (ni, n) in nodes.iter().enumerate() {
            for (port, &l) in n.inputs.iter().enumerate() {
                feeds[l] = Some((ni, port));
            }
        }
        let downstream = nodes
            .iter()
            .map(|n| {
                let names = n
                    .outputs
                    .iter()
                    .filter_map(|&l| feeds[l].map(|(ni, _)| nodes[ni].name.clone()))
                    .collect();
                (n.name.clone(), names)
            })
            .collect();
        let mut in_links = Vec::new();
        for (mut link, feed) in links.into_iter().zip(feeds) {
            let mut ps = Vec::with_capacity(link.len());
            while let Some(p) = link.receive() {
                ps.push(p);
            }
            match feed {
                Some((ni, port)) if !ps.is_empty() => {
                    in_links.push((nodes[ni].name.clone(), port, ps))
                }
                _ => self.pool.free_all(&ps),
            }
        }
        Parts {
            apps: nodes.into_iter().map(|n| (n.name, n.app, n.late)).collect(),
            in_links,
            downstream,
        }
    }

    /// Put `ps` on input `port` of app `to`, in order. What does not fit (or has no such
    /// input) is freed; returns how many were placed.
    pub fn deliver(&mut self, to: AppId, port: usize, ps: &[Packet]) -> usize {
        let sent = match self.nodes[to.0].inputs.get(port) {
            Some(&l) => self.links[l].transmit_slice(ps),
            None => 0,
        };
        self.pool.free_all(&ps[sent..]);
        sent
    }

    /// Link `from`'s next output port to `to`'s next input port.
    pub fn connect(&mut self, from: AppId, to: AppId) -> usize {
        self.links.push(Link::new(self.link_capacity));
        let l = self.links.len() - 1;
        self.nodes[from.0].outputs.push(l);
        self.nodes[to.0].inputs.push(l);
        l
    }

    /// Connect a list of apps in a line.
    pub fn chain(&mut self, apps: &[AppId]) {
        for w in apps.windows(2) {
            self.connect(w[0], w[1]);
        }
    }

    /// One breath at `now_ns`.
    pub fn breathe(&mut self, now_ns: u64) {
        let Engine {
            pool, links, nodes, ..
        } = self;
        for late in [false, true] {
            for n in nodes.iter_mut().filter(|n| n.late == late) {
                let mut cx = Ctx {
                    pool,
                    links,
                    inputs: &n.inputs,
                    outputs: &n.outputs,
                    now_ns,
                };
                n.app.breathe(&mut cx);
            }
        }
    }

    /// Drive the engine on a virtual clock from `*now_ns` up to `end_ns`: breathe at every
    /// deadline in turn (sources' next packets, held packets, plugin timers), leaving
    /// `*now_ns` at the last breath. Returns the number of breaths.
    pub fn run_virtual(&mut self, now_ns: &mut u64, end_ns: u64) -> u64 {
        let mut breaths = 0;
        let mut same_time = 0;
        while let Some(t) = self.next_deadline() {
            if t > end_ns {
                break;
            }
            if t <= *now_ns {
                // Due again at once: a link was full. Bounded, in case nothing drains.
                same_time += 1;
                if same_time > 64 {
                    break;
                }
            } else {
                same_time = 0;
                *now_ns = t;
            }
            self.breathe(*now_ns);
            breaths += 1;
        }
        breaths
    }

    /// When something is next due (held packets, plugin timers, scheduled sources).
    pub fn next_deadline(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|n| n.app.next_deadline())
            .min()
    }

    /// Whether any link still holds packets (a further breath has work).
    pub fn links_busy(&self) -> bool {
        self.links.iter().any(|l| !l.is_empty())
    }

    pub fn find(&self, name: &str) -> Option<AppId> {
        self.nodes.iter().position(|n| n.name == name).map(AppId)
    }

    pub fn app(&self, id: AppId) -> &dyn App {
        self.nodes[id.0].app.as_ref()
    }

    /// Typed access to an app (for control operations and tests).
    pub fn app_mut<T: App>(&mut self, id: AppId) -> Option<&mut T> {
        self.nodes
            .get_mut(id.0)?
            .app
            .as_any_mut()
            .downcast_mut::<T>()
    }

    pub fn app_ids(&self) -> impl Iterator<Item = (AppId, &str)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (AppId(i), n.name.as_str()))
    }

    pub fn link_stats(&self) -> Vec<LinkStats> {
        self.links.iter().map(|l| l.stats).collect()
    }

    pub fn report(&self) -> Vec<AppReport> {
        self.nodes
            .iter()
            .map(|n| {
                let c = n.app.counters();
                AppReport {
                    name: n.name.clone(),
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                    held: n.app.held(),
                    drops: DropCause::ALL
                        .iter()
                        .filter(|d| c.dropped(**d) > 0)
                        .map(|d| (d.name(), c.dropped(*d)))
                        .collect(),
                    extra: n.app.extra_counters(),
                }
            })
            .collect()
    }

    /// Packets held anywhere: in links and in apps.
    pub fn packets_in_flight(&self) -> usize {
        self.links.iter().map(Link::len).sum::<usize>()
            + self.nodes.iter().map(|n| n.app.held()).sum::<usize>()
    }
}
