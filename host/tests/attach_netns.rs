//! `synthnet attach` on real network namespaces, from the host. The target namespace T
//! has `eth0` with a deliberately rich state — primary and labelled secondary IPv4
//! addresses, one with finite lifetimes, IPv6 with and without `nodad`/`noprefixroute`,
//! routes in two tables with metrics and scopes, a set MAC and MTU — joined by a veth to
//! a peer P that runs an echo server. A client in T keeps an established TCP stream (IPv4
//! and IPv6) going through attach, a live spec change and detach, checking every byte
//! and timing every echo. The target's state is compared with a "before" snapshot field
//! by field. **These tests need root** (`root_…`) and fail without it; namespaces are
//! unique and removed on drop, also when a test fails.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use synthnet_testkit::netns::{self, Netns};

const SYNTHNET: &str = env!("CARGO_BIN_EXE_synthnet");
/// The whole file's budget: each test prints its time; this is what they should stay in.
const FILE_BUDGET: Duration = Duration::from_secs(90);

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// T (target) ─ eth0 ═ eth0 ─ P (peer, echo server), and a process living in T.
struct Rig {
    t: Netns,
    p: Netns,
    /// A process in T: the `pid:` target.
    sleeper: Child,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}

fn rig(tag: &str) -> Rig {
    assert!(
        netns::is_root(),
        "this test needs root (network namespaces, raw sockets)"
    );
    let t = Netns::create(&netns::unique(&format!("{tag}t"))).expect("namespace T");
    let p = Netns::create(&netns::unique(&format!("{tag}p"))).expect("namespace P");
    netns::ip(&[
        "link", "add", "eth0", "netns", &t.name, "type", "veth", "peer", "name", "eth0", "netns",
        &p.name,
    ])
    .expect("veth T-P");
    // No DAD on T's eth0: fd46::2 is added without nodad and must not stay tentative.
    t.sysctl("net.ipv6.conf.eth0.accept_dad", "0")
        .expect("sysctl");
    let ip = |ns: &Netns, args: &[&str]| ns.ip(args).unwrap_or_else(|e| panic!("{e:#}"));
    ip(
        &t,
        &[
            "link",
            "set",
            "eth0",
            "address",
            "02:45:00:00:00:02",
            "mtu",
            "1400",
        ],
    );
    ip(&p, &["link", "set", "eth0", "mtu", "1400"]);
    ip(&t, &["addr", "add", "10.45.0.2/24", "dev", "eth0"]);
    ip(
        &t,
        &[
            "addr",
            "add",
            "10.45.0.3/24",
            "dev",
            "eth0",
            "label",
            "eth0:sec",
        ],
    );
    ip(
        &t,
        &[
            "addr",
            "add",
            "10.46.0.2/24",
            "dev",
            "eth0",
            "valid_lft",
            "3000",
            "preferred_lft",
            "2000",
        ],
    );
    ip(
        &t,
        &["-6", "addr", "add", "fd45::2/64", "dev", "eth0", "nodad"],
    );
    ip(
        &t,
        &[
            "-6",
            "addr",
            "add",
            "fd46::2/64",
            "dev",
            "eth0",
            "noprefixroute",
        ],
    );
    ip(&p, &["addr", "add", "10.45.0.1/24", "dev", "eth0"]);
    ip(
        &p,
        &["-6", "addr", "add", "fd45::1/64", "dev", "eth0", "nodad"],
    );
    for ns in [&t, &p] {
        ip(ns, &["link", "set", "eth0", "up"]);
    }
    ip(
        &t,
        &[
            "route",
            "add",
            "default",
            "via",
            "10.45.0.1",
            "metric",
            "100",
        ],
    );
    ip(
        &t,
        &[
            "route",
            "add",
            "10.99.0.0/16",
            "via",
            "10.45.0.1",
            "table",
            "100",
        ],
    );
    ip(
        &t,
        &[
            "route",
            "add",
            "10.98.0.0/16",
            "dev",
            "eth0",
            "scope",
            "link",
            "metric",
            "5",
        ],
    );
    ip(
        &t,
        &[
            "-6", "route", "add", "default", "via", "fd45::1", "metric", "1024",
        ],
    );
    ip(
        &t,
        &[
            "-6",
            "route",
            "add",
            "fd46::/64",
            "dev",
            "eth0",
            "metric",
            "300",
        ],
    );
    let sleeper = t
        .command("sleep")
        .arg("600")
        .stdin(Stdio::null())
        .spawn()
        .expect("a process in T");
    // Until the link-local addresses are out of DAD, the state is still moving.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let o = t.command("ip").args(["-6", "addr"]).output().expect("ip");
        if !String::from_utf8_lossy(&o.stdout).contains("tentative") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Rig { t, p, sleeper }
}

