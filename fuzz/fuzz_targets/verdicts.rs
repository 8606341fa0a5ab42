//! Fuzz target `verdicts`: a plugin's memory is the plugin's to write, so the host must
//! take any bytes there. The input is a few control bytes (where the header is, the
//! batch size, the verdict count, packet lengths, the longest packet the host holds)
//! and the memory. `Layout::parse` and `abi::validate` must answer without panicking;
//! when they accept, every verdict must be one the host can carry out the way
//! `PluginApp` does (host/runtime/src/app.rs): ports in range, ids in the batch, bytes
//! inside the region, no packet grown past the longest the host holds; the fast path is
//! taken only for verdict `j` = packet `j`; and the descriptor, counter and header
//! accessors stay inside memory.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synthnet_sdk::abi::{self, access, Layout, RawDesc, RawVerdict};

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (ctl, mem) = data.split_at(16);
    let mut mem = mem.to_vec();
    let addr = u32_at(ctl, 0) % (mem.len() as u32 + 8);
    let n_req = u32_at(ctl, 4) as usize % (abi::MAX_BATCH_LIMIT as usize + 1);
    let nv = u32_at(ctl, 8) % (16 * abi::MAX_BATCH_LIMIT + 8);
    let len_seed = u32_at(ctl, 12);
    let max_len = abi::MAX_PACKET_LEN - (len_seed as usize % 2) * (abi::MAX_PACKET_LEN - 1514);
    let Ok(lay) = Layout::parse(&mem, addr) else {
        return;
    };
    // What the host writes back must parse to the same layout.
    let mut copy = mem.clone();
    let h = lay.header as usize;
    lay.write_header(&mut copy[h..])
        .expect("a parsed header fits where it was");
    assert_eq!(Layout::parse(&copy, addr).as_ref(), Ok(&lay));

    let n = n_req.min(lay.max_batch as usize);
    let len_of = |i: usize| -> u32 {
        (len_seed
            .wrapping_mul(2_654_435_761)
            .wrapping_add(i as u32 * 977)
            % 65_601)
            .max(14)
    };
    // The host's descriptors and slots for a batch of n.
    for i in 0..n as u32 {
        let len = len_of(i as usize);
        let (data_off, cap) = if lay.access == access::META {
            (0, 0)
        } else {
            (lay.slot_addr(i), len.min(lay.snap_len))
        };
        if lay.access != access::META {
            let at = data_off as usize;
            assert!(
                mem.get(at..at + cap as usize).is_some(),
                "slot {i} outside memory"
            );
        }
        RawDesc {
            id: i,
            wire_len: len,
            data_off,
            cap_len: cap,
            in_port: 0,
            flags: 0,
            arrival_ns: 0,
        }
        .write(&mut mem, &lay)
        .expect("descriptor inside memory");
    }
    assert!(abi::desc_chunks(&mut mem, &lay, n as u32).is_some());
    // The plugin "answers" with the verdicts in the input (the descriptors written above
    // may overlap them, as a plugin may let them).
    let mut refs = vec![0u32; lay.max_batch as usize];
    let _ = abi::read_counters(&mem, &lay);
    let Ok(in_order) = abi::validate(&mem, &lay, len_of, n, nv, max_len, &mut refs) else {
        return;
    };
    let chunks = abi::verdict_chunks(&mem, &lay, nv).expect("validated verdicts lie in memory");
    let mut named = vec![0u32; n];
    let mut count = 0u32;
    for (j, c) in chunks.enumerate() {
        count += 1;
        let v = RawVerdict::decode(c.try_into().expect("whole verdicts"));
        assert_eq!(RawVerdict::read(&mem, &lay, j as u32), Some(v));
        assert!(v.port == abi::PORT_DROP || v.port < lay.n_outputs);
        assert_eq!(v.flags & !abi::VF_KNOWN, 0);
        if v.id == abi::verdict::ID_PARKED {
            // ABI 1.1: release (port 0) or drop (PORT_DROP) parked packets, nothing else.
            assert!(v.port == 0 || v.port == abi::PORT_DROP);
            assert_eq!((v.flags, v.data_off), (0, 0));
            assert!(!in_order, "fast path with a parked-queue verdict");
            continue;
        }
        if v.flags & abi::VF_PARK != 0 {
            assert_ne!(v.port, abi::PORT_DROP, "parked to be dropped");
        }
        let replaces = v.flags & abi::VF_REPLACE != 0;
        if v.id == abi::ID_NEW {
            let b = v
                .bytes(&mem, &lay)
                .expect("injected bytes inside the region");
            assert!(!b.is_empty() && b.len() <= max_len);
            continue;
        }
        let i = v.id as usize;
        assert!(i < n, "verdict names a packet outside the batch");
        named[i] += 1;
        if replaces {
            let b = v.bytes(&mem, &lay).expect("replacement inside the region");
            // What `PacketPool::replace_prefix` is asked for.
            let len = len_of(i) as usize;
            let old = if lay.access == access::META {
                0
            } else {
                len.min(lay.snap_len as usize)
            };
            assert!(
                len - old + b.len() <= max_len,
                "packet grown past the longest"
            );
        }
        if in_order {
            assert_eq!(
                (v.id as usize, v.flags),
                (j, 0),
                "fast path for a reordered batch"
            );
        }
    }
    assert_eq!(count, nv);
    assert_eq!(
        &named[..],
        &refs[..n],
        "refs count the verdicts naming each packet"
    );
    if in_order {
        assert_eq!(nv as usize, n);
    }
});
