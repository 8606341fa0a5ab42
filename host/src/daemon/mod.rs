//! `synthnet bridge OUTER INNER SPEC`: the spec's ingress chain on OUTER → INNER, its
//! egress chain on INNER → OUTER, live.
//!
//! One thread runs the engine: it breathes while packets flow and, when nothing is due,
//! sleeps in `ppoll` on both receive rings, the control pipe and a `timerfd` armed with
//! the next deadline's absolute time (a held packet, a plugin timer, housekeeping), so
//! an idle bridge costs nothing and a sleeping bridge adds only the wake-up to a
//! packet's latency. How early it wakes, and whether it spins the rest of the way, is
//! the `--timing` setting ([`timing`]).
//!
//! Configuration changes take the one apply path (`synthnet_config::apply`): the first
//! plan is prepared and committed before the loop starts; afterwards the
//! [`worker`] thread prepares every change (SIGHUP, the HTTP API, a schedule's steps)
//! off the packet thread, and the engine thread commits it between two breaths — a
//! scheduled step at exactly its time: its time is one of the loop's deadlines, woken
//! for like a held packet's ([`timing`]), so that a slow wake-up is not added to the
//! step's time. Commands into plugins are delivered the
//! same way ([`Network::command`]), and written to the command log
//! ([`synthnet_config::cmdlog`]).
//!
//! Counters leave the engine thread only through the [`board`]: at a fixed cadence the
//! engine pins a snapshot of every counter and of its flow tables there, for the API.

pub mod board;
pub mod compile;
pub mod control;
pub mod safefile;
pub mod stats;
pub mod throttle;
pub mod timing;
pub mod worker;

use anyhow::{Context, Result};
use board::{Board, DirectionFlows, Published, TableRows};
use control::Control;
use nix::poll::{PollFd, PollFlags};
use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use synthnet_config::plan::Plan;
use synthnet_config::spec;
use synthnet_config::{cmdlog, prepare, Network, Ports};
use synthnet_core::flowtable::FlowTable;
use synthnet_core::{AppId, Direction, Engine};
use synthnet_io::afpacket::{RawRx, RawTx};
use synthnet_runtime::{Loader, WasmRuntime};
use worker::{Change, Done, EngineSide, Handle, SpecState, Stepped, Timed, ToEngine};

/// How often ports look for vanished interfaces and read the kernel's ring drops.
const HOUSEKEEPING: Duration = Duration::from_millis(250);
/// Removed stages dropped between two breaths (each unmaps a wasm instance's memory,
/// tens of µs; ten thousand at once would hold the packets for a third of a second).
const REAP_PER_TURN: usize = 8;
/// Sleeps longer than this pause the wasm epoch ticker (unless a plugin call runs on
/// another thread). Long enough that a bridge with packets in its delay lines keeps
/// ticking (waking the ticker costs a context switch, which would land on a held
/// packet's departure), short enough that an idle bridge does not tick at all.
const LONG_SLEEP_NS: u64 = 30_000_000;

/// The kernel socket buffer each port asks for, receive and send (afpacket's own).
pub use synthnet_io::afpacket::SOCKET_BUFFER_BYTES;
/// Socket buffers a bridge holds: a receive and a send buffer on each of its two
/// interfaces.
pub const SOCKET_BUFFERS: usize = 4;
/// The program itself in the memory budget: code, wasmtime's compiled modules and the
/// heap, measured at about 40 MiB; with margin.
pub const PROGRAM_BYTES: usize = 96 << 20;

/// The engine's clock: nanoseconds of `CLOCK_MONOTONIC` since the bridge started. Its
/// origin is published (`GET /api/v1/spec`), so other processes on the machine can map
/// their own monotonic times onto it.
#[derive(Clone, Copy, Debug)]
pub struct EngineClock {
    /// `CLOCK_MONOTONIC` at engine time 0, ns.
    pub monotonic_origin_ns: u64,
    /// The wall clock at engine time 0, ns since 1970 (for logs to line up with
    /// captures; the wall clock may be stepped, the engine's never is).
    pub unix_origin_ns: u64,
}

