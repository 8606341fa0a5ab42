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
