//! Network namespaces from the host side, for `synthnet attach`: open a target's
//! namespace, run work on a thread inside it, and watch a process die.
//!
//! Main items: [`Namespace`] (an open handle on a network namespace, identified by its
//! inode), [`run_in`] (a closure on a short-lived thread that entered the namespace),
//! [`enter`] (move the calling thread for good: the bridge's engine thread, whose
//! AF_PACKET rings look interfaces up by name when they reopen after a fault), and
//! [`PidFd`] (a process's death as a readable file descriptor).
//!
//! `setns(2)` changes only the calling thread, and the sockets a thread opens keep the
//! namespace they were opened in, whichever thread uses them later. That is the whole
//! trick: the synthnet process stays in the host's namespaces (its API listener, its
//! logs, its state files), and only the threads that touch the target's interfaces live
//! inside it. Entering a namespace owned by the initial user namespace needs
//! CAP_SYS_ADMIN.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An open network namespace.
#[derive(Debug)]
pub struct Namespace {
    file: File,
    /// Where it was opened (for messages).
    pub path: PathBuf,
    /// Its inode on nsfs: the namespace's identity while it exists (`ip netns identify`
    /// and `/proc/PID/ns/net` links show the same number).
    pub inode: u64,
}

impl Namespace {
    /// Open the network namespace at `path` (`/proc/PID/ns/net`, `/run/netns/NAME`, a
    /// bind mount of either). Refused unless it is a network namespace.
    pub fn open(path: &Path) -> io::Result<Namespace> {
        let file = File::open(path)?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor's
        // namespace type; the descriptor is open for the call's duration.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if kind < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a namespace", path.display()),
            ));
        }
        if kind != libc::CLONE_NEWNET {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a network namespace", path.display()),
            ));
        }
        let inode = file.metadata()?.ino();
        Ok(Namespace {
            file,
            path: path.to_path_buf(),
            inode,
        })
    }

    /// The calling thread's own network namespace.
    pub fn current() -> io::Result<Namespace> {
        Namespace::open(Path::new("/proc/thread-self/ns/net"))
    }
}

impl AsFd for Namespace {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `NS_GET_NSTYPE` (linux/nsfs.h: `_IO(0xb7, 0x3)`), not in the libc crate.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Move the calling thread into `ns` for good. Sockets it opens from now on belong to
/// `ns`; the rest of the process is unaffected.
pub fn enter(ns: &Namespace) -> io::Result<()> {
    // SAFETY: setns only reads the descriptor, which stays open for the call; it
    // changes the calling thread's namespace, which is what the caller asks for.
    let r = unsafe { libc::setns(ns.file.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Run `f` on a new thread inside `ns` and return what it returns. The thread ends with
/// `f`, so no other work ever runs in the wrong namespace by accident.
pub fn run_in<T, F>(ns: &Namespace, f: F) -> io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("netns".into())
            .spawn_scoped(s, || {
                enter(ns).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot enter the namespace {}: {e}", ns.path.display()),
                    )
                })?;
                Ok(f())
            })?
            .join()
            .map_err(|_| io::Error::other("the namespace thread panicked"))?
    })
}

/// A process's death as a file descriptor (`pidfd_open(2)`): it becomes readable when
/// the process ends, whoever its parent is, and it never names a recycled pid.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
}

impl PidFd {
    pub fn open(pid: u32) -> io::Result<PidFd> {
        let pid = libc::pid_t::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = i32::try_from(r).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
        Ok(PidFd {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Wait until the process has ended (`true`) or `timeout` passed (`false`);
    /// `None` waits for ever.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let ms = timeout.map_or(-1, |t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX));
        let mut p = libc::pollfd {
            fd: self.fd.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, for the length given.
            let r = unsafe { libc::poll(&mut p, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok(r > 0);
        }
    }
}

/// Whether process `pid` exists (it may be a zombie).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_opens_and_other_files_are_refused() {
        let ns = Namespace::current().unwrap();
        assert!(ns.inode > 0);
        let same = Namespace::open(Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(ns.inode, same.inode);
        assert!(Namespace::open(Path::new("/proc/self/ns/uts")).is_err());
        assert!(Namespace::open(Path::new("/etc/hostname")).is_err());
        assert!(Namespace::open(Path::new("/nonexistent/ns")).is_err());
    }

    #[test]
    fn pidfd_sees_a_child_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let fd = PidFd::open(child.id()).unwrap();
        assert!(!fd.wait(Some(Duration::from_millis(10))).unwrap());
        assert!(fd.wait(Some(Duration::from_secs(5))).unwrap());
        let _ = child.wait();
    }
}
