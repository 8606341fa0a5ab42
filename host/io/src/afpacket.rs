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

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use synthnet_core::flowtable::FlowTable;
use synthnet_core::packet::{Packet, VnetHdr, VNET_HDR_LEN};
use synthnet_core::{App, Counters, Ctx, DropCause};

/// Packets per `sendmmsg`.
pub const TX_BATCH: usize = 256;
/// Frames read from the ring per breath, at most.
pub const RX_BUDGET: usize = 512;
/// How often a port whose interface is gone looks for it again.
pub const REOPEN_NS: u64 = 200_000_000;

/// Ring geometry: 2 KiB frames (an MTU frame with its headers), 64 KiB blocks.
const FRAME_SIZE: usize = 2048;
const BLOCK_SIZE: usize = 1 << 16;
const TPACKET_V2: libc::c_int = 1;
const ETH_P_ALL: u16 = 0x0003;

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `setsockopt` with a plain-data value (`Copy`: no pointers the kernel could follow
/// into freed memory, no drop glue).
fn setopt<T: Copy>(
    fd: RawFd,
    level: libc::c_int,
    opt: libc::c_int,
    v: &T,
    what: &str,
) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size we pass.
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
enum Buffer {
    Receive,
    Send,
}

/// Size a socket buffer to `bytes`: beyond `net.core.*mem_max` where we may
/// (`SO_*BUFFORCE`, CAP_NET_ADMIN), else as far as the limit allows.
fn set_buffer(fd: RawFd, which: Buffer, bytes: libc::c_int) -> io::Result<()> {
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

/// The interface index of `name`, or an error saying there is no such interface.
fn existing(name: &str) -> io::Result<i32> {
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

/// The interface index of `name`, if it exists (`None` also when it cannot be told: see
/// [`lookup`] for the answer that tells the two apart).
pub fn ifindex(name: &str) -> Option<i32> {
    match lookup(None, name) {
        Presence::Index(i) => Some(i),
        Presence::Gone | Presence::Unknown(_) => None,
    }
}

/// What a look-up of an interface by name found.
#[derive(Debug)]
pub enum Presence {
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
pub fn lookup(probe: Option<RawFd>, name: &str) -> Presence {
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
pub fn probe_socket() -> io::Result<OwnedFd> {
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

/// A packet socket bound to `ifindex`, receiving every protocol when `receive`.
fn packet_socket(
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
fn realtime_ns() -> u64 {
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
pub fn wall_minus_monotonic_ns() -> u64 {
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
fn take_error(fd: RawFd) -> Option<i32> {
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

/// A shared mapping of a socket's ring, unmapped when dropped — made right after
/// `mmap`, so that an error in what follows cannot leak it (a flapping link reopens
/// its ring every 200 ms).
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by mmap with this length, and is ours alone.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// An mmap'ed TPACKET_V2 receive ring on one interface.
struct RxRing {
    /// Dropped after the mapping (fields drop in order): the ring is unmapped first.
    map: Mapping,
    fd: OwnedFd,
    frames: usize,
    next: usize,
}

// SAFETY: the mapping belongs to the ring alone and moves with it.
unsafe impl Send for RxRing {}

impl RxRing {
    fn open(ifindex: i32, frames: usize) -> io::Result<RxRing> {
        let blocks = (frames * FRAME_SIZE).div_ceil(BLOCK_SIZE).max(1);
        let frames = blocks * (BLOCK_SIZE / FRAME_SIZE);
        let fd = packet_socket(
            ifindex,
            |fd| {
                let v = TPACKET_V2;
                setopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_VERSION,
                    &v,
                    "PACKET_VERSION",
                )?;
                let one: libc::c_int = 1;
                // Frames that do not fit a ring frame (GSO) are queued whole on the socket.
                setopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_COPY_THRESH,
                    &one,
                    "PACKET_COPY_THRESH",
                )?;
                setopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_IGNORE_OUTGOING,
                    &one,
                    "PACKET_IGNORE_OUTGOING",
                )?;
                // Room for the super-packets queued beside the ring.
                set_buffer(fd, Buffer::Receive, 16 << 20)?;
                let req = libc::tpacket_req {
                    tp_block_size: BLOCK_SIZE as u32,
                    tp_block_nr: blocks as u32,
                    tp_frame_size: FRAME_SIZE as u32,
                    tp_frame_nr: frames as u32,
                };
                setopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_RX_RING,
                    &req,
                    "PACKET_RX_RING",
                )
            },
            true,
        )?;
        let map_len = blocks * BLOCK_SIZE;
        // SAFETY: mapping the ring the kernel just allocated for this socket.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(last_err("mmap of the receive ring"));
        }
        let map = Mapping {
            ptr: map as *mut u8,
            len: map_len,
        };
        // Promiscuous: frames for other hosts' MACs are what a bridge forwards.
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            &mreq,
            "PACKET_ADD_MEMBERSHIP",
        )?;
        Ok(RxRing {
            map,
            fd,
            frames,
            next: 0,
        })
    }

    /// Frame `i` of the ring (`i < frames`: the callers walk `next`, which wraps).
    #[inline(always)]
    fn frame(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.frames, "frame {i} of {}", self.frames);
        // SAFETY: i < frames, and frames tile the mapping.
        unsafe { self.map.ptr.add(i * FRAME_SIZE) }
    }

    #[inline(always)]
    fn status(&self, i: usize) -> u32 {
        // SAFETY: tp_status is the first, 4-aligned field of the frame header; the kernel
        // publishes a frame by storing it (after a write barrier).
        let s = unsafe { &*(self.frame(i) as *const AtomicU32) };
        s.load(Ordering::Acquire)
    }

    /// Hand frame `i` back to the kernel.
    #[inline(always)]
    fn release(&mut self, i: usize) {
        // SAFETY: as in `status`.
        let s = unsafe { &*(self.frame(i) as *const AtomicU32) };
        s.store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = if i + 1 == self.frames { 0 } else { i + 1 };
    }

    fn ready(&self) -> bool {
        self.status(self.next) & libc::TP_STATUS_USER != 0
    }

    /// The kernel's count of frames dropped since the last call (the ring was full).
    fn kernel_drops(&self) -> u64 {
        // SAFETY: zeroed tpacket_stats is valid.
        let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: st and len are valid for the call.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                &mut st as *mut libc::tpacket_stats as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            st.tp_drops as u64
        } else {
            0
        }
    }
}

/// An interface a port follows by name, across link down/up and delete/re-create.
struct Watch {
    port: String,
    ifname: String,
    ifindex: i32,
    /// Kept open for look-ups, so telling whether the interface is still there never
    /// needs a new descriptor (none may be left: then the rings must stay open).
    probe: Option<OwnedFd>,
    /// Why the port is not working, if it is not (logged once per change).
    trouble: Option<String>,
    retry_at_ns: u64,
}

/// Whether the interface a [`Watch`] follows is still the one it is bound to.
enum Still {
    Same,
    /// Gone, or replaced by another of the same name.
    Gone,
    /// Cannot tell (out of descriptors, …): keep what is open.
    Unknown(io::Error),
}

impl Watch {
    fn new(port: &str, ifname: &str, ifindex: i32) -> Watch {
        Watch {
            port: port.into(),
            ifname: ifname.into(),
            ifindex,
            probe: probe_socket().ok(),
            trouble: None,
            retry_at_ns: 0,
        }
    }

    fn trouble(&mut self, why: String) {
        if self.trouble.as_deref() != Some(why.as_str()) {
            log::warn!("{} ({}): {why}", self.port, self.ifname);
            self.trouble = Some(why);
        }
    }

    fn fine(&mut self) {
        if self.trouble.take().is_some() {
            log::info!("{} ({}): forwarding again", self.port, self.ifname);
        }
    }

    fn lookup(&self) -> Presence {
        lookup(self.probe.as_ref().map(|f| f.as_raw_fd()), &self.ifname)
    }

    /// Whether the interface we are bound to is still there. An interface renamed under
    /// us (`synthnet attach` gives the real interface its name back while the bridge
    /// still drains) is the same interface: the port follows it to its new name. One
    /// deleted (its index gone) is not, even if another takes its name later.
    fn still(&mut self) -> Still {
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
    fn cannot_tell(&mut self, e: &io::Error) {
        let what = match e.raw_os_error() {
            Some(libc::EMFILE) | Some(libc::ENFILE) => {
                "out of file descriptors while checking the interface"
            }
            _ => "cannot check the interface",
        };
        self.trouble(format!("{what} ({e}); its socket stays open"));
    }
}

/// Reads an interface: received frames leave on output 0.
pub struct RawRx {
    ring: Option<RxRing>,
    frames: usize,
    watch: Watch,
    counters: Counters,
    /// Frames handed over whole on the socket queue (GSO/GRO super-packets).
    supers: u64,
    /// Frames received truncated (could not be queued whole): dropped.
    truncated: u64,
    /// Per-flow counts of what is received, when asked for.
    meter: Option<FlowTable>,
    /// `CLOCK_MONOTONIC` at engine time 0, when the engine runs on it (the bridge):
    /// arrival stamps are then mapped with clocks read together, not with the breath's
    /// `now` read earlier, which a preemption in between would make stale.
    monotonic_origin_ns: Option<u64>,
}

impl RawRx {
    /// Open `ifname` with a ring of about `frames` frames.
    pub fn open(port: &str, ifname: &str, frames: usize) -> io::Result<RawRx> {
        let idx = existing(ifname)?;
        let ring = RxRing::open(idx, frames)?;
        Ok(RawRx {
            frames: ring.frames,
            ring: Some(ring),
            watch: Watch::new(port, ifname, idx),
            counters: Counters::default(),
            supers: 0,
            truncated: 0,
            meter: None,
            monotonic_origin_ns: None,
        })
    }

    /// Count every received frame per flow in `table` (`None`: stop counting).
    pub fn set_meter(&mut self, table: Option<FlowTable>) {
        self.meter = table;
    }
    /// The engine's clock is `CLOCK_MONOTONIC` minus `origin_ns` (the live bridge's).
    pub fn set_monotonic_origin(&mut self, origin_ns: u64) {
        self.monotonic_origin_ns = Some(origin_ns);
    }
    pub fn meter_mut(&mut self) -> Option<&mut FlowTable> {
        self.meter.as_mut()
    }

    /// Bytes the ring maps.
    pub fn ring_bytes(&self) -> usize {
        self.frames * FRAME_SIZE
    }

    /// The socket to wait on (none while the interface is gone).
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.ring.as_ref().map(|r| r.fd.as_fd())
    }

    /// The socket reported an error: read it; if the interface went away, drop the ring
    /// and look for the interface again later.
    pub fn on_error(&mut self, now_ns: u64) {
        let Some(ring) = &self.ring else { return };
        let err = take_error(ring.fd.as_raw_fd());
        match self.watch.still() {
            Still::Gone => self.lost(now_ns),
            Still::Unknown(e) => self.watch.cannot_tell(&e),
            Still::Same => {
                if let Some(e) = err {
                    let e = io::Error::from_raw_os_error(e);
                    self.watch.trouble(format!("receive: {e} (link down?)"));
                }
            }
        }
    }

    fn lost(&mut self, now_ns: u64) {
        self.ring = None;
        self.watch
            .trouble("interface gone; waiting for it to come back".into());
        self.watch.retry_at_ns = now_ns + REOPEN_NS;
    }

    /// Periodic check: interface replaced or back; kernel ring drops.
    pub fn housekeeping(&mut self, now_ns: u64) {
        match &self.ring {
            Some(r) => {
                let d = r.kernel_drops();
                self.counters.drop(DropCause::RingFull, d);
                match self.watch.still() {
                    Still::Gone => self.lost(now_ns),
                    Still::Unknown(e) => self.watch.cannot_tell(&e),
                    Still::Same => {}
                }
            }
            None => self.reopen(now_ns),
        }
    }

    fn reopen(&mut self, now_ns: u64) {
        if now_ns < self.watch.retry_at_ns {
            return;
        }
        self.watch.retry_at_ns = now_ns + REOPEN_NS;
        let idx = match self.watch.lookup() {
            Presence::Index(i) => i,
            Presence::Gone => return,
            Presence::Unknown(e) => return self.watch.cannot_tell(&e),
        };
        match RxRing::open(idx, self.frames) {
            Ok(r) => {
                self.ring = Some(r);
                self.watch.ifindex = idx;
                self.watch.fine();
            }
            Err(e) => self.watch.trouble(format!("cannot reopen: {e}")),
        }
    }
}

/// Take a frame the kernel queued whole on the socket (`TP_STATUS_COPY`).
fn recv_whole(cx: &mut Ctx<'_>, fd: RawFd, counters: &mut Counters) -> Option<Packet> {
    {
        let Some(p) = cx.pool.alloc_large(0, cx.now_ns) else {
            // Take it off the queue anyway, or the ring and the queue fall out of step.
            // SAFETY: a zero-length read with MSG_TRUNC discards one datagram.
            unsafe {
                libc::recv(
                    fd,
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                )
            };
            counters.drop(DropCause::PoolEmpty, 1);
            return None;
        };
        let buf = cx.pool.vnet_buf_mut(p.id);
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 || (n as usize) < VNET_HDR_LEN || n as usize > buf.len() {
            cx.pool.free(p);
            counters.drop(
                if n < 0 {
                    DropCause::Io
                } else {
                    DropCause::TooBig
                },
                1,
            );
            return None;
        }
        Some(Packet {
            len: (n as usize - VNET_HDR_LEN) as u32,
            ..p
        })
    }
}

/// Insert an 802.1Q tag the kernel took out of the frame into its metadata.
fn insert_vlan(cx: &mut Ctx<'_>, p: &mut Packet, tpid: u16, tci: u16) -> bool {
    let mut tag = [0u8; 16];
    let head = cx.pool.data(p);
    if head.len() < 12 {
        return false;
    }
    tag[..12].copy_from_slice(&head[..12]);
    tag[12..14].copy_from_slice(&tpid.to_be_bytes());
    tag[14..16].copy_from_slice(&tci.to_be_bytes());
    cx.pool.replace_prefix(p, 12, &tag)
}

impl App for RawRx {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        let RawRx {
            ring,
            counters,
            supers,
            truncated,
            watch,
            meter,
            monotonic_origin_ns,
            ..
        } = self;
        let Some(ring) = ring.as_mut() else {
            return;
        };
        let fd = ring.fd.as_raw_fd();
        let budget = cx.room(0).min(RX_BUDGET);
        let now = cx.now_ns;
        if !ring.ready() {
            return;
        }
        // The kernel stamps each frame (wall clock) when it arrives; a packet's time is
        // that, on the engine's clock, so the time we took to wake up is not added to
        // its delay. On the bridge's monotonic engine clock the offset comes from the
        // two clocks read together; otherwise from the breath's `now`.
        let offset = match *monotonic_origin_ns {
            Some(origin) => wall_minus_monotonic_ns().wrapping_add(origin),
            None => realtime_ns().wrapping_sub(now),
        };
        let arrival = |h: &libc::tpacket2_hdr| -> u64 {
            let t = (h.tp_sec as u64 * 1_000_000_000 + h.tp_nsec as u64).wrapping_sub(offset);
            // Not in the future, and not absurdly old (a stepped wall clock).
            if t > now || now - t > 1_000_000_000 {
                now
            } else {
                t
            }
        };
        let mut got = 0;
        while got < budget {
            let i = ring.next;
            let status = ring.status(i);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            got += 1;
            let f = ring.frame(i);
            // A copy of the header, not a reference into memory the kernel shares (its
            // status word is written again through an atomic by `release`).
            // SAFETY: the frame is ours until released; it starts with a tpacket2_hdr,
            // 4-aligned at the start of a page-aligned frame slot.
            let h = unsafe { std::ptr::read(f as *const libc::tpacket2_hdr) };
            let h = &h;
            let ts = arrival(h);
            let p = if status & libc::TP_STATUS_COPY != 0 {
                ring.release(i);
                let Some(p) = recv_whole(cx, fd, counters) else {
                    continue;
                };
                *supers += 1;
                Packet { ts_ns: ts, ..p }
            } else if h.tp_snaplen < h.tp_len || (h.tp_mac as usize) < VNET_HDR_LEN {
                ring.release(i);
                *truncated += 1;
                counters.drop(DropCause::TooBig, 1);
                continue;
            } else {
                let len = h.tp_snaplen as usize;
                let start = h.tp_mac as usize - VNET_HDR_LEN;
                if h.tp_mac as usize + len > FRAME_SIZE {
                    ring.release(i);
                    counters.drop(DropCause::TooBig, 1);
                    continue;
                }
                // SAFETY: [start, tp_mac + len) lies inside this frame (checked above).
                let src = unsafe { std::slice::from_raw_parts(f.add(start), VNET_HDR_LEN + len) };
                let gso = VnetHdr::decode(&src[..VNET_HDR_LEN]).is_gso();
                let p = if gso {
                    cx.pool.alloc_large(len as u32, ts)
                } else {
                    cx.pool.alloc(len as u32, ts)
                };
                let Some(p) = p else {
                    ring.release(i);
                    counters.drop(DropCause::PoolEmpty, 1);
                    continue;
                };
                cx.pool.vnet_buf_mut(p.id)[..src.len()].copy_from_slice(src);
                let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                    let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        h.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    (tpid, h.tp_vlan_tci)
                });
                ring.release(i);
                let mut p = p;
                if let Some((tpid, tci)) = vlan {
                    if !insert_vlan(cx, &mut p, tpid, tci) {
                        cx.pool.free(p);
                        counters.drop(DropCause::TooBig, 1);
                        continue;
                    }
                }
                p
            };
            counters.rx_packets += 1;
            counters.rx_bytes += p.len as u64;
            if let Some(m) = meter {
                m.record(cx.pool.data(&p), p.len, now);
            }
            cx.transmit(0, p, counters);
        }
        if got > 0 {
            watch.fine();
        }
    }

    fn next_deadline(&self) -> Option<u64> {
        match &self.ring {
            // More frames are waiting: due now.
            Some(r) => r.ready().then_some(0),
            None => Some(self.watch.retry_at_ns),
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn extra_counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("super_packets", self.supers),
            ("truncated", self.truncated),
        ]
    }
}

