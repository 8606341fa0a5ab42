//! Network namespaces and veth pairs, for `synthnet demo`, the integration tests and the
//! forwarding benchmark. Everything is made with iproute2's `ip` and removed on drop, so
//! a failing test or a Ctrl-C'd demo leaves nothing behind.
//!
//! The [`Topology`] is two hosts and a box in the middle:
//!
//! ```text
//!  ns A (outside)              ns S (synthnet)               ns B (inside)
//!  eth0 10.77.0.1/24 ── veth ── outer   [bridge]   inner ── veth ── eth0 10.77.0.2/24
//!       fd77::1/64                                                   fd77::2/64
//! ```
//!
//! `outer`/`inner` carry no addresses and have IPv6 off, so the middle box's own stack
//! stays silent. The same topology serves the kernel's reference paths: a Linux bridge
//! in S instead of synthnet, or A and B joined by one veth pair.

use anyhow::{bail, Context, Result};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Run `ip args…`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?} (is iproute2 installed?)"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether we run as root (namespaces and raw sockets need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A name no other live process uses: `sn<pid>x<n><tag>`.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "sn{}x{}{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        let ns = Netns { name: name.into() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// The MAC address of interface `dev`.
    pub fn mac(&self, dev: &str) -> Result<String> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link", "show", dev])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .with_context(|| format!("no MAC address for {dev} in {}: {text}", self.name))
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Write a sysctl of this namespace (`key` as a path under /proc/sys).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        run(self.command("sh").args([
            "-c",
            &format!("echo {value} > /proc/sys/{}", key.replace('.', "/")),
        ]))
    }

    /// Move the calling thread into this namespace (see [`enter`]).
    pub fn enter(&self) -> Result<()> {
        enter(&self.name)
    }
}

/// Move the calling thread into namespace `name`: sockets it opens from now on belong
/// to it. (Namespaces are per thread; other threads are unaffected.)
pub fn enter(name: &str) -> Result<()> {
    let f = std::fs::File::open(format!("/var/run/netns/{name}"))
        .with_context(|| format!("namespace {name}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("setns {name}"))
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the interfaces in it (and their peers).
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: {e}");
        }
    }
}

/// How A and B are joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Middle {
    /// `outer` and `inner` in S, for synthnet to bridge.
    Synthnet,
    /// `outer` and `inner` in S, enslaved to a Linux bridge.
    KernelBridge,
    /// One veth pair straight from A to B (no S).
    Direct,
}

pub const A_V4: &str = "10.77.0.1";
pub const B_V4: &str = "10.77.0.2";
pub const A_V6: &str = "fd77::1";
pub const B_V6: &str = "fd77::2";

/// Two hosts and a middle box; see the module docs. Dropping it removes everything.
pub struct Topology {
    pub a: Netns,
    pub b: Netns,
    /// The middle box (absent for [`Middle::Direct`]).
    pub s: Option<Netns>,
}

impl Topology {
    /// Build it; `tag` goes into the namespace names (keep it short).
    pub fn create(tag: &str, middle: Middle) -> Result<Topology> {
        if !is_root() {
            bail!("network namespaces need root: run as root (or with sudo)");
        }
        let base = unique(tag);
        let a = Netns::create(&format!("{base}a"))?;
        let b = Netns::create(&format!("{base}b"))?;
        let s = match middle {
            Middle::Direct => None,
            _ => Some(Netns::create(&format!("{base}s"))?),
        };
        let t = Topology { a, b, s };
        match &t.s {
            None => t.a.ip(&[
                "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &t.b.name,
            ])?,
            Some(s) => {
                t.a.ip(&[
                    "link", "add", "eth0", "type", "veth", "peer", "name", "outer", "netns",
                    &s.name,
                ])?;
                t.b.ip(&[
                    "link", "add", "eth0", "type", "veth", "peer", "name", "inner", "netns",
                    &s.name,
                ])?;
                for dev in ["outer", "inner"] {
                    s.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1")?;
                    s.ip(&["link", "set", dev, "up"])?;
                }
                if middle == Middle::KernelBridge {
                    s.ip(&["link", "add", "br0", "type", "bridge"])?;
                    s.sysctl("net.ipv6.conf.br0.disable_ipv6", "1")?;
                    for dev in ["outer", "inner"] {
                        s.ip(&["link", "set", dev, "master", "br0"])?;
                    }
                    s.ip(&["link", "set", "br0", "up"])?;
                }
            }
        }
        for (ns, v4, v6) in [(&t.a, A_V4, A_V6), (&t.b, B_V4, B_V6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"])?;
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
            ns.ip(&["link", "set", "eth0", "up"])?;
        }
        Ok(t)
    }

    /// Permanent neighbour entries in A and B for each other (IPv4 and IPv6), so no
    /// ARP or neighbour discovery has to cross the link: measurements then see only
    /// the traffic they send (a lost ARP request under a loss test would stall a
    /// stream for a second, and packets queued behind ARP resolution leave out of
    /// order).
    pub fn pin_neighbours(&self) -> Result<()> {
        let (ma, mb) = (self.a.mac("eth0")?, self.b.mac("eth0")?);
        for (ns, mac, v4, v6) in [(&self.a, &mb, B_V4, B_V6), (&self.b, &ma, A_V4, A_V6)] {
            for addr in [v4, v6] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                ])?;
            }
        }
        Ok(())
    }

    /// The middle namespace (panics for a direct topology).
    pub fn middle(&self) -> &Netns {
        self.s.as_ref().expect("this topology has no middle box")
    }
}
