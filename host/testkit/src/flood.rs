//! Floods for the forwarding benchmark: one frame, sent as fast as the kernel takes it,
//! from a namespace, on CPU 0.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An Ethernet/IPv4/UDP frame of `len` bytes from A to B (port 9, discard).
pub fn frame(len: usize, src_mac: &str, dst_mac: &str) -> Vec<u8> {
    let mac = |s: &str| {
        let mut m = [0u8; 6];
        for (b, h) in m.iter_mut().zip(s.split(':')) {
            *b = u8::from_str_radix(h, 16).unwrap_or(0);
        }
        m
    };
    crate::apps::udp_frame(
        len,
        &crate::apps::UdpEnds {
            src_mac: mac(src_mac),
            dst_mac: mac(dst_mac),
            src: [10, 77, 0, 1],
            dst: [10, 77, 0, 2],
            sport: 4000,
            dport: 9,
        },
    )
}

/// Flood from A's eth0 until `stop`, pinned to CPU 0. Returns frames sent.
pub fn flood(
    ns: String,
    frame: Vec<u8>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<u64>> {
    crate::traffic::in_ns(&ns, move || {
        let mut cpu0 = nix::sched::CpuSet::new();
        cpu0.set(0)?;
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpu0)?;
        let mut tx =
            synthnet_io::afpacket::Flood::open("eth0", &frame).context("generator on eth0")?;
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            sent += tx.send() as u64;
        }
        Ok(sent)
    })
}
