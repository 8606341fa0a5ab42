//! The one apply path: every configuration change — the first plan at startup, a
//! SIGHUP, an HTTP request, a schedule — goes from the running plan to a new one here,
//! in two steps.
//!
//! 1. [`prepare`], on any thread but the packet thread: diff the new plan against a
//!    [`RunningView`] by typed [`StageId`], compile modules, instantiate (run the
//!    plugin's init for) every new or changed stage. Any error refuses the whole change
//!    and nothing has been touched.
//! 2. [`Network::commit`], on the packet thread between two breaths, infallible:
//!    unchanged stages are left alone; changed stages take their new instance in place,
//!    keeping their held packets and (same state version) their state; when a
//!    direction's shape changed (stages added, removed or reordered, flows changed) its
//!    links are rebuilt with the engine's add, connect and remove, and every packet on a
//!    link or held by a removed stage is handed to the next stage that still exists.
//!    Nothing in flight is lost.
//!
//! [`Network::apply`] does both at once, for offline use (replay, tests). Every change
//! ends in a [`Report`]: applied (with what changed) or refused (with why), and the
//! generation number of the configuration that runs afterwards.
//!
//! Link ABI 1.1: [`Network::command`] delivers a command to one stage between breaths.
//! A stage whose plugin has two outputs gets its port 1, the reverse port, linked
//! straight to the *opposite* direction's sink (the transmit side of the interface its
//! own direction reads from): a link into a sink never makes a cycle, and relinking a
//! direction takes out only the links that start in it, so the other direction's
//! reverse links into its sink stay.

pub use crate::errors::{ApplyError, CommandError};
use crate::plan::{seed_for, ChainId, Plan, StageId};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use synthnet_core::delay::HoldShare;
use synthnet_core::flow::Classifier;
use synthnet_core::{AppId, Counters, Direction, Drops, Engine, LinkId, Packet};
use synthnet_runtime::app::check_ports;
use synthnet_runtime::{Factory, Handover, Health, Instance, Loader, PluginApp, PluginError};

/// What an applied change did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Changes {
    pub kept: Vec<StageId>,
    pub swapped: Vec<(StageId, Handover)>,
    pub added: Vec<StageId>,
    pub removed: Vec<StageId>,
    /// Directions whose links were rebuilt (their shape changed).
    pub relinked: Vec<Direction>,
    /// Packets handed on from links and removed stages while relinking.
    pub moved_packets: usize,
    /// What the change could not do (e.g. pool sizes, which need a restart).
    pub warnings: Vec<String>,
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let handed = self
            .swapped
            .iter()
            .filter(|(_, h)| *h == Handover::State)
            .count();
        write!(
            f,
            "{} unchanged, {} swapped ({handed} with state), {} added, {} removed",
            self.kept.len(),
            self.swapped.len(),
            self.added.len(),
            self.removed.len()
        )?;
        if !self.relinked.is_empty() {
            write!(f, ", {} held packets moved on", self.moved_packets)?;
        }
        for w in &self.warnings {
            write!(f, "; {w}")?;
        }
        Ok(())
    }
}

/// The answer to a change: the generation running afterwards, and what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub generation: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    Applied(Changes),
    Refused(ApplyError),
}

impl Report {
    pub fn refused(generation: u64, e: ApplyError) -> Report {
        Report {
            generation,
            outcome: Outcome::Refused(e),
        }
    }
    pub fn is_applied(&self) -> bool {
        matches!(self.outcome, Outcome::Applied(_))
    }
}

/// What [`prepare`] needs to know of the running configuration: cheap to clone, kept by
/// whoever prepares changes.
#[derive(Clone, Debug, Default)]
pub struct RunningView {
    pub generation: u64,
    /// The directions the network has ports for (replay wires one).
    pub directions: Vec<Direction>,
    pub plan: Option<Plan>,
    /// Code + config fingerprint and seed of every running stage.
    stages: HashMap<StageId, (u64, u64)>,
}

/// A stage made off the packet thread, ready to commit.
pub struct Ready {
    factory: Arc<dyn Factory>,
    seed: u64,
    instance: Box<dyn Instance>,
}

