//! The two hidden stages of `synthnet run`, each the same binary started again in new
//! namespaces: *outer* (`__run-outer`), the bridge between the front end's tap and
//! CMD's veth, and *inner* (`__run-inner`), the init of CMD's PID namespace. Both are
//! told the run's [`Plan`] as JSON, their one argument.

use anyhow::{anyhow, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, ExitCode};
use synthnet_io::netlink;
use synthnet_io::nsproc::{self, IdMap, Spawn};

use super::{
    libc_sigkill, AddressPlan, Plan, CMD_END, DNS_V6, FD_API, FD_CONTROL, FD_ENDED, FD_GO,
    FD_STATUS, GATEWAY_V6, GUEST_V6, LINK_FAILED, MTU, NOT_EXECUTABLE, NOT_FOUND, OUTER_END, TAP,
};
use crate::commands::bridge::forward;
use crate::commands::child;
use crate::daemon::control::Control;
use crate::daemon::Bridge;

/// (internal) The bridge stage of `synthnet run`, in its namespaces.
#[derive(clap::Args, Debug)]
pub struct OuterArgs {
    /// The run's plan (JSON).
    pub plan: String,
}

impl OuterArgs {
    /// Run outer to its end (how it ended also goes to the main process's status pipe).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        outer_main(&self.plan)
    }
}

/// (internal) The init of `synthnet run`'s command namespace.
#[derive(clap::Args, Debug)]
pub struct InnerArgs {
    /// The run's plan (JSON).
    pub plan: String,
}

impl InnerArgs {
    /// Run inner to its end; the exit code is CMD's.
    pub fn run(self) -> ExitCode {
        inner_main(&self.plan)
    }
}

/// outer: the bridge between the front end's tap and CMD's veth, in the run's user and
/// network namespaces; its first child, inner, is the PID namespace's init.
fn outer_main(plan_json: &str) -> Result<ExitCode> {
    let mut status =
        std::fs::File::from(synthnet_io::process::inherited_fd(FD_STATUS).context("status pipe")?);
    match outer(plan_json, &mut status) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => {
            let _ = writeln!(status, "failed {e:#}");
            Ok(ExitCode::from(LINK_FAILED))
        }
    }
}