/// `CLOCK_MONOTONIC`, ns.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

impl EngineClock {
    /// A clock whose time 0 is now.
    pub fn start() -> EngineClock {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        EngineClock {
            monotonic_origin_ns: monotonic_ns(),
            unix_origin_ns: unix,
        }
    }

    pub fn now_ns(&self) -> u64 {
        monotonic_ns().saturating_sub(self.monotonic_origin_ns)
    }

    /// The wall clock at engine time `at_ns`.
    pub fn unix_ns(&self, at_ns: u64) -> u64 {
        self.unix_origin_ns.saturating_add(at_ns)
    }
}

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
    /// Flows each interface counts (0: no per-flow accounting).
    pub flow_table: usize,
    /// Publish counters on the [`board`] (for the HTTP API).
    pub publish: bool,
    /// Append every command handed to a plugin here ([`cmdlog`]).
    pub command_log: Option<PathBuf>,
    /// Compile each new or changed plugin file first in a child within this budget
    /// ([`compile`]); `None`: compile it here, unbounded.
    pub compile_budget: Option<Duration>,
    /// How hard the engine works to send packets at exactly their time.
    pub timing: timing::Timing,
    /// Write changes made through the API back to the spec file ([`worker`]).
    pub persist: bool,
}

/// The running bridge.
pub struct Bridge {
    /// Held for the bridge's life: no other synthnet bridges these interfaces meanwhile.
    _claims: Vec<safefile::Lock>,
    opts: Options,
    net: Network,
    /// Receive apps of the outer and inner interfaces; transmit apps likewise.
    rx: [AppId; 2],
    tx: [AppId; 2],
    clock: EngineClock,
    runtime: Arc<WasmRuntime>,
    worker: Handle,
    engine_side: EngineSide,
    /// Scheduled steps, in time order, the worker prepared.
    timed: VecDeque<Box<Timed>>,
    board: Option<Arc<Board>>,
    /// When to wake up for a deadline, from the timer's measured lateness.
    pacer: timing::Pacer,
    /// The sleep's alarm: armed with each sleep's absolute end (`None`: the kernel has
    /// no timerfd, and `ppoll`'s relative timeout serves).
    alarm: Option<nix::sys::timerfd::TimerFd>,
    /// The engine time the alarm is armed for and has not yet rung at (re-arming it
    /// for the same time would be a system call per sleep for nothing: a busy bridge
    /// sleeps between bursts, towards the same housekeeping deadline).
    armed: Option<u64>,
    /// The least every arriving packet is held ([`timing::min_hold_ns`]) under the plan
    /// that runs.
    hold_ns: u64,
}

/// Where synthnet keeps locks, state and crash records: `/run/synthnet` as root,
/// `$XDG_RUNTIME_DIR/synthnet` otherwise (else `/tmp/synthnet-UID`). Created (mode 0700
/// for a user's) when asked for.
///
/// Root means the machine's root: uid 0 of a user namespace (a rootless `synthnet run`)
/// may not write `/run`, and uses the user's directory as its owner would.
pub fn state_dir() -> std::path::PathBuf {
    if nix::unistd::geteuid().is_root() && in_initial_user_namespace() {
        return "/run/synthnet".into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => std::path::Path::new(&d).join("synthnet"),
        None => std::env::temp_dir().join(format!("synthnet-{}", nix::unistd::geteuid())),
    }
}

/// Whether this process is in the machine's own user namespace (its uid map is the
/// identity over every id).
fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// [`state_dir`], created if missing; refused unless it is a directory of ours that
/// nobody else may write to ([`safefile::check_private_dir`]).
pub fn make_state_dir() -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = state_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    safefile::check_private_dir(&dir)?;
    Ok(dir)
}

