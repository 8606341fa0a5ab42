//! `synthnet bridge OUTER INNER SPEC`: the spec's ingress chain on OUTER → INNER, its
//! egress chain on INNER → OUTER, live.
//!
//! One thread runs the engine: it breathes while packets flow and, when nothing is due,
//! sleeps in `ppoll` on both receive rings with a timeout equal to the next deadline (a
//! held packet, a plugin timer, housekeeping), so an idle bridge costs nothing and a
//! sleeping bridge adds only the wake-up to a packet's latency.
//!
//! **Reload.** A reload request (SIGHUP) starts a loader thread that re-reads the spec
//! and any changed `.wasm` files, compiles them and validates every new or changed
//! stage by instantiating it — all off the packet path. Between two breaths the engine
//! thread then applies the result: an unchanged stage keeps running untouched; a
//! changed one is swapped in place (held packets stay, state is handed over when old and
//! new declare the same state version); new stages are added and removed stages hand
//! their held packets downstream, so nothing in flight is lost. Every swap is prepared
//! before any is committed: a bad spec or plugin leaves the running configuration as it
//! was, and the error is logged.

use crate::engine::{AppId, DropCause, Engine};
use crate::network::{self, dir_name, seed_for, Loader};
use crate::packet::PacketPool;
use crate::plugin::wasm::WasmRuntime;
use crate::plugin::{Factory, PluginApp};
use crate::raw::{RawRx, RawTx};
use crate::spec::{self, Direction, Plan};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest frame a small pool slot holds: an MTU frame with VLAN tags and room to grow.
pub const SMALL_FRAME: usize = 2032;
/// Largest GSO/GRO super-packet: 64 KiB of IP packet plus its Ethernet header.
pub const LARGE_FRAME: usize = 65_536 + 64;
/// How often ports look for vanished interfaces and read the kernel's ring drops.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// What to bridge, and how.
#[derive(Clone, Debug)]
pub struct Options {
    pub outer: String,
    pub inner: String,
    /// The spec file; `None` runs the built-in default spec (and cannot reload).
    pub spec: Option<PathBuf>,
    /// Period of the one-line stats report on stderr; `None`: no report.
    pub stats: Option<Duration>,
    /// Receive ring frames per interface.
    pub ring_frames: usize,
}

/// How the outside asks the bridge to reload or stop, and wakes it to notice.
#[derive(Clone)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
    wake_tx: Arc<UnixStream>,
    wake_rx: Arc<UnixStream>,
}

impl Control {
    pub fn new() -> Result<Control> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Control {
            stop: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
            wake_tx: Arc::new(tx),
            wake_rx: Arc::new(rx),
        })
    }

    /// SIGHUP reloads, SIGINT and SIGTERM stop (each also wakes the engine thread).
    pub fn install_signal_handlers(&self) -> Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        signal_hook::flag::register(SIGHUP, self.reload.clone())?;
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, self.stop.clone())?;
        }
        for sig in [SIGHUP, SIGINT, SIGTERM] {
            signal_hook::low_level::pipe::register(sig, self.wake_tx.try_clone()?)?;
        }
        Ok(())
    }

    pub fn wake(&self) {
        use std::io::Write;
        let _ = (&*self.wake_tx).write(&[1]);
    }
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::SeqCst);
        self.wake();
    }
    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&*self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// A stage of the new plan, compiled and checked by the loader thread.
struct Ready {
    factory: Arc<dyn Factory>,
    seed: u64,
}

/// What the loader thread hands the engine thread.
struct Loaded {
    plan: Plan,
    stages: HashMap<String, Ready>,
}

/// The running bridge.
pub struct Bridge {
    opts: Options,
    engine: Engine,
    plan: Plan,
    loader: Arc<Mutex<Loader>>,
    rx: [AppId; 2],
    tx: [AppId; 2],
    epoch: Instant,
    reloading: Option<mpsc::Receiver<Result<Loaded, String>>>,
    /// Reloads applied and refused, for reports and tests.
    pub reloads: u64,
    pub reload_errors: u64,
    stats: StatsState,
    /// How long before a deadline to wake up: the timer's measured lateness.
    early_ns: u64,
    runtime: Arc<WasmRuntime>,
}