/// Writes an interface: whatever reaches any input is sent, in batches.
///
/// **Two sockets.** Ordinary frames go through a socket that bypasses the qdisc
/// (`PACKET_QDISC_BYPASS`: the shortest path, and veth queues nothing anyway). GSO
/// super-packets go through a second socket that does not: the kernel's direct transmit
/// drops any packet that its transmit validation would have to change, and segmenting a
/// super-packet for an interface without the offload (a tap, a NIC or veth with TSO off)
/// is such a change, so through the bypass those packets were all lost (TCP stalled at
/// 0.3 Mbit/s through a veth with `tso off`). Through the qdisc path the kernel segments
/// them in software — for every GSO type, with checksums — exactly as for its own
/// sockets. Runs of each kind keep their order within a batch.
pub struct RawTx {
    socks: Option<TxSockets>,
    watch: Watch,
    counters: Counters,
    batch: Vec<Packet>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Packets the interface refused for want of buffers (`ENOBUFS`).
    nobufs: u64,
    /// Super-packets sent (through the qdisc path).
    supers: u64,
    /// Packets the socket could not take yet (`EAGAIN`): they go first next breath.
    pending: Vec<Packet>,
    /// When to try them again.
    retry_at_ns: Option<u64>,
    /// Per-flow counts of what is sent, when asked for.
    meter: Option<FlowTable>,
    /// The errors that dropped packets and were logged already: each cause once.
    logged: Vec<i32>,
}