fn outer(plan_json: &str, status: &mut std::fs::File) -> Result<u8> {
    let plan: Plan = serde_json::from_str(plan_json).context("run plan")?;
    let control = synthnet_io::process::inherited_fd(FD_CONTROL).context("control pipe")?;
    let api_fd = if plan.api_on {
        Some(synthnet_io::process::inherited_fd(FD_API).context("API listener")?)
    } else {
        None
    };
    // Signals are CMD's: passed on to inner (and by it to CMD), never ours to stop on.
    let signals = Signals::new([SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2])
        .context("install signal handlers")?;
    let ctl = Control::new()?;
    ctl.install_reload_handler()?;
    netlink::set_up("lo", None)?;
    // go: outer → inner, "go" once the link is up, closed once the bridge stopped;
    // ended: inner → outer, "exit N" when CMD ended (before inner itself ends, so the
    // bridge stops before its interface vanishes with inner's namespace).
    let (go_r, go_w) = std::io::pipe().context("pipe")?;
    let (ended_r, ended_w) = std::io::pipe().context("pipe")?;
    let exe = std::env::current_exe().context("locate the synthnet binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__run-inner").arg(plan_json);
    Spawn {
        parent_death_signal: Some(libc_sigkill()),
        net: true,
        mount: true,
        pid: true,
        fds: vec![(go_r.as_raw_fd(), FD_GO), (ended_w.as_raw_fd(), FD_ENDED)],
        ..Spawn::default()
    }
    .apply(&mut cmd);
    let mut init = cmd.spawn().context("start the command's namespace")?;
    drop((go_r, ended_w));
    let init_pid = Pid::from_raw(i32::try_from(init.id()).map_err(|_| anyhow!("pid"))?);
    let result = (|| -> Result<u8> {
        netlink::veth_into(OUTER_END, CMD_END, MTU, init.id())?;
        // The front end is attached once main says so.
        let mut line = String::new();
        BufReader::new(std::fs::File::from(control)).read_line(&mut line)?;
        anyhow::ensure!(line.trim() == "go", "the main synthnet process went away");
        netlink::set_up(TAP, Some(MTU))?;
        let opts =
            plan.engine()
                .options(TAP.into(), OUTER_END.into(), plan.spec.clone(), plan.api_on)?;
        let mut b = Bridge::new(opts, &ctl)?;
        // The token and host names travel in the environment (not argv, where `ps`
        // shows them).
        let api = api_fd.map(|fd| crate::api::ApiOptions {
            listener: std::net::TcpListener::from(fd),
            token: std::env::var("SYNTHNET_RUN_API_TOKEN").ok(),
            hosts: std::env::var("SYNTHNET_RUN_API_HOSTS")
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        });
        // CMD's end: when inner tells it (or ends), the bridge stops.
        let code = std::sync::Arc::new(std::sync::Mutex::new(None::<u8>));
        let end = {
            let code = code.clone();
            let ctl = ctl.clone();
            move |c: u8| {
                if let Ok(mut g) = code.lock() {
                    g.get_or_insert(c);
                }
                ctl.request_stop();
            }
        };
        let told_end = end.clone();
        std::thread::Builder::new()
            .name("run-ended".into())
            .spawn(move || {
                for line in BufReader::new(ended_r).lines().map_while(Result::ok) {
                    if let Some(c) = line.strip_prefix("exit ").and_then(|c| c.parse().ok()) {
                        told_end(c);
                    }
                }
            })
            .context("start a thread")?;
        std::thread::Builder::new()
            .name("run-init".into())
            .spawn(move || end(init.wait().map(child::status_code).unwrap_or(LINK_FAILED)))
            .context("start a thread")?;
        let mut passed_on = signals;
        std::thread::Builder::new()
            .name("run-signals".into())
            .spawn(move || {
                for s in passed_on.forever() {
                    if let Ok(sig) = Signal::try_from(s) {
                        let _ = kill(init_pid, sig);
                    }
                }
            })
            .context("start a thread")?;
        let mut go = std::fs::File::from(OwnedFd::from(go_w));
        let mut told = status.try_clone()?;
        // Signals are CMD's: the bridge stops when CMD ends.
        forward(&mut b, &ctl, api, |_| {
            let _ = writeln!(told, "ready");
            let _ = writeln!(go, "go");
        })?;
        // inner may end now.
        drop(go);
        let c = code.lock().ok().and_then(|g| *g);
        c.ok_or_else(|| anyhow!("the bridge stopped before the command ended"))
    })();
    match result {
        Ok(c) => {
            let _ = writeln!(status, "exit {c}");
            Ok(c)
        }
        Err(e) => {
            // The link is gone: so is CMD (inner is its namespace's init).
            let _ = kill(init_pid, Signal::SIGKILL);
            Err(e)
        }
    }
}

/// inner: PID 1 of the run's PID namespace, in CMD's network and mount namespaces.
///
/// Started in those namespaces, it is first their *launcher*: a process that unshared
/// a PID namespace is not in it (its first child is the namespace's init) and may not
/// start threads, so it only starts itself again as that init and passes signals on
/// until it ends.
fn inner_main(plan_json: &str) -> ExitCode {
    inner(plan_json).unwrap_or_else(|e| {
        eprintln!("synthnet run: {e:#}");
        ExitCode::from(LINK_FAILED)
    })
}