enum Action {
    Keep,
    Swap(Ready),
    Add(Ready),
}

/// A change ready to commit.
pub struct Prepared {
    plan: Plan,
    base_generation: u64,
    actions: Vec<(StageId, Action)>,
}

/// Prepare `plan` to replace what `view` describes: every new or changed stage is
/// compiled and instantiated here (its init runs here), so the packet thread only
/// commits. Stages whose code, config and seed are unchanged are kept.
pub fn prepare(
    view: &RunningView,
    plan: Plan,
    loader: &mut Loader,
) -> Result<Prepared, ApplyError> {
    let mut actions = Vec::new();
    for &dir in &view.directions {
        for (id, stage) in plan.stages(dir) {
            let config =
                serde_json::to_vec(&stage.config).map_err(|e| ApplyError::at(id.to_string(), e))?;
            let factory = loader
                .factory(&stage.plugin, &config, plan.limits.plugin_memory_mib << 20)
                .map_err(|e| ApplyError::at(id.to_string(), e))?;
            let seed = seed_for(plan.seed, &id);
            let action = match view.stages.get(&id) {
                Some(&(fp, s)) if fp == factory.fingerprint() && s == seed => Action::Keep,
                running => {
                    let ready =
                        make(factory, seed).map_err(|e| ApplyError::at(id.to_string(), e))?;
                    if running.is_some() {
                        Action::Swap(ready)
                    } else {
                        Action::Add(ready)
                    }
                }
            };
            actions.push((id, action));
        }
    }
    Ok(Prepared {
        plan,
        base_generation: view.generation,
        actions,
    })
}

fn make(factory: Arc<dyn Factory>, seed: u64) -> Result<Ready, PluginError> {
    let instance = factory.instantiate(seed)?;
    check_ports(factory.plugin(), instance.layout())?;
    Ok(Ready {
        factory,
        seed,
        instance,
    })
}

/// The ends of one direction in the engine: where its packets come from and go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub source: AppId,
    pub sink: AppId,
}

/// A running stage.
struct Running {
    app: AppId,
}

/// Counters of one stage, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct StageStats {
    pub id: StageId,
    pub plugin: String,
    pub counters: Counters,
    pub held: usize,
    pub health: Health,
    /// What the plugin itself publishes (names from its header).
    pub plugin_counters: Vec<(String, u64)>,
}

/// Counters of one direction: received at its source, sent by its sink, drops anywhere
/// in it, cumulative since start (stages removed by a change still count).
#[derive(Debug, Clone, Serialize)]
pub struct DirectionStats {
    pub direction: Direction,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: Drops,
    pub held: usize,
    pub stages: Vec<StageStats>,
}

/// Every counter of the network at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub generation: u64,
    pub directions: Vec<DirectionStats>,
    pub pool_capacity: usize,
    pub pool_in_use: usize,
}

/// An engine and the plan it runs: the one owner of the graph's shape.
pub struct Network {
    pub engine: Engine,
    ports: BTreeMap<Direction, Ports>,
    plan: Option<Plan>,
    generation: u64,
    stages: BTreeMap<StageId, Running>,
    classifiers: BTreeMap<Direction, AppId>,
    /// Counters of apps removed by changes, per direction: totals never run backwards.
    retired: BTreeMap<Direction, Counters>,
    /// The shares of the pool that held packets count against.
    dir_shares: BTreeMap<Direction, Rc<HoldShare>>,
    chain_shares: BTreeMap<ChainId, Rc<HoldShare>>,
    /// Where a direction's reverse port leads when not to the opposite direction's
    /// sink (replay, which has one direction, counts it apart).
    reverse: BTreeMap<Direction, AppId>,
    /// Stages a change removed, emptied of packets, waiting to be dropped a few at a
    /// time between breaths ([`Network::reap`]): dropping a wasm instance unmaps its
    /// memory, and ten thousand at once would hold the packet thread for a third of a
    /// second.
    graveyard: Vec<Box<dyn synthnet_core::App>>,
}