/// Claim interface `ifname` of this thread's network namespace for this process: an
/// exclusive `flock` on `<state dir>/<netns inode>-<ifname>.lock` ([`state_dir`]), which
/// holds our pid.
/// The kernel drops the lock when the process ends, however it ends, so a crashed
/// bridge never blocks the next one. `Ok(None)` when claims cannot be made here (no
/// `/run`, or not allowed to write there): then nothing is checked.
fn claim(ifname: &str) -> Result<Option<safefile::Lock>> {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    let dir = match make_state_dir() {
        Ok(d) => d,
        // There, but not a private directory of ours: nothing there can be trusted.
        Err(e)
            if std::fs::symlink_metadata(state_dir()).is_ok()
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidInput | std::io::ErrorKind::PermissionDenied
                ) =>
        {
            anyhow::bail!("cannot claim interface {ifname:?}: {e}")
        }
        Err(_) => return Ok(None),
    };
    let path = dir.join(format!("{ns}-{ifname}.lock"));
    match safefile::lock_with_pid(&path) {
        Ok(Ok(lock)) => Ok(Some(lock)),
        Ok(Err(pid)) => anyhow::bail!(
            "interface {ifname:?} is already bridged by another synthnet (pid {pid}; it holds the lock {}): stop that one first",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            anyhow::bail!("cannot claim interface {ifname:?}: {e}")
        }
        Err(_) => Ok(None),
    }
}

/// The spec at `path`, or the built-in default.
pub fn load_plan(path: Option<&std::path::Path>) -> Result<Plan> {
    Ok(load_spec(path)?.1)
}

/// The spec at `path`, or the built-in default: as written, and its plan.
pub fn load_spec(path: Option<&std::path::Path>) -> Result<(serde_json::Value, Plan)> {
    Ok(match path {
        Some(p) => spec::load_value(p).with_context(|| format!("invalid spec {}", p.display()))?,
        None => {
            let v = spec::json_of(spec::DEFAULT_SPEC)?;
            let p = spec::from_value(&v, std::path::Path::new("."))?;
            (v, p)
        }
    })
}

