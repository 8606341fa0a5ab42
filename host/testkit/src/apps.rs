//! Native helper apps: a packet [`Source`] and a [`Sink`], for benchmarks and tests.
//! Everything that changes packets on purpose is a plugin, not a native app.

use synthnet_core::{App, Counters, Ctx, DropCause, Packet};

/// Where [`Source`] writes each packet's sequence number (after Ethernet+IPv4+UDP).
pub const SEQ_OFFSET: usize = 42;

/// Ends of a generated UDP/IPv4 frame: MACs, addresses, ports.
#[derive(Clone, Copy, Debug)]
pub struct UdpEnds {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

/// An Ethernet + IPv4 + UDP frame of `len` bytes (at least 60) between `e`, with a valid
/// IPv4 header checksum and a zero payload.
pub fn udp_frame(len: usize, e: &UdpEnds) -> Vec<u8> {
    let mut t = vec![0u8; len.max(60)];
    t[0..6].copy_from_slice(&e.dst_mac);
    t[6..12].copy_from_slice(&e.src_mac);
    t[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (t.len() - 14) as u16;
    t[14] = 0x45;
    t[16..18].copy_from_slice(&ip_len.to_be_bytes());
    t[22] = 64;
    t[23] = 17;
    t[26..30].copy_from_slice(&e.src);
    t[30..34].copy_from_slice(&e.dst);
    let csum = synthnet_sdk::checksum::internet(&t[14..34]);
    t[24..26].copy_from_slice(&csum.to_be_bytes());
    t[34..36].copy_from_slice(&e.sport.to_be_bytes());
    t[36..38].copy_from_slice(&e.dport.to_be_bytes());
    t[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    t
}

/// The frame generated packets use: 10.0.0.1:1234 → 10.0.0.2:5678, room for a
/// sequence number at [`SEQ_OFFSET`].
pub fn udp_template(len: usize) -> Vec<u8> {
    udp_frame(
        len.max(SEQ_OFFSET + 8),
        &UdpEnds {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
            sport: 1234,
            dport: 5678,
        },
    )
}

/// Emits `count` packets of `size` bytes, one every `interval_ns` from `start_ns`
/// (timestamped with their scheduled time), at most `budget` per breath. Waits rather
/// than drops when its output link is full.
pub struct Source {
    template: Vec<u8>,
    /// Write headers and the sequence number into every packet. Off in the benchmark,
    /// whose pool is filled with the template once: a NIC's DMA costs no CPU either.
    pub write: bool,
    size: usize,
    interval_ns: u64,
    next_ns: u64,
    remaining: u64,
    budget: usize,
    seq: u64,
    counters: Counters,
    staged: Vec<Packet>,
}

impl Source {
    pub fn new(size: usize, interval_ns: u64, start_ns: u64, count: u64, budget: usize) -> Self {
        let template = udp_template(size);
        Source {
            template,
            write: true,
            size,
            interval_ns,
            next_ns: start_ns,
            remaining: count,
            budget,
            seq: 0,
            counters: Counters::default(),
            staged: Vec::with_capacity(budget),
        }
    }
    pub fn sent(&self) -> u64 {
        self.seq
    }
    /// The frame this source sends (before the sequence number).
    pub fn template(&self) -> &[u8] {
        &self.template
    }
}

impl App for Source {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        let mut n = self.budget.min(cx.room(0));
        while n > 0 && self.remaining > 0 && self.next_ns <= cx.now_ns {
            n -= 1;
            let Some(p) = cx.pool.alloc(self.size as u32, self.next_ns) else {
                self.counters.drop(DropCause::PoolEmpty, 1);
                break;
            };
            if self.write {
                let buf = cx.pool.buf_mut(p.id);
                // Only the headers and the sequence number are written: the rest of a
                // pooled buffer is whatever it held, like a NIC's DMA buffer.
                let head = self.template.len().min(SEQ_OFFSET).min(buf.len());
                buf[..head].copy_from_slice(&self.template[..head]);
                if self.size >= SEQ_OFFSET + 8 {
                    buf[SEQ_OFFSET..SEQ_OFFSET + 8].copy_from_slice(&self.seq.to_le_bytes());
                }
            }
            self.staged.push(p);
            self.seq += 1;
            self.remaining -= 1;
            self.next_ns += self.interval_ns;
        }
        self.counters.rx_packets += self.staged.len() as u64;
        cx.transmit_all(0, &self.staged, &mut self.counters);
        self.staged.clear();
    }
    fn next_deadline(&self) -> Option<u64> {
        (self.remaining > 0).then_some(self.next_ns)
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// One packet as a recording [`Sink`] saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// Sequence number written by [`Source`] (u64::MAX if the packet had none).
    pub seq: u64,
    /// The packet's timestamp on arrival: the exact time the last stage released it.
    pub ts_ns: u64,
    /// The breath in which it arrived.
    pub now_ns: u64,
    pub len: u32,
    /// First bytes of the packet (up to 64), for content checks.
    pub head: Vec<u8>,
}

/// Frees every packet it receives; counts them, and records them if asked to.
pub struct Sink {
    counters: Counters,
    pub record: bool,
    pub received: Vec<Received>,
}

impl Sink {
    pub fn new(record: bool) -> Self {
        Sink {
            counters: Counters::default(),
            record,
            received: Vec::new(),
        }
    }
}

impl App for Sink {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        let mut buf = [Packet::default(); 256];
        for port in 0..cx.n_inputs() {
            loop {
                let n = cx.receive_into(port, &mut buf);
                if n == 0 {
                    break;
                }
                let got = &buf[..n];
                // What reaches the sink has left the network: received and sent.
                let bytes = got.iter().map(|p| p.len as u64).sum::<u64>();
                self.counters.rx_packets += n as u64;
                self.counters.rx_bytes += bytes;
                self.counters.tx_packets += n as u64;
                self.counters.tx_bytes += bytes;
                if self.record {
                    for p in got {
                        let d = cx.pool.data(p);
                        let seq = d.get(SEQ_OFFSET..SEQ_OFFSET + 8).map_or(u64::MAX, |b| {
                            u64::from_le_bytes(b.try_into().unwrap_or([0xFF; 8]))
                        });
                        let head = d[..d.len().min(64)].to_vec();
                        self.received.push(Received {
                            seq,
                            ts_ns: p.ts_ns,
                            now_ns: cx.now_ns,
                            len: p.len,
                            head,
                        });
                    }
                }
                cx.pool.free_all(got);
            }
        }
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
}