/// Of the pool, the packets one direction's delay lines may hold: 45 %, so the other
/// direction always has its own 45 % and 10 % stays for packets on links and in I/O.
pub const DIRECTION_SHARE_PERCENT: usize = 45;
/// Of a direction's share, what one chain may hold when the direction has flows: 80 %,
/// so a flow's chain (or the default one) always finds room while another is full.
pub const CHAIN_SHARE_PERCENT: usize = 80;

impl Network {
    /// A network over `engine` whose directions run from `ports`' sources to their sinks
    /// (apps already in the engine). Nothing is connected until the first commit.
    pub fn new(engine: Engine, ports: impl IntoIterator<Item = (Direction, Ports)>) -> Network {
        Network {
            engine,
            ports: ports.into_iter().collect(),
            plan: None,
            generation: 0,
            stages: BTreeMap::new(),
            classifiers: BTreeMap::new(),
            retired: BTreeMap::new(),
            graveyard: Vec::new(),
            dir_shares: BTreeMap::new(),
            chain_shares: BTreeMap::new(),
            reverse: BTreeMap::new(),
        }
    }

    /// Send what direction `dir`'s stages put on their reverse port to `sink` (an app in
    /// the engine) instead of the opposite direction's sink. Call before the first
    /// commit (replay: one direction, its reverse traffic counted apart).
    pub fn set_reverse_sink(&mut self, dir: Direction, sink: AppId) {
        self.reverse.insert(dir, sink);
    }

    /// Where direction `dir`'s reverse port leads: the transmit side of the interface
    /// `dir` reads from, which is the opposite direction's sink.
    pub fn reverse_sink(&self, dir: Direction) -> Option<AppId> {
        self.reverse
            .get(&dir)
            .copied()
            .or_else(|| self.ports.get(&opposite(dir)).map(|p| p.sink))
    }

    /// Deliver command `cmd` to stage `stage` at `now_ns` on the engine clock, between
    /// two breaths (never during one): the plugin answers it as a tick, and the verdicts
    /// it writes (injected packets, released or dropped parked ones, its timer) are
    /// applied exactly as a tick's. What it sends waits on links for the next breath.
    /// Returns the plugin's reply.
    pub fn command(
        &mut self,
        stage: &StageId,
        now_ns: u64,
        cmd: &serde_json::Value,
    ) -> Result<serde_json::Value, CommandError> {
        let Some(app) = self.stages.get(stage).map(|r| r.app) else {
            // A few names help whoever mistyped one; all of them (thousands of flows)
            // would make every bad request a very long log line.
            const SHOWN: usize = 8;
            let mut running: Vec<String> = self
                .stages
                .keys()
                .take(SHOWN)
                .map(|s| s.to_string())
                .collect();
            if self.stages.len() > SHOWN {
                running.push(format!("and {} more", self.stages.len() - SHOWN));
            }
            return Err(CommandError::UnknownStage {
                stage: stage.to_string(),
                running: if running.is_empty() {
                    "none".into()
                } else {
                    running.join(", ")
                },
            });
        };
        let text = serde_json::to_vec(cmd).unwrap_or_default();
        let max = synthnet_sdk::abi::MAX_COMMAND_LEN;
        if text.len() > max {
            return Err(CommandError::TooLarge {
                len_bytes: text.len(),
                max_bytes: max,
            });
        }
        let answer = self.engine.with_app::<PluginApp, _>(app, now_ns, |a, cx| {
            (a.factory().plugin().to_string(), a.command(cx, &text))
        });
        let (plugin, answer) = answer.ok_or_else(|| CommandError::UnknownStage {
            stage: stage.to_string(),
            running: "none".into(),
        })?;
        let stage = stage.to_string();
        match answer {
            Ok(reply) => serde_json::from_slice(&reply).map_err(|e| CommandError::BadReply {
                stage,
                plugin,
                message: e.to_string(),
            }),
            Err(e) => Err(CommandError::of_plugin(stage, plugin, e)),
        }
    }

    /// The held-packet limits in force: per direction, and per chain.
    pub fn share_limits(&self) -> Vec<(String, usize)> {
        let dirs = self
            .dir_shares
            .iter()
            .map(|(d, s)| (d.to_string(), s.limit()));
        let chains = self
            .chain_shares
            .iter()
            .map(|(c, s)| (c.to_string(), s.limit()));
        dirs.chain(chains).collect()
    }

