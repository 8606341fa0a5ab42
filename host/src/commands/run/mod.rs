//! `synthnet run [SPEC] -- CMD`: run a command behind a synthetic link, as Mahimahi's
//! `mm-delay 50 -- cmd` does, with no setup and, for an ordinary user, no root.
//!
//! Three synthnet processes and a userspace network stack:
//!
//! ```text
//!  the caller's namespaces      new user + net namespace ("outer")   new net + mount ns, PID 1
//!  ┌──────────────────────┐     ┌────────────────────────────────┐   ┌──────────────────────┐
//!  │ synthnet run  (main) │     │ synthnet __run-outer (bridge)  │   │ synthnet __run-inner │
//!  │  API listener ───────┼fd──▶│  tap0 ⇄ [spec's chains] ⇄ sn-cmd ═veth═ eth0 10.0.2.100 │
//!  │ slirp4netns / pasta ─┼tap─▶│                                │   │   └─ CMD             │
//!  └──────────────────────┘     └────────────────────────────────┘   └──────────────────────┘
//! ```
//!
//! - **main** (the process the user started) checks the spec, binds the API (so it
//!   listens in the caller's namespace), starts *outer* in new namespaces, attaches the
//!   front end (slirp4netns or pasta, run from the caller's namespace, where their
//!   sockets must live) to outer's network namespace, forwards signals, and exits with
//!   CMD's exit code — or 125 when the link failed, as `docker run` does.
//! - **outer** is a `synthnet bridge tap0 sn-cmd` with the pre-bound API listener: ingress
//!   (outer → inner) is toward CMD, as in a container.
//! - **inner** is the PID namespace's init: it configures `eth0` (addresses, default
//!   routes, a `resolv.conf` bound over the file in its own mount namespace), runs CMD —
//!   as the caller's own uid again when rootless — forwards signals, reaps orphans and
//!   exits with CMD's code.
//!
//! **Nothing is left behind, however it ends.** outer and inner die with their parent
//! (a parent-death SIGKILL); inner is PID 1, so the kernel kills everything CMD started
//! when it goes; the namespaces have no other holder and vanish; slirp4netns exits when
//! its exit pipe (held by main) closes, pasta by its own parent-death signal.
//!
//! Main items: [`RunArgs`] and its `run`; the front end (slirp4netns or pasta) in
//! `front_end.rs`; the two hidden stages, outer and inner, in `stages.rs`.

mod front_end;
mod stages;

pub use front_end::FrontEnd;
pub use stages::{InnerArgs, OuterArgs};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::Duration;
use synthnet_io::netlink;
use synthnet_io::nsproc::{self, IdMap, Spawn};

use super::bridge::{ApiArgs, EngineArgs};
use front_end::{pick_front_end, start_front_end, Said};

/// Exit code when synthnet itself fails (not CMD), as `docker run` uses.
pub const LINK_FAILED: u8 = 125;
/// Exit code when CMD cannot be run (no such file; not executable), as a shell uses.
pub const NOT_FOUND: u8 = 127;
pub const NOT_EXECUTABLE: u8 = 126;

/// MTU of the tap and both veth ends: a userspace stack's throughput grows with it
/// (slirp4netns: 0.3 Gbit/s at 1500, 2.4 at 65520, measured in the research notes).
const MTU: u32 = 65520;
/// The tap the front end makes in outer's namespace.
const TAP: &str = "tap0";
/// outer's end of the veth pair, and CMD's.
const OUTER_END: &str = "sn-cmd";
const CMD_END: &str = "eth0";
/// How long a front end may take to attach.
const FRONT_END_TIMEOUT: Duration = Duration::from_secs(20);

/// The link's address plan: slirp4netns' own (`10.0.2.0/24`, `fd00::/64`), moved to the
/// first free `10.0.N.0/24` when that network is in use here already (in a nested
/// run, it is the outer run's), and without IPv6 then (slirp4netns' IPv6 prefix is
/// fixed). pasta is given the same plan.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPlan {
    /// N of `10.0.N.0/24`.
    pub net: u8,
    pub ipv6: bool,
}

