//! The engine: apps joined by links, run one *breath* at a time.
//!
//! A breath is one pass over the apps in topological order (an app breathes after every
//! app that feeds it; ties in the order they were added, so runs are deterministic):
//! sources inhale a bounded batch, every other app processes what its input links hold
//! and releases what its delay lines have due, and sinks send what the chains produced
//! in the same breath.
//!
//! A breath visits only the apps with work: the sources, apps whose input links hold
//! packets, and apps whose [`App::next_deadline`] has come (the *ready set*). An app
//! that sends on a link makes the app at its far end ready, later in the same breath;
//! deadlines sit in an ordered index updated as apps breathe. So the cost of a breath
//! follows the traffic, not the number of configured flows: ten thousand idle chains
//! cost nothing until a packet comes for one of them. An app may rely on breathing when
//! it has input or its deadline is due, and on nothing else.
//!
//! The engine never reads a clock: every breath is given `now_ns`, so the same
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
use std::collections::{BTreeSet, BinaryHeap};

/// What an app sees during a breath: the pool, its links, the time.
pub struct Ctx<'a> {
    pub pool: &'a mut PacketPool,
    links: &'a mut [Link],
    inputs: &'a [LinkId],
    outputs: &'a [LinkId],
    /// Input ports that may hold packets, ascending (every other one is empty).
    active: &'a [usize],
    /// Links this app has sent on (or may have): their far ends become ready.
    sent: &'a mut Vec<usize>,
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
        self.sent.push(i);
        self.links.get_mut(i)
    }
    /// The first input port at or after `port` that holds packets, in port order: how an
    /// app with many inputs (an interface's transmit side, fed by every chain) finds its
    /// work without looking at each input.
    #[inline]
    pub fn next_input(&self, port: usize) -> Option<usize> {
        let from = self.active.partition_point(|&p| p < port);
        self.active[from..]
            .iter()
            .copied()
            .find(|&p| self.pending(p) > 0)
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
        let sent = match self.output(port) {
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
        let sent = match self.output(port) {
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
    /// Input ports that may hold packets (each listed once; see [`LinkState::listed`]).
    active: Vec<usize>,
    /// Queued to breathe (in this breath's ready set, or the next one's).
    queued: bool,
    /// `app.next_deadline()` as of the last time the app ran; indexed in `Engine::due`.
    deadline: Option<u64>,
}

/// Where a link goes: `(from, to)`; `None` for a removed link's slot.
type Ends = Option<(AppId, AppId)>;

/// What the ready set knows of a link.
#[derive(Clone, Copy, Default)]
struct LinkState {
    /// The link's port on the app it goes to.
    port: usize,
    /// Listed in that app's `active` ports.
    listed: bool,
}

pub struct Engine {
    pub pool: PacketPool,
    links: Vec<Link>,
    ends: Vec<Ends>,
    link_state: Vec<LinkState>,
    nodes: Vec<Option<Node>>,
    /// Free slots, lowest first (so a graph is laid out the same way every run).
    free_nodes: BinaryHeap<Reverse<usize>>,
    free_links: BinaryHeap<Reverse<usize>>,
    /// Breath order: live nodes, topologically sorted, and each slot's place in it.
    order: Vec<usize>,
    rank: Vec<usize>,
    /// Apps with no inputs: they breathe every breath (they read the outside world).
    sources: Vec<usize>,
    /// The graph changed: order, ranks and the ready set are rebuilt before the next
    /// breath (so building a graph of n apps costs O(n), not O(n²)).
    stale: bool,
    /// This breath's ready set, by rank.
    ready: BinaryHeap<Reverse<(usize, usize)>>,
    /// Apps to breathe in the next breath: inputs left over, or touched between breaths.
    carry: Vec<usize>,
    /// Apps that may have changed outside a breath (`app_mut`): deadline looked up again.
    recheck: Vec<usize>,
    /// Every app's deadline, ordered.
    due: BTreeSet<(u64, usize)>,
    /// Scratch: links an app sent on during its breath.
    sent: Vec<usize>,
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
            link_state: Vec::new(),
            nodes: Vec::new(),
            free_nodes: BinaryHeap::new(),
            free_links: BinaryHeap::new(),
            order: Vec::new(),
            rank: Vec::new(),
            sources: Vec::new(),
            stale: false,
            ready: BinaryHeap::new(),
            carry: Vec::new(),
            recheck: Vec::new(),
            due: BTreeSet::new(),
            sent: Vec::new(),
            link_capacity: LINK_CAPACITY,
        }
    }

    /// Add an app (unconnected). Slots of removed apps are reused, lowest first.
    pub fn add(&mut self, app: Box<dyn App>) -> AppId {
        let node = Node {
            app,
            inputs: Vec::new(),
            outputs: Vec::new(),
            active: Vec::new(),
            queued: false,
            deadline: None,
        };
        let i = match self.free_nodes.pop() {
            Some(Reverse(i)) => {
                self.nodes[i] = Some(node);
                i
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.stale = true;
        AppId(i)
    }

    /// Link `from`'s next output port to `to`'s next input port.
    ///
    /// # Panics
    /// If either app does not exist (a caller's bug, not an input error).
    pub fn connect(&mut self, from: AppId, to: AppId) -> LinkId {
        assert!(self.exists(from) && self.exists(to), "connect: no such app");
        let l = match self.free_links.pop() {
            Some(Reverse(l)) => l,
            None => {
                self.links.push(Link::new(2));
                self.ends.push(None);
                self.link_state.push(LinkState::default());
                self.links.len() - 1
            }
        };
        self.links[l] = Link::new(self.link_capacity);
        self.ends[l] = Some((from, to));
        let l = LinkId(l);
        self.node_mut(from).outputs.push(l);
        self.node_mut(to).inputs.push(l);
        self.stale = true;
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
        self.free_links.push(Reverse(l.0));
        self.stale = true;
        ps
    }

    /// Remove links `ls` at once, handing back each one's packets (in the order of
    /// `ls`). The same as [`Engine::remove_link`] for each, but each app's ports are
    /// renumbered once: taking a direction's ten thousand links off an interface's
    /// transmit side costs O(links), not O(links²).
    pub fn remove_links(&mut self, ls: &[LinkId]) -> Vec<Vec<Packet>> {
        let mut gone = vec![false; self.links.len()];
        let mut apps = Vec::new();
        let mut out = Vec::with_capacity(ls.len());
        for &l in ls {
            let Some((from, to)) = self.ends.get_mut(l.0).and_then(Option::take) else {
                out.push(Vec::new());
                continue;
            };
            gone[l.0] = true;
            apps.extend([from.0, to.0]);
            let link = &mut self.links[l.0];
            let mut ps = vec![Packet::default(); link.len()];
            let n = link.receive_into(&mut ps);
            ps.truncate(n);
            out.push(ps);
            self.links[l.0] = Link::new(2);
            self.free_links.push(Reverse(l.0));
        }
        apps.sort_unstable();
        apps.dedup();
        for i in apps {
            if let Some(n) = self.nodes[i].as_mut() {
                n.inputs.retain(|l| !gone[l.0]);
                n.outputs.retain(|l| !gone[l.0]);
            }
        }
        self.stale = true;
        out
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
        self.free_nodes.push(Reverse(id.0));
        self.stale = true;
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
        self.sent.push(l.0);
        self.wake_receivers(None);
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
            let mut placed = vec![false; n];
            for &i in &self.order {
                placed[i] = true;
            }
            for (i, placed) in placed.into_iter().enumerate() {
                if self.nodes[i].is_some() && !placed {
                    self.order.push(i);
                }
            }
        }
    }

    /// After a change to the graph: the order, each app's rank and input ports, and a
    /// ready set with every app in it (one full breath, as after any change).
    fn refresh(&mut self) {
        if !self.stale {
            return;
        }
        self.stale = false;
        self.sort();
        self.rank = vec![usize::MAX; self.nodes.len()];
        for (r, &i) in self.order.iter().enumerate() {
            self.rank[i] = r;
        }
        self.link_state = vec![LinkState::default(); self.links.len()];
        self.sources.clear();
        self.carry.clear();
        self.recheck.clear();
        self.due.clear();
        for (i, slot) in self.nodes.iter_mut().enumerate() {
            let Some(n) = slot else { continue };
            n.active.clear();
            for (port, l) in n.inputs.iter().enumerate() {
                let listed = !self.links[l.0].is_empty();
                self.link_state[l.0] = LinkState { port, listed };
                if listed {
                    n.active.push(port);
                }
            }
            if n.inputs.is_empty() {
                self.sources.push(i);
            }
            n.deadline = n.app.next_deadline();
            if let Some(d) = n.deadline {
                self.due.insert((d, i));
            }
            n.queued = true;
            self.carry.push(i);
        }
    }

    /// Look the deadline of app `i` up again and re-index it.
    fn update_deadline(&mut self, i: usize) {
        let Some(n) = self.nodes.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let d = n.app.next_deadline();
        if d != n.deadline {
            if let Some(old) = n.deadline {
                self.due.remove(&(old, i));
            }
            if let Some(new) = d {
                self.due.insert((new, i));
            }
            n.deadline = d;
        }
    }

    /// Queue app `i`: into this breath's ready set when it comes after the app at rank
    /// `after` (the one breathing now), else into the next breath's.
    fn queue(&mut self, i: usize, after: Option<usize>) {
        let Some(n) = self.nodes.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if n.queued {
            return;
        }
        n.queued = true;
        let r = self.rank.get(i).copied().unwrap_or(usize::MAX);
        match after {
            Some(a) if r > a && r != usize::MAX => self.ready.push(Reverse((r, i))),
            _ => self.carry.push(i),
        }
    }

    /// Queue app `i` into this breath's ready set (before it starts).
    fn queue_now(&mut self, i: usize) {
        if let Some(n) = self.nodes.get_mut(i).and_then(Option::as_mut) {
            if !n.queued {
                n.queued = true;
                self.ready.push(Reverse((self.rank[i], i)));
            }
        }
    }

    /// The links in `self.sent` may hold new packets: list them on their receivers and
    /// queue those (see [`Engine::queue`] for `after`).
    fn wake_receivers(&mut self, after: Option<usize>) {
        if self.stale {
            // Rebuilt (with every app queued) before the next breath.
            self.sent.clear();
            return;
        }
        while let Some(l) = self.sent.pop() {
            let (Some(Some((_, to))), Some(st)) = (self.ends.get(l), self.link_state.get_mut(l))
            else {
                continue;
            };
            if st.listed || self.links[l].is_empty() {
                continue;
            }
            st.listed = true;
            let port = st.port;
            if let Some(n) = self.nodes[to.0].as_mut() {
                n.active.push(port);
            }
            self.queue(to.0, after);
        }
    }

    /// One breath at `now_ns`.
    pub fn breathe(&mut self, now_ns: u64) {
        self.refresh();
        for i in std::mem::take(&mut self.recheck) {
            self.update_deadline(i);
        }
        // The ready set: what the last breath left, the sources, the deadlines due.
        for i in std::mem::take(&mut self.carry) {
            self.ready.push(Reverse((self.rank[i], i)));
        }
        for k in 0..self.sources.len() {
            self.queue_now(self.sources[k]);
        }
        let due: Vec<usize> = self
            .due
            .range(..(now_ns.saturating_add(1), 0))
            .map(|&(_, i)| i)
            .collect();
        for i in due {
            self.queue_now(i);
        }
        while let Some(Reverse((rank, i))) = self.ready.pop() {
            let Engine {
                pool,
                links,
                nodes,
                sent,
                link_state,
                ..
            } = self;
            let Some(n) = nodes[i].as_mut() else { continue };
            n.queued = false;
            n.active.sort_unstable();
            let mut cx = Ctx {
                pool,
                links,
                inputs: &n.inputs,
                outputs: &n.outputs,
                active: &n.active,
                sent,
                now_ns,
            };
            n.app.breathe(&mut cx);
            // Inputs it left packets on keep it ready for the next breath.
            let inputs = &n.inputs;
            n.active.retain(|&port| {
                let l = inputs[port].0;
                let left = !links[l].is_empty();
                link_state[l].listed = left;
                left
            });
            let again = !n.active.is_empty();
            self.update_deadline(i);
            self.wake_receivers(Some(rank));
            if again {
                self.queue(i, None);
            }
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
            pool,
            links,
            nodes,
            sent,
            ..
        } = self;
        let n = nodes.get_mut(id.0)?.as_mut()?;
        let app: &mut dyn Any = n.app.as_mut();
        let app = app.downcast_mut::<T>()?;
        let active: Vec<usize> = (0..n.inputs.len()).collect();
        let mut cx = Ctx {
            pool,
            links,
            inputs: &n.inputs,
            outputs: &n.outputs,
            active: &active,
            sent,
            now_ns,
        };
        let r = f(app, &mut cx);
        self.wake_receivers(None);
        self.touched(id.0);
        Some(r)
    }

    /// App `i` may have changed outside a breath: look its deadline up again, and let
    /// it breathe in the next breath.
    fn touched(&mut self, i: usize) {
        if self.stale {
            return;
        }
        self.recheck.push(i);
        self.queue(i, None);
    }

    /// When something is next due (held packets, plugin timers, scheduled sources).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.stale {
            return self.apps().filter_map(|(_, a)| a.next_deadline()).min();
        }
        let checked = self
            .recheck
            .iter()
            .filter_map(|&i| self.app(AppId(i))?.next_deadline());
        self.due
            .first()
            .map(|&(d, _)| d)
            .into_iter()
            .chain(checked)
            .min()
    }

    /// Whether a further breath has work now: packets wait on links, or apps were
    /// touched between breaths.
    pub fn links_busy(&self) -> bool {
        self.stale || !self.carry.is_empty()
    }

    pub fn app(&self, id: AppId) -> Option<&dyn App> {
        self.nodes.get(id.0)?.as_ref().map(|n| n.app.as_ref())
    }

    /// Typed access to an app.
    pub fn app_ref<T: App>(&self, id: AppId) -> Option<&T> {
        let app: &dyn Any = self.nodes.get(id.0)?.as_ref()?.app.as_ref();
        app.downcast_ref::<T>()
    }

    /// Typed access to an app (for control operations and tests). The app breathes in
    /// the next breath, and its deadline is looked up again.
    pub fn app_mut<T: App>(&mut self, id: AppId) -> Option<&mut T> {
        let is_t = {
            let app: &dyn Any = self.nodes.get(id.0)?.as_ref()?.app.as_ref();
            app.is::<T>()
        };
        if !is_t {
            return None;
        }
        self.touched(id.0);
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

    /// Counts its breaths; forwards input to output 0 (or keeps it, with `hold`), and
    /// has a deadline when given one.
    struct Probe {
        c: Counters,
        breaths: std::rc::Rc<std::cell::Cell<usize>>,
        deadline: Option<u64>,
        /// Take at most this many packets a breath.
        take: usize,
    }
    impl App for Probe {
        fn breathe(&mut self, cx: &mut Ctx<'_>) {
            self.breaths.set(self.breaths.get() + 1);
            if self.deadline.is_some_and(|d| d <= cx.now_ns) {
                self.deadline = None;
            }
            let mut taken = 0;
            while taken < self.take {
                let Some(port) = cx.next_input(0) else { break };
                let p = cx.receive(port).unwrap();
                taken += 1;
                if cx.n_outputs() > 0 {
                    cx.transmit(0, p, &mut self.c);
                } else {
                    self.c.rx_packets += 1;
                    cx.pool.free(p);
                }
            }
        }
        fn next_deadline(&self) -> Option<u64> {
            self.deadline
        }
        fn counters(&self) -> &Counters {
            &self.c
        }
    }

    fn probe(take: usize) -> (Box<Probe>, std::rc::Rc<std::cell::Cell<usize>>) {
        let breaths = std::rc::Rc::new(std::cell::Cell::new(0));
        let p = Probe {
            c: Counters::default(),
            breaths: breaths.clone(),
            deadline: None,
            take,
        };
        (Box::new(p), breaths)
    }

    /// A source → classifier-like fan-out → N chains → one sink, as a spec with N flows
    /// builds. Returns the engine, the fan-out, each chain's app, and the sink.
    struct Fan {
        e: Engine,
        head: AppId,
        chains: Vec<(AppId, std::rc::Rc<std::cell::Cell<usize>>)>,
        sink: AppId,
        sink_breaths: std::rc::Rc<std::cell::Cell<usize>>,
    }

    fn fan(n: usize) -> Fan {
        let mut e = Engine::new(PacketPool::new(4096, 256));
        let (h, _) = probe(usize::MAX);
        let head = e.add(h);
        let (s, sink_breaths) = probe(usize::MAX);
        let sink = e.add(s);
        let mut chains = Vec::new();
        for _ in 0..n {
            let (a, b) = probe(usize::MAX);
            let a = e.add(a);
            e.connect(head, a);
            e.connect(a, sink);
            chains.push((a, b));
        }
        Fan {
            e,
            head,
            chains,
            sink,
            sink_breaths,
        }
    }

    #[test]
    fn a_breath_visits_only_apps_with_input_or_a_deadline_due() {
        let mut f = fan(10_000);
        // The first breath after building visits everything once.
        f.e.breathe(0);
        assert!(f.chains.iter().all(|(_, b)| b.get() == 1));
        assert!(!f.e.links_busy());
        // Idle: nothing but the source breathes, however many chains there are.
        for t in 1..100 {
            f.e.breathe(t);
        }
        assert!(f.chains.iter().all(|(_, b)| b.get() == 1));
        assert_eq!(f.sink_breaths.get(), 1);
        // A packet on chain 7 000's input: that chain and the sink breathe, in order,
        // in the same breath; no other chain does.
        let (into, _) = f.e.links_of(f.chains[7000].0);
        let l = into[0];
        let p = f.e.pool.alloc(60, 0).unwrap();
        assert_eq!(f.e.deliver(l, &[p]), 1);
        assert!(f.e.links_busy());
        f.e.breathe(100);
        assert_eq!(f.chains[7000].1.get(), 2);
        assert_eq!(f.sink_breaths.get(), 2);
        assert_eq!(f.e.app(f.sink).unwrap().counters().rx_packets, 1);
        let others: usize = f.chains.iter().map(|(_, b)| b.get()).sum();
        assert_eq!(others, 10_001);
        assert!(!f.e.links_busy());
        // A deadline: the app breathes when it is due, not before, and is told of it by
        // `next_deadline`.
        let a = f.chains[42].0;
        f.e.app_mut::<Probe>(a).unwrap().deadline = Some(500);
        assert_eq!(f.e.next_deadline(), Some(500));
        f.e.breathe(200); // app_mut lets it breathe once (it may have changed)
        let after_touch = f.chains[42].1.get();
        f.e.breathe(499);
        assert_eq!(f.chains[42].1.get(), after_touch);
        f.e.breathe(500);
        assert_eq!(f.chains[42].1.get(), after_touch + 1);
        assert_eq!(f.e.next_deadline(), None);
        // The head is a source: it breathed every time.
        let _ = f.head;
    }

    #[test]
    fn input_left_on_a_link_carries_to_the_next_breath() {
        let mut e = Engine::new(PacketPool::new(64, 256));
        let (a, _) = probe(usize::MAX);
        let a = e.add(a);
        let (slow, slow_breaths) = probe(2); // takes two packets a breath
        let slow = e.add(slow);
        let (s, _) = probe(usize::MAX);
        let sink = e.add(s);
        e.chain(&[a, slow, sink]);
        e.breathe(0);
        let into = e.links_of(slow).0[0];
        let ps: Vec<Packet> = (0..5).map(|_| e.pool.alloc(60, 0).unwrap()).collect();
        e.deliver(into, &ps);
        let mut breaths = 0;
        while e.links_busy() {
            e.breathe(1);
            breaths += 1;
            assert!(breaths < 10);
        }
        // 2 + 2 + 1: three breaths, each forwarding in the same breath to the sink.
        assert_eq!(breaths, 3);
        assert_eq!(slow_breaths.get(), 1 + 3);
        assert_eq!(e.app(sink).unwrap().counters().rx_packets, 5);
    }

    #[test]
    fn a_sink_with_many_inputs_takes_them_in_port_order() {
        let mut f = fan(64);
        f.e.breathe(0);
        // Packets on chains 50, 3 and 20 (in that order): the sink takes them by port.
        let mut ids = Vec::new();
        for k in [50usize, 3, 20] {
            let l = f.e.links_of(f.chains[k].0).0[0];
            let p = f.e.pool.alloc(60, 0).unwrap();
            ids.push((k, p.id));
            f.e.deliver(l, &[p]);
        }
        #[derive(Default)]
        struct Order(std::cell::RefCell<Vec<usize>>, Counters);
        impl App for Order {
            fn breathe(&mut self, cx: &mut Ctx<'_>) {
                let mut port = 0;
                while let Some(at) = cx.next_input(port) {
                    while let Some(p) = cx.receive(at) {
                        self.0.borrow_mut().push(at);
                        cx.pool.free(p);
                    }
                    port = at + 1;
                }
            }
            fn counters(&self) -> &Counters {
                &self.1
            }
        }
        // Swap the sink for one that records the ports, keeping its links.
        let inputs: Vec<AppId> = f.chains.iter().map(|(a, _)| *a).collect();
        f.e.remove(f.sink);
        let sink = f.e.add(Box::<Order>::default());
        for &a in &inputs {
            f.e.connect(a, sink);
        }
        f.e.breathe(1);
        let seen = f.e.app_ref::<Order>(sink).unwrap().0.borrow().clone();
        assert_eq!(seen, [3, 20, 50]);
    }
}
