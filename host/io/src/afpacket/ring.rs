//! The receive ring: a TPACKET_V2 ring mapped from the kernel ([`RxRing`]), its mapping
//! owned by a guard from `mmap` on ([`Mapping`]), frame slots reached only through a
//! bounds check, and their status words read and written as atomics (the only part of
//! the ring both sides write).

use super::sys::{last_err, packet_socket, set_buffer, setopt, Buffer};
use super::{BLOCK_SIZE, FRAME_SIZE, TPACKET_V2};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

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
pub(super) struct RxRing {
    /// Dropped after the mapping (fields drop in order): the ring is unmapped first.
    map: Mapping,
    fd: OwnedFd,
    frames: usize,
    next: usize,
}

// SAFETY: the mapping belongs to the ring alone and moves with it.
unsafe impl Send for RxRing {}

impl RxRing {
    /// A ring of about `frames` frames on interface `ifindex` (rounded up to whole
    /// blocks).
    pub(super) fn open(ifindex: i32, frames: usize) -> io::Result<RxRing> {
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
                set_buffer(fd, Buffer::Receive, super::SOCKET_BUFFER_BYTES)?;
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
        #[cfg(feature = "test-hooks")]
        if super::test_hooks::take_membership_failure() {
            return Err(io::Error::other(
                "PACKET_ADD_MEMBERSHIP: failed by a test hook",
            ));
        }
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

    /// The socket (to wait on, and for what is queued beside the ring).
    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Frames in the ring.
    pub(super) fn frames(&self) -> usize {
        self.frames
    }

    /// The frame to look at next (the ring is read in order).
    pub(super) fn next(&self) -> usize {
        self.next
    }

    /// Frame `i` of the ring. Panics if `i` is not a frame of the ring: every pointer
    /// into the mapping is made here, so no index can take one outside it.
    #[inline(always)]
    fn frame(&self, i: usize) -> *mut u8 {
        assert!(i < self.frames, "frame {i} of a ring of {}", self.frames);
        // SAFETY: i < frames, and the frames tile the mapping (frames * FRAME_SIZE is
        // blocks * BLOCK_SIZE, its length).
        unsafe { self.map.ptr.add(i * FRAME_SIZE) }
    }

    /// Frame `i`'s status word: who owns the frame, and what it holds.
    #[inline(always)]
    pub(super) fn status(&self, i: usize) -> u32 {
        // SAFETY: tp_status is the first, 4-aligned field of the frame header (frames
        // start on FRAME_SIZE boundaries of a page-aligned mapping); the kernel
        // publishes a frame by storing it (after a write barrier). Both sides write this
        // word, so it is only ever touched as an atomic.
        let s = unsafe { &*(self.frame(i) as *const AtomicU32) };
        s.load(Ordering::Acquire)
    }

    /// A copy of frame `i`'s header — never a reference into memory the kernel shares
    /// (its status word is written again, through an atomic, by [`Self::release`]). Read
    /// it only after [`Self::status`] said the frame is ours (`TP_STATUS_USER`): the
    /// acquire load orders this read after the kernel's writes.
    #[inline(always)]
    pub(super) fn header(&self, i: usize) -> libc::tpacket2_hdr {
        // SAFETY: the frame lies in the mapping and starts with a tpacket2_hdr,
        // 4-aligned (see `status`); `read` copies it out, plain data of any bit pattern.
        unsafe { std::ptr::read(self.frame(i) as *const libc::tpacket2_hdr) }
    }

    /// Bytes `start..start + len` of frame `i`, or `None` if they are not all inside the
    /// frame. The slice borrows the ring, so the frame cannot be released (`&mut self`)
    /// while it is read; read it only while the frame is ours (see [`Self::header`]).
    #[inline(always)]
    pub(super) fn bytes(&self, i: usize, start: usize, len: usize) -> Option<&[u8]> {
        let end = start.checked_add(len)?;
        if end > FRAME_SIZE {
            return None;
        }
        // SAFETY: [start, end) lies inside frame i (checked above), inside the mapping;
        // the kernel does not write a frame it has handed to us until it is released,
        // which needs `&mut self`, so not while this borrow lives.
        Some(unsafe { std::slice::from_raw_parts(self.frame(i).add(start), len) })
    }

    /// Hand frame `i` back to the kernel.
    #[inline(always)]
    pub(super) fn release(&mut self, i: usize) {
        // SAFETY: as in `status`.
        let s = unsafe { &*(self.frame(i) as *const AtomicU32) };
        s.store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.next = if i + 1 == self.frames { 0 } else { i + 1 };
    }

    /// Whether the next frame holds a packet for us.
    pub(super) fn ready(&self) -> bool {
        self.status(self.next) & libc::TP_STATUS_USER != 0
    }

    /// The kernel's count of frames dropped since the last call (the ring was full).
    pub(super) fn kernel_drops(&self) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh anonymous read-write mapping of `len` bytes (no kernel ring behind it).
    fn anonymous(len: usize) -> *mut libc::c_void {
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
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
        ptr
    }

    /// The guard a ring's mapping lives in from `mmap` on unmaps it when dropped — also
    /// when the ring's setup fails after the `mmap` (review 565591b, finding 6: that path
    /// leaked the ring on every reopen of a flapping link).
    #[test]
    fn a_mapping_is_unmapped_when_its_guard_drops() {
        let len = 1 << 16;
        let ptr = anonymous(len);
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

    /// A ring over an anonymous mapping of `frames` frames (no kernel behind it): enough
    /// to check what the accessors let through.
    fn fake_ring(frames: usize) -> RxRing {
        let len = frames * FRAME_SIZE;
        // Handed to the guard at once.
        let ptr = anonymous(len);
        let map = Mapping {
            ptr: ptr as *mut u8,
            len,
        };
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
        RxRing {
            map,
            fd,
            frames,
            next: 0,
        }
    }

    /// Bytes are handed out only inside one frame; a status word, once released, says
    /// the kernel owns the frame, and the ring moves on (wrapping at the end).
    #[test]
    fn accessors_stay_inside_the_ring() {
        let mut ring = fake_ring(4);
        assert_eq!(
            ring.bytes(3, 0, FRAME_SIZE).map(<[u8]>::len),
            Some(FRAME_SIZE)
        );
        assert!(
            ring.bytes(3, 1, FRAME_SIZE).is_none(),
            "past the frame's end"
        );
        assert!(
            ring.bytes(0, usize::MAX, 2).is_none(),
            "an overflowing range"
        );
        assert_eq!(ring.header(2).tp_len, 0);
        assert!(!ring.ready());
        for i in 0..4 {
            assert_eq!(ring.next(), i);
            ring.release(i);
            assert_eq!(ring.status(i), libc::TP_STATUS_KERNEL);
        }
        assert_eq!(ring.next(), 0, "wraps after the last frame");
    }

    /// An index past the last frame is refused, never turned into a pointer.
    #[test]
    #[should_panic(expected = "frame 4 of a ring of 4")]
    fn a_frame_past_the_end_panics() {
        fake_ring(4).status(4);
    }
}
