//! Namespaces and processes: what `synthnet run` needs from the kernel to start a
//! command behind a synthetic link, with or without root.
//!
//! [`Spawn`] describes what a child process gets between `fork` and `exec` (the only
//! moment a process can enter a new user namespace: `unshare(CLONE_NEWUSER)` is refused
//! to a multi-threaded process): a parent-death signal, new user, network, PID and mount
//! namespaces with the caller's ids mapped, inherited descriptors at fixed numbers, its
//! own process group and the terminal. [`Spawn::apply`] installs that on a
//! [`std::process::Command`]; everything the child runs there is prepared beforehand so
//! that it only makes system calls (no allocation after `fork`).
//!
//! Also here: [`bind_over`] (a file's content bound over a path, in a mount namespace of
//! our own: the command's `resolv.conf`), and the terminal's foreground group
//! ([`is_foreground`], [`take_terminal`]).

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

/// The most descriptors a [`Spawn`] hands over.
pub const MAX_FDS: usize = 8;

/// One id mapped into a new user namespace: `inside` there is `outside` in the parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub inside_uid: u32,
    pub outside_uid: u32,
    pub inside_gid: u32,
    pub outside_gid: u32,
}

/// What a child gets between `fork` and `exec`, in this order.
#[derive(Debug, Clone, Default)]
pub struct Spawn {
    /// Signal the child receives when the thread that started it ends
    /// (`PR_SET_PDEATHSIG`): its life is tied to ours, even through a SIGKILL.
    pub parent_death_signal: Option<i32>,
    /// A new user namespace with this one mapping (`setgroups` denied, as an ordinary
    /// user may only map their own ids). Done first: the other namespaces are then
    /// owned by it.
    pub user: Option<IdMap>,
    /// A new network namespace.
    pub net: bool,
    /// A new PID namespace: the child's first child is its init (PID 1).
    pub pid: bool,
    /// A new mount namespace (mounts made there stay there).
    pub mount: bool,
    /// Descriptors to give the child at fixed numbers: `(ours, theirs)`; at most
    /// [`MAX_FDS`].
    pub fds: Vec<(RawFd, RawFd)>,
    /// A process group of its own; with `terminal`, made the terminal's foreground
    /// group, so that Ctrl-C and job control reach it (and not us).
    pub own_group: bool,
    pub terminal: bool,
}

/// `CLONE_*` flags of the namespaces asked for, besides the user namespace.
fn other_namespaces(s: &Spawn) -> libc::c_int {
    let mut flags = 0;
    if s.net {
        flags |= libc::CLONE_NEWNET;
    }
    if s.pid {
        flags |= libc::CLONE_NEWPID;
    }
    if s.mount {
        flags |= libc::CLONE_NEWNS;
    }
    flags
}

/// Write `data` to the file at `path` (NUL-terminated) with system calls only.
fn write_file(path: &CString, data: &[u8]) -> io::Result<()> {
    // SAFETY: a valid NUL-terminated path; plain syscalls on a descriptor we own.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let e = io::Error::last_os_error();
        libc::close(fd);
        if n != data.len() as isize {
            return Err(e);
        }
    }
    Ok(())
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Spawn {
    /// Install all of it on `cmd` (run in the child after `fork`, before `exec`).
    pub fn apply(&self, cmd: &mut Command) {
        let mut s = self.clone();
        s.fds.truncate(MAX_FDS);
        let flags = other_namespaces(&s);
        // Prepared before the fork: the child only makes system calls.
        let setgroups = CString::new("/proc/self/setgroups").expect("no NUL");
        let uid_map = CString::new("/proc/self/uid_map").expect("no NUL");
        let gid_map = CString::new("/proc/self/gid_map").expect("no NUL");
        let maps = s.user.map(|m| {
            (
                format!("{} {} 1\n", m.inside_uid, m.outside_uid).into_bytes(),
                format!("{} {} 1\n", m.inside_gid, m.outside_gid).into_bytes(),
            )
        });
        let hook = move || -> io::Result<()> {
            // SAFETY (every block below): plain system calls on values prepared before
            // the fork; nothing here allocates or takes a lock.
            if let Some(sig) = s.parent_death_signal {
                check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) })?;
            }
            if let Some((uids, gids)) = &maps {
                check(unsafe { libc::unshare(libc::CLONE_NEWUSER) })?;
                write_file(&setgroups, b"deny")?;
                write_file(&uid_map, uids)?;
                write_file(&gid_map, gids)?;
            }
            if flags != 0 {
                check(unsafe { libc::unshare(flags) })?;
            }
            // First out of the way (a target number may be another's source), then
            // into place; dup2 leaves the new descriptors without close-on-exec.
            let mut moved = [-1 as RawFd; MAX_FDS];
            for (i, &(ours, _)) in s.fds.iter().enumerate() {
                moved[i] = unsafe { libc::fcntl(ours, libc::F_DUPFD_CLOEXEC, 64) };
                check(moved[i])?;
            }
            for (i, &(_, theirs)) in s.fds.iter().enumerate() {
                check(unsafe { libc::dup2(moved[i], theirs) })?;
            }
            if s.own_group {
                check(unsafe { libc::setpgid(0, 0) })?;
                if s.terminal {
                    // A background group asking for the terminal gets SIGTTOU: ignore it
                    // for the call (exec puts the default back).
                    unsafe {
                        libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
                        libc::signal(libc::SIGTTOU, libc::SIG_DFL);
                    }
                }
            }
            Ok(())
        };
        // SAFETY: the hook only makes async-signal-safe system calls (see above).
        unsafe {
            cmd.pre_exec(hook);
        }
    }
}