impl AddressPlan {
    fn v4(self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, self.net, host)
    }
    pub fn guest_v4(self) -> Ipv4Addr {
        self.v4(100)
    }
    pub fn gateway_v4(self) -> Ipv4Addr {
        self.v4(2)
    }
    pub fn dns_v4(self) -> Ipv4Addr {
        self.v4(3)
    }
    fn cidr(self) -> String {
        format!("10.0.{}.0/24", self.net)
    }

    /// The first plan whose networks overlap none of `used`.
    pub fn choose(used: &[(IpAddr, u8)]) -> Result<AddressPlan> {
        let overlaps = |net: IpAddr, len: u8| {
            used.iter().any(|&(u, ul)| {
                let l = len.min(ul);
                netlink::cidr_contains(u, l, net) || netlink::cidr_contains(net, l, u)
            })
        };
        let ipv6 = !overlaps(IpAddr::V6(GUEST_V6), 64);
        (2..=254)
            .find(|&n| !overlaps(IpAddr::V4(Ipv4Addr::new(10, 0, n, 0)), 24))
            .map(|net| AddressPlan { net, ipv6 })
            .ok_or_else(|| anyhow!("every network 10.0.2.0/24 … 10.0.254.0/24 is in use here: no room for the link's addresses"))
    }
}

const GUEST_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
const DNS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3);

/// Descriptors handed to outer, inner and the front end, at these numbers.
const FD_API: i32 = 3;
const FD_CONTROL: i32 = 4;
const FD_STATUS: i32 = 5;
const FD_GO: i32 = 3;
const FD_ENDED: i32 = 4;
const FD_READY: i32 = 3;
const FD_EXIT: i32 = 4;

/// Run a command behind a synthetic link, in namespaces of its own (as Mahimahi's
/// `mm-delay` does): no root needed, nothing left behind. The exit code is the
/// command's (125: the link failed; 127: no such command).
#[derive(clap::Args, Debug)]
#[command(
    after_long_help = RUN_EXAMPLES,
    mut_arg("api", |a| a.default_value("auto")),
    mut_arg("stats", |a| a.default_value("0")),
)]
pub struct RunArgs {
    /// The spec (JSON); left out: the built-in default spec. Ingress is toward CMD.
    pub spec: Option<PathBuf>,
    /// The userspace network stack that connects the link to this machine's network.
    #[arg(long = "net", value_enum, default_value = "auto")]
    pub front_end: FrontEnd,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    /// The command and its arguments; left out: your $SHELL, interactive.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

const RUN_EXAMPLES: &str = "\
Examples:
  # 100 ms each way and 1% loss on ingress, around one command (as an ordinary user):
  echo '{\"ingress\": {\"latency\": 100, \"loss\": 0.01}, \"egress\": {\"latency\": 100}}' > lossy.json
  synthnet run lossy.json -- curl -sS https://example.com/

  # A shell behind the link (exit the shell to end the run):
  synthnet run lossy.json

  # Change the link while the command runs (the URL and this line are printed at start):
  synthnet ctl --api 127.0.0.1:PORT patch '{\"ingress\": {\"latency\": 300}}'

  # Two links, one after the other, like Mahimahi's nested shells:
  synthnet run a.json -- synthnet run b.json -- ./client

What the command sees: an interface eth0 with 10.0.2.100/24 and fd00::100/64, default
routes via 10.0.2.2 and fd00::2, DNS at 10.0.2.3 (its own /etc/resolv.conf), and this
machine's network through the link: its addresses as usual, and its loopback at
10.0.2.2. SYNTHNET_API in its environment reaches this run's API from inside.

The exit code is the command's, or 125 when the link failed, 127 when the command does
not exist. Ctrl-C and other signals go to the command; SIGHUP to synthnet reloads the
spec. Nothing is left behind, even after a SIGKILL of synthnet.
";

/// What outer and inner are told (a hidden argument of theirs).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Plan {
    spec: Option<PathBuf>,
    stats_secs: f64,
    compile_budget_secs: f64,
    #[serde(default)]
    timing: crate::daemon::timing::Timing,
    ring_frames: usize,
    flow_table: Option<usize>,
    command_log: Option<PathBuf>,
    /// Write API changes back to the spec file (`--persist`).
    #[serde(default)]
    persist: bool,
    api_on: bool,
    /// The API's address as CMD reaches it (through the front end's gateway).
    api_for_cmd: Option<SocketAddr>,
    command: Vec<String>,
    /// The caller's uid and gid when rootless: CMD runs as them again.
    ids: Option<(u32, u32)>,
    /// Hand CMD the terminal (we had it in the foreground).
    terminal: bool,
    addresses: AddressPlan,
}

