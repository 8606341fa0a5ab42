//! Raw-socket I/O: the apps that put a Linux interface into the engine.
//!
//! [`RawRx`] reads an interface through an `AF_PACKET` receive ring, [`RawTx`] writes to
//! it with `sendmmsg`, one system call per batch of up to [`TX_BATCH`] packets; neither
//! makes a system call per packet while traffic flows.
//!
//! **Why a TPACKET_V2 ring and not V3.** A V3 ring hands a block of frames to user space
//! only when the block is full or its retire timer fires, and that timer is at least
//! 1 ms: an idle ping would gain up to 1 ms per hop. A V2 ring publishes every frame as
//! soon as it is written and wakes a sleeping reader at once, so idle latency is the
//! wake-up alone, and a busy reader still takes frames in bulk without system calls.
//! V2's fixed frame size (2 KiB here) is sized for MTU frames; GSO/GRO super-packets
//! (up to 64 KiB) do not fit a frame, so the socket is put in `PACKET_COPY_THRESH` mode:
//! the kernel leaves a `TP_STATUS_COPY` marker in the ring, in order, and queues the
//! whole packet on the socket, where one `recv` per super-packet picks it up.
//!
//! **Offloads.** Both sockets use `PACKET_VNET_HDR`: every packet carries a
//! `virtio_net_hdr` (GSO type and size, checksum start and offset) from the receiving
//! interface to the sending one, kept in the packet's headroom. TCP over IPv4 and IPv6
//! therefore crosses the bridge as 64 KiB super-packets with the checksum still to be
//! filled in by whoever finally needs it, with the interfaces' offloads left on.
//!
//! **Not our own packets.** The receive socket sets `PACKET_IGNORE_OUTGOING`, so what
//! synthnet (or anything else on the host) sends out of an interface is not read back.
//!
//! **Faults.** Link down/up, an interface deleted and re-created, `ENOBUFS` and
//! `EMSGSIZE` are counted (as `io`, `too_big` or `ring_full` drops) and logged once per
//! change of state, never fatal: a port whose interface vanished retries every
//! [`REOPEN_NS`] and resumes as soon as an interface of that name is back.
//!
//! **Layout.** `sys` holds the system calls (sockets, options, clocks), `iface`
//! the interface look-ups and the watch a port keeps, `ring` the mapped receive ring,
//! `rx` and `tx` the two apps; `flood` (feature `bench`) the benchmark's generator.

#[cfg(feature = "bench")]
mod flood;
mod iface;
mod ring;
mod rx;
mod sys;
mod tx;

#[cfg(feature = "bench")]
pub use flood::Flood;
pub use rx::RawRx;
pub use tx::RawTx;

/// Faults a test can inject into the ring's setup, compiled only with the crate's
/// `test-hooks` feature (its own integration tests turn it on).
#[cfg(feature = "test-hooks")]
pub mod test_hooks {
    use std::cell::Cell;

    thread_local! {
        static MEMBERSHIP_FAILURES: Cell<u32> = const { Cell::new(0) };
    }

    /// Make the next `n` receive rings opened on this thread fail at
    /// `PACKET_ADD_MEMBERSHIP`, the last step of their setup, after the ring is mapped:
    /// the path on which a reopen once leaked its mapping.
    pub fn fail_memberships(n: u32) {
        MEMBERSHIP_FAILURES.with(|c| c.set(n));
    }

    /// Whether this ring's setup is to fail (and one failure fewer is left).
    pub(super) fn take_membership_failure() -> bool {
        MEMBERSHIP_FAILURES.with(|c| {
            let n = c.get();
            c.set(n.saturating_sub(1));
            n > 0
        })
    }
}

/// Packets per `sendmmsg`.
pub const TX_BATCH: usize = 256;
/// The kernel socket buffer each port asks for: receive (SO_RCVBUF, where super-packets
/// queue) and send (SO_SNDBUF), each.
pub const SOCKET_BUFFER_BYTES: usize = 16 << 20;
/// Frames read from the ring per breath, at most.
pub const RX_BUDGET: usize = 512;
/// How often a port whose interface is gone looks for it again.
pub const REOPEN_NS: u64 = 200_000_000;

/// Ring geometry: 2 KiB frames (an MTU frame with its headers), 64 KiB blocks.
const FRAME_SIZE: usize = 2048;
const BLOCK_SIZE: usize = 1 << 16;
const TPACKET_V2: libc::c_int = 1;
const ETH_P_ALL: u16 = 0x0003;
