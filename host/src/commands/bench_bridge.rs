//! `synthnet bench-bridge`: forwarding measured on real veths in namespaces, side by side
//! in one run with the kernel's own paths (see the README's benchmark section).
//!
//! - **Flood** (64 B and 1500 B frames): a raw-socket generator in A (pinned to CPU 0)
//!   sends UDP frames to B as fast as it can; synthnet (pinned to CPU 1) forwards them.
//!   Reported: the rate B receives, and synthnet's CPU time per packet it received
//!   (user + system, from /proc; the system part includes the kernel delivering each
//!   transmitted frame into B's stack), whose inverse is the forwarding capacity of one
//!   core. The same flood crosses a Linux bridge and a bare veth pair for reference.
//! - **TCP**: one verified stream A → B through each path.
//! - **Idle**: synthnet's CPU use with no traffic, and ping RTT through each path.

use crate::daemon::timing::Timing;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthnet_testkit::flood::{flood, frame};
use synthnet_testkit::netns::{self, Middle, Netns, Topology};
use synthnet_testkit::traffic;

/// The four QoS plugins, as `synthnet bench`'s qos-chain: a 100 Gbit/s shaper, 1% loss,
/// 10 ms latency, 2 ms jitter on half the packets (both directions).
pub const QOS_SPEC: &str = r#"{
  "ingress": {"rate": 100000000000, "loss": 0.01, "latency": 10, "jitter": 2, "jitter_strength": 0.5},
  "egress": {"rate": 100000000000, "loss": 0.01, "latency": 10, "jitter": 2, "jitter_strength": 0.5}
}"#;
const EMPTY_SPEC: &str = r#"{"ingress": [], "egress": []}"#;

/// The flood's destination MAC: locally administered, owned by no interface.
const SINK_MAC: &str = "02:00:5e:77:00:02";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    /// synthnet with no plugins, as it runs by default: the API on (and watched: a UI's
    /// stats stream open, `/metrics` scraped every 100 ms) and flows counted.
    SynthnetEmpty,
    /// The same without per-flow accounting (`--flow-table 0`).
    SynthnetNoFlows,
    /// The same with the API off (`--api off --flow-table 0`): nothing published.
    SynthnetApiOff,
    /// synthnet with the four QoS plugins.
    SynthnetQos,
    /// synthnet with the sweep's delays (1 ms ± 1 ms, or 10 ms, each way) or none, at
    /// one `--timing` setting; the API on, unwatched.
    Synthnet,
    KernelBridge,
    KernelVeth,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::SynthnetEmpty => "synthnet, no plugins",
            Path::SynthnetNoFlows => "  …, no flow table",
            Path::SynthnetApiOff => "  …, API off",
            Path::SynthnetQos => "synthnet, 4 QoS plugins",
            Path::Synthnet => "synthnet",
            Path::KernelBridge => "kernel veth+bridge",
            Path::KernelVeth => "kernel veth",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub test: String,
    pub path: Path,
    /// Packets per second B received (flood), or Gbit/s (tcp), or ms (ping).
    pub value: f64,
    pub unit: &'static str,
    /// synthnet's CPU: µs per packet received (flood, sweep) or % of a core (idle).
    pub cpu: Option<f64>,
    /// The sweep: the `--timing` setting synthnet ran with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    /// The sweep: the sender's own CPU, µs per packet it sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_cpu: Option<f64>,
    /// The sweep's ping: the idle bridge's mean RTT (ms) in the same run; the sweep's
    /// rates: datagrams per second the sender sent; tcp: the kernel bridge's Gbit/s in
    /// the same run (synthnet's row).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<f64>,
}

/// The synthnet process of a path, killed on drop (and what watches its API).
struct Forwarder {
    child: Child,
    _spec: tempfile_path::TempSpec,
    _watch: Option<Watcher>,
}