/// Whether standard input is a terminal whose foreground process group is ours (we
/// may hand the terminal to a child, and must take it back).
pub fn is_foreground() -> bool {
    // SAFETY: plain queries of descriptor 0 and of our process group.
    unsafe {
        libc::isatty(libc::STDIN_FILENO) == 1
            && libc::tcgetpgrp(libc::STDIN_FILENO) == libc::getpgrp()
    }
}

/// Make our process group the terminal's foreground group again (after a child that
/// had it ended), as a shell does.
pub fn take_terminal() {
    // SAFETY: as in `Spawn::apply`; SIGTTOU is ignored only around the call.
    unsafe {
        if libc::isatty(libc::STDIN_FILENO) != 1 {
            return;
        }
        let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
        libc::signal(libc::SIGTTOU, old);
    }
}

/// Bind a file holding `content` over `target`, in this process's mount namespace
/// (which must be its own, its mounts private: see [`make_mounts_private`]).
///
/// The file lives on a small tmpfs that is mounted on a directory of `dir` with a name
/// nobody can guess, then detached and the directory removed: nothing is left on
/// disk, and the file lives as long as the mount. (A file deleted from a disk cannot
/// be used instead: a bind over *that* bind — a nested run's — is refused.)
pub fn bind_over(content: &[u8], target: &Path, dir: &Path) -> io::Result<()> {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let mnt = dir.join(format!(".synthnet-{:016x}", h.finish()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&mnt)
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", mnt.display())))?;
    let result = bind_via_tmpfs(content, target, &mnt);
    let _ = std::fs::remove_dir(&mnt);
    result
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

fn bind_via_tmpfs(content: &[u8], target: &Path, mnt: &Path) -> io::Result<()> {
    let tmpfs = CString::new("tmpfs").expect("no NUL");
    let opts = CString::new("size=64k,mode=0755").expect("no NUL");
    let at = cpath(mnt)?;
    // SAFETY: valid strings; a new tmpfs mount on a directory we just made.
    check(unsafe {
        libc::mount(
            tmpfs.as_ptr(),
            at.as_ptr(),
            tmpfs.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            opts.as_ptr().cast(),
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("mount a tmpfs on {}: {e}", mnt.display())))?;
    let file = mnt.join("file");
    let bound = std::fs::write(&file, content).and_then(|()| {
        let (source, dest) = (cpath(&file)?, cpath(target)?);
        // SAFETY: valid paths; a bind mount of a file onto a file.
        check(unsafe {
            libc::mount(
                source.as_ptr(),
                dest.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        })
        .map_err(|e| io::Error::new(e.kind(), format!("bind over {}: {e}", target.display())))
    });
    // SAFETY: a valid path; detaching leaves the bound file alive.
    unsafe { libc::umount2(at.as_ptr(), libc::MNT_DETACH) };
    bound
}

/// Make every mount of this process's mount namespace private (it must be its own):
/// what is mounted here from now on stays here.
pub fn make_mounts_private() -> io::Result<()> {
    let root = CString::new("/").expect("no NUL");
    // SAFETY: valid paths; MS_REC|MS_PRIVATE on / changes propagation only.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("make mounts private: {e}")))
}

/// Mount a `/proc` of this process's PID namespace over `/proc` (in its own, private
/// mount namespace): process ids read there are then the namespace's own, as its
/// processes see them.
pub fn mount_proc() -> io::Result<()> {
    let (proc_, target) = (
        CString::new("proc").expect("no NUL"),
        CString::new("/proc").expect("no NUL"),
    );
    // SAFETY: valid strings; a new procfs mount.
    check(unsafe {
        libc::mount(
            proc_.as_ptr(),
            target.as_ptr(),
            proc_.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("mount /proc: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn only_the_namespaces_asked_for() {
        let mut s = Spawn::default();
        assert_eq!(other_namespaces(&s), 0);
        s.net = true;
        s.pid = true;
        assert_eq!(
            other_namespaces(&s),
            libc::CLONE_NEWNET | libc::CLONE_NEWPID
        );
    }

    #[test]
    fn a_child_gets_its_descriptors_at_fixed_numbers() {
        let (r, w) = std::io::pipe().unwrap();
        let (r2, w2) = std::io::pipe().unwrap();
        let s = Spawn {
            // 7 and 8 swapped with whatever they are: no target clobbers a source.
            fds: vec![(w.as_raw_fd(), 7), (w2.as_raw_fd(), w.as_raw_fd())],
            ..Spawn::default()
        };
        let mut cmd = Command::new("sh");
        let other = w.as_raw_fd();
        cmd.args(["-c", &format!("echo hi >&7; echo there >&{other}")]);
        s.apply(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        drop(cmd);
        drop((w, w2));
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(r), &mut got).unwrap();
        let mut got2 = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(r2), &mut got2).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!((got.as_str(), got2.as_str()), ("hi\n", "there\n"));
    }
}