/// A transmit port's two sockets (see [`RawTx`]).
struct TxSockets {
    /// Bypasses the qdisc: every frame that is not a super-packet.
    direct: OwnedFd,
    /// Through the qdisc, where the kernel segments what the interface cannot take.
    queued: OwnedFd,
}

impl TxSockets {
    fn open(ifindex: i32) -> io::Result<TxSockets> {
        Ok(TxSockets {
            direct: tx_socket(ifindex, true)?,
            queued: tx_socket(ifindex, false)?,
        })
    }
}

// SAFETY: the raw pointers in `iov`/`msgs` are scratch, rewritten before every use.
unsafe impl Send for RawTx {}

fn tx_socket(ifindex: i32, bypass: bool) -> io::Result<OwnedFd> {
    packet_socket(
        ifindex,
        |fd| {
            if bypass {
                let one: libc::c_int = 1;
                let _ = setopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    &one,
                    "PACKET_QDISC_BYPASS",
                );
            }
            set_buffer(fd, Buffer::Send, 16 << 20)
        },
        false,
    )
}

impl RawTx {
    pub fn open(port: &str, ifname: &str) -> io::Result<RawTx> {
        let idx = existing(ifname)?;
        let socks = TxSockets::open(idx)?;
        Ok(RawTx {
            socks: Some(socks),
            watch: Watch::new(port, ifname, idx),
            counters: Counters::default(),
            batch: vec![Packet::default(); TX_BATCH],
            // SAFETY: zeroed iovec/mmsghdr are valid (null pointers, zero lengths).
            iov: vec![unsafe { std::mem::zeroed() }; TX_BATCH],
            msgs: vec![unsafe { std::mem::zeroed() }; TX_BATCH],
            nobufs: 0,
            supers: 0,
            pending: Vec::with_capacity(TX_BATCH),
            retry_at_ns: None,
            meter: None,
            logged: Vec::new(),
        })
    }

