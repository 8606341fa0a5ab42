//! The system calls under the ports: `setsockopt` with plain data, socket buffers, a
//! packet socket bound to one interface, a socket's pending error, and the two clocks
//! (the ring stamps arrivals with the wall clock; the bridge's engine runs on the
//! monotonic one).

use super::ETH_P_ALL;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(super) fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// The largest option value [`setopt`] passes (the largest we use, `tpacket_req`, is 16
/// bytes; `packet_mreq` 16).
const MAX_OPT_BYTES: usize = 64;

/// `setsockopt` with a plain-data value: `Copy` (no pointers the kernel could follow into
/// freed memory, no drop glue), and of a size checked at compile time (not zero, at most
/// [`MAX_OPT_BYTES`]), so the length passed is always the value's own. Private to the
/// ring's code: the options it sets are the ones listed here, each with its own type.
pub(super) fn setopt<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: &T,
    what: &str,
) -> io::Result<()> {
    const {
        assert!(
            std::mem::size_of::<T>() > 0 && std::mem::size_of::<T>() <= MAX_OPT_BYTES,
            "a socket option is plain data of 1 to MAX_OPT_BYTES bytes"
        )
    };
    // SAFETY: `v` is a live value of the size we pass (at most MAX_OPT_BYTES, checked
    // above, so it fits socklen_t).
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_err(what));
    }
    Ok(())
}

/// A socket buffer to size.
pub(super) enum Buffer {
    Receive,
    Send,
}

/// Size a socket buffer to `bytes`: beyond `net.core.*mem_max` where we may
/// (`SO_*BUFFORCE`, CAP_NET_ADMIN), else as far as the limit allows.
pub(super) fn set_buffer(fd: RawFd, which: Buffer, bytes: usize) -> io::Result<()> {
    let bytes = libc::c_int::try_from(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a socket buffer of {bytes} bytes is more than the kernel takes"),
        )
    })?;
    let (force, plain, names) = match which {
        Buffer::Receive => (
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            ("SO_RCVBUFFORCE", "SO_RCVBUF"),
        ),
        Buffer::Send => (
            libc::SO_SNDBUFFORCE,
            libc::SO_SNDBUF,
            ("SO_SNDBUFFORCE", "SO_SNDBUF"),
        ),
    };
    if setopt(fd, libc::SOL_SOCKET, force, &bytes, names.0).is_ok() {
        return Ok(());
    }
    setopt(fd, libc::SOL_SOCKET, plain, &bytes, names.1)
}

/// A packet socket bound to `ifindex`, receiving every protocol when `receive`.
pub(super) fn packet_socket(
    ifindex: i32,
    setup: impl FnOnce(RawFd) -> io::Result<()>,
    receive: bool,
) -> io::Result<OwnedFd> {
    // Protocol 0: receive nothing until bound to the one interface.
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::EPERM) {
            " (raw sockets need root or CAP_NET_RAW)"
        } else {
            ""
        };
        return Err(io::Error::new(
            e.kind(),
            format!("AF_PACKET socket: {e}{hint}"),
        ));
    }
    // SAFETY: we own the new descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    setopt(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        libc::PACKET_VNET_HDR,
        &one,
        "PACKET_VNET_HDR",
    )?;
    setup(fd.as_raw_fd())?;
    // SAFETY: zeroed sockaddr_ll is valid; we fill the fields bind needs.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = if receive { ETH_P_ALL.to_be() } else { 0 };
    sll.sll_ifindex = ifindex;
    // SAFETY: sll is a valid sockaddr_ll.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(last_err("bind"));
    }
    Ok(fd)
}

/// The wall clock (`CLOCK_REALTIME`, the clock of ring timestamps), ns.
pub(super) fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// `clock`, ns (0 if it cannot be read, which Linux never does for these two).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(clock, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// How far the wall clock is ahead of `CLOCK_MONOTONIC`, ns (wrapping), from a pair of
/// reads taken together: the wall clock between two monotonic reads, taking the
/// tightest of a few tries, so a preemption between the reads does not skew the pair
/// by however long it lasted.
pub(super) fn wall_minus_monotonic_ns() -> u64 {
    let mut best = (u64::MAX, 0);
    for _ in 0..4 {
        let a = clock_ns(libc::CLOCK_MONOTONIC);
        let w = clock_ns(libc::CLOCK_REALTIME);
        let b = clock_ns(libc::CLOCK_MONOTONIC);
        let spread = b.saturating_sub(a);
        if spread < best.0 {
            best = (spread, w.wrapping_sub(a + spread / 2));
        }
        if spread < 20_000 {
            break;
        }
    }
    best.1
}

/// Read and clear a socket's pending error (`SO_ERROR`).
pub(super) fn take_error(fd: RawFd) -> Option<i32> {
    let mut e: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: e and len are valid for the call.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut e as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0 && e != 0).then_some(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pair maps the wall clock onto the monotonic one: the wall clock minus the
    /// offset is the monotonic clock, to within the few µs between separate reads (a
    /// sign or unit mistake would be off by decades).
    #[test]
    fn the_clock_pair_maps_the_wall_clock_onto_the_monotonic_one() {
        for _ in 0..100 {
            let offset = wall_minus_monotonic_ns();
            let mono = clock_ns(libc::CLOCK_MONOTONIC);
            let mapped = realtime_ns().wrapping_sub(offset);
            let after = clock_ns(libc::CLOCK_MONOTONIC);
            // `mapped` lies within [mono, after], give or take the pair's own spread.
            assert!(
                mapped + 1_000_000 >= mono && mapped <= after + 1_000_000,
                "mapped {mapped} outside [{mono}, {after}] ± 1 ms"
            );
        }
    }
}
