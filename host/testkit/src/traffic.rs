//! Traffic across a [`Topology`](crate::netns::Topology), for the namespace tests and the
//! forwarding benchmark: sequenced UDP streams (loss, order), verified TCP transfers
//! (throughput), and a raw 64-byte flood. Each side runs in a thread that has entered
//! its namespace.

use crate::netns;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Run `f` on a new thread inside namespace `ns`.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> JoinHandle<Result<T>> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        netns::enter(&ns)?;
        f()
    })
}

fn join<T>(h: JoinHandle<Result<T>>) -> Result<T> {
    h.join()
        .map_err(|_| anyhow::anyhow!("traffic thread panicked"))?
}

/// What a UDP stream saw.
#[derive(Debug, Clone)]
pub struct UdpReport {
    pub sent: u64,
    /// Sequence numbers in arrival order.
    pub received: Vec<u64>,
}

impl UdpReport {
    pub fn lost(&self) -> u64 {
        self.sent - self.received.len() as u64
    }
    pub fn in_order(&self) -> bool {
        self.received.windows(2).all(|w| w[0] < w[1])
    }
    pub fn duplicates(&self) -> usize {
        let mut s = self.received.clone();
        s.sort_unstable();
        s.windows(2).filter(|w| w[0] == w[1]).count()
    }
}

/// A UDP stream's shape.
#[derive(Clone, Copy, Debug)]
pub struct Stream {
    pub count: u64,
    pub pps: u64,
    /// Payload bytes (at least 8: the sequence number).
    pub size: usize,
    /// How long the receiver waits after the last datagram was sent.
    pub linger: Duration,
}

