//! Interfaces by name and index: look-ups that tell a vanished interface from a failed
//! look-up ([`Presence`]), and the [`Watch`] a port keeps on its interface across link
//! down/up, rename, and delete/re-create.

use super::sys::last_err;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The interface index of `name`, or an error saying there is no such interface.
pub(super) fn existing(name: &str) -> io::Result<i32> {
    match lookup(None, name) {
        Presence::Index(i) => Ok(i),
        Presence::Gone => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface named {name:?}"),
        )),
        Presence::Unknown(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot look interface {name:?} up: {e}"),
        )),
    }
}

/// What a look-up of an interface by name found.
#[derive(Debug)]
pub(super) enum Presence {
    /// It is there, with this index.
    Index(i32),
    /// The kernel says there is no such device (`ENODEV`, `ENXIO`).
    Gone,
    /// The look-up itself failed (`EMFILE`, `ENFILE`, `ENOMEM`, …): nothing is known
    /// about the interface, and nothing should be concluded.
    Unknown(io::Error),
}

/// Look `name` up with `SIOCGIFINDEX` on `probe` (a socket kept open for this, so the
/// look-up needs no new descriptor), or on a socket opened for the call when there is
/// none — which fails with `EMFILE` when the process is out of descriptors: that is
/// [`Presence::Unknown`], never [`Presence::Gone`].
pub(super) fn lookup(probe: Option<RawFd>, name: &str) -> Presence {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Presence::Gone;
    }
    let temp = match probe {
        Some(_) => None,
        None => match probe_socket() {
            Ok(fd) => Some(fd),
            Err(e) => return Presence::Unknown(e),
        },
    };
    let fd = probe.unwrap_or_else(|| temp.as_ref().map_or(-1, |f| f.as_raw_fd()));
    // SAFETY: a zeroed ifreq is valid (a name of NULs, a zero union).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a live ifreq with a NUL-terminated name (checked shorter than
    // IFNAMSIZ above); SIOCGIFINDEX writes only its union.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFINDEX as _, &mut req) };
    if r == 0 {
        // SAFETY: SIOCGIFINDEX succeeded, so the union holds the index.
        return Presence::Index(unsafe { req.ifr_ifru.ifru_ifindex });
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::ENXIO) => Presence::Gone,
        _ => Presence::Unknown(e),
    }
}

/// A datagram socket for interface look-ups (any socket serves `SIOCGIFINDEX`, for
/// the network namespace it was opened in).
pub(super) fn probe_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_err("socket for interface look-ups"));
    }
    // SAFETY: we own the new descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The name of interface `index`, asked with `SIOCGIFNAME` on `probe` (or on a socket
/// opened for the call), if it exists.
fn name_of(probe: Option<RawFd>, index: i32) -> Option<String> {
    let temp = match probe {
        Some(_) => None,
        None => Some(probe_socket().ok()?),
    };
    let fd = probe.unwrap_or_else(|| temp.as_ref().map_or(-1, |f| f.as_raw_fd()));
    // SAFETY: a zeroed ifreq is valid (a name of NULs, a zero union).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_ifru.ifru_ifindex = index;
    // SAFETY: `req` is a live ifreq with the index set; SIOCGIFNAME writes a
    // NUL-terminated name of at most IFNAMSIZ bytes into it.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFNAME as _, &mut req) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8(bytes).ok()
}

/// An interface a port follows by name, across link down/up and delete/re-create.
pub(super) struct Watch {
    pub(super) port: String,
    pub(super) ifname: String,
    pub(super) ifindex: i32,
    /// Kept open for look-ups, so telling whether the interface is still there never
    /// needs a new descriptor (none may be left: then the rings must stay open).
    probe: Option<OwnedFd>,
    /// Why the port is not working, if it is not (logged once per change).
    trouble: Option<String>,
    pub(super) retry_at_ns: u64,
}

/// Whether the interface a [`Watch`] follows is still the one it is bound to.
pub(super) enum Still {
    Same,
    /// Gone, or replaced by another of the same name.
    Gone,
    /// Cannot tell (out of descriptors, …): keep what is open.
    Unknown(io::Error),
}

impl Watch {
    pub(super) fn new(port: &str, ifname: &str, ifindex: i32) -> Watch {
        Watch {
            port: port.into(),
            ifname: ifname.into(),
            ifindex,
            probe: probe_socket().ok(),
            trouble: None,
            retry_at_ns: 0,
        }
    }

    pub(super) fn trouble(&mut self, why: String) {
        if self.trouble.as_deref() != Some(why.as_str()) {
            log::warn!("{} ({}): {why}", self.port, self.ifname);
            self.trouble = Some(why);
        }
    }

    pub(super) fn fine(&mut self) {
        if self.trouble.take().is_some() {
            log::info!("{} ({}): forwarding again", self.port, self.ifname);
        }
    }

    pub(super) fn lookup(&self) -> Presence {
        lookup(self.probe.as_ref().map(|f| f.as_raw_fd()), &self.ifname)
    }

    /// Whether the interface we are bound to is still there. An interface renamed under
    /// us (`synthnet attach` gives the real interface its name back while the bridge
    /// still drains) is the same interface: the port follows it to its new name. One
    /// deleted (its index gone) is not, even if another takes its name later.
    pub(super) fn still(&mut self) -> Still {
        match self.lookup() {
            Presence::Index(i) if i == self.ifindex => Still::Same,
            Presence::Unknown(e) => Still::Unknown(e),
            Presence::Index(_) | Presence::Gone => {
                let probe = self.probe.as_ref().map(|f| f.as_raw_fd());
                match name_of(probe, self.ifindex) {
                    Some(now) if matches!(lookup(probe, &now), Presence::Index(i) if i == self.ifindex) =>
                    {
                        log::info!(
                            "{} ({}): renamed {now}; following it",
                            self.port,
                            self.ifname
                        );
                        self.ifname = now;
                        Still::Same
                    }
                    _ => Still::Gone,
                }
            }
        }
    }

    /// The look-up failed for a reason of its own: say so (once), keep what is open.
    pub(super) fn cannot_tell(&mut self, e: &io::Error) {
        let what = match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => {
                "out of file descriptors while checking the interface"
            }
            _ => "cannot check the interface",
        };
        self.trouble(format!("{what} ({e}); its socket stays open"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Presence tells "no such device" apart from a look-up that could not be made.
    #[test]
    fn lookups_tell_gone_from_unknown() {
        let probe = probe_socket().expect("a datagram socket");
        assert!(matches!(
            lookup(Some(probe.as_raw_fd()), "lo"),
            Presence::Index(_)
        ));
        assert!(matches!(lookup(None, "lo"), Presence::Index(_)));
        assert!(matches!(
            lookup(Some(probe.as_raw_fd()), "nosuchif-x9"),
            Presence::Gone
        ));
        assert!(matches!(
            lookup(None, "a-name-far-too-long-for-linux"),
            Presence::Gone
        ));
        // A descriptor that is not a socket: the look-up fails for a reason of its own.
        let file = std::fs::File::open("/proc/self/stat").expect("a file");
        assert!(matches!(
            lookup(Some(file.as_raw_fd()), "lo"),
            Presence::Unknown(_)
        ));
    }
}