impl Plan {
    fn engine(&self) -> EngineArgs {
        EngineArgs {
            stats: self.stats_secs,
            compile_budget: self.compile_budget_secs,
            timing: self.timing,
            ring_frames: self.ring_frames,
            flow_table: self.flow_table,
            command_log: self.command_log.clone(),
            persist: self.persist,
        }
    }
}

/// Why new namespaces were refused, as precisely as this machine tells.
fn namespace_diagnosis(e: &std::io::Error, rootless: bool) -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let mut why = Vec::new();
    for kind in ["user", "net", "mnt"] {
        if read(&format!("/proc/sys/user/max_{kind}_namespaces")).as_deref() == Some("0") {
            why.push(format!("user.max_{kind}_namespaces is 0 (`sysctl -w user.max_{kind}_namespaces=10000` as root allows them)"));
        }
    }
    if rootless && read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        why.push("kernel.unprivileged_userns_clone is 0 (`sysctl -w kernel.unprivileged_userns_clone=1` as root allows them)".to_string());
    }
    if rootless
        && read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        why.push("AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)".to_string());
    }
    let seccomp = read("/proc/self/status").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() == "2"))
    });
    if seccomp == Some(true) {
        why.push("a seccomp filter forbids unshare here — inside a container that is Docker's default profile: run the container with `--security-opt seccomp=unconfined` (and `--cap-add NET_ADMIN`), or put the container behind synthnet from the host with `synthnet attach docker:NAME`".to_string());
    }
    if why.is_empty() {
        why.push(if rootless {
            "this kernel or its policy does not let an ordinary user create user namespaces; try as root".to_string()
        } else {
            "check that the kernel has network and PID namespaces".to_string()
        });
    }
    format!(
        "cannot create the run's namespaces ({e}): {}",
        why.join("; ")
    )
}

impl RunArgs {
    /// `synthnet run`: run to the end; the exit code is CMD's. synthnet's own failures
    /// are [`LINK_FAILED`] (125), as `docker run`'s: CMD's codes stay CMD's.
    pub fn run(self) -> ExitCode {
        run(self).unwrap_or_else(|e| {
            eprintln!("synthnet run: {e:#}");
            ExitCode::from(LINK_FAILED)
        })
    }
}