    /// Give every stage its chain's and its direction's share of the pool (made or
    /// resized for `plan`), so one chain holding packets cannot starve the others.
    fn assign_shares(&mut self, plan: &Plan) {
        let pool = self.engine.pool.capacity();
        let mut live = std::collections::HashSet::new();
        for &dir in self.ports.keys() {
            let dir_limit = pool * DIRECTION_SHARE_PERCENT / 100;
            let d = self
                .dir_shares
                .entry(dir)
                .or_insert_with(|| HoldShare::new(dir_limit));
            d.set_limit(dir_limit);
            let d = d.clone();
            let chain_limit = if plan.direction(dir).flows.is_empty() {
                dir_limit
            } else {
                dir_limit * CHAIN_SHARE_PERCENT / 100
            };
            for (chain, stages) in plan.chains(dir) {
                let c = self
                    .chain_shares
                    .entry(chain.clone())
                    .or_insert_with(|| HoldShare::new(chain_limit));
                c.set_limit(chain_limit);
                let c = c.clone();
                for s in stages {
                    let app = self.stages.get(&stage_id(&chain, &s.name)).map(|r| r.app);
                    if let Some(app) = app.and_then(|a| self.engine.app_mut::<PluginApp>(a)) {
                        app.set_shares(vec![c.clone(), d.clone()]);
                    }
                }
                live.insert(chain);
            }
        }
        self.chain_shares.retain(|c, _| live.contains(c));
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Drop up to `n` of the stages changes removed; whether more wait.
    pub fn reap(&mut self, n: usize) -> bool {
        let keep = self.graveyard.len().saturating_sub(n);
        self.graveyard.truncate(keep);
        !self.graveyard.is_empty()
    }
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }
    pub fn ports(&self, d: Direction) -> Option<Ports> {
        self.ports.get(&d).copied()
    }

    /// What [`prepare`] needs to diff against this network.
    pub fn view(&mut self) -> RunningView {
        let mut stages = HashMap::new();
        for (id, r) in &self.stages {
            if let Some(a) = self.engine.app_ref::<PluginApp>(r.app) {
                stages.insert(id.clone(), (a.factory().fingerprint(), a.seed()));
            }
        }
        RunningView {
            generation: self.generation,
            directions: self.ports.keys().copied().collect(),
            plan: self.plan.clone(),
            stages,
        }
    }

    /// Prepare and commit `plan` here and now (offline use: replay, tests, tools).
    pub fn apply(&mut self, plan: Plan, loader: &mut Loader) -> Report {
        let view = self.view();
        let report = match prepare(&view, plan, loader) {
            Ok(p) => self.commit(p),
            Err(e) => Report::refused(self.generation, e),
        };
        self.reap(usize::MAX);
        report
    }

    /// Commit a prepared change between two breaths. Refused only when the network
    /// changed since it was prepared.
    pub fn commit(&mut self, p: Prepared) -> Report {
        if p.base_generation != self.generation {
            let e = ApplyError {
                field: None,
                message: format!(
                    "prepared against generation {}, but {} runs now: prepare it again",
                    p.base_generation, self.generation
                ),
            };
            return Report::refused(self.generation, e);
        }
        let Prepared { plan, actions, .. } = p;
        let mut changes = Changes::default();
        if let Some(old) = &self.plan {
            if (old.limits.pool_packets, old.limits.pool_large_packets)
                != (plan.limits.pool_packets, plan.limits.pool_large_packets)
            {
                changes
                    .warnings
                    .push("limits.pool_* take effect at the next start".into());
            }
        }
        let mut fresh: HashMap<StageId, Ready> = HashMap::new();
        let mut rewire: Vec<Direction> = Vec::new();
        for (id, action) in actions {
            match action {
                Action::Keep => changes.kept.push(id),
                Action::Add(r) => {
                    fresh.insert(id, r);
                }
                Action::Swap(r) => {
                    let app = self.stages.get(&id).map(|s| s.app);
                    let app = app.and_then(|a| self.engine.app_mut::<PluginApp>(a));
                    match app {
                        Some(app) => {
                            let outputs = app.outputs();
                            let h = app.commit_swap(r.instance, r.factory, r.seed);
                            // A reverse port that comes or goes changes the links.
                            if app.outputs() != outputs {
                                rewire.push(id.chain.dir);
                            }
                            changes.swapped.push((id, h));
                        }
                        // Cannot happen (the view said it runs); add it instead.
                        None => {
                            fresh.insert(id, r);
                        }
                    }
                }
            }
        }
        let dirs: Vec<Direction> = self.ports.keys().copied().collect();
        for dir in dirs {
            let same = self
                .plan
                .as_ref()
                .is_some_and(|old| same_shape(old, &plan, dir));
            if !same || rewire.contains(&dir) {
                self.relink(dir, &plan, &mut fresh, &mut changes);
            }
        }
        self.assign_shares(&plan);
        self.plan = Some(plan);
        self.generation += 1;
        Report {
            generation: self.generation,
            outcome: Outcome::Applied(changes),
        }
    }

