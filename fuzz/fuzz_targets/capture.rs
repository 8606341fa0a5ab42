//! Fuzz target `capture`: any bytes as a pcap or pcapng file. The reader must answer —
//! frames and notes, or an error — without panicking, and what it returns must hold:
//! frames in time order, none longer than the file or than
//! the longest original length a frame is restored to.

#![no_main]

use libfuzzer_sys::fuzz_target;
use synthnet_io::pcap::{read_capture_bytes, MAX_RESTORED_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(cap) = read_capture_bytes("fuzz input", data) {
        assert!(
            cap.frames.windows(2).all(|w| w[0].0 <= w[1].0),
            "frames out of order"
        );
        assert!(
            cap.frames
                .iter()
                .all(|(_, f)| f.len() <= data.len().max(MAX_RESTORED_LEN as usize)),
            "frame longer than the file and than any restored length"
        );
    }
});