    /// Count every sent frame per flow in `table` (`None`: stop counting).
    pub fn set_meter(&mut self, table: Option<FlowTable>) {
        self.meter = table;
    }
    pub fn meter_mut(&mut self) -> Option<&mut FlowTable> {
        self.meter.as_mut()
    }

    pub fn housekeeping(&mut self, now_ns: u64) {
        if self.socks.is_some() {
            match self.watch.still() {
                Still::Gone => {
                    self.socks = None;
                    self.watch
                        .trouble("interface gone; waiting for it to come back".into());
                    self.watch.retry_at_ns = now_ns + REOPEN_NS;
                }
                Still::Unknown(e) => self.watch.cannot_tell(&e),
                Still::Same => {}
            }
            return;
        }
        if now_ns < self.watch.retry_at_ns {
            return;
        }
        self.watch.retry_at_ns = now_ns + REOPEN_NS;
        let found = match self.watch.lookup() {
            Presence::Index(i) => Some(i),
            Presence::Gone => None,
            Presence::Unknown(e) => {
                self.watch.cannot_tell(&e);
                None
            }
        };
        if let Some(idx) = found {
            match TxSockets::open(idx) {
                Ok(socks) => {
                    self.socks = Some(socks);
                    self.watch.ifindex = idx;
                    self.watch.fine();
                }
                Err(e) => self.watch.trouble(format!("cannot reopen: {e}")),
            }
        }
    }

