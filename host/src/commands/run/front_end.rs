//! The front end of `synthnet run`: the userspace network stack (slirp4netns or pasta)
//! that connects the link's tap, in outer's network namespace, to this machine's
//! network. It runs in the caller's namespaces, where its sockets must live.

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use synthnet_io::nsproc::Spawn;

use super::{
    AddressPlan, DNS_V6, FD_EXIT, FD_READY, FRONT_END_TIMEOUT, GATEWAY_V6, GUEST_V6, MTU, TAP,
};

/// The userspace network stack between the link and the caller's network.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrontEnd {
    /// slirp4netns if installed, else pasta.
    Auto,
    /// slirp4netns (Debian package `slirp4netns`): steady, the default.
    Slirp4netns,
    /// pasta (Debian package `passt`).
    Pasta,
}

impl FrontEnd {
    pub(super) fn program(self) -> &'static str {
        match self {
            FrontEnd::Pasta => "pasta",
            _ => "slirp4netns",
        }
    }

    fn package(self) -> &'static str {
        match self {
            FrontEnd::Pasta => "passt",
            _ => "slirp4netns",
        }
    }
}

/// The front end to use, or what to install.
pub(super) fn pick_front_end(asked: FrontEnd) -> Result<(FrontEnd, PathBuf)> {
    let find = |f: FrontEnd| which(f.program()).map(|p| (f, p));
    match asked {
        FrontEnd::Auto => find(FrontEnd::Slirp4netns)
            .or_else(|| find(FrontEnd::Pasta))
            .ok_or_else(|| {
                anyhow!(
                    "synthnet run needs a userspace network stack to reach this machine's network, and neither slirp4netns nor pasta is installed: install one (Debian/Ubuntu: `apt-get install slirp4netns`, or `apt-get install passt` for pasta)"
                )
            }),
        f => find(f).ok_or_else(|| {
            anyhow!(
                "--net {}: {} is not installed (Debian/Ubuntu: `apt-get install {}`)",
                f.program(),
                f.program(),
                f.package()
            )
        }),
    }
}

/// `program` on `$PATH`.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok())
}

/// A running front end: the child, the pipe whose closing ends it, and what it said.
pub(super) struct FrontEndProc {
    pub(super) child: Option<std::process::Child>,
    _exit: Option<OwnedFd>,
    pub(super) said: Said,
}

/// The last lines a front end wrote on stderr: its start-up chatter is not shown,
/// unless it fails.
#[derive(Clone, Default)]
pub(super) struct Said(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl Said {
    const KEEP: usize = 40;

    fn collect(&self, child: &mut std::process::Child) {
        let Some(err) = child.stderr.take() else {
            return;
        };
        let said = self.clone();
        let _ = std::thread::Builder::new()
            .name("front-end-log".into())
            .spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if let Ok(mut q) = said.0.lock() {
                        if q.len() == Self::KEEP {
                            q.pop_front();
                        }
                        q.push_back(line);
                    }
                }
            });
    }

    pub(super) fn text(&self) -> String {
        match self.0.lock() {
            Ok(q) if !q.is_empty() => format!(
                "; it said:\n  {}",
                q.iter().cloned().collect::<Vec<_>>().join("\n  ")
            ),
            _ => String::new(),
        }
    }
}