impl Bridge {
    /// Open both interfaces and apply the spec through the one apply path.
    pub fn new(opts: Options, ctl: &Control) -> Result<Bridge> {
        anyhow::ensure!(
            opts.outer != opts.inner,
            "OUTER and INNER are both {:?}: a bridge needs two different interfaces",
            opts.outer
        );
        let claims = [&opts.outer, &opts.inner]
            .into_iter()
            .filter_map(|i| claim(i).transpose())
            .collect::<Result<Vec<_>>>()?;
        let (spec, plan) = load_spec(opts.spec.as_deref())?;
        let command_log = opts
            .command_log
            .as_deref()
            .map(|p| {
                cmdlog::Writer::open(p)
                    .with_context(|| format!("--command-log {}: cannot open it", p.display()))
            })
            .transpose()?;
        let runtime = WasmRuntime::new()?;
        let mut loader = Loader::new(runtime.clone());
        if let Some(budget) = opts.compile_budget {
            loader.set_compile_check(compile::checker(budget));
        }
        let mut engine = Engine::new(plan.limits.pool());
        let open_rx = |port: &str, ifname: &str| {
            RawRx::open(port, ifname, opts.ring_frames)
                .with_context(|| format!("{port}: cannot open interface {ifname:?}"))
        };
        let open_tx = |port: &str, ifname: &str| {
            RawTx::open(port, ifname)
                .with_context(|| format!("{port}: cannot open interface {ifname:?}"))
        };
        let orx = engine.add(Box::new(open_rx("outer", &opts.outer)?));
        let irx = engine.add(Box::new(open_rx("inner", &opts.inner)?));
        let otx = engine.add(Box::new(open_tx("outer", &opts.outer)?));
        let itx = engine.add(Box::new(open_tx("inner", &opts.inner)?));
        let mut net = Network::new(
            engine,
            [
                (
                    Direction::Ingress,
                    Ports {
                        source: orx,
                        sink: itx,
                    },
                ),
                (
                    Direction::Egress,
                    Ports {
                        source: irx,
                        sink: otx,
                    },
                ),
            ],
        );
        // Startup is a change like any other: from nothing to the plan.
        let prepared = prepare(&net.view(), plan.clone(), &mut loader)
            .map_err(|e| anyhow::anyhow!("invalid spec: {e}"))?;
        let clock = EngineClock::start();
        for id in [orx, irx] {
            if let Some(a) = net.engine.app_mut::<RawRx>(id) {
                a.set_monotonic_origin(clock.monotonic_origin_ns);
            }
        }
        let applied_ns = clock.now_ns();
        let report = net.commit(prepared);
        if let synthnet_config::Outcome::Refused(e) = report.outcome {
            anyhow::bail!("invalid spec: {e}");
        }
        synthnet_io::heap::trim();
        if opts.flow_table > 0 {
            let e = &mut net.engine;
            for id in [orx, irx] {
                if let Some(a) = e.app_mut::<RawRx>(id) {
                    a.set_meter(Some(FlowTable::new(opts.flow_table)));
                }
            }
            for id in [otx, itx] {
                if let Some(a) = e.app_mut::<RawTx>(id) {
                    a.set_meter(Some(FlowTable::new(opts.flow_table)));
                }
            }
        }
        let startup = SpecState {
            generation: report.generation,
            path: opts.spec.clone(),
            file_spec: opts.spec.is_some().then(|| spec.clone()),
            spec,
            plan,
            schedule: None,
            persist: opts.persist,
        };
        let (worker, engine_side) = worker::spawn(
            loader,
            net.view(),
            startup,
            applied_ns,
            clock,
            command_log,
            ctl.clone(),
        )
        .context("cannot start the configuration thread")?;
        let opts_timing = opts.timing;
        let mut bridge = Bridge {
            _claims: claims,
            opts,
            net,
            rx: [orx, irx],
            tx: [otx, itx],
            clock,
            runtime,
            worker,
            engine_side,
            timed: VecDeque::new(),
            board: None,
            pacer: timing::Pacer::new(opts_timing),
            alarm: nix::sys::timerfd::TimerFd::new(
                nix::sys::timerfd::ClockId::CLOCK_MONOTONIC,
                nix::sys::timerfd::TimerFlags::TFD_CLOEXEC
                    | nix::sys::timerfd::TimerFlags::TFD_NONBLOCK,
            )
            .ok(),
            hold_ns: 0,
            armed: None,
        };
        bridge.hold_ns = timing::min_hold_ns(bridge.plan());
        if bridge.opts.publish {
            let first = bridge.publication(0);
            bridge.board = Some(Arc::new(Board::new(first)));
        }
        Ok(bridge)
    }

    /// Where changes are asked for, and the spec that runs.
    pub fn worker(&self) -> Handle {
        self.worker.clone()
    }

    /// Where counters are published (`None` unless [`Options::publish`]).
    pub fn board(&self) -> Option<Arc<Board>> {
        self.board.clone()
    }

    /// Every counter and flow row, now (engine thread). Idle flows are evicted first.
    fn publication(&mut self, now: u64) -> Published {
        let idle = board::FLOW_IDLE.as_nanos() as u64;
        let e = &mut self.net.engine;
        let mut table = |rx: AppId, tx: AppId| -> Option<DirectionFlows> {
            let received = e.app_mut::<RawRx>(rx)?.meter_mut().map(|t| {
                t.evict_idle(now, idle);
                TableRows::of(t)
            })?;
            let sent = e.app_mut::<RawTx>(tx)?.meter_mut().map(|t| {
                t.evict_idle(now, idle);
                TableRows::of(t)
            })?;
            Some(DirectionFlows { received, sent })
        };
        // Ingress runs outer → inner, egress inner → outer.
        let flows = [
            (Direction::Ingress, self.rx[0], self.tx[1]),
            (Direction::Egress, self.rx[1], self.tx[0]),
        ]
        .into_iter()
        .map(|(d, rx, tx)| table(rx, tx).map(|f| (d, f)))
        .collect::<Option<Vec<_>>>();
        Published {
            at_ns: now,
            snapshot: self.net.snapshot(),
            flows,
        }
    }

