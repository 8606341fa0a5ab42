//! `synthnet takeover`: put the application of a container behind a synthetic link.
//!
//! What synthetic-network's `setup.sh` does, in-process and more carefully: pick the
//! interface (`SYNTHETIC_NETWORK`, a CIDR; else the default route's), move its addresses,
//! routes (the real gateway, read, not guessed) and MAC onto the application's end of a
//! veth pair ([`synthnet_io::netlink`]), run `synthnet bridge REAL WIRE` as a child (the
//! same binary) with the spec and the API flags, then run the application. As PID 1 it
//! forwards SIGTERM/SIGINT to the application and SIGHUP to the bridge, reaps every
//! zombie, and exits with the application's exit code. If the bridge dies, the
//! application is stopped and takeover exits with [`BRIDGE_DIED`] and a message: the
//! synthetic link is never lost silently. On the way out it undoes the takeover.
//!
//! Before it changes anything it writes the same crash record as `synthnet attach`
//! ([`super::attach::Record`]): a takeover killed by SIGKILL is put back by
//! `synthnet takeover --restore` (or `synthnet attach --restore pid:1`) run in the
//! container, which also stops its orphaned bridge.
//!
//! Main items: [`TakeoverArgs`], [`run`], [`resolve_spec`], [`restore_here`].

use super::bridge::{seconds, ApiArgs};
use super::child::{exit_code, reap};
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use synthnet_io::netlink;

/// Exit code when the bridge dies under the application (the application was stopped).
pub const BRIDGE_DIED: u8 = 3;
/// synthetic-network's spec path: used when present and no other spec is given.
pub const LEGACY_SPEC: &str = "/opt/etc/synthetic_network.json";
/// synthetic-network's default application.
pub const DEFAULT_ENTRY: &str = "/opt/bin/entry";
/// How long the bridge may take to open its interfaces and compile its plugins.
const BRIDGE_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Put this container's application behind a synthetic link: move the interface's
/// addresses, routes and MAC (SYNTHETIC_NETWORK=CIDR picks it; default: the default
/// route's) onto a veth pair, bridge the real interface to it with the spec
/// (SPEC, else SYNTHNET_SPEC, else /opt/etc/synthetic_network.json, else the built-in
/// default), run the application (`-- CMD`, else ENTRY, else /opt/bin/entry, else
/// none: a sidecar) and exit with its code; undone on exit. Exit code 3: the bridge
/// died (the application was stopped). Needs CAP_NET_ADMIN and CAP_NET_RAW.
#[derive(clap::Args, Debug, Clone)]
#[command(
    after_long_help = TAKEOVER_EXAMPLES,
    // The API flags are the bridge's own (`ApiArgs`), handed to it as given.
    mut_arg("api", |a| a
        .help("Passed to the bridge: where its API listens (`off`: none)")
        .value_name("API")
        .hide_default_value(true)),
    mut_arg("api_token_file", |a| a
        .help("Passed to the bridge: the API's bearer token file")
        .value_name("API_TOKEN_FILE")),
    mut_arg("api_host", |a| a
        .help("Passed to the bridge: a host name the API's Host/Origin checks accept")
        .value_name("API_HOST")),
)]
pub struct TakeoverArgs {
    /// The spec (JSON).
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Seconds between the bridge's stats lines on stderr; 0: none.
    #[arg(long, default_value_t = 0.0, value_parser = seconds, value_name = "SECS")]
    pub stats: f64,
    /// Keep the spec file as it is: changes through the API live in memory. By
    /// default takeover writes them back to the file (--persist), as
    /// synthetic-network's image did.
    #[arg(long)]
    pub no_persist: bool,
    /// Put back what a killed takeover left in this network namespace (from its
    /// record in /run/synthnet), stop its orphaned bridge, and exit.
    #[arg(long, conflicts_with_all = ["spec", "command"])]
    pub restore: bool,
    /// The application and its arguments.
    #[arg(last = true)]
    pub command: Vec<String>,
}

const TAKEOVER_EXAMPLES: &str = "\
Examples:
  # in a container started with --cap-add NET_ADMIN --cap-add NET_RAW:
  synthnet takeover --api 0.0.0.0:80 -- /opt/bin/entry
  synthnet takeover spec.json --no-persist -- ./server
  synthnet takeover --restore        # put back what a killed takeover left";

impl TakeoverArgs {
    /// `synthnet takeover` (or `--restore`): run to the end; the exit code is the
    /// application's.
    pub fn run(self) -> Result<ExitCode> {
        if self.restore {
            restore_here()?;
            return Ok(ExitCode::SUCCESS);
        }
        run(&self).map(ExitCode::from)
    }
}

