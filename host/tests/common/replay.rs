//! `synthnet replay` of a test capture, as the scenario and command tests run it.

use std::path::Path;
use std::time::Duration;

/// Write `frames` (timestamp ns, Ethernet bytes) as a nanosecond pcap file.
pub fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let header = PcapHeader {
        datalink: pcap_file::DataLink::ETHERNET,
        ts_resolution: pcap_file::TsResolution::NanoSecond,
        ..Default::default()
    };
    let file = std::fs::File::create(path).expect("create the capture");
    let mut w = PcapWriter::with_header(file, header).expect("write the pcap header");
    for (ts, d) in frames {
        let p = PcapPacket::new(Duration::from_nanos(*ts), d.len() as u32, d);
        w.write_packet(&p).expect("write a packet");
    }
}

/// `synthnet replay --direction ingress --spec SPEC --in INPUT --out OUT`, with
/// `--commands` and `--reverse-out` when given. It must succeed; its summary (stdout).
pub fn replay_ingress(
    spec: &Path,
    input: &Path,
    out: &Path,
    commands: Option<&Path>,
    reverse_out: Option<&Path>,
) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_synthnet"));
    cmd.args(["replay", "--direction", "ingress", "--spec"])
        .arg(spec)
        .arg("--in")
        .arg(input)
        .arg("--out")
        .arg(out);
    if let Some(log) = commands {
        cmd.arg("--commands").arg(log);
    }
    if let Some(rev) = reverse_out {
        cmd.arg("--reverse-out").arg(rev);
    }
    let o = cmd.output().expect("run synthnet replay");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}
