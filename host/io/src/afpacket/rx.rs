//! [`RawRx`]: the engine app that reads an interface through its receive ring, maps the
//! kernel's arrival stamps onto the engine's clock, takes super-packets off the socket
//! queue, and reopens the ring when the interface comes back.

use super::iface::{existing, Presence, Still, Watch};
use super::ring::RxRing;
use super::sys::{realtime_ns, take_error, wall_minus_monotonic_ns};
use super::{FRAME_SIZE, REOPEN_NS, RX_BUDGET};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use synthnet_core::flowtable::FlowTable;
use synthnet_core::packet::{Packet, VnetHdr, VNET_HDR_LEN};
use synthnet_core::{App, Counters, Ctx, DropCause};

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
            frames: ring.frames(),
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
        self.ring.as_ref().map(|r| r.fd().as_fd())
    }

    /// The socket reported an error: read it; if the interface went away, drop the ring
    /// and look for the interface again later.
    pub fn on_error(&mut self, now_ns: u64) {
        let Some(ring) = &self.ring else { return };
        let err = take_error(ring.fd().as_raw_fd());
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
        let fd = ring.fd().as_raw_fd();
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
            let i = ring.next();
            let status = ring.status(i);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            got += 1;
            // A copy of the header, not a reference into the shared ring.
            let h = &ring.header(i);
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
                let Some(src) = ring.bytes(i, start, VNET_HDR_LEN + len) else {
                    ring.release(i);
                    counters.drop(DropCause::TooBig, 1);
                    continue;
                };
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