/// The most a wake-up is moved forward (the rest is spent breathing, not sleeping).
const MAX_EARLY_NS: u64 = 500_000;
/// Sleeps longer than this pause the wasm epoch ticker. Long enough that a bridge with
/// packets in its delay lines keeps ticking (waking the ticker costs a context switch,
/// which would land on a held packet's departure), short enough that an idle bridge
/// does not tick at all.
const LONG_SLEEP_NS: u64 = 30_000_000;

const OUTER_RX: &str = "outer.rx";
const INNER_RX: &str = "inner.rx";
const OUTER_TX: &str = "outer.tx";
const INNER_TX: &str = "inner.tx";

impl Bridge {
    /// Open both interfaces and build the spec's chains between them.
    pub fn new(opts: Options) -> Result<Bridge> {
        let plan = match &opts.spec {
            Some(p) => spec::load(p).map_err(anyhow::Error::from)?,
            None => spec::parse(spec::DEFAULT_SPEC, std::path::Path::new("."))
                .map_err(anyhow::Error::from)?,
        };
        let mut loader = Loader::new(WasmRuntime::new()?);
        let pool = PacketPool::with_large(
            plan.limits.pool_packets,
            SMALL_FRAME,
            plan.limits.pool_large_packets,
            LARGE_FRAME,
        );
        let mut engine = Engine::new(pool);
        let open_rx = |port: &str, ifname: &str| {
            RawRx::open(port, ifname, opts.ring_frames)
                .with_context(|| format!("{port}: cannot open interface {ifname:?}"))
        };
        let open_tx = |port: &str, ifname: &str| {
            RawTx::open(port, ifname)
                .with_context(|| format!("{port}: cannot open interface {ifname:?}"))
        };
        let orx = engine.add(OUTER_RX, Box::new(open_rx("outer", &opts.outer)?));
        let irx = engine.add(INNER_RX, Box::new(open_rx("inner", &opts.inner)?));
        let otx = engine.add_late(OUTER_TX, Box::new(open_tx("outer", &opts.outer)?));
        let itx = engine.add_late(INNER_TX, Box::new(open_tx("inner", &opts.inner)?));
        network::wire(
            &mut engine,
            &plan,
            Direction::Ingress,
            orx,
            itx,
            &mut loader,
        )?;
        network::wire(&mut engine, &plan, Direction::Egress, irx, otx, &mut loader)?;
        let runtime = loader.runtime().clone();
        let b = Bridge {
            runtime,
            opts,
            engine,
            plan,
            loader: Arc::new(Mutex::new(loader)),
            rx: [orx, irx],
            tx: [otx, itx],
            epoch: Instant::now(),
            reloading: None,
            reloads: 0,
            reload_errors: 0,
            stats: StatsState::default(),
            early_ns: 50_000,
        };
        Ok(b)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The most memory the bridge can make resident, by part (bytes).
    pub fn memory_budget(&mut self) -> Vec<(&'static str, usize)> {
        let plugins = self
            .engine
            .app_ids()
            .filter(|(_, n)| n.starts_with("ingress.") || n.starts_with("egress."))
            .count();
        let mut ring = |id: AppId| {
            self.engine
                .app_mut::<RawRx>(id)
                .map_or(0, |r| r.ring_bytes())
        };
        let rings = ring(self.rx[0]) + ring(self.rx[1]);
        vec![
            ("packet pool", self.engine.pool.reserved_bytes()),
            ("receive rings", rings),
            // Socket queues for super-packets (SO_RCVBUF) and transmit buffers.
            ("socket buffers", 4 * (16 << 20)),
            (
                "plugin memory",
                plugins * (self.plan.limits.plugin_memory_mib << 20),
            ),
            (
                "delay lines",
                plugins
                    * self
                        .plan
                        .limits
                        .hold_packets
                        .min(self.engine.pool.capacity())
                    * 16,
            ),
            // Code, wasmtime's compiled modules, heap: measured ~40 MiB; with margin.
            ("program", 96 << 20),
        ]
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Run until `ctl.stop` is set.
    pub fn run(&mut self, ctl: &Control) -> Result<()> {
        // Sleep to the nanosecond asked for: the default 50 µs timer slack would be added
        // to every held packet's departure after an idle sleep.
        // SAFETY: prctl with an integer argument.
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
        }
        let mut next_house = 0;
        let mut next_stats = self.opts.stats.map(|d| d.as_nanos() as u64);
        self.stats.mark(&self.engine, 0);
        loop {
            let now = self.now_ns();
            self.engine.breathe(now);
            if now >= next_house {
                next_house = now + HOUSEKEEPING.as_nanos() as u64;
                self.housekeeping(now);
            }
            if let (Some(t), Some(d)) = (next_stats, self.opts.stats) {
                if now >= t {
                    eprintln!("{}", self.stats.line(&self.engine, now));
                    next_stats = Some(t + d.as_nanos() as u64);
                }
            }
            if ctl.stop.load(Ordering::SeqCst) {
                break;
            }
            if ctl.reload.swap(false, Ordering::SeqCst) {
                self.start_reload(ctl);
            }
            self.finish_reload();
            if self.engine.links_busy() {
                continue;
            }
            let mut deadline = self
                .engine
                .next_deadline()
                .unwrap_or(u64::MAX)
                .min(next_house);
            if let Some(t) = next_stats {
                deadline = deadline.min(t);
            }
            if self.reloading.is_some() {
                // The loader thread wakes us when done; poll its result now and then.
                deadline = deadline.min(now + 10_000_000);
            }
            let now = self.now_ns();
            // Closer to the deadline than a wake-up takes: stay awake (keep breathing).
            if deadline <= now + self.early_ns {
                continue;
            }
            let target = deadline - self.early_ns;
            // A long sleep: let the wasm epoch ticker sleep too (no call runs meanwhile).
            let long = target - now > LONG_SLEEP_NS;
            if long {
                self.runtime.pause();
            }
            let woken = self.sleep(ctl, target - now);
            if long {
                self.runtime.resume();
            }
            if !woken {
                // Woken by the timer: learn how late timer wake-ups come on this machine
                // (moving average), to wake that much earlier next time.
                let late = self.now_ns().saturating_sub(target).min(MAX_EARLY_NS);
                self.early_ns = (self.early_ns * 7 + late) / 8;
            }
        }
        Ok(())
    }

    /// Block in `ppoll` on both rings and the control socket for at most `ns`. Returns
    /// whether something other than the timeout woke us.
    fn sleep(&mut self, ctl: &Control, ns: u64) -> bool {
        let rx: Vec<Option<i32>> = self
            .rx
            .iter()
            .map(|&id| self.engine.app_mut::<RawRx>(id).and_then(|r| r.fd()))
            .collect();
        let mut fds: Vec<libc::pollfd> = rx
            .iter()
            .flatten()
            .chain([&ctl.wake_rx.as_raw_fd()])
            .map(|&fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ts = libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: fds and ts are valid for the call.
        #[allow(unsafe_code)]
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if r <= 0 {
            return false;
        }
        let now = self.now_ns();
        for pfd in &fds {
            if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) == 0 {
                continue;
            }
            for id in self.rx {
                let Some(app) = self.engine.app_mut::<RawRx>(id) else {
                    continue;
                };
                if app.fd() == Some(pfd.fd) {
                    app.on_error(now);
                }
            }
        }
        if fds.last().is_some_and(|f| f.revents != 0) {
            ctl.drain();
        }
        true
    }

    fn housekeeping(&mut self, now: u64) {
        for id in self.rx {
            if let Some(a) = self.engine.app_mut::<RawRx>(id) {
                a.housekeeping(now);
            }
        }
        for id in self.tx {
            if let Some(a) = self.engine.app_mut::<RawTx>(id) {
                a.housekeeping(now);
            }
        }
    }

    /// Start the loader thread (one at a time; a request during a reload is kept).
    fn start_reload(&mut self, ctl: &Control) {
        if self.reloading.is_some() {
            ctl.reload.store(true, Ordering::SeqCst);
            return;
        }
        let Some(path) = self.opts.spec.clone() else {
            log::warn!("reload: running the built-in default spec; nothing to re-read");
            return;
        };
        log::info!("reload: reading {}", path.display());
        let running: HashMap<String, (u64, u64)> = self.running_stages();
        let loader = self.loader.clone();
        let (tx, rx) = mpsc::channel();
        let ctl = ctl.clone();
        std::thread::Builder::new()
            .name("synthnet-reload".into())
            .spawn(move || {
                let r = load(&path, &loader, &running);
                let _ = tx.send(r);
                ctl.wake();
            })
            .expect("spawn the reload thread");
        self.reloading = Some(rx);
    }

    /// Fingerprint and seed of every running plugin app, by name.
    fn running_stages(&mut self) -> HashMap<String, (u64, u64)> {
        let ids: Vec<(AppId, String)> = self
            .engine
            .app_ids()
            .map(|(id, n)| (id, n.to_string()))
            .collect();
        ids.into_iter()
            .filter_map(|(id, n)| {
                let a = self.engine.app_mut::<PluginApp>(id)?;
                Some((n, (a.factory().fingerprint(), a.seed())))
            })
            .collect()
    }

    fn finish_reload(&mut self) {
        let Some(rx) = &self.reloading else { return };
        let r = match rx.try_recv() {
            Ok(r) => r,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => Err("the reload thread died".into()),
        };
        self.reloading = None;
        match r.and_then(|l| self.apply(l)) {
            Ok(summary) => {
                self.reloads += 1;
                log::info!("reload: applied ({summary})");
            }
            Err(e) => {
                self.reload_errors += 1;
                log::error!("reload failed, keeping the running configuration: {e}");
            }
        }
    }

    /// Apply a loaded plan between breaths. Either all of it or (on error) none.
    fn apply(&mut self, l: Loaded) -> Result<String, String> {
        let Loaded { plan, mut stages } = l;
        if plan.limits.pool_packets != self.plan.limits.pool_packets
            || plan.limits.pool_large_packets != self.plan.limits.pool_large_packets
        {
            log::warn!("reload: limits.pool_* take effect at the next start");
        }
        // Phase 1, fallible: new instances for changed stages, new apps for new ones.
        let by_name: HashMap<String, AppId> = self
            .engine
            .app_ids()
            .map(|(id, n)| (n.to_string(), id))
            .collect();
        let mut swaps = Vec::new();
        let mut fresh: HashMap<String, Box<dyn crate::engine::App>> = HashMap::new();
        let mut kept = 0;
        for dir in [Direction::Ingress, Direction::Egress] {
            for name in network::chain_names(&plan, dir).into_iter().flatten() {
                let ready = stages
                    .remove(&name)
                    .ok_or_else(|| format!("internal: stage {name} was not loaded"))?;
                let running = by_name.get(&name).copied().and_then(|id| {
                    let a = self.engine.app_mut::<PluginApp>(id)?;
                    Some((id, a.factory().fingerprint(), a.seed()))
                });
                match running {
                    Some((_, fp, seed))
                        if fp == ready.factory.fingerprint() && seed == ready.seed =>
                    {
                        kept += 1
                    }
                    Some((id, _, _)) => {
                        let app = self.engine.app_mut::<PluginApp>(id).expect("plugin app");
                        let p = app
                            .prepare_swap(ready.factory, ready.seed)
                            .map_err(|e| e.to_string())?;
                        swaps.push((id, p));
                    }
                    None => {
                        let app = PluginApp::new(
                            &name,
                            ready.factory,
                            ready.seed,
                            plan.limits.hold_packets,
                        )
                        .map_err(|e| e.to_string())?;
                        fresh.insert(name, Box::new(app));
                    }
                }
            }
        }
        // Phase 2, infallible from here on.
        let swapped = swaps.len();
        let mut handed = 0;
        for (id, p) in swaps {
            let app = self.engine.app_mut::<PluginApp>(id).expect("plugin app");
            handed += app.commit_swap(p) as usize;
        }
        let same_shape = [Direction::Ingress, Direction::Egress].iter().all(|&d| {
            network::chain_names(&plan, d) == network::chain_names(&self.plan, d)
                && plan.direction(d).flows.iter().map(|f| &f.matcher).eq(self
                    .plan
                    .direction(d)
                    .flows
                    .iter()
                    .map(|f| &f.matcher))
        });
        let mut summary = format!(
            "{kept} unchanged, {swapped} swapped ({handed} with state), {} added",
            fresh.len()
        );
        if !same_shape {
            let moved = self.rewire(&plan, fresh);
            summary.push_str(&format!(", chains rebuilt, {moved} held packets moved on"));
        }
        self.plan = plan;
        Ok(summary)
    }

    /// Rebuild the graph for `plan` from the running apps plus `fresh` ones. Packets on
    /// links and in removed stages move to the next stage that still exists.
    fn rewire(
        &mut self,
        plan: &Plan,
        fresh: HashMap<String, Box<dyn crate::engine::App>>,
    ) -> usize {
        let parts = self.engine.dismantle();
        let downstream: HashMap<String, Vec<String>> = parts.downstream.into_iter().collect();
        let mut apps: HashMap<String, Box<dyn crate::engine::App>> = HashMap::new();
        for (name, app, _) in parts.apps {
            apps.insert(name, app);
        }
        let mut take = |n: &str| apps.remove(n).expect("I/O app");
        let orx = self.engine.add(OUTER_RX, take(OUTER_RX));
        let irx = self.engine.add(INNER_RX, take(INNER_RX));
        let otx = self.engine.add_late(OUTER_TX, take(OUTER_TX));
        let itx = self.engine.add_late(INNER_TX, take(INNER_TX));
        self.rx = [orx, irx];
        self.tx = [otx, itx];
        // Running apps the new plan keeps, plus new ones.
        let mut chain_apps: HashMap<String, Box<dyn crate::engine::App>> = fresh;
        for dir in [Direction::Ingress, Direction::Egress] {
            for name in network::chain_names(plan, dir).into_iter().flatten() {
                if let Some(a) = apps.remove(&name) {
                    chain_apps.insert(name, a);
                }
            }
        }
        network::wire_apps(
            &mut self.engine,
            plan,
            Direction::Ingress,
            orx,
            itx,
            &mut chain_apps,
        );
        network::wire_apps(
            &mut self.engine,
            plan,
            Direction::Egress,
            irx,
            otx,
            &mut chain_apps,
        );
        // Where a packet bound for `name` goes now: `name`, or the first app after it
        // (in the old graph) that still exists.
        let engine = &self.engine;
        let target = |name: &str| -> Option<AppId> {
            let mut n = name.to_string();
            for _ in 0..1024 {
                if let Some(id) = engine.find(&n) {
                    return Some(id);
                }
                n = downstream.get(&n)?.first()?.clone();
            }
            None
        };
        let mut deliveries = Vec::new();
        let mut moved = 0;
        for (name, mut app) in apps {
            // Removed stages (and old classifiers): their held packets go on.
            let held = app.drain_held();
            if held.is_empty() {
                continue;
            }
            moved += held.len();
            let next = downstream.get(&name).and_then(|d| d.first()).cloned();
            deliveries.push((next, held));
        }
        for (name, _port, ps) in parts.in_links {
            deliveries.push((Some(name), ps));
        }
        let routed: Vec<(Option<AppId>, Vec<crate::packet::Packet>)> = deliveries
            .into_iter()
            .map(|(to, ps)| (to.as_deref().and_then(target), ps))
            .collect();
        for (to, ps) in routed {
            match to {
                Some(id) => {
                    let sent = self.engine.deliver(id, 0, &ps);
                    if sent < ps.len() {
                        log::warn!(
                            "reload: {} packets did not fit their new link",
                            ps.len() - sent
                        );
                    }
                }
                None => self.engine.pool.free_all(&ps),
            }
        }
        moved
    }

    /// Counters of every app, for reports.
    pub fn report(&self) -> Vec<crate::engine::AppReport> {
        self.engine.report()
    }

    /// The outer interface's name, the inner's.
    pub fn interfaces(&self) -> (&str, &str) {
        (&self.opts.outer, &self.opts.inner)
    }

    /// The app names of the running chains, for logs.
    pub fn describe(&self) -> String {
        spec::describe(&self.plan)
    }
}

/// The loader thread's work: the spec, every stage's factory (compiling what changed),
/// and a trial instance of every new or changed stage.
fn load(
    path: &std::path::Path,
    loader: &Mutex<Loader>,
    running: &HashMap<String, (u64, u64)>,
) -> Result<Loaded, String> {
    let plan = spec::load(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut loader = loader.lock().map_err(|_| "loader poisoned".to_string())?;
    let mut stages = HashMap::new();
    for dir in [Direction::Ingress, Direction::Egress] {
        let d = plan.direction(dir);
        for s in d.flows.iter().flat_map(|f| &f.chain).chain(&d.default) {
            let name = format!("{}.{}", dir_name(dir), s.name);
            let factory = loader.factory(s, &plan.limits).map_err(|e| e.to_string())?;
            let seed = seed_for(plan.seed, dir, &s.name);
            if running.get(&name) != Some(&(factory.fingerprint(), seed)) {
                // Validate the config with the plugin itself, here, off the packet path.
                factory
                    .instantiate(seed)
                    .map_err(|e| format!("{name}: {e}"))?;
            }
            stages.insert(name, Ready { factory, seed });
        }
    }
    Ok(Loaded { plan, stages })
}

/// Counters at the last report, for per-interval rates.
#[derive(Default)]
struct StatsState {
    at_ns: u64,
    /// rx packets, tx packets, tx bytes per direction (ingress, egress).
    dir: [(u64, u64, u64); 2],
    drops: [u64; DropCause::ALL.len()],
}

impl StatsState {
    fn totals(engine: &Engine) -> ([(u64, u64, u64); 2], [u64; DropCause::ALL.len()]) {
        let mut dir = [(0, 0, 0); 2];
        let mut drops = [0; DropCause::ALL.len()];
        for r in engine.report() {
            let (d, is_rx) = match r.name.as_str() {
                OUTER_RX => (0, Some(true)),
                INNER_TX => (0, Some(false)),
                INNER_RX => (1, Some(true)),
                OUTER_TX => (1, Some(false)),
                _ => (0, None),
            };
            match is_rx {
                Some(true) => dir[d].0 += r.rx_packets,
                Some(false) => {
                    dir[d].1 += r.tx_packets;
                    dir[d].2 += r.tx_bytes;
                }
                None => {}
            }
            for (name, n) in r.drops {
                if let Some(i) = DropCause::ALL.iter().position(|c| c.name() == name) {
                    drops[i] += n;
                }
            }
        }
        (dir, drops)
    }

    fn mark(&mut self, engine: &Engine, now: u64) {
        (self.dir, self.drops) = Self::totals(engine);
        self.at_ns = now;
    }

    fn line(&mut self, engine: &Engine, now: u64) -> String {
        let (dir, drops) = Self::totals(engine);
        let secs = (now.saturating_sub(self.at_ns)).max(1) as f64 / 1e9;
        let mut s = String::from("stats:");
        for (i, label) in ["ingress", "egress"].iter().enumerate() {
            let pkts = dir[i].1 - self.dir[i].1;
            let bytes = dir[i].2 - self.dir[i].2;
            let rx = dir[i].0 - self.dir[i].0;
            s.push_str(&format!(
                " {label} {} in, {} {:.3} Gbit/s out |",
                rate(rx as f64 / secs),
                rate(pkts as f64 / secs),
                bytes as f64 * 8.0 / secs / 1e9
            ));
        }
        s.push_str(&format!(" held {} | drops", engine.packets_in_flight()));
        let mut any = false;
        for (i, c) in DropCause::ALL.iter().enumerate() {
            let n = drops[i] - self.drops[i];
            if n > 0 {
                s.push_str(&format!(" {}={n}", c.name()));
                any = true;
            }
        }
        if !any {
            s.push_str(" none");
        }
        self.dir = dir;
        self.drops = drops;
        self.at_ns = now;
        s
    }
}

fn rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} Mpps", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} kpps", pps / 1e3)
    } else {
        format!("{pps:.0} pps")
    }
}