fn run(args: RunArgs) -> Result<ExitCode> {
    // Everything that can be refused is refused before anything is made.
    if let Some(s) = &args.spec {
        crate::daemon::load_plan(Some(s))?;
    }
    let (front_end, front_end_path) = pick_front_end(args.front_end)?;
    let root = nix::unistd::geteuid().is_root();
    if root && front_end == FrontEnd::Pasta {
        // Measured with Debian 12's pasta: as root it drops its privileges and then
        // cannot open the run's network namespace.
        bail!("--net pasta works for ordinary users only (as root pasta gives up its privileges and cannot join the run's namespace): use --net slirp4netns, the default");
    }
    if !root
        && nix::unistd::access(
            "/dev/net/tun",
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        )
        .is_err()
    {
        bail!("{} needs /dev/net/tun, which you may not open: as root, `chmod 0666 /dev/net/tun` (Debian's default mode, which a tap needs anyway; the device is harmless without CAP_NET_ADMIN)", front_end.program());
    }
    args.engine
        .options(String::new(), String::new(), None, args.api.is_on())?;
    let listener = args.api.open()?;
    let api_addr = listener
        .as_ref()
        .map(|a| a.listener.local_addr())
        .transpose()?;
    let spec = args
        .spec
        .as_ref()
        .map(|s| std::path::absolute(s).with_context(|| format!("{}", s.display())))
        .transpose()?;
    let command = if args.command.is_empty() {
        vec![std::env::var("SHELL")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/bin/sh".into())]
    } else {
        args.command.clone()
    };
    let terminal = nsproc::is_foreground();
    let used = netlink::networks_in_use()?;
    let addresses = AddressPlan::choose(&used)?;
    log::debug!("address plan {addresses:?}; networks in use here: {used:?}");
    let plan = Plan {
        spec,
        stats_secs: args.engine.stats,
        compile_budget_secs: args.engine.compile_budget,
        timing: args.engine.timing,
        ring_frames: args.engine.ring_frames,
        flow_table: args.engine.flow_table,
        command_log: args.engine.command_log.clone(),
        persist: args.engine.persist,
        api_on: listener.is_some(),
        // The front end maps its gateway to this machine's loopback.
        api_for_cmd: api_addr
            .filter(|a| a.ip().is_loopback())
            .map(|a| SocketAddr::new(IpAddr::V4(addresses.gateway_v4()), a.port())),
        command,
        ids: (!root).then(|| {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        }),
        terminal,
        addresses,
    };
    // First, so that no child's end or signal is missed.
    let signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])
        .context("install signal handlers")?;
    let (control_r, control_w) = std::io::pipe().context("pipe")?;
    let (status_r, status_w) = std::io::pipe().context("pipe")?;
    let exe = std::env::current_exe().context("locate the synthnet binary")?;
    let mut outer = Command::new(&exe);
    outer.arg("__run-outer").arg(serde_json::to_string(&plan)?);
    if let Some(a) = &listener {
        // The token travels in the environment, not in argv where `ps` shows it.
        if let Some(t) = &a.token {
            outer.env("SYNTHNET_RUN_API_TOKEN", t);
        }
        outer.env("SYNTHNET_RUN_API_HOSTS", a.hosts.join(","));
    }
    let mut fds = vec![
        (control_r.as_raw_fd(), FD_CONTROL),
        (status_w.as_raw_fd(), FD_STATUS),
    ];
    if let Some(a) = &listener {
        fds.push((a.listener.as_raw_fd(), FD_API));
    }
    Spawn {
        parent_death_signal: Some(libc_sigkill()),
        user: (!root).then(|| IdMap {
            inside_uid: 0,
            outside_uid: nix::unistd::geteuid().as_raw(),
            inside_gid: 0,
            outside_gid: nix::unistd::getegid().as_raw(),
        }),
        // Not the PID namespace: a process that unshared one may not start threads
        // (the bridge has several); inner's launcher makes it.
        net: true,
        pid: false,
        mount: false,
        fds,
        own_group: false,
        terminal: false,
    }
    .apply(&mut outer);
    let mut outer = outer
        .spawn()
        .map_err(|e| anyhow!(namespace_diagnosis(&e, !root)))?;
    drop((control_r, status_w, listener));
    let outer_pid = Pid::from_raw(i32::try_from(outer.id()).map_err(|_| anyhow!("pid"))?);
    let mut front = match start_front_end(front_end, &front_end_path, outer.id(), addresses) {
        Ok(f) => f,
        Err(e) => {
            let _ = outer.kill();
            let _ = outer.wait();
            return Err(e);
        }
    };
    let mut control = std::fs::File::from(OwnedFd::from(control_w));
    // outer may already have failed (then the status pipe says why).
    let _ = writeln!(control, "go");
    let (events_tx, events) = mpsc::channel::<Event>();
    spawn_status_reader(status_r, events_tx.clone())?;
    spawn_signal_forwarder(signals, events_tx.clone())?;
    let front_child = front.child.take();
    if let Some(mut c) = front_child {
        let tx = events_tx.clone();
        std::thread::Builder::new()
            .name("front-end".into())
            .spawn(move || {
                let st = c.wait();
                let _ = tx.send(Event::FrontEndEnded(
                    st.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                ));
            })
            .context("start a thread")?;
    }
    let code = supervise(
        &events,
        outer_pid,
        api_addr,
        &args.api,
        front_end,
        &front.said,
    );
    if terminal {
        nsproc::take_terminal();
    }
    // outer is gone or going; its end takes inner and CMD with it.
    let _ = kill(outer_pid, Signal::SIGKILL);
    let _ = outer.wait();
    drop(front);
    Ok(ExitCode::from(code))
}

fn libc_sigkill() -> i32 {
    Signal::SIGKILL as i32
}

/// What the main process waits for.
enum Event {
    /// A line from outer: `ready`, `exit N`, `failed MESSAGE`.
    Status(String),
    /// outer's status pipe closed: outer ended.
    StatusClosed,
    Signal(i32),
    FrontEndEnded(String),
}