fn ip_json(ns: &Netns, args: &[&str]) -> Value {
    let o = ns
        .command("ip")
        .arg("-j")
        .args(args)
        .output()
        .expect("ip -j");
    // A failure (eth0 missing half way through a restore) is a Null: it differs.
    if !o.status.success() {
        return Value::Null;
    }
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// T's state, field by field: eth0's link (index, name, MAC, MTU, flags), every
/// address of eth0 with its flags and lifetimes (rounded to 10 s: they count down),
/// every route of every table, and the list of links (nothing left behind).
fn snapshot(ns: &Netns) -> Value {
    let link = ip_json(ns, &["link", "show", "dev", "eth0"]);
    let l = &link[0];
    let mut addrs = ip_json(ns, &["addr", "show", "dev", "eth0"])[0]["addr_info"].clone();
    for a in addrs.as_array_mut().into_iter().flatten() {
        for k in ["valid_life_time", "preferred_life_time"] {
            if let Some(v) = a.get(k).and_then(Value::as_u64) {
                // 4294967295 is "forever"; the others count down while we test.
                let r = if v == u64::from(u32::MAX) {
                    v
                } else {
                    (v + 5) / 10 * 10
                };
                a[k] = r.into();
            }
        }
    }
    let names: Vec<Value> = ip_json(ns, &["link"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| l["ifname"].clone())
        .collect();
    serde_json::json!({
        "link": {
            "ifindex": l["ifindex"], "ifname": l["ifname"], "address": l["address"],
            "mtu": l["mtu"], "flags": l["flags"], "operstate": l["operstate"],
        },
        "addresses": addrs,
        "routes4": ip_json(ns, &["-4", "route", "show", "table", "all"]),
        "routes6": ip_json(ns, &["-6", "route", "show", "table", "all"]),
        "links": names,
    })
}

/// Every field that differs between two snapshots, one line each.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                differences(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: before {a}, after {b}")),
        _ => {}
    }
}

fn assert_same(before: &Value, after: &Value, when: &str) {
    let mut d = Vec::new();
    differences(before, after, "", &mut d);
    assert!(
        d.is_empty(),
        "{when}: the target differs from before:\n{}",
        d.join("\n")
    );
}