    /// Rebuild direction `dir`'s links for `plan`: remove its links (keeping their
    /// packets), remove stages `plan` drops, add the `fresh` ones, connect everything in
    /// `plan`'s order and hand every kept packet to where it was going, or on.
    fn relink(
        &mut self,
        dir: Direction,
        plan: &Plan,
        fresh: &mut HashMap<StageId, Ready>,
        changes: &mut Changes,
    ) {
        let Some(ports) = self.ports.get(&dir).copied() else {
            return;
        };
        let e = &mut self.engine;
        // Where a stage's packets go if it disappears: the next stage of its old chain.
        let mut old_next: HashMap<StageId, Vec<StageId>> = HashMap::new();
        if let Some(old) = &self.plan {
            for (chain, stages) in old.chains(dir) {
                let ids: Vec<StageId> = stages.iter().map(|s| stage_id(&chain, &s.name)).collect();
                for (i, id) in ids.iter().enumerate() {
                    old_next.insert(id.clone(), ids[i + 1..].to_vec());
                }
            }
        }
        let by_app: HashMap<AppId, StageId> = self
            .stages
            .iter()
            .filter(|(id, _)| id.chain.dir == dir)
            .map(|(id, r)| (r.app, id.clone()))
            .collect();
        // 1. Take the direction's links out, with their packets, by destination: every
        // link that starts in it. (Not every link into its sink: the opposite
        // direction's reverse links end there, and stay.)
        let classifier = self.classifiers.remove(&dir);
        let reverse = self
            .reverse
            .get(&dir)
            .copied()
            .or_else(|| self.ports.get(&opposite(dir)).map(|p| p.sink));
        let members: Vec<AppId> = by_app.keys().copied().chain(classifier).collect();
        let mut links: Vec<LinkId> = e.links_of(ports.source).1.to_vec();
        for &m in &members {
            links.extend(e.links_of(m).1);
        }
        links.sort();
        links.dedup();
        let mut pending: Vec<(Dest, Vec<Packet>)> = Vec::new();
        let ends: Vec<Option<AppId>> = links.iter().map(|&l| e.ends(l).map(|(_, to)| to)).collect();
        for (to, ps) in ends.into_iter().zip(e.remove_links(&links)) {
            if ps.is_empty() {
                continue;
            }
            let dest = match to.and_then(|to| by_app.get(&to)) {
                Some(id) => Dest::Stage(id.clone()),
                None if to.is_some() && to == classifier => Dest::Head,
                None if to.is_some() && to == reverse && to != Some(ports.sink) => Dest::Reverse,
                None => Dest::Sink,
            };
            pending.push((dest, ps));
        }
        // 2. Remove what the new plan drops; their held packets go on.
        let keep: std::collections::HashSet<StageId> = plan.stages(dir).map(|(id, _)| id).collect();
        let gone: Vec<StageId> = self
            .stages
            .keys()
            .filter(|id| id.chain.dir == dir && !keep.contains(id))
            .cloned()
            .collect();
        let retired = self.retired.entry(dir).or_default();
        for id in gone {
            let Some(r) = self.stages.remove(&id) else {
                continue;
            };
            let back = e
                .app_mut::<PluginApp>(r.app)
                .map(PluginApp::drain_reverse)
                .unwrap_or_default();
            pending.push((Dest::Reverse, back));
            if let Some((mut app, ps)) = e.remove(r.app) {
                *retired += app.counters();
                let held = app.drain_held();
                pending.push((Dest::Stage(id.clone()), ps));
                pending.push((Dest::Stage(id.clone()), held));
                self.graveyard.push(app);
            }
            changes.removed.push(id);
        }
        if let Some(c) = classifier {
            if let Some((app, ps)) = e.remove(c) {
                *retired += app.counters();
                pending.push((Dest::Head, ps));
            }
        }
        // 3. Add the new stages and the classifier; connect in the plan's order.
        let hold = plan.limits.hold_packets;
        for (id, _) in plan.stages(dir) {
            if let Some(r) = fresh.remove(&id) {
                match PluginApp::new(id.to_string(), r.instance, r.factory, r.seed, hold) {
                    Ok(app) => {
                        let a = e.add(Box::new(app));
                        self.stages.insert(id.clone(), Running { app: a });
                        changes.added.push(id);
                    }
                    // `prepare` checked the ports; nothing else can fail here.
                    Err(err) => changes.warnings.push(format!("{id}: {err}")),
                }
            }
        }
        let dp = plan.direction(dir);
        let head = if dp.flows.is_empty() {
            ports.source
        } else {
            let matchers = dp.flows.iter().map(|f| f.matcher.clone()).collect();
            let c = e.add(Box::new(Classifier::new(dir, matchers)));
            self.classifiers.insert(dir, c);
            e.connect(ports.source, c);
            c
        };
        let mut input: HashMap<AppId, LinkId> = HashMap::new();
        let mut to_sink = None;
        let mut two_outputs = Vec::new();
        for (chain, stages) in plan.chains(dir) {
            let mut prev = head;
            for s in stages {
                let Some(r) = self.stages.get(&stage_id(&chain, &s.name)) else {
                    continue;
                };
                input.insert(r.app, e.connect(prev, r.app));
                if e.app_ref::<PluginApp>(r.app)
                    .is_some_and(|a| a.outputs() > 1)
                {
                    two_outputs.push(r.app);
                }
                prev = r.app;
            }
            to_sink = Some(e.connect(prev, ports.sink));
        }
        // Port 1 of a stage with a reverse port, now that its port 0 is connected.
        let mut to_reverse = None;
        for app in two_outputs {
            if let Some(rs) = reverse {
                to_reverse = Some(e.connect(app, rs));
            }
        }
        // Packets that were on their way back to the sender: on any link into that sink.
        let to_reverse =
            to_reverse.or_else(|| reverse.and_then(|rs| e.links_of(rs).0.first().copied()));
        let head_link = e.links_of(ports.source).1.first().copied();
        // 4. Every kept packet to where it was going, or to the next stage still there.
        let stages = &self.stages;
        let input_of = |id: &StageId| stages.get(id).and_then(|r| input.get(&r.app)).copied();
        let resolve = |id: &StageId| -> Option<LinkId> {
            input_of(id).or_else(|| old_next.get(id)?.iter().find_map(input_of))
        };
        let mut moved = 0;
        for (dest, ps) in pending {
            if ps.is_empty() {
                continue;
            }
            let link = match dest {
                Dest::Head => head_link,
                Dest::Sink => to_sink,
                Dest::Reverse => to_reverse,
                Dest::Stage(id) => resolve(&id).or(to_sink),
            };
            moved += ps.len();
            match link {
                Some(l) => {
                    let sent = e.deliver(l, &ps);
                    if sent < ps.len() {
                        log::warn!(
                            "{dir}: {} packets did not fit their new link",
                            ps.len() - sent
                        );
                    }
                }
                None => e.pool.free_all(&ps),
            }
        }
        changes.moved_packets += moved;
        changes.relinked.push(dir);
    }

