//! `synthnet takeover` in real network namespaces, without Docker: the application's
//! namespace A has `eth0` (IPv4 and IPv6 addresses, a default route via the peer B);
//! takeover runs in A as a container's PID 1 would. **These tests need root**
//! (`root_…`) and fail without it. Namespaces are unique and removed on drop.

mod common;
use common::serial;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};
use synthnet_testkit::netns::{self, Netns};

const SYNTHNET: &str = env!("CARGO_BIN_EXE_synthnet");

/// A (application, 10.66.0.2, fd66::2) ─ eth0 ═ eth0 ─ B (peer, 10.66.0.1, fd66::1).
fn pair() -> (Netns, Netns) {
    assert!(
        netns::is_root(),
        "this test needs root (network namespaces, raw sockets)"
    );
    let a = Netns::create(&netns::unique("tka")).expect("namespace A");
    let b = Netns::create(&netns::unique("tkb")).expect("namespace B");
    netns::ip(&[
        "link", "add", "eth0", "netns", &a.name, "type", "veth", "peer", "name", "eth0", "netns",
        &b.name,
    ])
    .expect("veth A-B");
    for (ns, v4, v6) in [
        (&a, "10.66.0.2/24", "fd66::2/64"),
        (&b, "10.66.0.1/24", "fd66::1/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", "eth0"])
            .expect("IPv4 address");
        ns.ip(&["-6", "addr", "add", v6, "dev", "eth0", "nodad"])
            .expect("IPv6 address");
        ns.ip(&["link", "set", "eth0", "up"]).expect("eth0 up");
    }
    a.ip(&["route", "add", "default", "via", "10.66.0.1"])
        .expect("default route");
    a.ip(&["-6", "route", "add", "default", "via", "fd66::1"])
        .expect("IPv6 default route");
    (a, b)
}

