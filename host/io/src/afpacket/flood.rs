//! [`Flood`]: one frame sent over and over in `sendmmsg` batches, bypassing the qdisc —
//! the generator of the forwarding benchmark (`synthnet bench-bridge`). Bench tooling,
//! not part of the bridge: compiled only with the crate's `bench` feature.

use super::iface::existing;
use super::tx::tx_socket;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use synthnet_core::packet::VNET_HDR_LEN;

/// Frames per `sendmmsg` of a [`Flood`].
const FLOOD_BATCH: usize = 64;

/// Sends one frame over and over, as fast as the interface takes it.
pub struct Flood {
    fd: OwnedFd,
    /// `virtio_net_hdr` (no offloads) + the frame.
    buf: Vec<u8>,
}

impl Flood {
    pub fn open(ifname: &str, frame: &[u8]) -> io::Result<Flood> {
        let idx = existing(ifname)?;
        let fd = tx_socket(idx, true)?;
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf.extend_from_slice(frame);
        Ok(Flood { fd, buf })
    }

    /// Send one batch; returns the frames the interface took (0 when it is full).
    pub fn send(&mut self) -> usize {
        // The headers are built for each call, on the stack, so no pointer outlives the
        // call (a few hundred ns against a system call that sends 64 frames).
        let mut iov = [libc::iovec {
            iov_base: self.buf.as_ptr() as *mut libc::c_void,
            iov_len: self.buf.len(),
        }; FLOOD_BATCH];
        // SAFETY: a zeroed mmsghdr is valid (null pointers, zero lengths).
        let mut msgs: [libc::mmsghdr; FLOOD_BATCH] = unsafe { std::mem::zeroed() };
        for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` point at the live `iov`, which point at `self.buf` (only read).
        let r = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                FLOOD_BATCH as u32,
                libc::MSG_DONTWAIT,
            )
        };
        r.max(0) as usize
    }
}