/// Where the spec comes from, in order: the SPEC argument; `SYNTHNET_SPEC` (a path, or
/// the JSON itself when it starts with `{`: written to a file so SIGHUP can re-read it);
/// synthetic-network's `/opt/etc/synthetic_network.json` when present; else `None`, the
/// built-in default.
pub fn resolve_spec(
    arg: Option<&Path>,
    env: Option<&str>,
    legacy: &Path,
) -> Result<Option<PathBuf>> {
    if let Some(p) = arg {
        return Ok(Some(p.to_path_buf()));
    }
    if let Some(v) = env.map(str::trim).filter(|v| !v.is_empty()) {
        if v.starts_with('{') {
            // A directory of our own under an unguessable name (the temporary
            // directory is everybody's), so nobody can plant a link or a FIFO there.
            let dir =
                crate::daemon::safefile::private_dir(&std::env::temp_dir(), "synthnet-takeover")
                    .context("SYNTHNET_SPEC")?;
            let path = dir.join("spec.json");
            crate::daemon::safefile::write(&path, v.as_bytes())
                .with_context(|| format!("write SYNTHNET_SPEC to {}", path.display()))?;
            return Ok(Some(path));
        }
        return Ok(Some(PathBuf::from(v)));
    }
    Ok(legacy.exists().then(|| legacy.to_path_buf()))
}

/// The application's argv: the command after `--`, else `ENTRY` (run by `/bin/sh -c`, as
/// synthetic-network's image does), else `/opt/bin/entry` when it exists; else none
/// (sidecar: the bridge runs until takeover is stopped).
pub fn resolve_command(
    cmd: &[String],
    entry: Option<&str>,
    default_entry: &Path,
) -> Option<Vec<String>> {
    if !cmd.is_empty() {
        return Some(cmd.to_vec());
    }
    if let Some(e) = entry.map(str::trim).filter(|e| !e.is_empty()) {
        return Some(vec!["/bin/sh".into(), "-c".into(), e.to_string()]);
    }
    default_entry
        .exists()
        .then(|| vec![default_entry.display().to_string()])
}

/// The interface to take over: the one with an address in `SYNTHETIC_NETWORK`, else the
/// default route's.
fn pick_interface(network: Option<&str>) -> Result<netlink::Interface> {
    match network.map(str::trim).filter(|n| !n.is_empty()) {
        Some(cidr) => {
            let (net, len) = netlink::parse_cidr(cidr).context("SYNTHETIC_NETWORK")?;
            netlink::interface_in(net, len).context("SYNTHETIC_NETWORK")
        }
        None => netlink::default_route_interface(),
    }
}

/// SIGTERM `pid`, wait up to [`STOP_GRACE`] (reaping), then SIGKILL. Returns its exit code.
fn stop_child(pid: Pid, what: &str) -> Option<u8> {
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    loop {
        if let Some((_, code)) = reap().into_iter().find(|(p, _)| *p == pid) {
            return Some(code);
        }
        if Instant::now() >= deadline {
            log::warn!("{what} did not stop within {STOP_GRACE:?} of SIGTERM: SIGKILL");
            let _ = kill(pid, Signal::SIGKILL);
            return match waitpid(pid, None) {
                Ok(st) => exit_code(st),
                Err(_) => None,
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start `synthnet bridge OUTER WIRE [SPEC] --stats S [API flags] --ready-fd N` and
/// wait until it says, on that pipe, that it forwards (not a log line: logs are for
/// people, and their wording changes).
fn start_bridge(outer: &str, spec: Option<&Path>, opts: &TakeoverArgs) -> Result<Pid> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    use std::os::fd::AsRawFd;
    let exe = std::env::current_exe().context("locate the synthnet binary")?;
    let (ready_rx, ready_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("make a pipe")?;
    // The child's end survives exec; ours does not.
    fcntl(&ready_tx, FcntlArg::F_SETFD(FdFlag::empty())).context("make a pipe")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bridge").arg(outer).arg(netlink::WIRE_END);
    if let Some(s) = spec {
        cmd.arg(s);
    }
    cmd.arg("--stats").arg(opts.stats.to_string());
    if !opts.no_persist {
        cmd.arg("--persist");
    }
    cmd.args(opts.api.to_args());
    cmd.arg("--ready-fd").arg(ready_tx.as_raw_fd().to_string());
    // Its own process group: a Ctrl-C on the terminal is the application's, not the
    // bridge's (the bridge stops when takeover says so).
    cmd.process_group(0).stdin(Stdio::null());
    let child = cmd.spawn().context("start synthnet bridge");
    drop(ready_tx);
    let child = child?;
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|_| anyhow!("pid out of range"))?);
    log::info!("synthnet bridge started, pid {pid}");
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("bridge-ready".into())
        .spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(std::fs::File::from(ready_rx)).read_line(&mut line);
            let _ = tx.send(line);
        })
        .context("start the readiness thread")?;
    let deadline = Instant::now() + BRIDGE_READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) if !line.is_empty() => return Ok(pid),
            // The pipe closed without a word: the bridge ended (its status below).
            Ok(_) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Ok(st) = waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            if let Some(code) = exit_code(st) {
                bail!(
                    "synthnet bridge exited with code {code} before it bridged (its log is above)"
                );
            }
        }
        if Instant::now() >= deadline {
            let _ = stop_child(pid, "the bridge");
            bail!("synthnet bridge did not start bridging within {BRIDGE_READY_TIMEOUT:?}");
        }
    }
}