    /// Every counter, now. Plugin-published counters are read from the instances.
    pub fn snapshot(&mut self) -> Snapshot {
        let mut directions = Vec::new();
        for (&dir, ports) in &self.ports {
            let e = &mut self.engine;
            let mut drops = self.retired.get(&dir).map(|c| c.drops).unwrap_or_default();
            let mut held = 0;
            let mut stages = Vec::new();
            for (id, r) in self.stages.iter().filter(|(id, _)| id.chain.dir == dir) {
                let Some(app) = e.app_mut::<PluginApp>(r.app) else {
                    continue;
                };
                let counters = *synthnet_core::App::counters(app);
                drops += &counters.drops;
                let h = synthnet_core::App::held(app);
                held += h;
                stages.push(StageStats {
                    id: id.clone(),
                    plugin: app.factory().plugin().to_string(),
                    counters,
                    held: h,
                    health: app.health().clone(),
                    plugin_counters: app.plugin_counters(),
                });
            }
            let io = [
                Some(ports.source),
                self.classifiers.get(&dir).copied(),
                Some(ports.sink),
            ];
            for a in io.into_iter().flatten() {
                if let Some(app) = e.app(a) {
                    drops += &app.counters().drops;
                    held += app.held();
                }
            }
            let src = e
                .app(ports.source)
                .map(|a| *a.counters())
                .unwrap_or_default();
            let sink = e.app(ports.sink).map(|a| *a.counters()).unwrap_or_default();
            directions.push(DirectionStats {
                direction: dir,
                rx_packets: src.rx_packets,
                rx_bytes: src.rx_bytes,
                tx_packets: sink.tx_packets,
                tx_bytes: sink.tx_bytes,
                drops,
                held,
                stages,
            });
        }
        Snapshot {
            generation: self.generation,
            directions,
            pool_capacity: self.engine.pool.capacity(),
            pool_in_use: self.engine.pool.in_use(),
        }
    }
}