fn spawn_status_reader(r: std::io::PipeReader, tx: mpsc::Sender<Event>) -> Result<()> {
    std::thread::Builder::new()
        .name("run-status".into())
        .spawn(move || {
            for line in BufReader::new(r).lines() {
                let Ok(line) = line else { break };
                if tx.send(Event::Status(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Event::StatusClosed);
        })
        .context("start a thread")?;
    Ok(())
}

fn spawn_signal_forwarder(mut signals: Signals, tx: mpsc::Sender<Event>) -> Result<()> {
    std::thread::Builder::new()
        .name("run-signals".into())
        .spawn(move || {
            for s in signals.forever() {
                if tx.send(Event::Signal(s)).is_err() {
                    return;
                }
            }
        })
        .context("start a thread")?;
    Ok(())
}

/// Forward signals to outer until it says how CMD ended; the exit code.
fn supervise(
    events: &mpsc::Receiver<Event>,
    outer: Pid,
    api_addr: Option<SocketAddr>,
    api: &ApiArgs,
    front_end: FrontEnd,
    said: &Said,
) -> u8 {
    let mut failure: Option<String> = None;
    while let Ok(ev) = events.recv() {
        match ev {
            Event::Status(line) => {
                if line == "ready" {
                    if let Some(a) = api_addr {
                        api.announce(a);
                    }
                } else if let Some(code) = line.strip_prefix("exit ") {
                    return code.trim().parse().unwrap_or(1);
                } else if let Some(why) = line.strip_prefix("failed ") {
                    failure = Some(why.to_string());
                }
            }
            Event::StatusClosed => {
                let why = failure.unwrap_or_else(|| "the bridge process ended unexpectedly".into());
                eprintln!("synthnet run: {why}; the command was stopped");
                return LINK_FAILED;
            }
            Event::Signal(s) => {
                if let Ok(sig) = Signal::try_from(s) {
                    // SIGHUP reloads the spec; the rest are CMD's (outer passes them on).
                    let _ = kill(outer, sig);
                }
            }
            Event::FrontEndEnded(st) => {
                eprintln!(
                    "synthnet run: {} exited ({st}): the link to the outside is gone; the command was stopped{}",
                    front_end.program(),
                    said.text()
                );
                return LINK_FAILED;
            }
        }
    }
    LINK_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_round_trips() {
        let p = Plan {
            spec: Some("/a.json".into()),
            stats_secs: 0.0,
            compile_budget_secs: 10.0,
            timing: Default::default(),
            ring_frames: 4096,
            flow_table: None,
            command_log: None,
            persist: false,
            api_on: true,
            api_for_cmd: Some("10.0.2.2:8080".parse().unwrap()),
            command: vec!["ping".into(), "-c1".into()],
            ids: Some((1000, 1000)),
            terminal: false,
            addresses: AddressPlan {
                net: 3,
                ipv6: false,
            },
        };
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back.command, p.command);
        assert_eq!(back.ids, p.ids);
        assert_eq!(back.api_for_cmd, p.api_for_cmd);
        assert_eq!(back.addresses, p.addresses);
    }

    #[test]
    fn a_nested_run_takes_the_next_free_network() {
        let none = AddressPlan::choose(&[]).unwrap();
        assert_eq!(none, AddressPlan { net: 2, ipv6: true });
        assert_eq!(none.gateway_v4(), Ipv4Addr::new(10, 0, 2, 2));
        let outer_run = [
            ("10.0.2.100".parse().unwrap(), 24),
            ("fd00::100".parse().unwrap(), 64),
            ("10.0.3.0".parse().unwrap(), 24),
        ];
        let inner = AddressPlan::choose(&outer_run).unwrap();
        assert_eq!(
            inner,
            AddressPlan {
                net: 4,
                ipv6: false
            }
        );
        assert_eq!(inner.dns_v4(), Ipv4Addr::new(10, 0, 4, 3));
        // A machine on 10.0.0.0/16 leaves none of 10.0.N.0/24.
        assert!(AddressPlan::choose(&[("10.0.7.1".parse().unwrap(), 16)]).is_err());
    }
}