/// Start the front end on outer's network namespace and wait until its tap is there.
pub(super) fn start_front_end(
    f: FrontEnd,
    program: &Path,
    outer_pid: u32,
    addresses: AddressPlan,
) -> Result<FrontEndProc> {
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    let (ready_r, ready_w) = std::io::pipe().context("pipe")?;
    let mut spawn = Spawn {
        // pasta has no exit pipe: its life ends with ours this way (slirp4netns has
        // both).
        parent_death_signal: Some(Signal::SIGTERM as i32),
        ..Spawn::default()
    };
    match f {
        FrontEnd::Pasta => {
            // Our address plan on a tap of our name, not configured inside (the
            // addresses belong on CMD's end), no port forwarding, in the foreground (a
            // daemon would escape the parent-death signal).
            let mtu = MTU.to_string();
            let (netns, userns) = (
                format!("/proc/{outer_pid}/ns/net"),
                format!("/proc/{outer_pid}/ns/user"),
            );
            let mut a = vec![
                "--foreground",
                "--quiet",
                "--ns-ifname",
                TAP,
                "--mtu",
                &mtu,
                "--tcp-ports",
                "none",
                "--udp-ports",
                "none",
                "--tcp-ns",
                "none",
                "--udp-ns",
                "none",
                "--netns",
                &netns,
            ];
            let plan = [
                addresses.guest_v4().to_string(),
                addresses.gateway_v4().to_string(),
                addresses.dns_v4().to_string(),
                GUEST_V6.to_string(),
                GATEWAY_V6.to_string(),
                DNS_V6.to_string(),
            ];
            a.extend([
                "--address",
                &plan[0],
                "--netmask",
                "24",
                "--gateway",
                &plan[1],
                "--dns-forward",
                &plan[2],
            ]);
            if addresses.ipv6 {
                a.extend([
                    "--address",
                    &plan[3],
                    "--gateway",
                    &plan[4],
                    "--dns-forward",
                    &plan[5],
                ]);
            } else {
                a.push("--ipv4-only");
            }
            a.extend(["--userns", &userns]);
            cmd.args(a);
            drop((ready_r, ready_w));
            let (child, said) = spawn_collecting(&mut cmd, &spawn, program)?;
            wait_for_tap(outer_pid).map_err(|e| anyhow!("{e}{}", said.text()))?;
            Ok(FrontEndProc {
                child: Some(child),
                _exit: None,
                said,
            })
        }
        _ => {
            let (exit_r, exit_w) = std::io::pipe().context("pipe")?;
            cmd.args([
                format!("--mtu={MTU}"),
                format!("--cidr={}", addresses.cidr()),
                format!("--ready-fd={FD_READY}"),
                format!("--exit-fd={FD_EXIT}"),
            ]);
            if addresses.ipv6 {
                cmd.arg("--enable-ipv6");
            }
            cmd.args([outer_pid.to_string(), TAP.to_string()]);
            spawn.fds = vec![
                (ready_w.as_raw_fd(), FD_READY),
                (exit_r.as_raw_fd(), FD_EXIT),
            ];
            let (child, said) = spawn_collecting(&mut cmd, &spawn, program)?;
            drop(ready_w);
            drop(exit_r);
            let mut line = String::new();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut r = BufReader::new(ready_r);
                let _ = r.read_line(&mut line);
                let _ = tx.send(line);
            });
            match rx.recv_timeout(FRONT_END_TIMEOUT) {
                Ok(l) if l.trim() == "1" => {}
                Ok(_) => bail!("slirp4netns ended before its tap was ready{}", said.text()),
                Err(_) => bail!(
                    "slirp4netns did not get its tap ready within {FRONT_END_TIMEOUT:?}{}",
                    said.text()
                ),
            }
            Ok(FrontEndProc {
                child: Some(child),
                _exit: Some(OwnedFd::from(exit_w)),
                said,
            })
        }
    }
}

/// Start a front end with `spawn`, collecting what it says on stderr.
fn spawn_collecting(
    cmd: &mut Command,
    spawn: &Spawn,
    program: &Path,
) -> Result<(std::process::Child, Said)> {
    spawn.apply(cmd);
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    let said = Said::default();
    said.collect(&mut child);
    Ok((child, said))
}

/// Wait until the tap exists in outer's namespace (pasta has no readiness pipe).
fn wait_for_tap(outer_pid: u32) -> Result<()> {
    let deadline = std::time::Instant::now() + FRONT_END_TIMEOUT;
    let path = format!("/proc/{outer_pid}/net/dev");
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(&path)
            .map(|s| {
                s.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{TAP}:")))
            })
            .unwrap_or(false)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("pasta did not make its tap within {FRONT_END_TIMEOUT:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_front_end_names_its_package() {
        let saved = std::env::var_os("PATH");
        // SAFETY-free: tests in this module do not read PATH concurrently.
        let e = pick_front_end(FrontEnd::Pasta);
        if which("pasta").is_none() {
            let m = e.unwrap_err().to_string();
            assert!(m.contains("apt-get install passt"), "{m}");
        }
        assert_eq!(saved, std::env::var_os("PATH"));
    }
}