    pub fn plan(&self) -> &Plan {
        self.net.plan().expect("committed at startup")
    }
    pub fn network(&mut self) -> &mut Network {
        &mut self.net
    }

    /// The most memory the bridge can make resident, by part (bytes).
    pub fn memory_budget(&mut self) -> Vec<(&'static str, usize)> {
        let plan = self.plan().clone();
        let stages = Direction::BOTH
            .iter()
            .map(|&d| plan.stages(d).count())
            .sum::<usize>();
        let e = &mut self.net.engine;
        let mut ring = |id: AppId| e.app_mut::<RawRx>(id).map_or(0, |r| r.ring_bytes());
        let rings = ring(self.rx[0]) + ring(self.rx[1]);
        let pool = &self.net.engine.pool;
        vec![
            ("packet pool", pool.reserved_bytes()),
            ("receive rings", rings),
            // Socket queues for super-packets (SO_RCVBUF) and transmit buffers.
            ("socket buffers", SOCKET_BUFFERS * SOCKET_BUFFER_BYTES),
            (
                "plugin memory",
                stages * (plan.limits.plugin_memory_mib << 20),
            ),
            (
                "delay lines",
                stages * plan.limits.hold_packets.min(pool.capacity()) * 16,
            ),
            ("program", PROGRAM_BYTES),
        ]
    }

    /// Log what runs, once, as the bridge starts: its interfaces, the memory it may
    /// take (at start and at most, by part), every chain with every setting, and how
    /// many packets each delay line may hold.
    pub fn startup_report(&mut self) {
        let budget = self.memory_budget();
        let total: usize = budget.iter().map(|(_, n)| n).sum();
        let parts: Vec<String> = budget
            .iter()
            .map(|(k, n)| format!("{k} {} MiB", n >> 20))
            .collect();
        let (o, i) = self.interfaces();
        log::info!(
            "bridging {o} (outer) ⇄ {i} (inner); memory about {} MiB at start, bound {} MiB ({})",
            self.plan().memory_at_start() >> 20,
            total >> 20,
            parts.join(", ")
        );
        for line in self.describe().lines() {
            log::info!("  {line}");
        }
        let shares: Vec<String> = self
            .network()
            .share_limits()
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        log::info!(
            "packets delay lines may hold (shares of the pool): {}",
            shares.join(", ")
        );
    }

    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// Do what the worker asks (between two breaths).
    fn control(&mut self) {
        while let Ok(msg) = self.engine_side.inbox.try_recv() {
            let at_ns = self.now_ns();
            let done = match msg {
                ToEngine::Commit(p) => {
                    let report = self.net.commit(p);
                    if report.is_applied() {
                        // A new spec ends the running schedule.
                        self.timed.clear();
                        self.hold_ns = timing::min_hold_ns(self.plan());
                    }
                    Done::Committed {
                        at_ns,
                        report: Box::new(report),
                        view: Box::new(self.net.view()),
                    }
                }
                ToEngine::At(t) => {
                    // The worker hands steps over in time order.
                    self.timed.push_back(t);
                    continue;
                }
                ToEngine::Command(c) => Done::Commanded {
                    at_ns,
                    result: self.net.command(&c.stage, at_ns, &c.command),
                },
            };
            let _ = self.engine_side.answers.send(done);
        }
    }