/// Where packets taken off a link were going.
enum Dest {
    /// The direction's first app after its source (the classifier, or a chain).
    Head,
    Sink,
    /// Back toward the sender: the direction's reverse sink.
    Reverse,
    Stage(StageId),
}

/// The other direction.
fn opposite(d: Direction) -> Direction {
    match d {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn stage_id(chain: &ChainId, name: &str) -> StageId {
    StageId {
        chain: chain.clone(),
        name: name.to_string(),
    }
}

/// Whether direction `dir` has the same flows and the same stages in the same order in
/// both plans (then a change is swaps in place at most).
fn same_shape(a: &Plan, b: &Plan, dir: Direction) -> bool {
    let (da, db) = (a.direction(dir), b.direction(dir));
    let names = |p: &Plan| -> Vec<Vec<String>> {
        p.chains(dir)
            .map(|(_, s)| s.iter().map(|s| s.name.clone()).collect())
            .collect()
    };
    da.flows.len() == db.flows.len()
        && da
            .flows
            .iter()
            .zip(&db.flows)
            .all(|(x, y)| x.label == y.label && x.matcher == y.matcher)
        && names(a) == names(b)
}

/// An app that does nothing: the ends of a dry-run network.
struct Idle(Counters);

impl synthnet_core::App for Idle {
    fn breathe(&mut self, _: &mut synthnet_core::Ctx<'_>) {}
    fn counters(&self) -> &Counters {
        &self.0
    }
}

/// Build `plan` the way the bridge and replay would, in a network with no interfaces (a
/// source and a sink per direction that never see a packet): every plugin is compiled
/// and instantiated with its config, and the graph is built. What this applies, the
/// bridge and replay run. (`synthnet check`, the property test and the fuzzer use it.)
pub fn dry_run(plan: Plan, loader: &mut Loader) -> Report {
    let mut engine = Engine::new(synthnet_core::PacketPool::new(1024, 2048));
    let mut ports = Vec::new();
    for d in Direction::BOTH {
        let source = engine.add(Box::new(Idle(Counters::default())));
        let sink = engine.add(Box::new(Idle(Counters::default())));
        ports.push((d, Ports { source, sink }));
    }
    let mut net = Network::new(engine, ports);
    let report = net.apply(plan, loader);
    let _ = net.snapshot();
    report
}