/// A UDP stream of `s.count` datagrams of `s.size` bytes at `s.pps`, from namespace
/// `from` to `to` (where `dst` lives), each carrying its sequence number.
/// `during(elapsed)` runs on the sending thread between datagrams (for reloads and
/// faults mid-stream).
pub fn udp_stream(
    from: &str,
    to: &str,
    dst: SocketAddr,
    s: Stream,
    mut during: impl FnMut(Duration) + Send + 'static,
) -> Result<UdpReport> {
    let Stream {
        count,
        pps,
        size,
        linger,
    } = s;
    let (ready_tx, ready_rx) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let done_rx = done.clone();
    let rx = in_ns(to, move || {
        let sock = UdpSocket::bind(SocketAddr::new(dst.ip(), dst.port()))?;
        let _ = socket2::SockRef::from(&sock).set_recv_buffer_size(8 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        ready_tx.send(()).ok();
        let mut got = Vec::new();
        let mut buf = [0u8; 65536];
        let mut done_at: Option<Instant> = None;
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 8 => got.push(u64::from_be_bytes(buf[..8].try_into().unwrap())),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            if done_rx.load(Ordering::SeqCst) {
                let t = *done_at.get_or_insert_with(Instant::now);
                if t.elapsed() > linger {
                    return Ok(got);
                }
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("UDP receiver did not start")?;
    let tx = in_ns(from, move || {
        let sock = UdpSocket::bind(SocketAddr::new(
            if dst.is_ipv4() {
                IpAddr::from([0, 0, 0, 0])
            } else {
                IpAddr::from([0u16; 8])
            },
            0,
        ))?;
        let _ = socket2::SockRef::from(&sock).set_send_buffer_size(8 << 20);
        let mut payload = vec![0u8; size.max(8)];
        let start = Instant::now();
        let gap = Duration::from_nanos(1_000_000_000 / pps.max(1));
        let mut sent = 0;
        for seq in 0..count {
            let due = gap * seq as u32;
            loop {
                let el = start.elapsed();
                during(el);
                if el >= due {
                    break;
                }
                std::thread::sleep((due - el).min(Duration::from_millis(1)));
            }
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            if sock.send_to(&payload, dst).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    });
    let sent = join(tx);
    done.store(true, Ordering::SeqCst);
    let received = join(rx)?;
    let sent = sent?;
    if sent != count {
        bail!("the sender could only send {sent} of {count} datagrams");
    }
    Ok(UdpReport { sent, received })
}

/// A TCP transfer.
#[derive(Debug, Clone, Copy)]
pub struct TcpReport {
    pub bytes: u64,
    pub secs: f64,
}

impl TcpReport {
    pub fn gbit_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }
}

/// Send a known byte pattern from `from` to `dst` (in `to`) over TCP: `bytes` bytes, or
/// for `for_time` if given. With `verify` the receiver checks every byte (which costs
/// more CPU than the transfer: leave it off to measure throughput).
pub fn tcp_transfer(
    from: &str,
    to: &str,
    dst: SocketAddr,
    bytes: u64,
    for_time: Option<Duration>,
    verify: bool,
) -> Result<TcpReport> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let rx = in_ns(to, move || {
        let l = TcpListener::bind(dst)?;
        ready_tx.send(()).ok();
        let (mut s, _) = l.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total: u64 = 0;
        let start = Instant::now();
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if verify {
                for (i, b) in buf[..n].iter().enumerate() {
                    if *b != pattern(total + i as u64) {
                        bail!("TCP byte {} is corrupt", total + i as u64);
                    }
                }
            }
            total += n as u64;
        }
        Ok((total, start.elapsed()))
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("TCP receiver did not start")?;
    let tx = in_ns(from, move || {
        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
            .with_context(|| format!("connect to {dst}"))?;
        let chunk: Vec<u8> = (0..(1u64 << 20)).map(pattern).collect();
        let start = Instant::now();
        let mut sent: u64 = 0;
        loop {
            if let Some(t) = for_time {
                if start.elapsed() >= t {
                    break;
                }
            } else if sent >= bytes {
                break;
            }
            // The pattern repeats every 1 MiB, so the chunk serves any offset.
            let off = (sent % (1 << 20)) as usize;
            let mut n = chunk.len() - off;
            if for_time.is_none() {
                n = n.min((bytes - sent) as usize);
            }
            s.write_all(&chunk[off..off + n])?;
            sent += n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        Ok(sent)
    });
    let sent = join(tx)?;
    let (got, took) = join(rx)?;
    if got != sent {
        bail!("TCP: sent {sent} bytes, received {got}");
    }
    Ok(TcpReport {
        bytes: got,
        secs: took.as_secs_f64(),
    })
}

/// The byte at offset `i` of a transfer (period 1 MiB, not a power-of-two pattern).
fn pattern(i: u64) -> u8 {
    let i = i % (1 << 20);
    (i % 251) as u8 ^ (i >> 12) as u8
}

/// What `ping` in a namespace saw: how many it sent, and the RTT of every reply (ms, in
/// arrival order).
#[derive(Debug, Clone)]
pub struct Pings {
    pub sent: u32,
    pub rtts_ms: Vec<f64>,
}

impl Pings {
    pub fn received(&self) -> u32 {
        self.rtts_ms.len() as u32
    }
    pub fn mean_ms(&self) -> Option<f64> {
        (!self.rtts_ms.is_empty())
            .then(|| self.rtts_ms.iter().sum::<f64>() / self.rtts_ms.len() as f64)
    }
    pub fn median_ms(&self) -> Option<f64> {
        let mut r = self.rtts_ms.clone();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied()
    }
}

/// `ping -n -c COUNT -i INTERVAL -W 2 TARGET` (iputils) in namespace `ns`: one reply line
/// per answered echo. The suite's one ping.
pub fn ping(ns: &netns::Netns, target: &str, count: u32, interval: &str) -> Result<Pings> {
    let out = ns
        .command("ping")
        .args([
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "2",
            target,
        ])
        .output()
        .context("run ping")?;
    let rtts_ms = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    Ok(Pings {
        sent: count,
        rtts_ms,
    })
}