/// Write the crash record of this takeover (`synthnet takeover --restore` or
/// `synthnet attach --restore` puts it back after a SIGKILL). Where it cannot be
/// written (no writable /run), takeover goes on without it, and says so.
fn write_record(t: &netlink::Takeover, bridge_pid: Option<Pid>) -> Option<PathBuf> {
    let ns = match synthnet_io::netns::Namespace::current() {
        Ok(ns) => ns,
        Err(e) => {
            log::warn!("no crash record (cannot identify the network namespace: {e})");
            return None;
        }
    };
    let record = super::attach::Record {
        kind: "takeover".into(),
        netns_inode: ns.inode,
        target: "pid:1".into(),
        pid: std::process::id(),
        bridge_pid: bridge_pid.and_then(|p| u32::try_from(p.as_raw()).ok()),
        fail_closed: false,
        change: t.clone(),
    };
    match record.write() {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("no crash record: {e:#}");
            None
        }
    }
}

/// `synthnet takeover --restore`: put back what a killed takeover left in this
/// network namespace, from its record.
pub fn restore_here() -> Result<()> {
    let ns = synthnet_io::netns::Namespace::current().context("identify this network namespace")?;
    match super::attach::restore_namespace(&ns)? {
        Some(r) => eprintln!(
            "synthnet: put back {} (left by {} pid {})",
            r.change.outer.name, r.kind, r.pid
        ),
        None => eprintln!(
            "synthnet: nothing to put back here (no record in {})",
            crate::daemon::state_dir().display()
        ),
    }
    Ok(())
}