    /// Do the scheduled steps due at `now` (between two breaths), and tell the worker.
    /// Whether there were any.
    fn due(&mut self, now: u64) -> bool {
        let any = self.timed.front().is_some_and(|t| t.at_ns <= now);
        while self.timed.front().is_some_and(|t| t.at_ns <= now) {
            let Some(t) = self.timed.pop_front() else {
                break;
            };
            let Timed {
                schedule,
                step,
                at_ns: due_ns,
                commit,
                command,
            } = *t;
            let report = commit.map(|p| {
                let r = self.net.commit(p);
                (r, self.net.view())
            });
            if report.is_some() {
                self.hold_ns = timing::min_hold_ns(self.plan());
            }
            let command = command.map(|c| {
                let r = self.net.command(&c.stage, now, &c.command);
                (c, r)
            });
            let stepped = Stepped {
                schedule,
                step,
                due_ns,
                at_ns: now,
                report,
                command,
            };
            self.worker.send(Change::Stepped(Box::new(stepped)), None);
        }
        any
    }

    /// Run until `ctl` says stop.
    pub fn run(&mut self, ctl: &Control) -> Result<()> {
        // Sleep to the nanosecond asked for: the default 50 µs timer slack would be added
        // to every held packet's departure after an idle sleep.
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut next_house = 0;
        let mut next_stats = self.opts.stats.map(|d| d.as_nanos() as u64);
        let period = board::PUBLISH_PERIOD.as_nanos() as u64;
        let mut next_publish = self.board.is_some().then_some(period);
        let mut stats = stats::StatsLine::new(0, self.net.snapshot());
        loop {
            let mut now = self.now_ns();
            // A step due now applies to what is read in this breath and after. Its
            // commit takes time: read the clock again, so that the interfaces map their
            // arrival stamps onto the engine clock with the time it is now.
            if self.due(now) {
                now = self.now_ns();
            }
            self.net.engine.breathe(now);
            if now >= next_house {
                next_house = now + HOUSEKEEPING.as_nanos() as u64;
                self.housekeeping(now);
            }
            if let (Some(t), Some(d)) = (next_stats, self.opts.stats) {
                if now >= t {
                    eprintln!("{}", stats.line(now, self.net.snapshot()));
                    next_stats = Some(t + d.as_nanos() as u64);
                }
            }
            if next_publish.is_some_and(|t| now >= t) {
                let p = self.publication(now);
                if let Some(b) = &self.board {
                    b.publish(p);
                }
                next_publish = Some(now + period);
            }
            if ctl.stopping() {
                break;
            }
            if ctl.reload.swap(false, Ordering::SeqCst) {
                self.worker.send(Change::Reload, None);
            }
            // Commit what the worker prepared, between two breaths.
            self.control();
            // Stages a change removed are dropped a few at a time, between breaths.
            if self.net.reap(REAP_PER_TURN) || self.net.engine.links_busy() {
                continue;
            }
            let mut deadline = self
                .net
                .engine
                .next_deadline()
                .unwrap_or(u64::MAX)
                .min(next_house);
            for t in [next_stats, next_publish].into_iter().flatten() {
                deadline = deadline.min(t);
            }
            let now = self.now_ns();
            let mut wake = self.pacer.plan(now, deadline, false);
            if let Some(t) = self.timed.front() {
                let step = self.pacer.plan(now, t.at_ns, true);
                wake = match (wake, step) {
                    (timing::Wake::At(a), timing::Wake::At(b)) => timing::Wake::At(a.min(b)),
                    _ => timing::Wake::Now,
                };
            }
            // Closer to the deadline than a wake-up could make: stay awake (keep breathing).
            let timing::Wake::At(target) = wake else {
                continue;
            };
            // A long sleep: let the wasm epoch ticker sleep too.
            let long = target - now > LONG_SLEEP_NS;
            if long {
                self.runtime.pause();
            }
            let deaf = self.pacer.may_ignore_arrivals(now, target, self.hold_ns);
            let woken = self.sleep(ctl, now, target, deaf);
            if long {
                self.runtime.resume();
            }
            if !woken {
                // Woken by the timer: learn how late timer wake-ups come on this machine.
                self.pacer.woke(target, self.now_ns());
            }
        }
        Ok(())
    }

