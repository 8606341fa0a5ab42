//! Commands into running plugins on the live bridge, in real namespaces: the HTTP route
//! and its errors, `synthnet ctl command`, the command log, the metrics, and a
//! schedule's command at its time. The testbed plugin parks packets and releases them
//! on command, so a command's effect is seen on the wire.
//! **These tests need root** (namespaces, raw sockets); each says so in its name
//! (`root_…`) and fails — never skips — without it. They run one at a time.

mod common;

use common::bridge::ctl;
use common::replay::{replay_ingress, write_pcap};
use common::rig::{Rig, API};
use common::serial;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use synthnet_testkit::netns::B_V4;
use synthnet_testkit::traffic::in_ns;

fn testbed() -> &'static str {
    synthnet_runtime::registry::test_only_path("testbed").expect("testbed is built")
}

/// The testbed (parks the first `park` packets, answers commands) then a latency stage
/// (takes no commands), on ingress.
fn spec(park: u64) -> String {
    format!(
        r#"{{"ingress": [{{"plugin": {:?}, "name": "tb", "config": {{"park": {park}, "commands": true}}}},
                        {{"plugin": "latency", "config": {{"delay_ms": 1}}}}],
            "egress": []}}"#,
        testbed()
    )
}

/// The rig, with IPv6 off on A and B: their own IPv6 chatter (router solicitations,
/// listener reports) would take more of the testbed's parking places.
fn quiet_rig(tag: &str, spec: &str, extra: &[&str]) -> Rig {
    let rig = Rig::start(tag, spec, extra);
    for ns in [&rig.topo.a, &rig.topo.b] {
        ns.sysctl("net.ipv6.conf.eth0.disable_ipv6", "1").unwrap();
    }
    rig
}

