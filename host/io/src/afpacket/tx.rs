//! [`RawTx`]: the engine app that writes an interface, in `sendmmsg` batches over two
//! sockets (qdisc bypassed for ordinary frames, not for super-packets), keeping what a
//! full socket refused for the next breath.

use super::iface::{existing, Presence, Still, Watch};
use super::sys::{packet_socket, set_buffer, setopt, Buffer};
use super::{REOPEN_NS, TX_BATCH};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use synthnet_core::flowtable::FlowTable;
use synthnet_core::packet::{Packet, VnetHdr, VNET_HDR_LEN};
use synthnet_core::{App, Counters, Ctx, DropCause};

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

pub(super) fn tx_socket(ifindex: i32, bypass: bool) -> io::Result<OwnedFd> {
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
            set_buffer(fd, Buffer::Send, super::SOCKET_BUFFER_BYTES)
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