    /// Block in `ppoll` on both rings (unless `deaf`) and the control pipe until engine
    /// time `until` (it is `now`). Returns whether something other than the timer woke
    /// us (a signal counts as woken).
    fn sleep(&mut self, ctl: &Control, now: u64, until: u64, deaf: bool) -> bool {
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        // An absolute time: the moments spent between reading the clock and sleeping
        // are not added to the sleep (as a relative timeout would add them).
        let at = nix::sys::time::TimeSpec::from_duration(Duration::from_nanos(
            self.clock.monotonic_origin_ns.saturating_add(until),
        ));
        let armed = &mut self.armed;
        let alarm = self.alarm.as_ref().filter(|a| {
            *armed == Some(until)
                || a.set(
                    Expiration::OneShot(at),
                    TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                )
                .is_ok()
        });
        *armed = alarm.map(|_| until);
        let timeout = match alarm {
            Some(_) => None,
            None => Some(nix::sys::time::TimeSpec::from_duration(
                Duration::from_nanos(until.saturating_sub(now)),
            )),
        };
        let (errors, control) = {
            let e = &self.net.engine;
            let mut fds: Vec<PollFd> = self
                .rx
                .iter()
                .filter_map(|&id| e.app_ref::<RawRx>(id)?.fd())
                .filter(|_| !deaf)
                .chain([ctl.wake_fd()])
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            let n = fds.len();
            if let Some(a) = alarm {
                fds.push(PollFd::new(a.as_fd(), PollFlags::POLLIN));
            }
            let rang = match nix::poll::ppoll(&mut fds, timeout, None) {
                Ok(0) => return false,
                Err(nix::errno::Errno::EINTR) => return true,
                Err(_) => return false,
                Ok(_) => fds[n..]
                    .iter()
                    .any(|f| f.revents().is_some_and(|r| !r.is_empty())),
            };
            if rang {
                self.armed = None;
            }
            // Only the alarm: woken by the timer.
            if fds[..n]
                .iter()
                .all(|f| f.revents().is_none_or(|r| r.is_empty()))
            {
                return false;
            }
            let bad = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
            let errors: Vec<bool> = fds[..n - 1]
                .iter()
                .map(|f| f.revents().is_some_and(|r| r.intersects(bad)))
                .collect();
            let control = fds[n - 1].revents().is_some_and(|r| !r.is_empty());
            (errors, control)
        };
        let now = self.now_ns();
        // `errors` follows the rings that had a descriptor, in order.
        let mut k = 0;
        for id in self.rx {
            let Some(app) = self.net.engine.app_mut::<RawRx>(id) else {
                continue;
            };
            if app.fd().is_none() {
                continue;
            }
            if errors.get(k) == Some(&true) {
                app.on_error(now);
            }
            k += 1;
        }
        if control {
            ctl.drain();
        }
        true
    }

    fn housekeeping(&mut self, now: u64) {
        let e = &mut self.net.engine;
        for id in self.rx {
            if let Some(a) = e.app_mut::<RawRx>(id) {
                a.housekeeping(now);
            }
        }
        for id in self.tx {
            if let Some(a) = e.app_mut::<RawTx>(id) {
                a.housekeeping(now);
            }
        }
    }

    /// The outer interface's name, the inner's.
    fn interfaces(&self) -> (&str, &str) {
        (&self.opts.outer, &self.opts.inner)
    }

    /// Every chain with every setting, for the startup log.
    fn describe(&self) -> String {
        synthnet_config::describe(self.plan())
    }
}