    /// Log a cause of dropped packets the first time it happens (they are counted
    /// every time).
    fn log_once(&mut self, errno: i32, why: impl FnOnce() -> String) {
        if !self.logged.contains(&errno) {
            self.logged.push(errno);
            log::warn!(
                "{} ({}): {} (counted as `io` drops; logged once)",
                self.watch.port,
                self.watch.ifname,
                why()
            );
        }
    }

    /// Whether `self.batch[i]` is a super-packet.
    fn is_super(&self, cx: &Ctx<'_>, i: usize) -> bool {
        let frame = cx.pool.vnet_frame(&self.batch[i]);
        frame.len() >= VNET_HDR_LEN && VnetHdr::decode(&frame[..VNET_HDR_LEN]).is_gso()
    }

    /// Send `self.batch[start..end]` on `fd`; returns the index up to which packets were
    /// consumed (sent or dropped): `end`, or less only when the socket is full
    /// (`EAGAIN`).
    fn send(&mut self, cx: &mut Ctx<'_>, fd: RawFd, start: usize, end: usize) -> usize {
        for i in start..end {
            let frame = cx.pool.vnet_frame(&self.batch[i]);
            self.iov[i] = libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            };
            let m = &mut self.msgs[i].msg_hdr;
            m.msg_iov = &mut self.iov[i];
            m.msg_iovlen = 1;
        }
        let mut done = start;
        while done < end {
            // SAFETY: msgs[done..end] point at live iovecs over pool memory.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    self.msgs[done..end].as_mut_ptr(),
                    (end - done) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                let sent = &self.batch[done..done + r as usize];
                self.counters.tx_packets += r as u64;
                self.counters.tx_bytes += sent.iter().map(|p| p.len as u64).sum::<u64>();
                if let Some(m) = &mut self.meter {
                    for p in sent {
                        m.record(cx.pool.data(p), p.len, cx.now_ns);
                    }
                }
                done += r as usize;
                self.watch.fine();
                continue;
            }
            // r == 0 sends nothing and sets no errno: treat it as a full socket rather
            // than read a stale errno.
            let e = if r == 0 {
                io::Error::from_raw_os_error(libc::EAGAIN)
            } else {
                io::Error::last_os_error()
            };
            let errno = e.raw_os_error().unwrap_or(0);
            match errno {
                libc::EAGAIN => {
                    self.retry_at_ns = Some(cx.now_ns + 50_000);
                    return done;
                }
                libc::EINTR => continue,
                libc::ENOBUFS => {
                    self.nobufs += 1;
                    self.counters.drop(DropCause::Io, 1);
                    self.log_once(errno, || {
                        "the interface dropped a packet for want of buffers (ENOBUFS)".into()
                    });
                }
                libc::EMSGSIZE => {
                    self.watch
                        .trouble("a packet is larger than the interface's MTU (EMSGSIZE)".into());
                    self.counters.drop(DropCause::TooBig, 1);
                }
                libc::ENXIO | libc::ENODEV | libc::ENETDOWN => {
                    // Link down or interface gone: nothing of this run can go out.
                    let gone = matches!(self.watch.still(), Still::Gone);
                    self.watch.trouble(if gone {
                        "interface gone; waiting for it to come back".into()
                    } else {
                        format!("send: {e} (link down?)")
                    });
                    self.counters.drop(DropCause::Io, (end - done) as u64);
                    if gone {
                        self.socks = None;
                        self.watch.retry_at_ns = cx.now_ns + REOPEN_NS;
                    }
                    return end;
                }
                _ => {
                    self.counters.drop(DropCause::Io, 1);
                    self.log_once(errno, || format!("send dropped a packet: {e}"));
                }
            }
            // Skip the packet that failed and go on with the rest.
            done += 1;
        }
        end
    }

    /// Send `self.batch[..n]`, each run of super-packets or of ordinary frames on its
    /// socket; returns how many were consumed (less than `n` only when a socket is
    /// full).
    fn send_batch(&mut self, cx: &mut Ctx<'_>, n: usize) -> usize {
        let mut start = 0;
        while start < n {
            let sup = self.is_super(cx, start);
            let mut end = start + 1;
            while end < n && self.is_super(cx, end) == sup {
                end += 1;
            }
            let Some(fd) = self.socks.as_ref().map(|s| {
                if sup {
                    s.queued.as_raw_fd()
                } else {
                    s.direct.as_raw_fd()
                }
            }) else {
                // The interface went away during this batch.
                self.counters.drop(DropCause::Io, (n - start) as u64);
                return n;
            };
            let done = self.send(cx, fd, start, end);
            if sup {
                self.supers += (done - start) as u64;
            }
            if done < end {
                return done;
            }
            start = end;
        }
        n
    }
}