fn inner(plan_json: &str) -> Result<ExitCode> {
    let signals = Signals::new([SIGCHLD, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])
        .context("install signal handlers")?;
    if std::process::id() != 1 {
        let exe = std::env::current_exe().context("locate the synthnet binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("__run-inner").arg(plan_json);
        Spawn {
            parent_death_signal: Some(libc_sigkill()),
            fds: vec![(FD_GO, FD_GO), (FD_ENDED, FD_ENDED)],
            ..Spawn::default()
        }
        .apply(&mut cmd);
        let init = cmd.spawn().context("start the command's init")?;
        let pid = Pid::from_raw(i32::try_from(init.id()).map_err(|_| anyhow!("pid"))?);
        return Ok(ExitCode::from(pass_signals_until_end(signals, pid)));
    }
    let plan: Plan = serde_json::from_str(plan_json).context("run plan")?;
    let go = synthnet_io::process::inherited_fd(FD_GO).context("go pipe")?;
    let ended = synthnet_io::process::inherited_fd(FD_ENDED).context("end pipe")?;
    let mut go = BufReader::new(std::fs::File::from(go));
    let mut line = String::new();
    go.read_line(&mut line)?;
    if line.trim() != "go" {
        // outer failed before the link was up; it says why.
        return Ok(ExitCode::from(LINK_FAILED));
    }
    configure_network(plan.addresses).context("configure the command's network")?;
    let (prog, args) = plan
        .command
        .split_first()
        .ok_or_else(|| anyhow!("no command"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    if let Some(a) = plan.api_for_cmd {
        cmd.env("SYNTHNET_API", a.to_string());
    }
    cmd.env_remove("SYNTHNET_RUN_API_TOKEN")
        .env_remove("SYNTHNET_RUN_API_HOSTS");
    Spawn {
        user: plan.ids.map(|(uid, gid)| IdMap {
            inside_uid: uid,
            outside_uid: 0,
            inside_gid: gid,
            outside_gid: 0,
        }),
        own_group: true,
        terminal: plan.terminal,
        ..Spawn::default()
    }
    .apply(&mut cmd);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            // As a shell: "not found" unless a file of that name exists (execvp says
            // EACCES when any directory of PATH was not searchable).
            let exists = if prog.contains('/') {
                Path::new(prog).exists()
            } else {
                std::env::var_os("PATH")
                    .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
            };
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => NOT_FOUND,
                std::io::ErrorKind::PermissionDenied if !exists => NOT_FOUND,
                std::io::ErrorKind::PermissionDenied => NOT_EXECUTABLE,
                _ => LINK_FAILED,
            };
            let what = if code == NOT_FOUND {
                "command not found".to_string()
            } else {
                e.to_string()
            };
            eprintln!("synthnet run: {prog}: {what}");
            return Ok(ExitCode::from(code));
        }
    };
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|_| anyhow!("pid"))?);
    // As init: pass signals on, reap every orphan, end with CMD — once outer has
    // stopped its bridge (it closes `go`), so that it never sees its interface vanish.
    let code = pass_signals_until_end(signals, pid);
    let _ = writeln!(std::fs::File::from(ended), "exit {code}");
    let _ = std::io::Read::read_to_end(&mut go, &mut Vec::new());
    Ok(ExitCode::from(code))
}

/// Pass every signal but SIGCHLD on to `pid`, reap every child that ends (an init's
/// duty), and return `pid`'s exit code once it ends.
fn pass_signals_until_end(mut signals: Signals, pid: Pid) -> u8 {
    loop {
        for (p, code) in child::reap() {
            if p == pid {
                return code;
            }
        }
        for s in signals.wait() {
            if s == SIGCHLD {
                continue;
            }
            if let Ok(sig) = Signal::try_from(s) {
                let _ = kill(pid, sig);
            }
        }
    }
}

/// CMD's side of the link: addresses, default routes, DNS, ping without privilege.
fn configure_network(addresses: AddressPlan) -> Result<()> {
    netlink::set_up("lo", None)?;
    // Router advertisements would add a second address and route beside ours.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{CMD_END}/accept_ra"), "0");
    netlink::set_up(CMD_END, Some(MTU))?;
    netlink::configure_guest(
        CMD_END,
        &[
            Some((IpAddr::V4(addresses.guest_v4()), 24)),
            addresses.ipv6.then_some((IpAddr::V6(GUEST_V6), 64)),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>(),
        &[
            Some(IpAddr::V4(addresses.gateway_v4())),
            addresses.ipv6.then_some(IpAddr::V6(GATEWAY_V6)),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>(),
    )?;
    // ICMP echo sockets for every group this namespace knows: `ping` works without
    // privilege (the namespace is CMD's alone).
    let groups = "/proc/sys/net/ipv4/ping_group_range";
    if std::fs::write(groups, "0 2147483647").is_err() {
        let _ = std::fs::write(groups, "0 0");
    }
    nsproc::make_mounts_private()?;
    // This namespace's own /proc: `ps` shows CMD's processes, and a nested run finds
    // its own processes by their ids. Refused where /proc is partly hidden (a
    // container's masked paths); then the machine's /proc stays.
    if let Err(e) = nsproc::mount_proc() {
        log::warn!(
            "{e}: the command sees this machine's /proc (a nested `synthnet run` will fail)"
        );
    }
    let resolv = Path::new("/etc/resolv.conf");
    if resolv.exists() {
        let mut text = format!(
            "# synthnet run: DNS through the link\nnameserver {}\n",
            addresses.dns_v4()
        );
        if addresses.ipv6 {
            text.push_str(&format!("nameserver {DNS_V6}\n"));
        }
        nsproc::bind_over(text.as_bytes(), resolv, &std::env::temp_dir())?;
    } else {
        log::warn!("no /etc/resolv.conf to bind over: the command's DNS is as this machine's");
    }
    Ok(())
}
