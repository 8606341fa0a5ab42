//! A receive port that reopens its ring over and over maps no more memory than one ring
//! (issue 24; review 565591b finding 6: a ring whose setup failed after `mmap` was never
//! unmapped, so a flapping link leaked one ring per reopen, every 200 ms).
//!
//! Each test runs on a thread of its own in a fresh network namespace (`unshare`), with
//! a veth pair made and deleted over netlink; the namespace goes away with the thread.
//! Needs root (namespaces, raw sockets). The rings' mappings are counted in
//! `/proc/self/maps`, where a mapped socket shows as `socket:[inode]`, and the process's
//! whole mapped size is compared too.

use std::sync::Mutex;
use synthnet_io::afpacket::{test_hooks, RawRx, REOPEN_NS};
use synthnet_io::netlink;

/// Reopens per test.
const REOPENS: u64 = 100;
/// Frames per ring: 1,024 of 2 KiB, 2 MiB a ring (100 leaked rings: 200 MiB).
const FRAMES: usize = 1024;

/// The tests measure the whole process's mappings: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What `/proc/self/maps` lists: mapped sockets (rings) and their bytes, and the bytes
/// of every mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Maps {
    sockets: usize,
    socket_bytes: u64,
    total_bytes: u64,
}

fn maps() -> Maps {
    let text = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let mut m = Maps {
        sockets: 0,
        socket_bytes: 0,
        total_bytes: 0,
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let range = words.next().expect("an address range");
        let (start, end) = range.split_once('-').expect("start-end");
        let len = u64::from_str_radix(end, 16).unwrap() - u64::from_str_radix(start, 16).unwrap();
        m.total_bytes += len;
        if words.nth(4).is_some_and(|path| path.starts_with("socket:")) {
            m.sockets += 1;
            m.socket_bytes += len;
        }
    }
    m
}

/// Run `f` on a new thread in a network namespace of its own, with the veth pair
/// `port` ⇄ `peer` (both up).
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: plain syscall; CLONE_NEWNET moves only this thread into a new network
        // namespace (namespaces are per thread), which ends with the thread.
        let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            r,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        make_pair();
        f()
    })
    .join()
    .expect("the test thread")
}

const PORT: &str = "rx0";
const PEER: &str = "rx0peer";

fn make_pair() {
    netlink::add_veth(PORT, PEER, None).expect("a veth pair");
    netlink::set_up(PORT, None).expect("port up");
    netlink::set_up(PEER, None).expect("peer up");
}

/// Delete the pair and make it again: the port's interface is gone, and another of the
/// same name (a new index) takes its place, as when a link flaps by re-creation.
fn recreate_pair() {
    netlink::delete_link(PORT).expect("delete the pair");
    make_pair();
}

/// Let the port see that its interface went away (it drops its ring), then reopen it
/// `REOPEN_NS` later. `now_ns` is the port's clock, advanced here.
fn lose_and_reopen(rx: &mut RawRx, now_ns: &mut u64) {
    rx.housekeeping(*now_ns);
    assert!(
        rx.fd().is_none(),
        "the port still holds a ring on a deleted interface"
    );
    *now_ns += REOPEN_NS;
    rx.housekeeping(*now_ns);
}

/// A link re-created 100 times: the port reopens its ring each time, and the process
/// maps one ring at the end, as at the start.
#[test]
fn root_a_ring_reopened_100_times_maps_no_more_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (before, after, reopened) = in_new_netns(|| {
        let mut rx = RawRx::open("port", PORT, FRAMES).expect("a ring on the veth");
        let mut now_ns = 0;
        // One round first: whatever the first reopen allocates for good (logging,
        // allocator arenas) is then in `before`.
        recreate_pair();
        lose_and_reopen(&mut rx, &mut now_ns);
        let before = maps();
        let mut reopened = 0;
        for _ in 0..REOPENS {
            recreate_pair();
            lose_and_reopen(&mut rx, &mut now_ns);
            reopened += u64::from(rx.fd().is_some());
        }
        (before, maps(), reopened)
    });
    assert_eq!(reopened, REOPENS, "every reopen gave the port a ring");
    assert_eq!(
        before.sockets, 1,
        "one ring mapped at the start: {before:?}"
    );
    assert_eq!(
        (after.sockets, after.socket_bytes),
        (before.sockets, before.socket_bytes),
        "rings mapped after {REOPENS} reopens (before: {before:?})"
    );
    let ring = before.socket_bytes;
    assert!(
        after.total_bytes < before.total_bytes + REOPENS * ring / 4,
        "mapped memory grew by {} KiB over {REOPENS} reopens (one ring: {} KiB)",
        (after.total_bytes - before.total_bytes) / 1024,
        ring / 1024
    );
}

/// 100 reopens that fail at the last step of the ring's setup, after the ring is mapped
/// (a test hook fails `PACKET_ADD_MEMBERSHIP`): each failed ring is unmapped, and the
/// 101st reopen succeeds with one ring mapped.
#[test]
fn root_reopens_that_fail_after_mapping_the_ring_leak_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (before, failed, after, last) = in_new_netns(|| {
        let mut rx = RawRx::open("port", PORT, FRAMES).expect("a ring on the veth");
        let mut now_ns = 0;
        recreate_pair();
        lose_and_reopen(&mut rx, &mut now_ns);
        recreate_pair();
        rx.housekeeping(now_ns);
        assert!(
            rx.fd().is_none(),
            "the ring on the deleted interface is dropped"
        );
        let before = maps();
        test_hooks::fail_memberships(REOPENS as u32);
        let mut failed = 0;
        for _ in 0..REOPENS {
            now_ns += REOPEN_NS;
            rx.housekeeping(now_ns);
            failed += u64::from(rx.fd().is_none());
        }
        let after = maps();
        now_ns += REOPEN_NS;
        rx.housekeeping(now_ns);
        (before, failed, after, maps())
    });
    assert_eq!(
        failed, REOPENS,
        "every reopen failed (the hook took effect)"
    );
    assert_eq!(
        before.sockets, 0,
        "no ring while the port waits: {before:?}"
    );
    assert_eq!(
        after.sockets,
        0,
        "rings still mapped after {REOPENS} failed reopens: {} ({} KiB; before: {before:?})",
        after.sockets,
        after.socket_bytes / 1024
    );
    assert!(
        after.total_bytes < before.total_bytes + REOPENS * (FRAMES as u64 * 2048) / 4,
        "mapped memory grew by {} KiB over {REOPENS} failed reopens",
        (after.total_bytes - before.total_bytes) / 1024
    );
    assert_eq!(last.sockets, 1, "the next reopen maps its ring: {last:?}");
}
