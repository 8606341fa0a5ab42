//! `synthnet attach TARGET`: put a running process's, namespace's or container's
//! interface behind a synthetic link from the host, without restarting anything, and
//! put everything back on detach, on `--restore`, or — through a watchdog — when the
//! bridge dies.
//!
//! The synthnet process stays in the host's namespaces: its API listener is bound
//! there first, and its state files live in [`crate::daemon::state_dir`]. Only two kinds
//! of thread enter the target's network namespace ([`synthnet_io::netns`]): short-lived
//! ones that run netlink there ([`synthnet_io::netlink`]'s attach path, make before
//! break), and the engine thread, which opens its AF_PACKET rings there and stays
//! (a ring that reopens after a fault looks its interface up by name in its thread's
//! namespace).
//!
//! What attach changes is written to a [`Record`] before it is changed. A watchdog
//! process (`synthnet attach --watchdog`, started in its own session so that neither a
//! Ctrl-C nor a SIGKILL of attach reaches it) holds a pidfd on attach and, when attach
//! dies without having put things back, does it from the record within milliseconds —
//! or, with `--fail-closed`, leaves the target cut off until `--restore`. `takeover`
//! writes the same record, so a killed takeover is put back by `--restore` as well.
//!
//! Main items: [`AttachArgs`], [`Target`], [`Record`], [`run`], [`restore_namespace`].

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use synthnet_io::netlink::{self, Takeover};
use synthnet_io::netns::{self, Namespace, PidFd};

use super::bridge::{self, ApiArgs, EngineArgs};
use crate::daemon::control::Control;
use crate::daemon::{make_state_dir, state_dir, Bridge};

/// How long the watchdog may take to say it watches.
const WATCHDOG_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the bridge may take to open its interfaces and compile its plugins.
const BRIDGE_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `--detach` waits for the running attach to put everything back.
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);

const EXAMPLES: &str = "\
Examples:
  # 100 ms more latency each way for a running process (its network namespace):
  echo '{\"ingress\": {\"latency\": 100}, \"egress\": {\"latency\": 100}}' > slow.json
  sudo synthnet attach pid:$(pgrep -o nginx) slow.json --api auto

  # A Docker container, by name; change the link live, then detach from another shell:
  sudo synthnet attach docker:web slow.json --api 127.0.0.1:8080
  synthnet ctl --api 127.0.0.1:8080 patch '{\"ingress\": {\"loss\": 0.05}}'
  sudo synthnet attach --detach docker:web

  # A named namespace (ip netns), a given interface, cut off if synthnet dies:
  sudo synthnet attach netns:blue --interface eth1 --fail-closed
  sudo synthnet attach --restore netns:blue

  # A Kubernetes pod: attach to its sandbox's network namespace.
  sudo synthnet attach pid:$(crictl inspectp -o go-template --template '{{.info.pid}}' POD_ID)

What it changes, and puts back:
  In the target's namespace the interface (default: the default route's) is renamed
  snr-N (N its index) and muted; a veth pair takes its place: the application's end
  gets the original name, MAC, MTU, addresses and routes, synthnet's end is snw-N.
  Established TCP connections survive attach and detach. On detach (Ctrl-C, SIGTERM,
  or --detach from another shell) addresses with their flags and lifetimes, routes in
  every table with their metrics and scopes, the MAC, the MTU and the link state are
  put back exactly. If synthnet dies, even by SIGKILL, a watchdog puts them back
  within a second (--fail-closed: it leaves the target cut off instead).
  Records and locks live in /run/synthnet (as root).";

