//! The engine: apps joined by links, run one *breath* at a time.
//!
//! A breath is one pass over the apps in topological order (an app breathes after every
//! app that feeds it; ties in the order they were added, so runs are deterministic):
//! sources inhale a bounded batch, every other app processes what its input links hold
//! and releases what its delay lines have due, and sinks send what the chains produced
//! in the same breath. The engine never reads a clock: every breath is given `now_ns`, so the same
//! engine runs live (monotonic clock) and offline (virtual clock, tests, replay), and
//! [`Engine::next_deadline`] tells the driver when anything is due next.
//!
//! The graph changes through three operations only: [`Engine::add`],
//! [`Engine::connect`] and [`Engine::remove`] (apps and links). What a configuration
//! change keeps, swaps, adds and removes is decided above, in the configuration layer's
//! one apply path; the engine just holds the graph.

use crate::counters::{Counters, DropCause};
use crate::link::Link;
use crate::packet::{Packet, PacketPool};
use std::any::Any;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What an app sees during a breath: the pool, its links, the time.
pub struct Ctx<'a> {
    pub pool: &'a mut PacketPool,
    links: &'a mut [Link],
    inputs: &'a [LinkId],
    outputs: &'a [LinkId],
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
        let i = self.inputs.get(port)?.0;
        self.links.get_mut(i)
    }
    #[inline(always)]
    pub fn output(&mut self, port: usize) -> Option<&mut Link> {
        let i = self.outputs.get(port)?.0;
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
            .and_then(|i| self.links.get(i.0))
            .map_or(0, Link::len)
    }
    /// Room left on output `port` (0 if unconnected).
    #[inline(always)]
    pub fn room(&self, port: usize) -> usize {
        self.outputs
            .get(port)
            .and_then(|i| self.links.get(i.0))
            .map_or(0, |l| l.capacity() - l.len())
    }
    /// Send `ps` on output `port`, in order. What does not fit is freed and counted as
    /// `LinkFull` drops in `counters`.
    pub fn transmit_all(&mut self, port: usize, ps: &[Packet], counters: &mut Counters) {
        let sent = match self.outputs.get(port).and_then(|i| self.links.get_mut(i.0)) {
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
        let sent = match self.outputs.get(port).and_then(|i| self.links.get_mut(i.0)) {
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
    /// Counters particular to this kind of app (an interface's super-packets, …).
    fn extra_counters(&self) -> Vec<(&'static str, u64)> {
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
}

/// Handle of an app in an [`Engine`]. Valid until the app is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppId(pub usize);

/// Handle of a link in an [`Engine`]. Valid until the link is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub usize);

struct Node {
    app: Box<dyn App>,
    inputs: Vec<LinkId>,
    outputs: Vec<LinkId>,
}

/// Where a link goes: `(from, to)`; `None` for a removed link's slot.
type Ends = Option<(AppId, AppId)>;

pub struct Engine {
    pub pool: PacketPool,
    links: Vec<Link>,
    ends: Vec<Ends>,
    nodes: Vec<Option<Node>>,
    /// Breath order: live nodes, topologically sorted. Recomputed after a change.
    order: Vec<usize>,
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
            ends: Vec::new(),
            nodes: Vec::new(),
            order: Vec::new(),
            link_capacity: LINK_CAPACITY,
        }
    }

    /// Add an app (unconnected). Slots of removed apps are reused.
    pub fn add(&mut self, app: Box<dyn App>) -> AppId {
        let node = Node {
            app,
            inputs: Vec::new(),
            outputs: Vec::new(),
        };
        let i = match self.nodes.iter().position(Option::is_none) {
            Some(i) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.sort();
        AppId(i)
    }

    /// Link `from`'s next output port to `to`'s next input port.
    ///
    /// # Panics
    /// If either app does not exist (a caller's bug, not an input error).
    pub fn connect(&mut self, from: AppId, to: AppId) -> LinkId {
        assert!(self.exists(from) && self.exists(to), "connect: no such app");
        let l = match self.ends.iter().position(Option::is_none) {
            Some(l) => l,
            None => {
                self.links.push(Link::new(2));
                self.ends.push(None);
                self.links.len() - 1
            }
        };
        self.links[l] = Link::new(self.link_capacity);
        self.ends[l] = Some((from, to));
        let l = LinkId(l);
        self.node_mut(from).outputs.push(l);
        self.node_mut(to).inputs.push(l);
        self.sort();
        l
    }

    /// Connect a list of apps in a line.
    pub fn chain(&mut self, apps: &[AppId]) {
        for w in apps.windows(2) {
            self.connect(w[0], w[1]);
        }
    }

    /// Remove link `l`, handing back the packets it still held, in order. The ports after
    /// it on both apps move down by one.
    pub fn remove_link(&mut self, l: LinkId) -> Vec<Packet> {
        let Some((from, to)) = self.ends.get_mut(l.0).and_then(Option::take) else {
            return Vec::new();
        };
        self.node_mut(from).outputs.retain(|&x| x != l);
        self.node_mut(to).inputs.retain(|&x| x != l);
        let link = &mut self.links[l.0];
        let mut ps = vec![Packet::default(); link.len()];
        let n = link.receive_into(&mut ps);
        ps.truncate(n);
        self.links[l.0] = Link::new(2);
        self.sort();
        ps
    }

    /// Remove app `id` and its links. Returns the app and the packets that were on its
    /// links (inputs first, then outputs), so the caller decides where they go.
    pub fn remove(&mut self, id: AppId) -> Option<(Box<dyn App>, Vec<Packet>)> {
        let node = self.nodes.get(id.0)?.as_ref()?;
        let links: Vec<LinkId> = node.inputs.iter().chain(&node.outputs).copied().collect();
        let mut ps = Vec::new();
        for l in links {
            ps.extend(self.remove_link(l));
        }
        let node = self.nodes[id.0].take()?;
        self.sort();
        Some((node.app, ps))
    }

    /// Put `ps` on link `l`, in order. What does not fit is freed; returns how many were
    /// placed.
    pub fn deliver(&mut self, l: LinkId, ps: &[Packet]) -> usize {
        let sent = match self.ends.get(l.0) {
            Some(Some(_)) => self.links[l.0].transmit_slice(ps),
            _ => 0,
        };
        self.pool.free_all(&ps[sent..]);
        sent
    }

    /// The links into app `id` (by input port) and out of it (by output port).
    pub fn links_of(&self, id: AppId) -> (&[LinkId], &[LinkId]) {
        match self.nodes.get(id.0).and_then(Option::as_ref) {
            Some(n) => (&n.inputs, &n.outputs),
            None => (&[], &[]),
        }
    }

    /// Where link `l` goes: `(from, to)`.
    pub fn ends(&self, l: LinkId) -> Option<(AppId, AppId)> {
        self.ends.get(l.0).copied().flatten()
    }

    pub fn exists(&self, id: AppId) -> bool {
        matches!(self.nodes.get(id.0), Some(Some(_)))
    }

    fn node_mut(&mut self, id: AppId) -> &mut Node {
        self.nodes[id.0].as_mut().expect("a live app")
    }

    /// Topological breath order (Kahn), ties broken by slot: deterministic. Nodes on a
    /// cycle (none of the graphs synthnet builds has one) breathe last, by slot.
    fn sort(&mut self) {
        let n = self.nodes.len();
        let mut indegree = vec![0usize; n];
        for &(_, to) in self.ends.iter().flatten() {
            indegree[to.0] += 1;
        }
        let mut ready: BinaryHeap<Reverse<usize>> = (0..n)
            .filter(|&i| self.nodes[i].is_some() && indegree[i] == 0)
            .map(Reverse)
            .collect();
        self.order.clear();
        while let Some(Reverse(i)) = ready.pop() {
            self.order.push(i);
            if let Some(node) = &self.nodes[i] {
                for l in &node.outputs {
                    if let Some((_, to)) = self.ends[l.0] {
                        indegree[to.0] -= 1;
                        if indegree[to.0] == 0 {
                            ready.push(Reverse(to.0));
                        }
                    }
                }
            }
        }
        if self.order.len() < self.nodes.iter().flatten().count() {
            for i in 0..n {
                if self.nodes[i].is_some() && !self.order.contains(&i) {
                    self.order.push(i);
                }
            }
        }
    }

    /// One breath at `now_ns`.
    pub fn breathe(&mut self, now_ns: u64) {
        let Engine {
            pool,
            links,
            nodes,
            order,
            ..
        } = self;
        for &i in order.iter() {
            let Some(n) = nodes[i].as_mut() else { continue };
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

    /// Run `f` on app `id` with its links, at `now_ns`, outside a breath: an event
    /// between breaths (a command to a plugin) that may send on the app's outputs.
    /// What it sends waits on the links for the next breath ([`Engine::links_busy`]).
    /// `None` when there is no such app of type `T`.
    pub fn with_app<T: App, R>(
        &mut self,
        id: AppId,
        now_ns: u64,
        f: impl FnOnce(&mut T, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        let Engine {
            pool, links, nodes, ..
        } = self;
        let n = nodes.get_mut(id.0)?.as_mut()?;
        let app: &mut dyn Any = n.app.as_mut();
        let app = app.downcast_mut::<T>()?;
        let mut cx = Ctx {
            pool,
            links,
            inputs: &n.inputs,
            outputs: &n.outputs,
            now_ns,
        };
        Some(f(app, &mut cx))
    }

    /// When something is next due (held packets, plugin timers, scheduled sources).
    pub fn next_deadline(&self) -> Option<u64> {
        self.apps().filter_map(|(_, a)| a.next_deadline()).min()
    }

    /// Whether any link still holds packets (a further breath has work).
    pub fn links_busy(&self) -> bool {
        self.links.iter().any(|l| !l.is_empty())
    }

    pub fn app(&self, id: AppId) -> Option<&dyn App> {
        self.nodes.get(id.0)?.as_ref().map(|n| n.app.as_ref())
    }

    /// Typed access to an app.
    pub fn app_ref<T: App>(&self, id: AppId) -> Option<&T> {
        let app: &dyn Any = self.nodes.get(id.0)?.as_ref()?.app.as_ref();
        app.downcast_ref::<T>()
    }

    /// Typed access to an app (for control operations and tests).
    pub fn app_mut<T: App>(&mut self, id: AppId) -> Option<&mut T> {
        let app: &mut dyn Any = self.nodes.get_mut(id.0)?.as_mut()?.app.as_mut();
        app.downcast_mut::<T>()
    }

    /// Every live app, by slot.
    pub fn apps(&self) -> impl Iterator<Item = (AppId, &dyn App)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((AppId(i), n.as_ref()?.app.as_ref())))
    }

    /// Packets held anywhere: in links and in apps.
    pub fn packets_in_flight(&self) -> usize {
        self.links.iter().map(Link::len).sum::<usize>()
            + self.apps().map(|(_, a)| a.held()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forwards everything from every input to output 0, recording breath order.
    struct Fwd {
        c: Counters,
        tag: usize,
        log: std::rc::Rc<std::cell::RefCell<Vec<usize>>>,
    }
    impl App for Fwd {
        fn breathe(&mut self, cx: &mut Ctx<'_>) {
            self.log.borrow_mut().push(self.tag);
            for port in 0..cx.n_inputs() {
                while let Some(p) = cx.receive(port) {
                    if cx.n_outputs() > 0 {
                        cx.transmit(0, p, &mut self.c);
                    } else {
                        self.c.rx_packets += 1;
                        cx.pool.free(p);
                    }
                }
            }
        }
        fn counters(&self) -> &Counters {
            &self.c
        }
    }

    #[test]
    fn breath_order_is_topological_whatever_the_order_of_adding() {
        let log = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut e = Engine::new(PacketPool::new(16, 64));
        let mk = |tag| {
            Box::new(Fwd {
                c: Counters::default(),
                tag,
                log: log.clone(),
            })
        };
        let sink = e.add(mk(3));
        let b = e.add(mk(2));
        let a = e.add(mk(1));
        e.chain(&[a, b, sink]);
        e.breathe(0);
        assert_eq!(*log.borrow(), [1, 2, 3]);
        // Remove the middle app: its packets come back; reconnect around it.
        let p = e.pool.alloc(60, 0).unwrap();
        let (into_b, _) = e.links_of(b);
        let l = into_b[0];
        assert_eq!(e.deliver(l, &[p]), 1);
        let (_, held) = e.remove(b).unwrap();
        assert_eq!(held, [p]);
        assert!(!e.exists(b));
        let l = e.connect(a, sink);
        assert_eq!(e.ends(l), Some((a, sink)));
        assert_eq!(e.deliver(l, &held), 1);
        log.borrow_mut().clear();
        e.breathe(0);
        assert_eq!(*log.borrow(), [1, 3]);
        assert_eq!(e.app(sink).unwrap().counters().rx_packets, 1);
        // A new app reuses the free slot.
        assert_eq!(e.add(mk(4)), b);
    }
}