/// Datagrams B received on `port` within `wait`, by their first byte.
fn receive(rig: &Rig, port: u16, wait: Duration) -> std::thread::JoinHandle<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = in_ns(&rig.topo.b.name, move || {
        let sock = UdpSocket::bind(SocketAddr::new(B_V4.parse().unwrap(), port))?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        tx.send(()).ok();
        let (mut got, mut buf, t) = (Vec::new(), [0u8; 64], Instant::now());
        while t.elapsed() < wait {
            if let Ok(n) = sock.recv(&mut buf) {
                if n > 0 {
                    got.push(buf[0]);
                }
            }
        }
        Ok(got)
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    std::thread::spawn(move || h.join().unwrap().unwrap())
}

/// `got` (datagrams 0..n by arrival) is what a parking stage makes of them: the first
/// `j ≥ 1` were parked and arrived after all the others (`[j, …, n-1, 0, …, j-1]`).
/// Returns `j`. (Not always the stage's whole parking count: packets of the hosts' own
/// — an IPv6 listener report — may have taken some places first.)
fn parked_first(got: &[u8], n: u8) -> usize {
    let j = got.first().copied().unwrap_or(0) as usize;
    let want: Vec<u8> = (j as u8..n).chain(0..j as u8).collect();
    assert!(
        j >= 1 && got == want,
        "not a parked prefix released last: {got:?}"
    );
    j
}

fn send(rig: &Rig, port: u16, n: u8) {
    in_ns(&rig.topo.a.name, move || {
        let sock = UdpSocket::bind("0.0.0.0:0")?;
        for k in 0..n {
            sock.send_to(&[k; 20], SocketAddr::new(B_V4.parse().unwrap(), port))?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })
    .join()
    .unwrap()
    .unwrap();
}

/// `n` UDP frames, one every `gap_ns`, as a nanosecond pcap file.
fn write_capture(path: &std::path::Path, n: u64, gap_ns: u64) {
    let frames: Vec<(u64, Vec<u8>)> = (0..n)
        .map(|k| {
            let mut f = synthnet_testkit::apps::udp_template(100);
            f[42..50].copy_from_slice(&k.to_le_bytes());
            (1_700_000_000_000_000_000 + k * gap_ns, f)
        })
        .collect();
    write_pcap(path, &frames);
}

fn command(rig: &Rig, stage: &str, body: &str) -> common::http::Answer {
    rig.call("POST", &format!("/api/v1/stages/{stage}/command"), body)
}

/// The route hands a command to a running stage and answers its reply; the parked
/// packets it releases cross; every error has the API's JSON shape; `synthnet ctl
/// command` does the same; each command is in the command log with its engine time
/// and counted in `/metrics` and the stats.
#[test]
fn root_commands_reach_running_stages() {
    let _s = serial();
    let log_dir = std::env::temp_dir().join(synthnet_testkit::netns::unique("cmdlog"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = log_dir.join("commands.jsonl");
    let rig = quiet_rig("cmd", &spec(5), &["--command-log", log.to_str().unwrap()]);
    // 10 datagrams: the first 5 are parked, the rest cross.
    let rx = receive(&rig, 7200, Duration::from_millis(600));
    send(&rig, 7200, 10);
    std::thread::sleep(Duration::from_millis(100));
    let a = command(&rig, "ingress/default/tb", r#"{"echo": "hi"}"#);
    assert_eq!(a.status, 200, "{}", a.text());
    let v = a.json();
    assert_eq!(
        (v["echo"].clone(), v["parked"].clone()),
        (json!("hi"), json!(5))
    );
    let at: u64 = a.header("x-synthnet-at-ns").unwrap().parse().unwrap();
    assert_eq!(
        v["now_ns"],
        json!(at),
        "the command ran at the engine time answered"
    );
    let a = command(&rig, "ingress/default/tb", r#"{"release": 0}"#);
    assert_eq!((a.status, a.json()), (200, json!({"released": 5})));
    let got = rx.join().unwrap();
    parked_first(&got, 10);

    // Errors, in the API's shape; nothing changes.
    let generation = rig.spec()["generation"].clone();
    for (stage, body, status, needle) in [
        ("ingress/default/latency", "{}", 409, "takes no commands"),
        (
            "ingress/default/tb",
            r#"{"nonsense": 1}"#,
            409,
            "unknown command",
        ),
        ("ingress/default/nope", "{}", 404, "no stage"),
        ("sideways/default/tb", "{}", 404, "no such stage"),
        ("ingress/default/tb", "{not json", 400, "not valid JSON"),
    ] {
        let a = command(&rig, stage, body);
        assert_eq!(a.status, status, "{stage} {body}: {}", a.text());
        let v = a.json();
        assert_eq!(v["status"], json!(status), "{v}");
        assert!(v["error"].as_str().unwrap().contains(needle), "{v}");
        assert!(v.get("field").is_some(), "{v}");
        if status == 409 {
            assert_eq!(v["field"], json!(stage), "{v}");
        }
    }
    let big = format!(r#""{}""#, "x".repeat(70_000));
    assert_eq!(command(&rig, "ingress/default/tb", &big).status, 413);
    assert_eq!(rig.spec()["generation"], generation);

    // synthnet ctl command, from the bridge's namespace.
    let ctl_command =
        |stage: &str, json: &str| ctl(rig.topo.middle(), &["--api", API, "command", stage, json]);
    let o = ctl_command("ingress/default/tb", r#"{"echo": 7}"#);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["echo"], json!(7));
    let o = ctl_command("ingress/default/latency", "{}");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("takes no commands") && err.contains("409"),
        "{err}"
    );

    // The log: every command a plugin saw (refused ones too), in order, with its time.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // (Built-in plugins refuse with the SDK's default answer: they saw the command.)
    let commands: Vec<(Value, Value)> = lines
        .iter()
        .map(|l| (l["stage"].clone(), l["command"].clone()))
        .collect();
    let (tb, lat) = (
        json!("ingress/default/tb"),
        json!("ingress/default/latency"),
    );
    assert_eq!(
        commands,
        [
            (tb.clone(), json!({"echo": "hi"})),
            (tb.clone(), json!({"release": 0})),
            (lat.clone(), json!({})),
            (tb.clone(), json!({"nonsense": 1})),
            (tb.clone(), json!({"echo": 7})),
            (lat.clone(), json!({})),
        ],
        "{text}"
    );
    assert_eq!(lines[0]["at_ns"], json!(at));
    assert!(lines
        .windows(2)
        .all(|w| w[0]["at_ns"].as_u64() <= w[1]["at_ns"].as_u64()));
    assert!(lines[3]["refused"]
        .as_str()
        .unwrap()
        .contains("unknown command"));
    assert!(lines[0].get("refused").is_none() && lines[0].get("source").is_none());
    // Counted per stage (the stats at once; /metrics too).
    let stats = rig.call("GET", "/api/v1/stats", "").json();
    assert_eq!(
        stats["commands"],
        json!({"ingress/default/tb": {"answered": 3, "refused": 1},
               "ingress/default/latency": {"answered": 0, "refused": 2}}),
        "{stats}"
    );
    let metrics = rig.call("GET", "/metrics", "").text();
    assert!(
        metrics.contains(r#"synthnet_stage_commands_total{direction="ingress",flow="default",stage="tb",result="answered"} 3"#),
        "{metrics}"
    );
    // The log replays: the same spec over a second of traffic, the commands at their
    // times; twice the same bytes, and not what the replay without them writes.
    let pcap = log_dir.join("in.pcap");
    write_capture(&pcap, 100, 10_000_000);
    let spec_file = rig.spec_file.path.clone();
    let replay = |out: &str, with_log: bool| {
        let out = log_dir.join(out);
        let summary = replay_ingress(&spec_file, &pcap, &out, with_log.then_some(&*log), None);
        (std::fs::read(&out).unwrap(), summary)
    };
    let (a, summary) = replay("a.pcap", true);
    assert!(summary.contains("commands: 6 (3 refused)"), "{summary}");
    assert_eq!(
        a,
        replay("b.pcap", true).0,
        "two replays of one command log differ"
    );
    assert_ne!(a, replay("plain.pcap", false).0);
    drop(rig);
    let _ = std::fs::remove_dir_all(&log_dir);
}

/// A schedule's command reaches its stage at its time on the live bridge (within 1 ms
/// on the engine clock), and the log says it came from the schedule.
#[test]
fn root_a_schedules_command_runs_at_its_time() {
    let _s = serial();
    let log_dir = std::env::temp_dir().join(synthnet_testkit::netns::unique("cmdsched"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = log_dir.join("commands.jsonl");
    let rig = quiet_rig(
        "cmdsch",
        &spec(3),
        &["--command-log", log.to_str().unwrap()],
    );
    let rx = receive(&rig, 7201, Duration::from_millis(900));
    send(&rig, 7201, 6);
    let mut scheduled: Value = serde_json::from_str(&spec(3)).unwrap();
    scheduled["schedule"] = json!([
        {"at_s": 0.3, "command": {"stage": "ingress/default/tb", "command": {"release": 0}}}
    ]);
    // A new spec: the same stages (kept, parked packets and all), and the schedule.
    rig.put(&scheduled);
    let started = rig.spec()["schedule"]["started_at_ns"].as_u64().unwrap();
    let got = rx.join().unwrap();
    parked_first(&got, 6);
    let spec = rig.spec();
    assert_eq!(spec["schedule"]["done"], json!(1), "{spec}");
    // On time: within 1 ms on the engine clock. The bridge's thread may be kept off the
    // CPU for longer on a busy machine: then the same spec again (a new schedule, the
    // stages kept), up to 3 times in all.
    let mut lateness = Vec::new();
    let mut started = started;
    for attempt in 1..=3 {
        let t = Instant::now();
        let line = loop {
            let text = std::fs::read_to_string(&log).unwrap();
            if let Some(l) = text.lines().nth(attempt - 1) {
                break serde_json::from_str::<Value>(l).unwrap();
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no command logged: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(line["source"], json!("schedule"), "{line}");
        assert_eq!(line["command"], json!({"release": 0}));
        assert_eq!(line["stage"], json!("ingress/default/tb"));
        let at = line["at_ns"].as_u64().unwrap();
        let late = at - (started + 300_000_000);
        eprintln!("the schedule's command came {late} ns after its time");
        lateness.push(late);
        if late < 1_000_000 {
            break;
        }
        rig.put(&scheduled);
        started = rig.spec()["schedule"]["started_at_ns"].as_u64().unwrap();
    }
    assert!(
        lateness.iter().any(|&l| l < 1_000_000),
        "late by {lateness:?} ns"
    );
    drop(rig);
    let _ = std::fs::remove_dir_all(&log_dir);
}
