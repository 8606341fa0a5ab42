//! Network namespaces and veth pairs, for `synthnet demo`, the integration tests and the
//! forwarding benchmark. Links, addresses, neighbours and sysctls are set over netlink and
//! `/proc/sys` (synthnet-io's [`synthnet_io::netlink`]), from a thread inside the
//! namespace; only the namespaces themselves are made and deleted with iproute2's `ip`
//! (`ip netns add` mounts them under /run/netns, where every test tool finds them).
//! Everything is removed on drop, so a failing test or a Ctrl-C'd demo leaves nothing
//! behind.
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
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use synthnet_io::netlink;
use synthnet_io::netns::{run_in, Namespace};

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
        ns.run(|| netlink::set_up("lo", None))?;
        Ok(ns)
    }

    /// The namespace, open (to run work in it, or to move an interface into it).
    fn open(&self) -> Result<Namespace> {
        let path = format!("/var/run/netns/{}", self.name);
        Namespace::open(Path::new(&path)).with_context(|| format!("namespace {}", self.name))
    }

    /// Run `f` on a thread inside the namespace.
    fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        run_in(&self.open()?, f).with_context(|| format!("in namespace {}", self.name))?
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        ip(&a)
    }

    /// The MAC address of interface `dev` (`aa:bb:cc:dd:ee:ff`, as `ip` prints it).
    pub fn mac(&self, dev: &str) -> Result<String> {
        let iface = self
            .run(|| netlink::interface(dev))?
            .with_context(|| format!("no interface {dev} in {}", self.name))?;
        if iface.mac.len() != 6 {
            bail!("no MAC address for {dev} in {}", self.name);
        }
        let hex: Vec<String> = iface.mac.iter().map(|b| format!("{b:02x}")).collect();
        Ok(hex.join(":"))
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Write a sysctl of this namespace (`key` as a path under /proc/sys). A thread in
    /// the namespace sees the namespace's own `net.*` sysctls there.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| {
            std::fs::write(&path, format!("{value}\n"))
                .with_context(|| format!("write {value} to {path}"))
        })
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
        let veth = |from: &Netns, peer: &str, to: &Netns| -> Result<()> {
            let to = to.open()?;
            from.run(|| netlink::add_veth("eth0", peer, Some(&to)))
        };
        match &t.s {
            None => veth(&t.a, "eth0", &t.b)?,
            Some(s) => {
                veth(&t.a, "outer", s)?;
                veth(&t.b, "inner", s)?;
                for dev in ["outer", "inner"] {
                    s.sysctl(&format!("net.ipv6.conf.{dev}.disable_ipv6"), "1")?;
                    s.run(|| netlink::set_up(dev, None))?;
                }
                if middle == Middle::KernelBridge {
                    s.run(|| netlink::add_bridge("br0"))?;
                    s.sysctl("net.ipv6.conf.br0.disable_ipv6", "1")?;
                    for dev in ["outer", "inner"] {
                        s.run(|| netlink::set_controller(dev, "br0"))?;
                    }
                    s.run(|| netlink::set_up("br0", None))?;
                }
            }
        }
        for (ns, v4, v6) in [(&t.a, A_V4, A_V6), (&t.b, B_V4, B_V6)] {
            let addrs = [(ip_addr(v4), 24), (ip_addr(v6), 64)];
            // IPv6 without duplicate address detection (`nodad`), usable at once.
            ns.run(|| netlink::configure_guest("eth0", &addrs, &[]))?;
            ns.run(|| netlink::set_up("eth0", None))?;
        }
        Ok(t)
    }

    /// Permanent neighbour entries in A and B for each other (IPv4 and IPv6), so no
    /// ARP or neighbour discovery has to cross the link: measurements then see only
    /// the traffic they send (a lost ARP request under a loss test would stall a
    /// stream for a second, and packets queued behind ARP resolution leave out of
    /// order).
    pub fn pin_neighbours(&self) -> Result<()> {
        let mac = |ns: &Netns| -> Result<Vec<u8>> {
            Ok(ns
                .run(|| netlink::interface("eth0"))?
                .with_context(|| format!("no eth0 in {}", ns.name))?
                .mac)
        };
        let (ma, mb) = (mac(&self.a)?, mac(&self.b)?);
        for (ns, mac, v4, v6) in [(&self.a, &mb, B_V4, B_V6), (&self.b, &ma, A_V4, A_V6)] {
            for addr in [v4, v6] {
                ns.run(|| netlink::set_neighbour("eth0", ip_addr(addr), mac))?;
            }
        }
        Ok(())
    }

    /// The middle namespace (panics for a direct topology).
    pub fn middle(&self) -> &Netns {
        self.s.as_ref().expect("this topology has no middle box")
    }
}

/// One of the addresses above, parsed.
fn ip_addr(s: &str) -> IpAddr {
    s.parse().expect("a literal address")
}