/// Impair something already running: put the interface of a process's network
/// namespace (pid:N), a named namespace (netns:NAME) or a container (docker:NAME)
/// behind synthnet from the host, without restarting it; established connections
/// survive. Ctrl-C, SIGTERM or `attach --detach TARGET` put everything back
/// exactly; if synthnet dies, a watchdog does (unless --fail-closed). Needs root.
#[derive(clap::Args, Debug)]
#[command(after_long_help = EXAMPLES)]
pub struct AttachArgs {
    /// What to attach to: `pid:N` (the network namespace of process N), `netns:NAME`
    /// (/run/netns/NAME) or `netns:/path/to/ns`, `docker:NAME` or `docker:ID`.
    pub target: String,
    /// The spec (JSON); left out: the built-in default spec. Checked (as by
    /// `synthnet check`) before anything is touched.
    pub spec: Option<PathBuf>,
    /// The target's interface to put behind synthnet; default: the interface of its
    /// default route.
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,
    /// If synthnet dies without detaching, leave the target cut off from the network
    /// (until `synthnet attach --restore TARGET` or the next attach) instead of putting
    /// it back: for tests that must never run unimpaired by accident.
    #[arg(long)]
    pub fail_closed: bool,
    /// Detach the attach running on TARGET (it puts everything back and exits).
    #[arg(long, conflicts_with_all = ["restore", "spec", "interface", "fail_closed"])]
    pub detach: bool,
    /// Put back what a dead attach (or takeover) left on TARGET, from its record.
    #[arg(long, conflicts_with_all = ["spec", "interface", "fail_closed"])]
    pub restore: bool,
    /// Internal: watch the attach whose record is at this path.
    #[arg(long, hide = true, value_name = "RECORD")]
    pub watchdog: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// An attach target as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `pid:N`
    Pid(u32),
    /// `netns:NAME` (in /run/netns) or `netns:/a/path`
    Netns(PathBuf),
    /// `docker:NAME` or `docker:ID`
    Docker(String),
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Target> {
        let (kind, rest) = s.split_once(':').ok_or_else(|| {
            anyhow!("target {s:?}: expected pid:N, netns:NAME, netns:/path or docker:NAME")
        })?;
        if rest.is_empty() {
            bail!("target {s:?}: nothing after {kind:?}");
        }
        match kind {
            "pid" => rest
                .parse::<u32>()
                .ok()
                .filter(|p| *p > 0)
                .map(Target::Pid)
                .ok_or_else(|| anyhow!("target {s:?}: {rest:?} is not a process id")),
            "netns" if rest.contains('/') => Ok(Target::Netns(PathBuf::from(rest))),
            "netns" => {
                if rest == "." || rest == ".." {
                    bail!("target {s:?}: not a namespace name");
                }
                Ok(Target::Netns(Path::new("/run/netns").join(rest)))
            }
            "docker" => {
                let ok = rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if !ok {
                    bail!("target {s:?}: {rest:?} is not a container name or id");
                }
                Ok(Target::Docker(rest.to_string()))
            }
            _ => bail!("target {s:?}: unknown kind {kind:?} (pid:, netns: or docker:)"),
        }
    }
}

impl Target {
    /// The path of the target's network namespace (a container is asked for its pid).
    pub fn namespace_path(&self) -> Result<PathBuf> {
        match self {
            Target::Pid(p) => Ok(PathBuf::from(format!("/proc/{p}/ns/net"))),
            Target::Netns(p) => Ok(p.clone()),
            Target::Docker(name) => {
                Ok(PathBuf::from(format!("/proc/{}/ns/net", docker_pid(name)?)))
            }
        }
    }

    /// Open the target's network namespace, with a message that names what is wrong.
    pub fn open(&self) -> Result<Namespace> {
        let path = self.namespace_path()?;
        Namespace::open(&path).map_err(|e| match (self, e.kind()) {
            (Target::Pid(p), std::io::ErrorKind::NotFound) => anyhow!("no process {p}"),
            (Target::Netns(p), std::io::ErrorKind::NotFound) => {
                anyhow!("no network namespace {}", p.display())
            }
            _ => anyhow!("cannot open the network namespace {}: {e}", path.display()),
        })
    }
}

