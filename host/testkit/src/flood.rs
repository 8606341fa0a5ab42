//! Floods for the forwarding benchmark: one frame, sent as fast as the kernel takes it,
//! from a namespace, on CPU 0.

use anyhow::{Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// An Ethernet/IPv4/UDP frame of `len` bytes from A to B (port 9, discard).
pub fn frame(len: usize, src_mac: &str, dst_mac: &str) -> Vec<u8> {
    let mac = |s: &str| -> Vec<u8> {
        s.split(':')
            .map(|h| u8::from_str_radix(h, 16).unwrap_or(0))
            .collect()
    };
    let mut f = vec![0u8; len.max(60)];
    f[0..6].copy_from_slice(&mac(dst_mac));
    f[6..12].copy_from_slice(&mac(src_mac));
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (f.len() - 14) as u16;
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 77, 0, 1]);
    ip[16..20].copy_from_slice(&[10, 77, 0, 2]);
    let c = synthnet_sdk::checksum::internet(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let udp_len = ip_len - 20;
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&udp_len.to_be_bytes());
    f
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