/// What a user with the web UI open and a Prometheus scraping every 100 ms does to the
/// API: the stats stream followed, stats and flows read every second, `/metrics` every
/// 100 ms. Stops on drop.
struct Watcher {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Watcher {
    fn start(ns: &str) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let api = "http://127.0.0.1:8080";
        let poll =
            |ns: String, stop: Arc<AtomicBool>, paths: &'static [&'static str], every: Duration| {
                std::thread::spawn(move || {
                    if netns::enter(&ns).is_err() {
                        return;
                    }
                    let agent = ureq::Agent::new_with_defaults();
                    while !stop.load(Ordering::Relaxed) {
                        for p in paths {
                            if let Ok(mut r) = agent.get(format!("{api}{p}")).call() {
                                let _ = r.body_mut().read_to_vec();
                            }
                        }
                        std::thread::sleep(every);
                    }
                })
            };
        let stream = {
            let (ns, stop) = (ns.to_string(), stop.clone());
            std::thread::spawn(move || {
                if netns::enter(&ns).is_err() {
                    return;
                }
                let agent = ureq::Agent::new_with_defaults();
                if let Ok(mut r) = agent.get(format!("{api}/api/v1/stats/stream")).call() {
                    let mut body = r.body_mut().as_reader();
                    let mut buf = [0u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        if matches!(std::io::Read::read(&mut body, &mut buf), Ok(0) | Err(_)) {
                            break;
                        }
                    }
                }
            })
        };
        let threads = vec![
            stream,
            poll(
                ns.into(),
                stop.clone(),
                &["/metrics"],
                Duration::from_millis(100),
            ),
            poll(
                ns.into(),
                stop.clone(),
                &["/api/v1/stats", "/api/v1/flows?top=20", "/qos"],
                Duration::from_secs(1),
            ),
        ];
        Watcher { stop, threads }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The stream thread ends at its next event (within a second); the pollers at
        // their next turn.
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

mod tempfile_path {
    /// A spec file alone in its directory, both removed on drop.
    pub(super) struct TempSpec(pub(super) std::path::PathBuf);
    impl Drop for TempSpec {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            if let Some(d) = self.0.parent() {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses).
    let rest = &s[s.rfind(')').context("odd /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field =
        |i: usize| -> Result<f64> { Ok(f.get(i).context("short /proc stat")?.parse::<f64>()?) };
    let ticks = field(11)? + field(12)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(ticks / hz)
}

/// A counter of interface `dev` in namespace `ns` (`rx_packets`, …).
fn if_counter(ns: &Netns, dev: &str, name: &str) -> Result<u64> {
    let out = ns
        .command("cat")
        .arg(format!("/sys/class/net/{dev}/statistics/{name}"))
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("{dev} {name} in {}", ns.name))
}

fn start_synthnet(
    topo: &Topology,
    spec: &str,
    exe: &std::path::Path,
    pin: bool,
    extra: &[&str],
    watch: bool,
) -> Result<Forwarder> {
    // In a directory of our own under an unguessable name: nobody can plant a link there.
    let dir = crate::daemon::safefile::private_dir(&std::env::temp_dir(), "synthnet-bench")?;
    let path = dir.join("spec.json");
    crate::daemon::safefile::write(&path, spec.as_bytes())?;
    let spec = tempfile_path::TempSpec(path);
    let mut cmd = topo.middle().command("taskset");
    // Floods pin synthnet to CPU 1 (the generator has CPU 0); otherwise it runs free.
    cmd.args(["-c", if pin { "1" } else { "0-1023" }]);
    let child = cmd
        .arg(exe)
        .args(["bridge", "outer", "inner"])
        .arg(&spec.0)
        .args(["--stats", "0", "--ring-frames", "8192"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("start synthnet bridge (is util-linux's taskset installed?)")?;
    // Wait until its rings are open: the first ping through gets an answer.
    let mut f = Forwarder {
        child,
        _spec: spec,
        _watch: None,
    };
    let t = Instant::now();
    loop {
        let ok = topo
            .a
            .command("ping")
            .args(["-c", "1", "-W", "1", "-q", netns::B_V4])
            .stdout(Stdio::null())
            .status()?
            .success();
        if ok {
            if watch && !extra.contains(&"off") {
                f._watch = Some(Watcher::start(&topo.middle().name));
            }
            return Ok(f);
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("synthnet did not start forwarding");
        }
    }
}

fn topology_for(path: Path) -> Result<Topology> {
    let t = Topology::create(
        "bench",
        match path {
            Path::SynthnetEmpty
            | Path::SynthnetNoFlows
            | Path::SynthnetApiOff
            | Path::SynthnetQos
            | Path::Synthnet => Middle::Synthnet,
            Path::KernelBridge => Middle::KernelBridge,
            Path::KernelVeth => Middle::Direct,
        },
    )?;
    t.pin_neighbours()?;
    Ok(t)
}

fn forwarder(
    path: Path,
    topo: &Topology,
    exe: &std::path::Path,
    pin: bool,
) -> Result<Option<Forwarder>> {
    Ok(match path {
        Path::SynthnetEmpty => Some(start_synthnet(topo, EMPTY_SPEC, exe, pin, &[], true)?),
        Path::SynthnetNoFlows => Some(start_synthnet(
            topo,
            EMPTY_SPEC,
            exe,
            pin,
            &["--flow-table", "0"],
            true,
        )?),
        Path::SynthnetApiOff => Some(start_synthnet(
            topo,
            EMPTY_SPEC,
            exe,
            pin,
            &["--api", "off", "--flow-table", "0"],
            true,
        )?),
        Path::SynthnetQos => Some(start_synthnet(topo, QOS_SPEC, exe, pin, &[], true)?),
        _ => None,
    })
}

/// Forwarding benchmark on real veths in namespaces (needs root): synthnet with no
/// plugins and with the four QoS plugins against the kernel's veth and veth+bridge
/// paths, measured side by side: 64 B and 1500 B floods (rate and forwarder CPU per
/// packet), TCP throughput, idle CPU and RTT.
#[derive(clap::Args, Debug)]
#[command(
    after_long_help = "Examples:\n  sudo synthnet bench-bridge\n  sudo synthnet bench-bridge --only tcp --seconds 5 --json"
)]
pub struct BenchBridgeArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Flood rounds per path, interleaved; each path reports its best.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Only tests whose name contains this: flood-64, flood-1500, tcp, idle.
    #[arg(long, default_value = "")]
    pub only: String,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Instead: for each timing setting (all three unless `--timing` is given), the
    /// CPU per packet at 1, 10 and 100 kpps of 200-byte UDP through 1 ms ± 1 ms each
    /// way beside the sender's own, and the ping error through 10 ms each way.
    #[arg(long)]
    pub sweep: bool,
    /// The sweep's timing settings (repeatable).
    #[arg(long, value_enum, requires = "sweep")]
    pub timing: Vec<Timing>,
}

impl BenchBridgeArgs {
    /// Run the benchmark, printing a table (or JSON lines) as rows come.
    pub fn run(self) -> Result<std::process::ExitCode> {
        let exe = std::env::current_exe().context("locate the synthnet binary")?;
        let json = self.json;
        if !json {
            println!("test        path                      forwarded / throughput   synthnet CPU");
        }
        let sweep = self.sweep.then(|| {
            if self.timing.is_empty() {
                Timing::ALL.to_vec()
            } else {
                self.timing
            }
        });
        let opts = BenchOptions {
            seconds: self.seconds.max(0.5),
            rounds: self.rounds,
            exe,
            only: self.only,
            sweep,
        };
        run(&opts, |r| {
            if json {
                println!("{}", serde_json::to_string(r).unwrap_or_default());
            } else {
                println!("{}", format_row(r));
            }
        })?;
        Ok(std::process::ExitCode::SUCCESS)
    }
}

pub struct BenchOptions {
    pub seconds: f64,
    /// Flood rounds per path (interleaved; best kept).
    pub rounds: usize,
    pub exe: PathBuf,
    /// Only tests whose name contains this (`flood-64`, `flood-1500`, `tcp`, `idle`).
    pub only: String,
    /// Run the sweep ([`sweep`]) instead, at these timing settings.
    pub sweep: Option<Vec<Timing>>,
}

/// Run the whole benchmark; rows come back in the order printed.
pub fn run(o: &BenchOptions, mut emit: impl FnMut(&Row)) -> Result<Vec<Row>> {
    if !netns::is_root() {
        bail!("bench-bridge needs root (network namespaces, raw sockets)");
    }
    if let Some(timings) = &o.sweep {
        return sweep(o, timings, emit);
    }
    let secs = Duration::from_secs_f64(o.seconds);
    let mut rows = Vec::new();
    let mut push = |r: Row, rows: &mut Vec<Row>| {
        emit(&r);
        rows.push(r);
    };
    let all = [
        Path::SynthnetEmpty,
        Path::SynthnetNoFlows,
        Path::SynthnetApiOff,
        Path::SynthnetQos,
        Path::KernelBridge,
        Path::KernelVeth,
    ];
    for size in [60usize, 1514] {
        let test = format!("flood-{}", if size == 60 { 64 } else { 1500 });
        if !test.contains(&o.only) {
            continue;
        }
        // Rounds interleave the paths (the machine's noise hits them alike); each path
        // reports its best round (highest rate; lowest CPU per packet).
        let mut best: Vec<Option<Row>> = vec![None; all.len()];
        for (k, path) in (0..o.rounds.max(1)).flat_map(|_| all.iter().copied().enumerate()) {
            let topo = topology_for(path)?;
            let fwd = forwarder(path, &topo, &o.exe, true)?;
            // To a MAC nobody has: B's stack drops the frames on arrival (after its
            // interface counted them), so B's processing does not limit the flood or
            // weigh on the forwarder that delivers into it.
            let f = frame(size, &topo.a.mac("eth0")?, SINK_MAC);
            let stop = Arc::new(AtomicBool::new(false));
            let gen = flood(topo.a.name.clone(), f, stop.clone());
            std::thread::sleep(Duration::from_millis(500));
            let snap = |fwd: &Option<Forwarder>| -> Result<(u64, u64, f64, Instant)> {
                let rx_b = if_counter(&topo.b, "eth0", "rx_packets")?;
                let rx_s = match &topo.s {
                    Some(s) if fwd.is_some() => if_counter(s, "outer", "rx_packets")?,
                    _ => 0,
                };
                let cpu = match fwd {
                    Some(f) => cpu_secs(f.child.id())?,
                    None => 0.0,
                };
                Ok((rx_b, rx_s, cpu, Instant::now()))
            };
            let a = snap(&fwd)?;
            std::thread::sleep(secs);
            let b = snap(&fwd)?;
            stop.store(true, Ordering::Relaxed);
            gen.join()
                .map_err(|_| anyhow::anyhow!("generator panicked"))??;
            let dt = (b.3 - a.3).as_secs_f64();
            let pps = (b.0 - a.0) as f64 / dt;
            let cpu = fwd
                .as_ref()
                .map(|_| (b.2 - a.2) * 1e6 / ((b.1 - a.1).max(1) as f64));
            let b = best[k].get_or_insert(Row {
                test: test.clone(),
                path,
                value: 0.0,
                unit: "pps",
                cpu: None,
                timing: None,
                sender_cpu: None,
                reference: None,
            });
            b.value = b.value.max(pps);
            b.cpu = match (b.cpu, cpu) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
        }
        for r in best.into_iter().flatten() {
            push(r, &mut rows);
        }
    }
    if "tcp".contains(&o.only) || o.only.is_empty() {
        let mut tcp = Vec::new();
        for path in [Path::SynthnetEmpty, Path::KernelBridge, Path::KernelVeth] {
            let topo = topology_for(path)?;
            let _fwd = forwarder(path, &topo, &o.exe, false)?;
            let dst: SocketAddr = format!("{}:5201", netns::B_V4).parse()?;
            let r = traffic::tcp_transfer(&topo.a.name, &topo.b.name, dst, 0, Some(secs), false)?;
            tcp.push(Row {
                test: "tcp".into(),
                path,
                value: r.gbit_s(),
                unit: "Gbit/s",
                cpu: None,
                timing: None,
                sender_cpu: None,
                reference: None,
            });
        }
        // synthnet's row carries the kernel bridge's figure of the same run.
        tcp[0].reference = Some(tcp[1].value);
        for r in tcp {
            push(r, &mut rows);
        }
    }
    if "idle".contains(&o.only) || o.only.is_empty() {
        for path in [Path::SynthnetEmpty, Path::KernelBridge, Path::KernelVeth] {
            let topo = topology_for(path)?;
            let fwd = forwarder(path, &topo, &o.exe, false)?;
            let cpu = match &fwd {
                Some(f) => {
                    std::thread::sleep(Duration::from_millis(500));
                    let c0 = cpu_secs(f.child.id())?;
                    std::thread::sleep(secs.max(Duration::from_secs(3)));
                    let c1 = cpu_secs(f.child.id())?;
                    Some((c1 - c0) / secs.max(Duration::from_secs(3)).as_secs_f64() * 100.0)
                }
                None => None,
            };
            let out = topo
                .a
                .command("ping")
                .args(["-q", "-n", "-c", "100", "-i", "0.01", netns::B_V4])
                .output()?;
            let (_, recv, avg) =
                crate::commands::demo::parse_ping(&String::from_utf8_lossy(&out.stdout))
                    .context("ping output")?;
            if recv == 0 {
                bail!("idle ping through {:?} got no replies", path);
            }
            push(
                Row {
                    test: "idle".into(),
                    path,
                    value: avg.unwrap_or(f64::NAN),
                    unit: "ms RTT",
                    cpu,
                    timing: None,
                    sender_cpu: None,
                    reference: None,
                },
                &mut rows,
            );
        }
    }
    Ok(rows)
}

/// The sweep's traffic: 200-byte UDP datagrams, as a video call's.
const SWEEP_DATAGRAM: usize = 200;
/// The sweep's rates.
const SWEEP_PPS: [u64; 3] = [1_000, 10_000, 100_000];
/// 1 ms ± 1 ms each way: every datagram is held, and departures are spread out.
const SWEEP_SPEC: &str =
    r#"{"ingress": {"latency": 1, "jitter": 1}, "egress": {"latency": 1, "jitter": 1}}"#;
/// The ping case: 10 ms each way.
const PING_SPEC: &str = r#"{"ingress": {"latency": 10}, "egress": {"latency": 10}}"#;

/// CPU time (ns) a process has had, all its threads: precise to the ns (`/proc`'s
/// per-thread `schedstat`), where `stat`'s ticks are 10 ms.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let s = std::fs::read_to_string(t?.path().join("schedstat")).unwrap_or_default();
        total += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

/// This thread's CPU time, ns.
fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Datagrams and CPU (ns) of a sender, between the end of its warm-up and its end.
struct Sent {
    datagrams: u64,
    cpu_ns: u64,
    secs: f64,
}

/// An application sending `pps` datagrams a second from namespace `from` to `dst` for
/// `warm` + `secs`, as a real one would: it sends what is due, then sleeps (with the
/// default timer slack) until the next is.
fn paced_sender(
    from: &str,
    dst: SocketAddr,
    pps: u64,
    warm: Duration,
    secs: Duration,
) -> std::thread::JoinHandle<Result<Sent>> {
    traffic::in_ns(from, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
        let payload = [0u8; SWEEP_DATAGRAM];
        let gap = 1_000_000_000 / pps;
        let start = Instant::now();
        let end = (warm + secs).as_nanos() as u64;
        let mut sent = 0u64;
        let mut mark: Option<(u64, u64)> = None;
        loop {
            let el = start.elapsed().as_nanos() as u64;
            if el >= end {
                break;
            }
            if mark.is_none() && el >= warm.as_nanos() as u64 {
                mark = Some((sent, thread_cpu_ns()));
            }
            while sent * gap <= el {
                // A full queue is the network's business, not the sender's.
                let _ = sock.send_to(&payload, dst);
                sent += 1;
            }
            std::thread::sleep(Duration::from_nanos((sent * gap).saturating_sub(el)));
        }
        let (s0, c0) = mark.unwrap_or((0, 0));
        Ok(Sent {
            datagrams: sent - s0,
            cpu_ns: thread_cpu_ns() - c0,
            secs: secs.as_secs_f64(),
        })
    })
}

/// A receiver in namespace `ns` for `dst`, until `stop`.
fn udp_sink(
    ns: &str,
    dst: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<u64>> {
    traffic::in_ns(ns, move || {
        let sock = std::net::UdpSocket::bind(dst)?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            if sock.recv(&mut buf).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    })
}

/// Mean ping RTT (ms) from A to B, over IPv4 or IPv6.
fn mean_rtt(topo: &Topology, v6: bool) -> Result<f64> {
    let out = topo
        .a
        .command("ping")
        .args(["-q", "-n", "-c", "100", "-i", "0.05"])
        .arg(if v6 { "-6" } else { "-4" })
        .arg(if v6 { netns::B_V6 } else { netns::B_V4 })
        .output()?;
    let (_, recv, avg) = crate::commands::demo::parse_ping(&String::from_utf8_lossy(&out.stdout))
        .context("ping output")?;
    if recv == 0 {
        bail!("ping got no replies");
    }
    avg.context("ping printed no mean")
}

/// `--sweep`: for each timing setting, synthnet's CPU per datagram at 1, 10 and
/// 100 kpps of 200-byte UDP through 1 ms ± 1 ms each way, beside the sender's own CPU
/// per datagram in the same run; then the mean ping RTT through 10 ms each way beside
/// the idle bridge's (no delay), IPv4 and IPv6: the error is what synthnet's departures
/// add beyond the 20 ms asked for.
pub fn sweep(o: &BenchOptions, timings: &[Timing], mut emit: impl FnMut(&Row)) -> Result<Vec<Row>> {
    let secs = Duration::from_secs_f64(o.seconds);
    let warm = Duration::from_millis(500);
    let mut rows = Vec::new();
    let mut push = |r: Row| {
        emit(&r);
        rows.push(r);
    };
    for &timing in timings {
        let flag = ["--timing", timing.name()];
        for pps in SWEEP_PPS {
            let topo = topology_for(Path::Synthnet)?;
            let fwd = start_synthnet(&topo, SWEEP_SPEC, &o.exe, false, &flag, false)?;
            let dst: SocketAddr = format!("{}:5300", netns::B_V4).parse()?;
            let stop = Arc::new(AtomicBool::new(false));
            let sink = udp_sink(&topo.b.name, dst, stop.clone());
            std::thread::sleep(Duration::from_millis(100));
            let sender = paced_sender(&topo.a.name, dst, pps, warm, secs);
            std::thread::sleep(warm);
            let (c0, r0) = (
                cpu_ns(fwd.child.id())?,
                if_counter(&topo.b, "eth0", "rx_packets")?,
            );
            let t0 = Instant::now();
            let sent = sender
                .join()
                .map_err(|_| anyhow::anyhow!("sender panicked"))??;
            // What was sent last is still held (up to 2 ms): count it in.
            std::thread::sleep(Duration::from_millis(5));
            let (c1, r1) = (
                cpu_ns(fwd.child.id())?,
                if_counter(&topo.b, "eth0", "rx_packets")?,
            );
            let dt = t0.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            let _ = sink.join();
            let forwarded = r1.saturating_sub(r0).max(1);
            push(Row {
                test: format!("sweep-{}k", pps / 1000),
                path: Path::Synthnet,
                value: forwarded as f64 / dt,
                unit: "pps",
                cpu: Some((c1 - c0) as f64 / 1e3 / forwarded as f64),
                timing: Some(timing),
                sender_cpu: Some(sent.cpu_ns as f64 / 1e3 / sent.datagrams.max(1) as f64),
                reference: Some(sent.datagrams as f64 / sent.secs),
            });
        }
        let idle_topo = topology_for(Path::Synthnet)?;
        let idle = start_synthnet(&idle_topo, EMPTY_SPEC, &o.exe, false, &flag, false)?;
        let delayed_topo = topology_for(Path::Synthnet)?;
        let delayed = start_synthnet(&delayed_topo, PING_SPEC, &o.exe, false, &flag, false)?;
        for v6 in [false, true] {
            let base = mean_rtt(&idle_topo, v6)?;
            let rtt = mean_rtt(&delayed_topo, v6)?;
            push(Row {
                test: if v6 { "ping-v6" } else { "ping-v4" }.into(),
                path: Path::Synthnet,
                value: rtt,
                unit: "ms RTT",
                cpu: None,
                timing: Some(timing),
                sender_cpu: None,
                reference: Some(base),
            });
        }
        drop((idle, delayed));
    }
    Ok(rows)
}

/// One line of the table.
pub fn format_row(r: &Row) -> String {
    if let Some(timing) = r.timing {
        let what = format!("synthnet --timing {timing}");
        return match (r.sender_cpu, r.cpu, r.reference) {
            (Some(sender), Some(us), sent) => format!(
                "{:<11} {what:<25} {:>8.0} pps (of {:.0} sent)   {us:.1} µs/pkt CPU; the sender's own {sender:.1} µs/pkt: {:.2}×",
                r.test,
                r.value,
                sent.unwrap_or(f64::NAN),
                us / sender
            ),
            (_, _, Some(idle)) => format!(
                "{:<11} {what:<25} {:>8.3} ms RTT through 10 ms each way; idle bridge {idle:.3} ms: error {:+.3} ms",
                r.test,
                r.value,
                r.value - 20.0 - idle
            ),
            _ => format!("{:<11} {what:<25} {:>8.3}", r.test, r.value),
        };
    }
    let value = match r.unit {
        "pps" => format!("{:>8.3} Mpps", r.value / 1e6),
        "Gbit/s" => format!("{:>8.2} Gbit/s", r.value),
        _ => format!("{:>8.3} ms RTT", r.value),
    };
    let cpu = match (r.test.as_str(), r.cpu, r.reference) {
        ("idle", Some(c), _) => format!("{c:.2}% of a core"),
        ("tcp", _, Some(kb)) => format!("{:.0}% of the kernel bridge's", r.value / kb * 100.0),
        (_, Some(us), _) => format!("{us:.3} µs/pkt CPU = {:.2} Mpps/core", 1.0 / us),
        _ => String::new(),
    };
    format!("{:<11} {:<25} {value}   {cpu}", r.test, r.path.label())
}