/// The pid of a running container's first process, through the Docker Engine API on
/// its unix socket (`GET /containers/NAME/json`, `.State.Pid`); when the socket is not
/// there (a remote `DOCKER_HOST`), `docker inspect -f '{{.State.Pid}}'`.
fn docker_pid(name: &str) -> Result<u32> {
    let socket = "/var/run/docker.sock";
    let state = match std::os::unix::net::UnixStream::connect(socket) {
        Ok(mut s) => {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            // HTTP/1.0: the daemon answers with a plain body and closes (no chunks).
            write!(
                s,
                "GET /containers/{name}/json HTTP/1.0\r\nHost: docker\r\n\r\n"
            )
            .context("ask the Docker daemon")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)
                .context("read the Docker daemon's answer")?;
            let (head, body) = reply
                .split_once("\r\n\r\n")
                .ok_or_else(|| anyhow!("the Docker daemon's answer is not HTTP"))?;
            let status = head.split_whitespace().nth(1).unwrap_or("");
            match status {
                "200" => {}
                "404" => bail!("no container {name:?}"),
                _ => bail!(
                    "the Docker daemon refused to inspect {name:?}: {} {}",
                    status,
                    body.trim()
                ),
            }
            let v: serde_json::Value =
                serde_json::from_str(body).context("the Docker daemon's answer")?;
            v.get("State")
                .cloned()
                .ok_or_else(|| anyhow!("container {name:?}: no State"))?
        }
        Err(e) => {
            log::info!("{socket}: {e}; asking `docker inspect`");
            let out = Command::new("docker")
                .args(["inspect", "-f", "{{json .State}}", name])
                .output()
                .context("run `docker inspect` (is Docker installed?)")?;
            if !out.status.success() {
                bail!(
                    "no container {name:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            serde_json::from_slice(&out.stdout).context("`docker inspect`'s answer")?
        }
    };
    let pid = state.get("Pid").and_then(|p| p.as_u64()).unwrap_or(0);
    if pid == 0 {
        bail!("container {name:?} is not running");
    }
    u32::try_from(pid).map_err(|_| anyhow!("container {name:?}: pid {pid} out of range"))
}

/// What an attach or a takeover changed in a network namespace, written before it is
/// changed, removed once it is put back: `<state dir>/netns-<inode>.json`.
#[derive(Debug, Clone)]
pub struct Record {
    /// `attach` or `takeover`.
    pub kind: String,
    /// The namespace's inode (its identity while it exists).
    pub netns_inode: u64,
    /// The target as the user wrote it (for messages).
    pub target: String,
    /// The process that runs the bridge (attach) or the takeover.
    pub pid: u32,
    /// takeover's bridge child, if any: `--restore` stops it.
    pub bridge_pid: Option<u32>,
    /// Leave the target cut off when the bridge dies.
    pub fail_closed: bool,
    /// The interface, addresses, routes and what was created.
    pub change: Takeover,
}

impl Record {
    pub fn path(netns_inode: u64) -> PathBuf {
        state_dir().join(format!("netns-{netns_inode}.json"))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": self.kind,
            "netns_inode": self.netns_inode,
            "target": self.target,
            "pid": self.pid,
            "bridge_pid": self.bridge_pid,
            "fail_closed": self.fail_closed,
            "change": self.change.to_json(),
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<Record> {
        let num = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .ok_or_else(|| anyhow!("record: no {k:?}"))
        };
        Ok(Record {
            kind: v
                .get("kind")
                .and_then(|x| x.as_str())
                .unwrap_or("attach")
                .to_string(),
            netns_inode: num("netns_inode")?,
            target: v
                .get("target")
                .and_then(|x| x.as_str())
                .unwrap_or("")
                .to_string(),
            pid: u32::try_from(num("pid")?).map_err(|_| anyhow!("record: pid out of range"))?,
            bridge_pid: v
                .get("bridge_pid")
                .and_then(|x| x.as_u64())
                .and_then(|p| u32::try_from(p).ok()),
            fail_closed: v
                .get("fail_closed")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            change: Takeover::from_json(
                v.get("change")
                    .ok_or_else(|| anyhow!("record: no change"))?,
            )?,
        })
    }

    /// Write it (atomically: a reader never sees half a record).
    pub fn write(&self) -> Result<PathBuf> {
        let dir = make_state_dir()
            .with_context(|| format!("create the state directory {}", state_dir().display()))?;
        let path = dir.join(format!("netns-{}.json", self.netns_inode));
        // A new file under an unguessable name, synced, renamed over the record: never
        // through a link, never half written.
        let text = serde_json::to_string_pretty(&self.to_json())?;
        let staged = crate::daemon::safefile::Staged::write(&path, text.as_bytes())
            .with_context(|| format!("write {}", path.display()))?;
        staged
            .commit()
            .with_context(|| format!("write {}", path.display()))
    }

    /// The record at `path`; `None` when there is none.
    pub fn read(path: &Path) -> Result<Option<Record>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("record {}", path.display()))?;
                Ok(Some(
                    Record::from_json(&v).with_context(|| format!("record {}", path.display()))?,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }
}

/// The lock an attach holds on a namespace for its life: an exclusive `flock` on
/// `<state dir>/netns-<inode>.lock`, holding its pid. The kernel drops it however the
/// process ends.
fn lock_path(netns_inode: u64) -> PathBuf {
    state_dir().join(format!("netns-{netns_inode}.lock"))
}

use crate::daemon::safefile::Lock;

/// Take the namespace's lock, or say who holds it.
fn lock_namespace(netns_inode: u64) -> Result<std::result::Result<Lock, u32>> {
    make_state_dir().with_context(|| format!("create {}", state_dir().display()))?;
    let path = lock_path(netns_inode);
    crate::daemon::safefile::lock_with_pid(&path)
        .with_context(|| format!("open {}", path.display()))
}

impl AttachArgs {
    /// `synthnet attach …`: run to the end.
    pub fn run(self) -> Result<std::process::ExitCode> {
        run(self).map(|()| std::process::ExitCode::SUCCESS)
    }
}

fn run(args: AttachArgs) -> Result<()> {
    if let Some(record) = &args.watchdog {
        return watchdog(record, &args.target);
    }
    // First: from here a Ctrl-C or SIGTERM is a request to detach, never a death
    // with the target half changed.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("install signal handlers")?;
    let target: Target = args.target.parse()?;
    if args.detach {
        return detach(&target, &args.target);
    }
    if args.restore {
        let ns = target.open()?;
        return match restore_namespace(&ns)? {
            Some(r) => {
                eprintln!(
                    "synthnet: put back {} of {} ({} left by {} pid {})",
                    r.change.outer.name,
                    args.target,
                    describe(&r.change),
                    r.kind,
                    r.pid
                );
                Ok(())
            }
            None => {
                eprintln!(
                    "synthnet: nothing to put back on {} (no record in {})",
                    args.target,
                    state_dir().display()
                );
                Ok(())
            }
        };
    }
    attach(args, target, &mut signals)
}

fn describe(t: &Takeover) -> String {
    let addrs: Vec<String> = t
        .addresses
        .iter()
        .map(|a| format!("{}/{}", a.addr, a.prefix_len))
        .collect();
    format!(
        "addresses {}, routes [{}]",
        addrs.join(", "),
        t.describe_routes().join(", ")
    )
}

fn attach(
    args: AttachArgs,
    target: Target,
    signals: &mut signal_hook::iterator::Signals,
) -> Result<()> {
    // Everything that can be refused is refused before the network is touched.
    let spec = args.spec.clone();
    let plan = crate::daemon::load_plan(spec.as_deref())?;
    super::check::check(&plan).with_context(|| match &spec {
        Some(s) => format!("invalid spec {}", s.display()),
        None => "invalid built-in spec".to_string(),
    })?;
    let ns = Arc::new(target.open()?);
    let lock = match lock_namespace(ns.inode)? {
        Ok(l) => l,
        Err(pid) => bail!(
            "{} is already attached by synthnet pid {pid} (detach it with `synthnet attach --detach {}`)",
            args.target,
            args.target
        ),
    };
    // What a dead attach (fail-closed, or killed with its watchdog) left: put back first.
    if let Some(old) = restore_record(&ns, true)? {
        log::info!(
            "put back what {} pid {} left on {} first",
            old.kind,
            old.pid,
            args.target
        );
    }
    let iface = args.interface.clone();
    let change = in_target(&ns, move || netlink::attach_plan(iface.as_deref()))?;
    let opts = args.engine.options(
        change.real_name().to_string(),
        change.wire_end.clone(),
        spec,
        args.api.is_on(),
    )?;
    // Bound here, in the host's namespace, before any thread enters the target's.
    let api = args.api.open()?;
    let record = Record {
        kind: "attach".into(),
        netns_inode: ns.inode,
        target: args.target.clone(),
        pid: std::process::id(),
        bridge_pid: None,
        fail_closed: args.fail_closed,
        change: change.clone(),
    };
    let record_path = record.write()?;
    let watchdog = match start_watchdog(&record_path, &ns) {
        Ok(w) => w,
        Err(e) => {
            let _ = std::fs::remove_file(&record_path);
            return Err(e);
        }
    };
    log::info!(
        "attaching to {} ({}): {} of {}; watchdog pid {watchdog}",
        args.target,
        ns.path.display(),
        change.outer.name,
        describe(&change)
    );
    let result = attached(&args, &ns, &change, opts, api, signals);
    drop(lock);
    result
}

/// Attach from the record's first change to its last restore.
fn attached(
    args: &AttachArgs,
    ns: &Arc<Namespace>,
    change: &Takeover,
    opts: crate::daemon::Options,
    api: Option<crate::api::ApiOptions>,
    signals: &mut signal_hook::iterator::Signals,
) -> Result<()> {
    let record_path = Record::path(ns.inode);
    let put_back = |why: &str| {
        let c = change.clone();
        match in_target(ns, move || netlink::restore(&c)) {
            Ok(()) => {
                let _ = std::fs::remove_file(&record_path);
                log::info!("{why}: {} put back", change.outer.name);
            }
            Err(e) => {
                log::error!("{why}: putting {} back: {e:#} (the record stays in {}; `synthnet attach --restore {}` tries again)", change.outer.name, record_path.display(), args.target);
            }
        }
    };
    let c = change.clone();
    in_target(ns, move || netlink::attach_make(&c))?;
    let ctl = Control::new()?;
    ctl.install_reload_handler()?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let engine = {
        let ns = ns.clone();
        let ctl = ctl.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || -> Result<()> {
                netns::enter(&ns).context("enter the target's network namespace")?;
                let mut b = Bridge::new(opts, &ctl)?;
                let worker = b.worker();
                bridge::forward(&mut b, &ctl, api, |addr| {
                    let _ = ready_tx.send((addr, worker));
                })
            })
            .context("start the engine thread")?
    };
    let (addr, worker) = match ready_rx.recv_timeout(BRIDGE_READY_TIMEOUT) {
        Ok(a) => a,
        Err(_) => {
            ctl.request_stop();
            let why = match engine.join() {
                Ok(Err(e)) => e,
                Ok(Ok(())) => anyhow!("the bridge stopped before it forwarded"),
                Err(_) => anyhow!("the engine thread panicked"),
            };
            put_back("the bridge did not start");
            return Err(why.context("start the bridge"));
        }
    };
    let c = change.clone();
    if let Err(e) = in_target(ns, move || netlink::attach_switch(&c)) {
        ctl.request_stop();
        let _ = engine.join();
        put_back("attach failed");
        return Err(e.context("move the addresses and routes"));
    }
    if let Some(a) = addr {
        args.api.announce(a);
    }
    eprintln!(
        "synthnet: attached to {}: {} is behind synthnet ({}); detach with Ctrl-C or `synthnet attach --detach {}`",
        args.target,
        change.outer.name,
        describe(change),
        args.target
    );
    // Wait for a detach request, or for the engine to end by itself (an error).
    loop {
        if signals.pending().next().is_some() || engine.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Make before break, backwards: the real interface gets its addresses and routes
    // back while the bridge still forwards, then the bridge stops, then the pair goes.
    let c = change.clone();
    if let Err(e) = in_target(ns, move || netlink::restore_paths(&c)) {
        log::warn!("detach: {e:#}");
    }
    // What the bridge holds in its delay lines was sent before the switch and exists
    // nowhere else: let it leave before the bridge stops (each lost segment costs its
    // connection a retransmission timeout, ≥ 200 ms).
    let drain = drain_time(&worker.spec().plan);
    log::info!("detaching: paths back on the real interface; draining the bridge for {drain:?}");
    std::thread::sleep(drain);
    ctl.request_stop();
    let ran = match engine.join() {
        Ok(r) => r,
        Err(_) => Err(anyhow!("the engine thread panicked")),
    };
    put_back("detached");
    ran
}

/// How long the running plan may hold a packet, at most [`MAX_DRAIN`]: per direction
/// the sum of every stage setting in milliseconds (`delay_ms`, `jitter_ms`, …) — an
/// upper bound for delay lines in series — plus a margin for the wake-up.
pub fn drain_time(plan: &synthnet_config::plan::Plan) -> Duration {
    fn ms_sum(v: &serde_json::Value) -> f64 {
        match v {
            serde_json::Value::Object(m) => m
                .iter()
                .map(|(k, x)| match x.as_f64() {
                    Some(n) if k.ends_with("_ms") && n.is_finite() && n > 0.0 => n,
                    _ => ms_sum(x),
                })
                .sum(),
            serde_json::Value::Array(a) => a.iter().map(ms_sum).sum(),
            _ => 0.0,
        }
    }
    let worst = [&plan.ingress, &plan.egress]
        .into_iter()
        .filter_map(|d| serde_json::to_value(d).ok())
        .map(|v| ms_sum(&v))
        .fold(0.0, f64::max);
    Duration::from_secs_f64((worst + 20.0) / 1e3).min(MAX_DRAIN)
}

/// The longest a detach waits for the bridge's delay lines to empty.
const MAX_DRAIN: Duration = Duration::from_secs(5);

/// Run `f` on a thread inside the target's namespace.
fn in_target<T: Send>(ns: &Namespace, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    // Our own namespace (`takeover --restore` in a container): no setns, which would
    // need CAP_SYS_ADMIN even to enter the namespace we are in.
    if Namespace::current().is_ok_and(|me| me.inode == ns.inode) {
        return f();
    }
    netns::run_in(ns, f)?
}

/// Start the watchdog on `record` and wait until it watches us.
fn start_watchdog(record: &Path, ns: &Namespace) -> Result<u32> {
    let exe = std::env::current_exe().context("locate the synthnet binary")?;
    let mut child = Command::new(exe)
        .arg("attach")
        .arg("--watchdog")
        .arg(record)
        .arg(format!("netns:{}", ns.path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the watchdog")?;
    let out = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no watchdog pipe"))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(WATCHDOG_READY_TIMEOUT) {
        Ok(l) if l.trim() == "watching" => Ok(child.id()),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the watchdog did not start (nothing was changed)")
        }
    }
}

/// `attach --watchdog RECORD netns:PATH`: in a session of its own, hold a pidfd on the
/// attach named in the record; when it ends, put back what the record says unless
/// attach did (it removes the record) or the record says fail closed.
fn watchdog(record_path: &Path, target: &str) -> Result<()> {
    // Out of attach's session and process group: a Ctrl-C on its terminal, or a
    // hangup, does not reach us.
    let _ = nix::unistd::setsid();
    let record = Record::read(record_path)?
        .ok_or_else(|| anyhow!("watchdog: no record {}", record_path.display()))?;
    let target: Target = target.parse()?;
    let ns = target.open()?;
    if ns.inode != record.netns_inode {
        bail!("watchdog: the namespace is not the record's");
    }
    let pidfd = PidFd::open(record.pid).context("watchdog: pidfd_open")?;
    println!("watching");
    let _ = std::io::stdout().flush();
    pidfd.wait(None)?;
    let died = Instant::now();
    let Some(now) = Record::read(record_path)? else {
        return Ok(()); // attach put everything back itself.
    };
    if now.pid != record.pid {
        return Ok(()); // another attach's record now.
    }
    if now.fail_closed {
        eprintln!(
            "synthnet watchdog: attach pid {} died; --fail-closed: {} stays cut off until `synthnet attach --restore {}`",
            now.pid, now.change.outer.name, now.target
        );
        return Ok(());
    }
    let c = now.change.clone();
    match in_target(&ns, move || netlink::restore(&c)) {
        Ok(()) => {
            let _ = std::fs::remove_file(record_path);
            eprintln!(
                "synthnet watchdog: attach pid {} died; {} of {} put back in {} ms",
                now.pid,
                now.change.outer.name,
                now.target,
                died.elapsed().as_millis()
            );
            Ok(())
        }
        Err(e) => {
            eprintln!(
                "synthnet watchdog: attach pid {} died; putting {} back failed: {e:#} (`synthnet attach --restore {}` tries again)",
                now.pid, now.change.outer.name, now.target
            );
            Err(e)
        }
    }
}

/// Put back what the record of namespace `ns` says, unless a live attach holds it
/// (then it is refused: `--detach` is the way). Returns the record, or `None` when
/// there was none. A takeover's orphaned bridge is stopped first.
pub fn restore_namespace(ns: &Namespace) -> Result<Option<Record>> {
    restore_record(ns, false)
}

/// [`restore_namespace`]; `locked`: the caller holds the namespace's lock (a new
/// attach), so no attach runs there whatever the record's pid is now.
fn restore_record(ns: &Namespace, locked: bool) -> Result<Option<Record>> {
    let path = Record::path(ns.inode);
    let Some(record) = Record::read(&path)? else {
        return Ok(None);
    };
    if record.pid != std::process::id() && netns::process_exists(record.pid) {
        // A live attach holds its lock; a live takeover is its pid (a pid in a stale
        // record may belong to anything by now).
        let held = match record.kind.as_str() {
            "takeover" => is_synthnet(record.pid),
            _ if locked => false,
            _ => lock_namespace(ns.inode)?.is_err(),
        };
        if held {
            bail!(
                "synthnet {} pid {} is running on {}: stop it (`synthnet attach --detach`, or SIGTERM) instead",
                record.kind,
                record.pid,
                record.target
            );
        }
    }
    if let Some(b) = record.bridge_pid.filter(|p| is_synthnet(*p)) {
        if let Ok(pid) = i32::try_from(b) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            if let Ok(fd) = PidFd::open(b) {
                if !fd.wait(Some(Duration::from_secs(5))).unwrap_or(true) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
    let c = record.change.clone();
    in_target(ns, move || netlink::restore(&c))
        .with_context(|| format!("put back {}", record.change.outer.name))?;
    std::fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
    Ok(Some(record))
}

/// Whether process `pid` runs the synthnet binary (a pid in a stale record may have
/// been reused by anything).
fn is_synthnet(pid: u32) -> bool {
    let me = std::fs::read_link("/proc/self/exe").ok();
    let it = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    match (me, it) {
        (Some(a), Some(b)) => {
            a == b
                || b.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("synthnet"))
        }
        _ => false,
    }
}

/// `attach --detach TARGET`: signal the attach that holds TARGET and wait until it
/// has put everything back.
fn detach(target: &Target, name: &str) -> Result<()> {
    let ns = target.open()?;
    let pid = match lock_namespace(ns.inode)? {
        Ok(_free) => {
            let hint = if Record::path(ns.inode).exists() {
                format!(" (a record of a dead one is there: `synthnet attach --restore {name}`)")
            } else {
                String::new()
            };
            bail!("no synthnet attach is running on {name}{hint}");
        }
        Err(pid) => pid,
    };
    let fd = PidFd::open(pid).with_context(|| format!("watch attach pid {pid}"))?;
    kill(
        Pid::from_raw(i32::try_from(pid).map_err(|_| anyhow!("pid out of range"))?),
        Signal::SIGTERM,
    )
    .with_context(|| format!("signal attach pid {pid}"))?;
    if !fd.wait(Some(DETACH_TIMEOUT))? {
        bail!("attach pid {pid} did not detach within {DETACH_TIMEOUT:?}");
    }
    if Record::path(ns.inode).exists() {
        bail!("attach pid {pid} ended but left its record: `synthnet attach --restore {name}`");
    }
    eprintln!("synthnet: detached {name} (attach pid {pid} put everything back)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_bad_ones_are_refused_with_a_reason() {
        assert_eq!("pid:42".parse::<Target>().unwrap(), Target::Pid(42));
        assert_eq!(
            "netns:blue".parse::<Target>().unwrap(),
            Target::Netns("/run/netns/blue".into())
        );
        assert_eq!(
            "netns:/proc/1/ns/net".parse::<Target>().unwrap(),
            Target::Netns("/proc/1/ns/net".into())
        );
        assert_eq!(
            "docker:web-1".parse::<Target>().unwrap(),
            Target::Docker("web-1".into())
        );
        for bad in [
            "42",
            "pid:",
            "pid:x",
            "pid:0",
            "pid:-1",
            "netns:..",
            "docker:a/b",
            "vm:x",
        ] {
            let e = bad.parse::<Target>().unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(
            Target::Pid(7).namespace_path().unwrap(),
            PathBuf::from("/proc/7/ns/net")
        );
    }

    #[test]
    fn unknown_pid_and_namespace_are_named() {
        let e = Target::Pid(u32::MAX - 1).open().unwrap_err().to_string();
        assert!(e.contains("no process"), "{e}");
        let e = "netns:synthnet-no-such-ns"
            .parse::<Target>()
            .unwrap()
            .open()
            .unwrap_err()
            .to_string();
        assert!(e.contains("no network namespace"), "{e}");
    }

    #[test]
    fn drain_time_covers_the_delays_in_series() {
        let spec: serde_json::Value = serde_json::json!({
            "ingress": {"latency": 50, "jitter": 10},
            "egress": {"latency": 20}
        });
        let plan = synthnet_config::spec::from_value(&spec, Path::new(".")).unwrap();
        let d = drain_time(&plan);
        assert!(
            d >= Duration::from_millis(60) && d <= Duration::from_millis(200),
            "{d:?}"
        );
    }

    #[test]
    fn record_round_trips() {
        let change = Takeover::from_json(&serde_json::json!({
            "interface": {"index": 3, "name": "eth0", "mac": "020000000001", "mtu": 1500, "up": true},
            "renamed": "snr-3", "app_end": "eth0", "wire_end": "snw-3", "hold": "snh-3",
            "addresses": [], "routes": []
        }))
        .unwrap();
        let r = Record {
            kind: "attach".into(),
            netns_inode: 4026532000,
            target: "pid:9".into(),
            pid: 9,
            bridge_pid: None,
            fail_closed: true,
            change,
        };
        let back = Record::from_json(&r.to_json()).unwrap();
        assert_eq!(back.netns_inode, r.netns_inode);
        assert_eq!(back.pid, 9);
        assert!(back.fail_closed);
        assert_eq!(back.change.outer, r.change.outer);
        assert_eq!(back.change.real_name(), "snr-3");
        assert!(Record::from_json(&serde_json::json!({"pid": 1})).is_err());
    }
}