impl App for RawTx {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        self.retry_at_ns = None;
        let mut port = 0;
        loop {
            // What the socket refused last time goes first.
            let n = if !self.pending.is_empty() {
                let n = self.pending.len();
                self.batch[..n].copy_from_slice(&self.pending);
                self.pending.clear();
                n
            } else {
                // Only the inputs that hold packets, in port order.
                match cx.next_input(port) {
                    Some(p) => port = p,
                    None => return,
                }
                cx.receive_into(port, &mut self.batch)
            };
            if self.socks.is_none() {
                cx.pool.free_all(&self.batch[..n]);
                self.counters.drop(DropCause::Io, n as u64);
                continue;
            }
            let done = self.send_batch(cx, n);
            cx.pool.free_all(&self.batch[..done]);
            if done < n {
                // Socket full: keep the rest, in order, for the retry.
                self.pending.extend_from_slice(&self.batch[done..n]);
                return;
            }
        }
    }

    fn held(&self) -> usize {
        self.pending.len()
    }

    fn drain_held(&mut self) -> Vec<Packet> {
        std::mem::take(&mut self.pending)
    }

    fn next_deadline(&self) -> Option<u64> {
        match &self.socks {
            Some(_) => self.retry_at_ns,
            None => Some(self.watch.retry_at_ns),
        }
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn extra_counters(&self) -> Vec<(&'static str, u64)> {
        vec![("enobufs", self.nobufs), ("super_packets", self.supers)]
    }
}