/// Run a takeover to its end; returns the process exit code.
pub fn run(opts: &TakeoverArgs) -> Result<u8> {
    // First, so no child's end or signal is missed.
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2])
        .context("install signal handlers")?;
    let spec = resolve_spec(
        opts.spec.as_deref(),
        std::env::var("SYNTHNET_SPEC").ok().as_deref(),
        Path::new(LEGACY_SPEC),
    )?;
    if let Some(s) = &spec {
        // Refuse a bad spec before touching the network.
        crate::daemon::load_plan(Some(s)).with_context(|| format!("spec {}", s.display()))?;
    }
    let app_cmd = resolve_command(
        &opts.command,
        std::env::var("ENTRY").ok().as_deref(),
        Path::new(DEFAULT_ENTRY),
    );
    let outer = pick_interface(std::env::var("SYNTHETIC_NETWORK").ok().as_deref())?;
    let mut record = None;
    let t = netlink::take_over(&outer, |t| {
        record = write_record(t, None);
        Ok(())
    })
    .with_context(|| format!("take over {} (needs CAP_NET_ADMIN)", outer.name))?;
    let addrs: Vec<String> = t
        .addresses
        .iter()
        .map(|a| format!("{}/{}", a.addr, a.prefix_len))
        .collect();
    log::info!(
        "took over {}: {} and routes [{}] now on {} (MAC kept); synthnet bridges {} ⇄ {}",
        outer.name,
        addrs.join(", "),
        t.describe_routes().join(", "),
        netlink::APP_END,
        outer.name,
        netlink::WIRE_END
    );
    let result = supervise(
        opts,
        &outer,
        spec.as_deref(),
        app_cmd,
        &mut signals,
        |bridge| {
            if record.is_some() {
                record = write_record(&t, Some(bridge));
            }
        },
    );
    if let Err(e) = netlink::undo(&t) {
        log::error!("undoing the takeover of {}: {e:#}", outer.name);
    } else {
        log::info!("takeover of {} undone", outer.name);
        if let Some(p) = &record {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

fn supervise(
    opts: &TakeoverArgs,
    outer: &netlink::Interface,
    spec: Option<&Path>,
    app_cmd: Option<Vec<String>>,
    signals: &mut Signals,
    started: impl FnOnce(Pid),
) -> Result<u8> {
    let bridge = start_bridge(&outer.name, spec, opts)?;
    started(bridge);
    let app = match &app_cmd {
        Some(argv) => {
            let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty command"))?;
            match Command::new(prog).args(args).spawn() {
                Ok(c) => {
                    log::info!("running {}", argv.join(" "));
                    Some(Pid::from_raw(
                        i32::try_from(c.id()).map_err(|_| anyhow!("pid out of range"))?,
                    ))
                }
                Err(e) => {
                    let _ = stop_child(bridge, "the bridge");
                    bail!("cannot run {prog}: {e}");
                }
            }
        }
        None => {
            log::info!("no application (no `-- CMD`, ENTRY or {DEFAULT_ENTRY}): running as a sidecar until stopped");
            None
        }
    };
    loop {
        for sig in signals.wait() {
            match sig {
                SIGCHLD => {}
                SIGHUP => {
                    let _ = kill(bridge, Signal::SIGHUP);
                }
                s => match app {
                    Some(a) => {
                        if let Ok(sig) = Signal::try_from(s) {
                            let _ = kill(a, sig);
                        }
                    }
                    None if s == SIGTERM || s == SIGINT || s == SIGQUIT => {
                        log::info!("stopping the sidecar");
                        stop_child(bridge, "the bridge");
                        return Ok(0);
                    }
                    None => {}
                },
            }
        }
        for (pid, code) in reap() {
            if Some(pid) == app {
                log::info!("the application exited with code {code}; stopping the bridge");
                stop_child(bridge, "the bridge");
                return Ok(code);
            }
            if pid == bridge {
                log::error!(
                    "synthnet bridge exited (code {code}): the synthetic link is gone, stopping the application"
                );
                if let Some(a) = app {
                    stop_child(a, "the application");
                }
                eprintln!("synthnet takeover: the bridge died (exit code {code}); the application was stopped");
                return Ok(BRIDGE_DIED);
            }
            // Anything else: an orphan that PID 1 inherited, now reaped.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        takeover: TakeoverArgs,
    }

    #[derive(clap::Parser)]
    struct BridgeCli {
        #[command(flatten)]
        bridge: crate::commands::bridge::BridgeArgs,
    }

    #[test]
    fn api_flags_reach_the_bridge_as_given_and_stats_are_seconds() {
        use clap::Parser;
        let t = Cli::try_parse_from([
            "takeover",
            "--api",
            "0.0.0.0:80",
            "--api-host",
            "h",
            "--stats",
            "2",
            "--",
            "app",
        ])
        .unwrap()
        .takeover;
        assert_eq!(t.api.to_args(), ["--api", "0.0.0.0:80", "--api-host", "h"]);
        assert_eq!((t.stats, t.command), (2.0, vec!["app".to_string()]));
        // No --api: the bridge gets what it would have taken by itself.
        let t = Cli::try_parse_from(["takeover"]).unwrap().takeover;
        let b = BridgeCli::try_parse_from(["bridge", "a", "b"])
            .unwrap()
            .bridge;
        assert_eq!(t.api.to_args(), ["--api", b.api.api.as_str()]);
        // --stats is parsed as the bridge parses it.
        for bad in ["--stats=-1", "--stats=nan", "--stats=inf"] {
            assert!(Cli::try_parse_from(["takeover", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn spec_comes_from_arg_then_env_then_legacy_file() {
        let none = Path::new("/nonexistent/synthnet.json");
        assert_eq!(
            resolve_spec(Some(Path::new("a.json")), Some("b.json"), none).unwrap(),
            Some(PathBuf::from("a.json"))
        );
        assert_eq!(
            resolve_spec(None, Some("b.json"), none).unwrap(),
            Some(PathBuf::from("b.json"))
        );
        assert_eq!(resolve_spec(None, None, none).unwrap(), None);
        let inline = resolve_spec(None, Some(r#"{"ingress": {"latency": 40}}"#), none)
            .unwrap()
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&inline).unwrap(),
            r#"{"ingress": {"latency": 40}}"#
        );
        let dir = std::env::temp_dir();
        assert_eq!(
            resolve_spec(None, Some(" "), &dir).unwrap(),
            Some(dir.clone())
        );
    }

    #[test]
    fn command_comes_from_args_then_entry_then_default() {
        let none = Path::new("/nonexistent/entry");
        let args = vec!["ping".to_string(), "x".to_string()];
        assert_eq!(
            resolve_command(&args, Some("bash"), none),
            Some(args.clone())
        );
        assert_eq!(
            resolve_command(&[], Some("iperf3 -s"), none),
            Some(vec!["/bin/sh".into(), "-c".into(), "iperf3 -s".into()])
        );
        assert_eq!(resolve_command(&[], None, none), None);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            resolve_command(&[], Some(""), &exe),
            Some(vec![exe.display().to_string()])
        );
    }
}