/// What `ip` says about A's addresses, routes and links (for before/after).
fn state(ns: &Netns) -> String {
    let mut out = String::new();
    for args in [
        vec!["-o", "-4", "addr"],
        vec!["-o", "-6", "addr", "show", "scope", "global"],
        vec!["-4", "route"],
        vec!["-6", "route", "show", "default"],
        vec!["-o", "link"],
    ] {
        let o = ns.command("ip").args(&args).output().expect("ip");
        out.push_str(&String::from_utf8_lossy(&o.stdout));
    }
    // Link lines carry counters and states that change by themselves; keep the names.
    out.lines()
        .map(|l| {
            l.split(" link/")
                .next()
                .unwrap_or(l)
                .replace("state UP", "")
                .replace("state DOWN", "")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn spec_file(json: &str) -> tempfile_path::TempPath {
    tempfile_path::TempPath::with(json)
}

/// A spec file removed on drop (no tempfile crate in this workspace).
mod tempfile_path {
    pub struct TempPath(pub std::path::PathBuf);
    impl TempPath {
        pub fn with(contents: &str) -> TempPath {
            let p = std::env::temp_dir().join(format!(
                "synthnet-takeover-test-{}-{}.json",
                std::process::id(),
                contents.len()
            ));
            std::fs::write(&p, contents).expect("write spec");
            TempPath(p)
        }
    }
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn ping_avg_ms(out: &str, family: &str) -> f64 {
    out.lines()
        .filter(|l| l.starts_with("rtt"))
        .nth(if family == "6" { 1 } else { 0 })
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no IPv{family} ping summary in:\n{out}"))
}

#[test]
fn root_takeover_moves_addresses_routes_and_mac_runs_the_app_and_undoes_it() {
    let _g = serial();
    let (a, _b) = pair();
    let before = state(&a);
    let mac_before = a.mac("eth0").expect("MAC");
    let spec = spec_file(r#"{"ingress": {"latency": 20}, "egress": {"latency": 20}}"#);
    let script = "ip -o link show sn-app; ip -4 -o addr show sn-app; ip -4 route; ip -6 route show default; \
                  ping -c 3 -i 0.2 10.66.0.1 >/dev/null; ping -q -c 40 -i 0.05 10.66.0.1; \
                  ping -c 3 -i 0.2 fd66::1 >/dev/null; ping -6 -q -c 40 -i 0.05 fd66::1; exit 7";
    let out = a
        .command(SYNTHNET)
        .args(["takeover"])
        .arg(&spec.0)
        .args(["--", "sh", "-c", script])
        .output()
        .expect("run synthnet takeover");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "exit code: {stdout}\n{stderr}");
    // During: the addresses, the real gateway and the MAC are on the application's end.
    assert!(
        stdout.contains(&mac_before),
        "sn-app lacks eth0's MAC {mac_before}:\n{stdout}"
    );
    assert!(stdout.contains("inet 10.66.0.2/24"), "{stdout}");
    assert!(
        stdout.contains("default via 10.66.0.1 dev sn-app"),
        "{stdout}"
    );
    assert!(
        stdout.contains("default via fd66::1 dev sn-app"),
        "{stdout}"
    );
    let (v4, v6) = (ping_avg_ms(&stdout, "4"), ping_avg_ms(&stdout, "6"));
    println!("through takeover, 20 ms each way: IPv4 avg {v4:.3} ms, IPv6 avg {v6:.3} ms");
    // The delay applies both ways (accuracy is the bridge tests' business; a loaded
    // 2-core machine adds a spike now and then).
    assert!((39.8..46.0).contains(&v4), "IPv4 RTT {v4} ms:\n{stdout}");
    assert!((39.8..46.0).contains(&v6), "IPv6 RTT {v6} ms:\n{stdout}");
    // After: exactly as before.
    assert!(stderr.contains("undone"), "{stderr}");
    assert_eq!(state(&a), before, "takeover left A changed");
}

/// `RUST_LOG=warn` silences every info line, the bridge's among them: takeover learns
/// that its bridge is up from the bridge's readiness pipe (`bridge --ready-fd`), not
/// from a log line, so it starts all the same, runs the application behind the link,
/// exits with its code and puts everything back.
#[test]
fn root_takeover_starts_with_rust_log_warn() {
    let _g = serial();
    let (a, _b) = pair();
    let before = state(&a);
    let spec = spec_file(r#"{"ingress": {"latency": 15}, "egress": {"latency": 15}}"#);
    let script = "ping -c 3 -i 0.2 10.66.0.1 >/dev/null; ping -q -c 20 -i 0.05 10.66.0.1; exit 5";
    let t0 = Instant::now();
    let out = a
        .command(SYNTHNET)
        .env("RUST_LOG", "warn")
        .args(["takeover"])
        .arg(&spec.0)
        .args(["--api", "off", "--", "sh", "-c", script])
        .output()
        .expect("run synthnet takeover");
    let secs = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "exit code: {stdout}\n{stderr}");
    let v4 = ping_avg_ms(&stdout, "4");
    println!("RUST_LOG=warn takeover: {secs:.1} s in all; through 15 ms each way: avg {v4:.3} ms");
    // Behind the link (accuracy is the bridge tests' business).
    assert!((29.8..36.0).contains(&v4), "IPv4 RTT {v4} ms:\n{stdout}");
    // Quiet as asked: no info line, so the readiness came through the pipe.
    assert!(
        !stderr.contains(" INFO "),
        "info lines despite RUST_LOG=warn:\n{stderr}"
    );
    // Far from the 30 s a takeover waiting for a log line would have given up after.
    assert!(secs < 15.0, "took {secs:.1} s:\n{stderr}");
    assert_eq!(state(&a), before, "takeover left A changed");
}

#[test]
fn root_takeover_exits_3_and_stops_the_app_when_the_bridge_dies() {
    let _g = serial();
    let (a, _b) = pair();
    let before = state(&a);
    let mut child = a
        .command(SYNTHNET)
        .args([
            "takeover",
            "--",
            "sh",
            "-c",
            "trap 'echo app: TERM; exit 0' TERM; echo app: up; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run synthnet takeover");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut pid = None;
    // The bridge's pid, then the application running (the bridge is bridging by then).
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30).saturating_sub(t0.elapsed()))
            .unwrap_or_else(|_| panic!("no bridge pid and application in:\n{}", log.join("\n")));
        if let Some(p) = line.split("synthnet bridge started, pid ").nth(1) {
            pid = Some(p.trim().parse::<i32>().expect("pid"));
        }
        let running = line.contains("] running ");
        log.push(line);
        if running {
            break;
        }
    }
    let pid = pid.expect("the bridge's pid is logged before the application runs");
    // Time for the shell to set its trap.
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the bridge");
    let status = child.wait().expect("wait for takeover");
    let mut rest: Vec<String> = rx.try_iter().collect();
    log.append(&mut rest);
    let mut stdout = String::new();
    if let Some(mut o) = child.stdout.take() {
        use std::io::Read;
        let _ = o.read_to_string(&mut stdout);
    }
    let log = log.join("\n");
    assert_eq!(status.code(), Some(3), "{log}\n{stdout}");
    assert!(log.contains("the bridge died"), "{log}");
    assert!(
        stdout.contains("app: TERM"),
        "the application was not stopped: {stdout}"
    );
    assert_eq!(state(&a), before, "takeover left A changed");
}

#[test]
fn root_takeover_killed_by_sigkill_is_put_back_by_restore() {
    let _g = serial();
    let (a, _b) = pair();
    let before = state(&a);
    let mut child = a
        .command(SYNTHNET)
        .args(["takeover", "--api", "off"])
        .env_remove("ENTRY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run synthnet takeover");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut bridge = None;
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30).saturating_sub(t0.elapsed()))
            .unwrap_or_else(|_| panic!("no sidecar in:\n{}", log.join("\n")));
        if let Some(p) = line.split("synthnet bridge started, pid ").nth(1) {
            bridge = Some(p.trim().parse::<i32>().expect("pid"));
        }
        let up = line.contains("running as a sidecar");
        log.push(line);
        if up {
            break;
        }
    }
    let bridge = bridge.expect("the bridge's pid is logged");
    assert_ne!(state(&a), before, "takeover changed nothing");
    child.kill().expect("SIGKILL takeover");
    let _ = child.wait();
    // Left behind: sn-app, sn-wire, sn-hold, and an orphaned bridge.
    assert!(state(&a).contains("sn-app"), "{}", state(&a));
    let out = a
        .command(SYNTHNET)
        .args(["takeover", "--restore"])
        .output()
        .expect("run synthnet takeover --restore");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "takeover --restore: {err}");
    assert!(err.contains("put back"), "{err}");
    assert_eq!(state(&a), before, "--restore left A changed");
    let orphan_gone = !std::path::Path::new(&format!("/proc/{bridge}")).exists()
        || std::fs::read_to_string(format!("/proc/{bridge}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
    assert!(orphan_gone, "the orphaned bridge {bridge} still runs");
    println!(
        "SIGKILLed takeover put back by `takeover --restore` in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