/// Sends one frame over and over in `sendmmsg` batches, bypassing the qdisc: the flood
/// generator of the forwarding benchmark (`synthnet bench-bridge`).
pub struct Flood {
    fd: OwnedFd,
    /// `virtio_net_hdr` (no offloads) + the frame.
    _buf: Vec<u8>,
    _iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `_iov`/`msgs` point into `_buf` and `_iov`, heap buffers
// owned by the same value and never reallocated.
unsafe impl Send for Flood {}

/// Frames per `sendmmsg` of a [`Flood`].
const FLOOD_BATCH: usize = 64;

impl Flood {
    pub fn open(ifname: &str, frame: &[u8]) -> io::Result<Flood> {
        let idx = existing(ifname)?;
        let fd = tx_socket(idx, true)?;
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf.extend_from_slice(frame);
        let mut iov: Vec<libc::iovec> = (0..FLOOD_BATCH)
            .map(|_| libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            })
            .collect();
        // SAFETY: a zeroed mmsghdr is valid (null pointers, zero lengths).
        let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; FLOOD_BATCH];
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        Ok(Flood {
            fd,
            _buf: buf,
            _iov: iov,
            msgs,
        })
    }

    /// Send one batch; returns the frames the interface took (0 when it is full).
    pub fn send(&mut self) -> usize {
        // SAFETY: `msgs` point at live iovecs over `_buf` (see the `Send` impl).
        let r = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                FLOOD_BATCH as u32,
                libc::MSG_DONTWAIT,
            )
        };
        r.max(0) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The guard a ring's mapping lives in from `mmap` on unmaps it when dropped — also
    /// when the ring's setup fails after the `mmap` (review 565591b, finding 6: that path
    /// leaked the ring on every reopen of a flapping link).
    #[test]
    fn a_mapping_is_unmapped_when_its_guard_drops() {
        let len = 1 << 16;
        // SAFETY: a fresh anonymous mapping.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED);
        let mapped = |p: *mut libc::c_void| {
            let mut v = [0u8; 16];
            // SAFETY: mincore only reports on the range (ENOMEM when it is not mapped).
            unsafe { libc::mincore(p, len, v.as_mut_ptr()) == 0 }
        };
        assert!(mapped(ptr));
        drop(Mapping {
            ptr: ptr as *mut u8,
            len,
        });
        assert!(!mapped(ptr), "still mapped after the guard dropped");
    }

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
