//! Process-wide settings that need libc.

/// Let a write to a closed pipe end the process quietly, as `cat` or `grep` do
/// (`synthnet check … | head`), instead of panicking in `println!`: Rust ignores
/// `SIGPIPE` so that servers see `EPIPE`; this puts back the default action.
///
/// Only for commands whose output is their job. Not for the bridge: its sockets already
/// write with `MSG_NOSIGNAL`, but the children and pipes of `takeover` must never take
/// it down.
pub fn die_on_broken_pipe() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Take ownership of file descriptor `fd`, inherited from the process that started us
/// (`--ready-fd N`): refused unless it is open, and marked close-on-exec so that no
/// child of ours keeps it.
pub fn inherited_fd(fd: i32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd <= 2 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{fd} is standard input, output or error"),
        ));
    }
    // SAFETY: F_GETFD/F_SETFD only read and set the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("file descriptor {fd} is not open"),
        ));
    }
    // SAFETY: as above.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open (checked above), and the caller gives us its only
    // use: nothing else in this process knows the number.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Raise the soft limit on open files (`RLIMIT_NOFILE`) to the hard limit, and return
/// the soft limit now in force. The bridge sizes what the API may hold from it
/// (`synthnet::api::connection_cap`), so the engine always has descriptors left for
/// its rings, reloads and plugin files. If the limit cannot be read, `1024` (the usual
/// soft limit) is assumed; if it cannot be raised, the old one is returned.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit for the call to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    // An unlimited hard limit (RLIM_INFINITY) still cannot pass fs.nr_open, which is
    // 2^20 unless raised.
    let target = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur < target {
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; raising the soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Limit this process to `secs` seconds of CPU (`RLIMIT_CPU`, soft and hard): past it
/// the kernel ends it (`SIGXCPU`, then `SIGKILL`). For a child that does one bounded
/// job, such as compiling a plugin within its budget.
pub fn limit_cpu(secs: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: secs,
        rlim_max: secs + 1,
    };
    // SAFETY: `lim` is a valid rlimit; lowering one's own limits needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_CPU, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