/// An echo server in P on port 7000 (IPv4 and IPv6): echoes every connection.
fn echo_server(p: &Netns) {
    let name = p.name.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        netns::enter(&name).expect("enter P");
        let l4 = TcpListener::bind("10.45.0.1:7000").expect("bind v4");
        let l6 = TcpListener::bind("[fd45::1]:7000").expect("bind v6");
        let _ = tx.send(());
        for l in [l4, l6] {
            std::thread::spawn(move || {
                for c in l.incoming().map_while(Result::ok) {
                    std::thread::spawn(move || {
                        let mut c = c;
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = c.read(&mut buf) {
                            if n == 0 || c.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    });
                }
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("echo server up");
}

/// One echo: when it was sent, how long the answer took.
#[derive(Clone, Copy)]
struct Sample {
    sent: Instant,
    rtt: Duration,
}

/// A client in T: 9 bytes (a sequence number and a check byte) every 20 ms, each
/// echo read back in full and compared.
struct EchoStream {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    handle: Option<std::thread::JoinHandle<Result<u64, String>>>,
    what: &'static str,
}

impl EchoStream {
    fn start(t: &Netns, server: SocketAddr, what: &'static str) -> EchoStream {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let name = t.name.clone();
        let (s2, m2) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || -> Result<u64, String> {
            netns::enter(&name).map_err(|e| format!("{e:#}"))?;
            let mut c = TcpStream::connect_timeout(&server, Duration::from_secs(5))
                .map_err(|e| format!("connect {server}: {e}"))?;
            c.set_nodelay(true).map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(20)))
                .map_err(|e| e.to_string())?;
            let mut seq: u64 = 0;
            while !s2.load(Ordering::Relaxed) {
                let mut msg = [0u8; 9];
                msg[..8].copy_from_slice(&seq.to_be_bytes());
                msg[8] = msg[..8].iter().fold(0x5a, |a, b| a ^ b);
                let sent = Instant::now();
                c.write_all(&msg).map_err(|e| format!("send #{seq}: {e}"))?;
                let mut back = [0u8; 9];
                c.read_exact(&mut back)
                    .map_err(|e| format!("echo #{seq}: {e} after {:?}", sent.elapsed()))?;
                if back != msg {
                    return Err(format!("echo #{seq}: sent {msg:?}, got {back:?}"));
                }
                m2.lock().unwrap().push(Sample {
                    sent,
                    rtt: sent.elapsed(),
                });
                seq += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(seq)
        });
        let s = EchoStream {
            stop,
            samples,
            handle: Some(handle),
            what,
        };
        s.wait_for_echoes(5, Duration::from_secs(5));
        s
    }

    fn count(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    /// Wait until `n` more echoes came back; panics (naming the stream) otherwise.
    fn wait_for_echoes(&self, n: usize, timeout: Duration) {
        let start = self.count();
        let deadline = Instant::now() + timeout;
        while self.count() < start + n {
            if Instant::now() > deadline || self.handle.as_ref().is_some_and(|h| h.is_finished()) {
                panic!(
                    "{}: {} echoes in {timeout:?} (wanted {n})",
                    self.what,
                    self.count() - start
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The worst echo time of those sent in [from, to] (a stall shows up here: a
    /// lost segment costs a retransmission timeout, ≥ 200 ms).
    fn worst(&self, from: Instant, to: Instant) -> Duration {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.sent >= from && s.sent <= to)
            .map(|s| s.rtt)
            .max()
            .unwrap_or_default()
    }

    /// Echoes slower than `over`, as (sent, ms after `origin`, rtt ms), for the log.
    fn slow(&self, origin: Instant, over: Duration) -> Vec<String> {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.rtt > over)
            .map(|s| {
                format!(
                    "{}: sent at {:+.0} ms, echo {:.0} ms",
                    self.what,
                    s.sent.saturating_duration_since(origin).as_secs_f64() * 1e3
                        - origin.saturating_duration_since(s.sent).as_secs_f64() * 1e3,
                    ms(s.rtt)
                )
            })
            .collect()
    }

    /// Median echo time of the last `n` echoes.
    fn median_last(&self, n: usize) -> Duration {
        let s = self.samples.lock().unwrap();
        let mut v: Vec<Duration> = s.iter().rev().take(n).map(|x| x.rtt).collect();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    /// Stop; returns how many echoes came back, every byte checked.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let h = self.handle.take().expect("running");
        match h.join() {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("{}: {e}", self.what),
            Err(_) => panic!("{}: the client panicked", self.what),
        }
    }
}

impl Drop for EchoStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A running `synthnet attach`, its stderr collected line by line.
struct Attach {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Attach {
    fn start(target: &str, spec: Option<&std::path::Path>, extra: &[&str]) -> Attach {
        let mut cmd = Command::new(SYNTHNET);
        cmd.arg("attach").arg(target);
        if let Some(s) = spec {
            cmd.arg(s);
        }
        let mut child = cmd
            .args(["--api", "auto", "--stats", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run synthnet attach");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l2.lock().unwrap().push(line);
            }
        });
        Attach { child, lines }
    }

    fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if Instant::now() > deadline {
                panic!("no {needle:?} within {timeout:?}:\n{}", self.log());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                // Give the reader a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!("attach exited ({st}) before {needle:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The API address from the announcement line.
    fn api(&mut self) -> String {
        let l = self.wait_for("web UI and API on http://", Duration::from_secs(30));
        l.split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .expect("address")
            .to_string()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
    }
}

fn spec_file(tag: &str, json: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "synthnet-attach-test-{}-{tag}.json",
        std::process::id()
    ));
    std::fs::write(&p, json).expect("write spec");
    p
}

fn synthnet(args: &[&str]) -> std::process::Output {
    Command::new(SYNTHNET)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run synthnet")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A stall at or above this is a retransmission timeout: a segment was lost.
const RTO: Duration = Duration::from_millis(200);

#[test]
fn root_attach_keeps_tcp_through_attach_live_change_and_detach_and_restores_exactly() {
    let _g = serial();
    let t0 = Instant::now();
    let r = rig("ak");
    echo_server(&r.p);
    let before = snapshot(&r.t);
    let v4 = EchoStream::start(&r.t, "10.45.0.1:7000".parse().unwrap(), "IPv4 stream");
    let v6 = EchoStream::start(&r.t, "[fd45::1]:7000".parse().unwrap(), "IPv6 stream");
    let unimpaired = v4.median_last(5);
    let spec = spec_file(
        "ak",
        r#"{"ingress": {"latency": 20}, "egress": {"latency": 20}}"#,
    );
    let target = format!("pid:{}", r.sleeper.id());

    let attach_from = Instant::now();
    let mut a = Attach::start(&target, Some(&spec), &[]);
    let api = a.api();
    a.wait_for("synthnet: attached to", Duration::from_secs(30));
    let attached = Instant::now();
    // RTT follows the spec: 20 ms each way.
    v4.wait_for_echoes(15, Duration::from_secs(10));
    v6.wait_for_echoes(15, Duration::from_secs(10));
    let (m4, m6) = (v4.median_last(10), v6.median_last(10));
    let attach_worst = v4
        .worst(attach_from, attached)
        .max(v6.worst(attach_from, attached));
    // During the attach the target looks the same from inside: same name, MAC, MTU,
    // addresses; its routes now leave through the new eth0.
    let during = snapshot(&r.t);
    assert_eq!(during["link"]["address"], before["link"]["address"]);
    assert_eq!(during["link"]["mtu"], before["link"]["mtu"]);
    assert_ne!(during["link"]["ifindex"], before["link"]["ifindex"]);

    // A second attach on the same target is refused, naming the running one.
    let second = synthnet(&["attach", &target, "--api", "off"]);
    let err2 = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second attach ran:\n{err2}");
    assert!(
        err2.contains("already attached") && err2.contains(&a.child.id().to_string()),
        "the refusal names the running attach:\n{err2}"
    );

    // A live change through the API: 50 ms each way.
    let patch = synthnet(&[
        "ctl",
        "--api",
        &api,
        "patch",
        r#"{"ingress": {"latency": 50}, "egress": {"latency": 50}}"#,
    ]);
    assert!(
        patch.status.success(),
        "ctl patch: {}",
        String::from_utf8_lossy(&patch.stderr)
    );
    let changed = Instant::now();
    v4.wait_for_echoes(12, Duration::from_secs(10));
    v6.wait_for_echoes(12, Duration::from_secs(10));
    let (p4, p6) = (v4.median_last(8), v6.median_last(8));
    let change_worst = v4.worst(changed, Instant::now());

    // Detach from another shell.
    let detach_from = Instant::now();
    let d = synthnet(&["attach", "--detach", &target]);
    assert!(
        d.status.success(),
        "attach --detach: {}\n{}",
        String::from_utf8_lossy(&d.stderr),
        a.log()
    );
    let status = a.child.wait().expect("attach ends");
    assert!(status.success(), "attach exited {status}:\n{}", a.log());
    let detached = Instant::now();
    v4.wait_for_echoes(15, Duration::from_secs(10));
    v6.wait_for_echoes(15, Duration::from_secs(10));
    let detach_worst = v4
        .worst(detach_from, detached + Duration::from_millis(300))
        .max(v6.worst(detach_from, detached + Duration::from_millis(300)));
    let after_median = v4.median_last(10);
    for l in v4
        .slow(detach_from, Duration::from_millis(150))
        .into_iter()
        .chain(v6.slow(detach_from, Duration::from_millis(150)))
    {
        println!("slow echo (time from the detach request): {l}");
    }
    let after = snapshot(&r.t);
    let (n4, n6) = (v4.finish(), v6.finish());
    let _ = std::fs::remove_file(&spec);

    println!(
        "attach pid: unimpaired echo {:.1} ms; attached (20 ms each way): IPv4 median {:.1} ms, IPv6 {:.1} ms; \
         after a live patch to 50 ms: IPv4 {:.1} ms, IPv6 {:.1} ms; after detach {:.1} ms",
        ms(unimpaired), ms(m4), ms(m6), ms(p4), ms(p6), ms(after_median)
    );
    println!(
        "worst echo: during attach {:.1} ms, after the live change {:.1} ms, during detach {:.1} ms; \
         {n4} IPv4 and {n6} IPv6 echoes, every byte checked; test took {:.1} s",
        ms(attach_worst),
        ms(change_worst),
        ms(detach_worst),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        (38.0..70.0).contains(&ms(m4)) && (38.0..70.0).contains(&ms(m6)),
        "RTT does not follow the 20+20 ms spec: {m4:?} {m6:?}"
    );
    assert!(
        (98.0..140.0).contains(&ms(p4)) && (98.0..140.0).contains(&ms(p6)),
        "RTT does not follow the live 50+50 ms change: {p4:?} {p6:?}"
    );
    assert!(
        ms(after_median) < 30.0,
        "still impaired after detach: {after_median:?}"
    );
    // Below a retransmission timeout: no segment was lost while the paths moved.
    assert!(
        attach_worst < RTO,
        "attach stalled the stream {attach_worst:?}"
    );
    assert!(
        detach_worst < RTO,
        "detach stalled the stream {detach_worst:?}:\n{}",
        a.log()
    );
    assert_same(&before, &after, "after detach");
    assert!(t0.elapsed() < FILE_BUDGET / 2, "took {:?}", t0.elapsed());
}

#[test]
fn root_attach_sigkill_is_put_back_within_1s_and_the_stream_resumes() {
    let _g = serial();
    let t0 = Instant::now();
    let r = rig("kl");
    echo_server(&r.p);
    let before = snapshot(&r.t);
    let v4 = EchoStream::start(&r.t, "10.45.0.1:7000".parse().unwrap(), "IPv4 stream");
    let target = format!("netns:{}", r.t.name);
    let spec = spec_file("kl", r#"{"ingress": {"latency": 5}}"#);
    let mut a = Attach::start(&target, Some(&spec), &[]);
    a.wait_for("synthnet: attached to", Duration::from_secs(30));
    v4.wait_for_echoes(10, Duration::from_secs(10));
    assert_ne!(snapshot(&r.t)["link"]["ifindex"], before["link"]["ifindex"]);
    let killed = Instant::now();
    a.kill9();
    // Poll until the state equals before.
    let mut last = Value::Null;
    let mut back = None;
    while killed.elapsed() < Duration::from_secs(3) {
        last = snapshot(&r.t);
        let mut d = Vec::new();
        differences(&before, &last, "", &mut d);
        if d.is_empty() {
            back = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let back = back.unwrap_or_else(|| {
        assert_same(&before, &last, "3 s after SIGKILL");
        unreachable!()
    });
    let resumed_from = Instant::now();
    v4.wait_for_echoes(10, Duration::from_secs(10));
    let resumed = resumed_from.elapsed();
    let n = v4.finish();
    let _ = std::fs::remove_file(&spec);
    println!(
        "SIGKILL of attach: the target was back (field by field) {:.0} ms later; the stream \
         resumed ({n} echoes, every byte checked, 10 more within {:.0} ms); test took {:.1} s",
        ms(back),
        ms(resumed),
        t0.elapsed().as_secs_f64()
    );
    assert!(back < Duration::from_secs(1), "put back after {back:?}");
    let inode = std::fs::metadata(format!("/run/netns/{}", r.t.name))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .expect("the namespace's inode");
    let record = format!("/run/synthnet/netns-{inode}.json");
    assert!(
        !std::path::Path::new(&record).exists(),
        "the record {record} stayed after the watchdog put things back"
    );
}

#[test]
fn root_attach_fail_closed_stays_cut_off_until_restore() {
    let _g = serial();
    let t0 = Instant::now();
    let r = rig("fc");
    echo_server(&r.p);
    let before = snapshot(&r.t);
    let v4 = EchoStream::start(&r.t, "10.45.0.1:7000".parse().unwrap(), "IPv4 stream");
    let target = format!("pid:{}", r.sleeper.id());
    let spec = spec_file("fc", r#"{"ingress": {"latency": 5}}"#);
    let mut a = Attach::start(&target, Some(&spec), &["--fail-closed"]);
    a.wait_for("synthnet: attached to", Duration::from_secs(30));
    v4.wait_for_echoes(5, Duration::from_secs(10));
    a.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    // Cut off: the stream gets no echo, the application's end is still the veth.
    let n = v4.count();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(v4.count(), n, "traffic flows although --fail-closed");
    assert_ne!(snapshot(&r.t)["link"]["ifindex"], before["link"]["ifindex"]);
    let restore = synthnet(&["attach", "--restore", &target]);
    let err = String::from_utf8_lossy(&restore.stderr);
    assert!(restore.status.success(), "attach --restore: {err}");
    assert!(err.contains("put back"), "{err}");
    assert_same(&before, &snapshot(&r.t), "after --restore");
    v4.wait_for_echoes(5, Duration::from_secs(10));
    // Nothing left to restore now.
    let again = synthnet(&["attach", "--restore", &target]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to put back"));
    // Cut off again; this time the next attach puts it back first, then attaches.
    let mut a = Attach::start(&target, Some(&spec), &["--fail-closed"]);
    a.wait_for("synthnet: attached to", Duration::from_secs(30));
    a.kill9();
    let mut b = Attach::start(&target, Some(&spec), &[]);
    b.wait_for("put back what attach pid", Duration::from_secs(30));
    b.wait_for("synthnet: attached to", Duration::from_secs(30));
    v4.wait_for_echoes(5, Duration::from_secs(10));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(b.child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT attach");
    let st = b.child.wait().expect("attach ends");
    assert!(st.success(), "attach: {st}\n{}", b.log());
    assert_same(
        &before,
        &snapshot(&r.t),
        "after the next attach and its Ctrl-C",
    );
    v4.wait_for_echoes(5, Duration::from_secs(10));
    let n = v4.finish();
    let _ = std::fs::remove_file(&spec);
    println!(
        "--fail-closed: cut off after SIGKILL, --restore (and the next attach) put it back \
         field by field, the stream resumed ({n} echoes); test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn root_attach_refuses_bad_input_and_changes_nothing() {
    let _g = serial();
    let t0 = Instant::now();
    let r = rig("bi");
    let before = snapshot(&r.t);
    let bad_spec = spec_file("bi", r#"{"ingress": {"latency": -5}}"#);
    let pid_target = format!("pid:{}", r.sleeper.id());
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["pid:999999999".into()], "no process 999999999"),
        (
            vec!["netns:synthnet-no-such-namespace".into()],
            "no network namespace",
        ),
        (vec!["docker:".into()], "nothing after"),
        (vec!["vm:x".into()], "unknown kind"),
        (
            vec![pid_target.clone(), "--interface".into(), "eth9".into()],
            "no interface \"eth9\"",
        ),
        (
            vec![pid_target.clone(), bad_spec.display().to_string()],
            "invalid spec",
        ),
        (
            vec!["--detach".into(), pid_target.clone()],
            "no synthnet attach is running",
        ),
    ];
    for (args, want) in &cases {
        let mut all = vec!["attach".to_string()];
        all.extend(args.iter().cloned());
        all.extend(["--api".into(), "off".into()]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let o = synthnet(&refs);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted:\n{err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in:\n{err}");
        assert_same(&before, &snapshot(&r.t), &format!("after {args:?}"));
        println!(
            "refused {args:?}: {}",
            err.trim().lines().last().unwrap_or("")
        );
    }
    let _ = std::fs::remove_file(&bad_spec);
    println!(
        "bad input: {} cases refused, nothing changed; test took {:.1} s",
        cases.len(),
        t0.elapsed().as_secs_f64()
    );
}
