//! The HTTP API of a real `synthnet bridge` in real namespaces, over real HTTP.
//! **These tests need root** (namespaces, raw sockets); each says so in its name
//! (`root_…`) and fails — never skips — without it. They run one at a time.

mod common;

use common::bridge::pinned_topology;
use common::bridge::BridgeProc;
use common::files::SpecFile;
use common::http::{request, Answer};
use common::serial;
use serde_json::{json, Value};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;
use synthnet_testkit::netns::{Middle, Topology, A_V4, B_V4};
use synthnet_testkit::traffic::{self, in_ns};

const API: &str = "127.0.0.1:8080";

/// A topology with pinned neighbours and a bridge running `spec` with the API on.
struct Rig {
    topo: Topology,
    bridge: BridgeProc,
    spec: SpecFile,
}

impl Rig {
    fn start(tag: &str, spec: &str, extra: &[&str]) -> Rig {
        let topo = pinned_topology(tag);
        let spec = SpecFile::new("api", spec);
        let mut args = vec!["--stats", "0"];
        args.extend_from_slice(extra);
        let bridge = BridgeProc::start(&topo, &spec.path, &args);
        Rig { topo, bridge, spec }
    }

    fn ns(&self) -> &str {
        &self.topo.middle().name
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Answer {
        let json = [("Content-Type", "application/json")];
        let headers: &[(&str, &str)] = if method == "GET" { &[] } else { &json };
        request(self.ns(), API, method, path, headers, body.as_bytes())
    }

    fn get(&self, path: &str) -> Answer {
        self.call("GET", path, "")
    }

    fn generation(&self) -> u64 {
        self.get("/api/v1/spec").json()["generation"]
            .as_u64()
            .unwrap()
    }
}

/// An error answer: the status, served as JSON with `error`, `status` and `field`.
fn assert_error(a: &Answer, status: u16) -> Value {
    assert_eq!(a.status, status, "{}", a.text());
    assert!(
        a.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "error not served as JSON: {:?}",
        a.headers
    );
    let v = a.json();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert_eq!(v["status"], json!(status), "{v}");
    assert!(v.get("field").is_some(), "{v}");
    v
}

const START: &str = r#"{"ingress": {"latency": 20}, "egress": {"latency": 20}}"#;

/// The SHA-256 of the file at `path`, by coreutils' `sha256sum`.
fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn root_api_with_persist_the_file_holds_what_runs_and_sighup_rereads_it() {
    let _s = serial();
    // Without --persist first: changes live in memory, SIGHUP puts the file back.
    let rig = Rig::start("apih", START, &[]);
    let before = sha256(&rig.spec.path);
    let put = rig.call(
        "PUT",
        "/api/v1/spec",
        r#"{"ingress": {"latency": 45}, "egress": {}}"#,
    );
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        rig.get("/api/v1/spec").json()["differs_from_file"],
        json!(true)
    );
    rig.bridge.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = rig.get("/api/v1/spec").json();
        if now["generation"] == json!(3) {
            assert_eq!(now["spec"], serde_json::from_str::<Value>(START).unwrap());
            assert_eq!(now["differs_from_file"], json!(false));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP: no reload: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sha256(&rig.spec.path), before);
    drop(rig);

    // With --persist: every applied change is written to the file, atomically.
    let rig = Rig::start("apiq", START, &["--persist"]);
    let spec = rig.get("/api/v1/spec").json();
    assert_eq!(spec["persist"], json!(true));
    let put = rig.call(
        "PUT",
        "/api/v1/spec",
        r#"{"ingress": {"latency": 30}, "egress": {"latency": 30}}"#,
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let pv = put.json();
    assert_eq!(
        (pv["persisted"].clone(), pv["path"].clone()),
        (json!(true), json!(rig.spec.path))
    );
    assert_eq!(rig.spec.read()["ingress"]["latency"], json!(30));
    let patch = rig.call("PATCH", "/api/v1/spec", r#"{"egress": {"loss": 0.25}}"#);
    assert_eq!(patch.status, 200, "{}", patch.text());
    let now = rig.get("/api/v1/spec").json();
    assert_eq!(rig.spec.read(), now["spec"]);
    assert_eq!(
        rig.spec.read(),
        json!({"ingress": {"latency": 30}, "egress": {"latency": 30, "loss": 0.25}})
    );
    assert_eq!(now["differs_from_file"], json!(false));
    let reset = rig.call("POST", "/api/v1/reset", "");
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(
        rig.spec.read(),
        serde_json::from_str::<Value>(START).unwrap()
    );
}

#[test]
fn root_api_every_route_answers() {
    let _s = serial();
    let rig = Rig::start("apir", START, &[]);
    let h = rig.get("/healthz");
    assert_eq!((h.status, h.json()["ok"].clone()), (200, json!(true)));
    assert_eq!(
        rig.get("/version").json()["version"],
        json!(env!("CARGO_PKG_VERSION"))
    );
    let ui = rig.get("/");
    assert_eq!(ui.status, 200);
    assert!(ui.header("content-type").unwrap().starts_with("text/html"));
    assert!(ui.text().contains("synthnet"));

    let spec = rig.get("/api/v1/spec").json();
    assert_eq!(spec["generation"], json!(1));
    assert_eq!(spec["spec"], rig.spec.read());
    assert_eq!(
        spec["plan"]["ingress"]["default"][0]["config"]["delay_ms"],
        json!(20.0)
    );

    // Validate: a dry run that changes nothing.
    let ok = rig.call(
        "POST",
        "/api/v1/spec/validate",
        r#"{"ingress": {"loss": 0.5}}"#,
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert!(ok.json()["description"]
        .as_str()
        .unwrap()
        .contains("loss_ratio=0.5"));
    let bad = rig.call(
        "POST",
        "/api/v1/spec/validate",
        r#"{"ingress": {"loss": 5}}"#,
    );
    assert_eq!(assert_error(&bad, 422)["field"], json!("ingress.loss"));
    assert_eq!(rig.generation(), 1);

    // Replace, patch, reset: each answered with its generation; the user's file is
    // theirs (no --persist): not a byte of it changes, and GET says what runs differs.
    let sha_before = sha256(&rig.spec.path);
    assert_eq!(
        (spec["persist"].clone(), spec["differs_from_file"].clone()),
        (json!(false), json!(false))
    );
    let put = rig.call(
        "PUT",
        "/api/v1/spec",
        r#"{"ingress": {"latency": 30}, "egress": {"latency": 30}}"#,
    );
    assert_eq!(put.status, 200, "{}", put.text());
    let pv = put.json();
    assert_eq!(
        (
            pv["result"].clone(),
            pv["generation"].clone(),
            pv["persisted"].clone()
        ),
        (json!("applied"), json!(2), json!(false))
    );
    assert_eq!(
        sha256(&rig.spec.path),
        sha_before,
        "a PUT rewrote the spec file"
    );
    let now = rig.get("/api/v1/spec").json();
    assert_eq!(now["spec"]["ingress"]["latency"], json!(30));
    assert_eq!(now["differs_from_file"], json!(true));
    let patch = rig.call("PATCH", "/api/v1/spec", r#"{"egress": {"loss": 0.25}}"#);
    assert_eq!(patch.status, 200, "{}", patch.text());
    assert_eq!(patch.json()["generation"], json!(3));
    assert_eq!(
        rig.get("/api/v1/spec").json()["spec"],
        json!({"ingress": {"latency": 30}, "egress": {"latency": 30, "loss": 0.25}})
    );
    assert_eq!(
        sha256(&rig.spec.path),
        sha_before,
        "a PATCH rewrote the spec file"
    );
    let reset = rig.call("POST", "/api/v1/reset", "");
    assert_eq!(reset.status, 200, "{}", reset.text());
    assert_eq!(reset.json()["generation"], json!(4));
    let now = rig.get("/api/v1/spec").json();
    assert_eq!(now["spec"], serde_json::from_str::<Value>(START).unwrap());
    assert_eq!(now["differs_from_file"], json!(false));
    assert_eq!(
        sha256(&rig.spec.path),
        sha_before,
        "a reset rewrote the spec file"
    );

    // Counters, as published (the first publication comes within a second).
    std::thread::sleep(Duration::from_millis(1200));
    let stats = rig.get("/api/v1/stats").json();
    let dirs = stats["directions"].as_array().unwrap();
    assert_eq!(dirs.len(), 2);
    for d in dirs {
        for k in [
            "rx_packets",
            "tx_packets",
            "rx_bytes",
            "tx_bytes",
            "held",
            "tx_pps",
            "tx_bps",
        ] {
            assert!(d[k].is_number(), "{k} in {d}");
        }
        assert!(d["drops"]["hold_full"].is_number(), "{d}");
        assert_eq!(d["stages"][0]["plugin"], json!("latency"), "{d}");
    }
    assert!(stats["pool"]["capacity"].as_u64().unwrap() > 0);
    // The history the UI's charts start with: one sample a second, each the stats' JSON.
    let history = rig.get("/api/v1/stats/history").json();
    let samples = history["samples"].as_array().unwrap();
    assert!(!samples.is_empty() && samples.len() <= 120, "{history}");
    assert_eq!(samples[0]["directions"].as_array().unwrap().len(), 2);
    // The stream: its first event is the same JSON.
    let sse = request_first_event(rig.ns());
    assert!(sse.starts_with("event: stats\ndata: {"), "{sse}");
    let flows = rig.get("/api/v1/flows?direction=ingress&top=5");
    assert_eq!(flows.status, 200, "{}", flows.text());
    assert!(flows.json()["flows"].is_array());
    let bad_dir = rig.get("/api/v1/flows?direction=sideways");
    assert_eq!(assert_error(&bad_dir, 400)["field"], json!("direction"));
    let m = rig.get("/metrics");
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(m
        .text()
        .contains("synthnet_received_packets_total{direction=\"ingress\"}"));
    let q = rig.get("/qos");
    assert_eq!(q.status, 200, "{}", q.text());
    assert_eq!(
        q.json()["default_link"]["ingress"],
        json!({"latency": 20.0})
    );
    for dir in ["ingress", "egress"] {
        let p = rig.get(&format!("/top/{dir}.profile"));
        assert_eq!((p.status, p.body.len()), (200, 49_152));
        assert_eq!(p.header("cache-control"), Some("no-store"));
    }
    assert_error(&rig.get("/top/sideways.profile"), 404);
    assert_error(&rig.get("/no/such/route"), 404);
}

/// The first server-sent event of the stats stream.
fn request_first_event(ns: &str) -> String {
    use std::io::{Read, Write};
    in_ns(ns, || {
        let mut s = std::net::TcpStream::connect(API)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET /api/v1/stats/stream HTTP/1.1\r\nHost: {API}\r\n\r\n"
        )?;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains("\n\n") {
            let n = s.read(&mut buf)?;
            anyhow::ensure!(n > 0, "stream closed");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        // Past the first chunk-size line.
        Ok(body
            .split_once("\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(body))
    })
    .join()
    .unwrap()
    .unwrap()
}

#[test]
fn root_api_refuses_bad_requests_and_changes_nothing() {
    let _s = serial();
    let rig = Rig::start("apib", START, &[]);
    let before_file = rig.spec.read();
    // The engine clock's `now_ns` moves on; the rest must not.
    let spec_now = || {
        let mut v = rig.get("/api/v1/spec").json();
        v["clock"]["now_ns"] = json!(null);
        v
    };
    let before = spec_now();
    let ns = rig.ns().to_string();
    let json = ("Content-Type", "application/json");
    let big = vec![b' '; 10 << 20];
    let cases: Vec<(&str, Answer, u16, Option<&str>)> = vec![
        (
            "bad JSON",
            rig.call("PUT", "/api/v1/spec", "{\"ingress\": "),
            400,
            None,
        ),
        (
            "wrong type",
            rig.call("PUT", "/api/v1/spec", r#"{"ingress": {"latency": "x"}}"#),
            422,
            Some("ingress.latency"),
        ),
        (
            "unknown field",
            rig.call("PUT", "/api/v1/spec", r#"{"ingress": {"latancy": 5}}"#),
            422,
            None,
        ),
        (
            "out of range",
            rig.call("PATCH", "/api/v1/spec", r#"{"ingress": {"loss": 1.5}}"#),
            422,
            Some("ingress.loss"),
        ),
        (
            "10 MiB body",
            request(&ns, API, "PUT", "/api/v1/spec", &[json], &big),
            413,
            None,
        ),
        (
            "wrong content type",
            request(
                &ns,
                API,
                "PUT",
                "/api/v1/spec",
                &[("Content-Type", "text/plain")],
                START.as_bytes(),
            ),
            415,
            None,
        ),
        (
            "no content type",
            request(&ns, API, "POST", "/qos", &[], START.as_bytes()),
            415,
            None,
        ),
        (
            "foreign Origin",
            request(
                &ns,
                API,
                "PUT",
                "/api/v1/spec",
                &[json, ("Origin", "http://evil.example")],
                START.as_bytes(),
            ),
            403,
            None,
        ),
        (
            "foreign Host",
            request(
                &ns,
                API,
                "PUT",
                "/api/v1/spec",
                &[json, ("Host", "evil.example:8080")],
                START.as_bytes(),
            ),
            403,
            None,
        ),
        (
            "foreign Host, read",
            request(
                &ns,
                API,
                "GET",
                "/api/v1/spec",
                &[("Host", "evil.example")],
                b"",
            ),
            403,
            None,
        ),
        (
            "wrong method",
            rig.call("DELETE", "/api/v1/spec", ""),
            405,
            None,
        ),
        (
            "a schedule's command for a stage not in force then",
            rig.call(
                "PUT",
                "/api/v1/spec",
                r#"{"ingress": {}, "schedule": [{"at_s": 1, "command": {"stage": "ingress/default/latency", "command": {}}}]}"#,
            ),
            422,
            Some("schedule[0].command.stage"),
        ),
        (
            "refused by the plugin",
            rig.call(
                "PUT",
                "/api/v1/spec",
                r#"{"ingress": [{"plugin": "latency", "config": {"delay_ms": -1}}]}"#,
            ),
            422,
            Some("ingress/default/latency"),
        ),
    ];
    for (what, a, status, field) in &cases {
        let v = assert_error(a, *status);
        if let Some(f) = field {
            assert_eq!(v["field"], json!(f), "{what}: {v}");
        }
        if *what == "unknown field" {
            assert!(
                v["error"].as_str().unwrap().contains("latancy"),
                "{what}: {v}"
            );
        }
    }
    assert_eq!(spec_now(), before, "a refused request changed the spec");
    assert_eq!(
        rig.spec.read(),
        before_file,
        "a refused request changed the file"
    );
    // The page itself is served to a same-origin browser request.
    let own = request(
        &ns,
        API,
        "GET",
        "/",
        &[("Origin", "http://127.0.0.1:8080")],
        b"",
    );
    assert_eq!(own.status, 200);
}

#[test]
fn root_api_concurrent_changes_end_in_one_consistent_spec_and_file() {
    let _s = serial();
    let rig = Rig::start("apic", START, &["--persist"]);
    let ns = rig.ns().to_string();
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let ns = ns.clone();
            std::thread::spawn(move || {
                let body = json!({"ingress": {"latency": 10 + i}, "egress": {"latency": 10 + i}})
                    .to_string();
                request(
                    &ns,
                    API,
                    "PUT",
                    "/api/v1/spec",
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    let answers: Vec<Answer> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut generations: Vec<u64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 200, "{}", a.text());
            a.json()["generation"].as_u64().unwrap()
        })
        .collect();
    generations.sort_unstable();
    // Each change applied once, one after another.
    assert_eq!(generations, (2..52).collect::<Vec<_>>());
    let now = rig.get("/api/v1/spec").json();
    assert_eq!(now["generation"], json!(51));
    assert_eq!(now["spec"], rig.spec.read(), "file and running spec differ");
    // What runs is what the last applied request asked for.
    let last = answers
        .iter()
        .find(|a| a.json()["generation"] == json!(51))
        .unwrap();
    let _ = last;
    let latency = now["spec"]["ingress"]["latency"].as_u64().unwrap();
    assert_eq!(
        now["plan"]["ingress"]["default"][0]["config"]["delay_ms"],
        json!(latency as f64)
    );
    assert_eq!(now["spec"]["egress"]["latency"], json!(latency));
}

#[test]
fn root_api_changes_under_traffic_lose_nothing() {
    let _s = serial();
    let rig = Rig::start("apit", START, &[]);
    let ns = rig.ns().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let changer = std::thread::spawn(move || {
        let mut n = 0;
        let specs = [
            json!({"ingress": {"latency": 20}, "egress": {"latency": 20}}),
            json!({"ingress": {"latency": 21, "rate": 100_000_000}, "egress": {"latency": 21}}),
            json!({"ingress": {"latency": 22, "jitter": 0.5}, "egress": {"latency": 22}}),
        ];
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            let body = specs[n % specs.len()].to_string();
            let a = request(
                &ns,
                API,
                "PUT",
                "/api/v1/spec",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
            assert_eq!(a.status, 200, "{}", a.text());
            n += 1;
            std::thread::sleep(Duration::from_millis(150));
        }
        n
    });
    let dst = SocketAddr::new(B_V4.parse().unwrap(), 7001);
    let report = traffic::udp_stream(
        &rig.topo.a.name,
        &rig.topo.b.name,
        dst,
        traffic::Stream {
            count: 6000,
            pps: 2000,
            size: 100,
            linger: Duration::from_millis(500),
        },
        |_| {},
    )
    .expect("UDP stream");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let changes = changer.join().unwrap();
    assert!(changes >= 10, "only {changes} changes during the stream");
    assert_eq!(
        report.lost(),
        0,
        "{} of {} lost across {changes} changes",
        report.lost(),
        report.sent
    );
    assert_eq!(report.duplicates(), 0);
    assert!(rig.bridge.lines().iter().all(|l| !l.contains("refused")));
}

/// A Python snippet: parse OpenMetrics text from stdin with the `prometheus_client`
/// package's parser and print every sample as JSON.
const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

#[test]
fn root_api_metrics_parse_and_equal_the_stats() {
    let _s = serial();
    let rig = Rig::start("apim", r#"{"ingress": {"loss": 0.3}, "egress": {}}"#, &[]);
    let dst = SocketAddr::new(B_V4.parse().unwrap(), 7002);
    let stream = traffic::Stream {
        count: 500,
        pps: 1000,
        size: 64,
        linger: Duration::from_millis(200),
    };
    traffic::udp_stream(&rig.topo.a.name, &rig.topo.b.name, dst, stream, |_| {}).unwrap();
    // Quiet now: wait for two publications, then both views read the same one.
    std::thread::sleep(Duration::from_millis(2200));
    let metrics = rig.get("/metrics").text();
    let stats = rig.get("/api/v1/stats").json();
    let mut py = std::process::Command::new("python3")
        .args(["-c", PARSE_METRICS])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/deps installs it and prometheus-client)");
    use std::io::Write;
    py.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused /metrics: {}\n{metrics}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let sample = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|s| {
                s["name"] == json!(name) && labels.iter().all(|(k, v)| s["labels"][*k] == json!(v))
            })
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))["value"]
            .as_f64()
            .unwrap()
    };
    let mut checked = 0;
    for d in stats["directions"].as_array().unwrap() {
        let dir = d["direction"].as_str().unwrap();
        let l = [("direction", dir)];
        assert_eq!(
            sample("synthnet_received_packets_total", &l),
            d["rx_packets"].as_f64().unwrap()
        );
        assert_eq!(
            sample("synthnet_sent_packets_total", &l),
            d["tx_packets"].as_f64().unwrap()
        );
        assert_eq!(
            sample("synthnet_received_bytes_total", &l),
            d["rx_bytes"].as_f64().unwrap()
        );
        assert_eq!(
            sample("synthnet_sent_bytes_total", &l),
            d["tx_bytes"].as_f64().unwrap()
        );
        assert_eq!(
            sample("synthnet_held_packets", &l),
            d["held"].as_f64().unwrap()
        );
        for (cause, n) in d["drops"].as_object().unwrap() {
            let l = [("direction", dir), ("cause", cause.as_str())];
            assert_eq!(
                sample("synthnet_dropped_packets_total", &l),
                n.as_f64().unwrap(),
                "{dir} {cause}"
            );
            checked += 1;
        }
        for st in d["stages"].as_array().unwrap() {
            let l = [
                ("direction", dir),
                ("flow", "default"),
                ("stage", st["name"].as_str().unwrap()),
            ];
            assert_eq!(
                sample("synthnet_stage_received_packets_total", &l),
                st["counters"]["rx_packets"].as_f64().unwrap()
            );
            for (k, v) in st["plugin_counters"].as_object().unwrap() {
                let mut lc = l.to_vec();
                lc.push(("counter", k));
                assert_eq!(
                    sample("synthnet_plugin_counter_total", &lc),
                    v.as_f64().unwrap()
                );
            }
        }
    }
    assert!(checked > 10);
    // The loss plugin dropped about 30 % of what entered, and both views say so.
    let ingress = &stats["directions"][0];
    let lost = ingress["drops"]["plugin"].as_f64().unwrap();
    assert!(
        lost > 100.0 && lost < 200.0,
        "{lost} of 500 dropped at 30 %"
    );
}

/// synthetic-network's JS client's exact requests (client.js: `get`, `post` with every
/// QoS key, `profiles.*.get`), and what their answers must look like for it.
#[test]
fn root_api_synthetic_network_client_works_unmodified() {
    let _s = serial();
    let rig = Rig::start("apis", START, &[]);
    let ns = rig.ns().to_string();
    let host = "localhost:8080";
    // `get()`: a GET that carries a JSON content type.
    let got = request(
        &ns,
        API,
        "GET",
        "/qos",
        &[("Host", host), ("Content-Type", "application/json")],
        b"",
    );
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let a_ip = u32::from_le_bytes(A_V4.parse::<std::net::Ipv4Addr>().unwrap().octets());
    let qos = |rate: u64, loss: f64, latency: u64| json!({"rate": rate, "loss": loss, "latency": latency, "jitter": 0, "jitter_strength": 0, "reorder_packets": false});
    // `post()`: the whole config, every key, a flow keyed by A's address.
    let config = json!({
        "default_link": {"ingress": qos(100_000_000, 0.0, 5), "egress": qos(100_000_000, 0.0, 5)},
        "flows": [{"label": "from_a", "flow": {"ip": a_ip, "protocol": 17, "port_min": 40000, "port_max": 40010},
                   "link": {"ingress": qos(50_000_000, 0.0, 10), "egress": qos(50_000_000, 0.0, 10)}}]
    })
    .to_string();
    let len = config.len().to_string();
    let posted = request(
        &ns,
        API,
        "POST",
        "/qos",
        &[
            ("Host", host),
            ("Content-Type", "application/json"),
            ("Content-Length", &len),
        ],
        config.as_bytes(),
    );
    assert_eq!(posted.status, 200, "{}", posted.text());
    // What `update()` reads back: only its six keys, its flow shape, its ip number.
    let back = request(
        &ns,
        API,
        "GET",
        "/qos",
        &[("Host", host), ("Content-Type", "application/json")],
        b"",
    )
    .json();
    let keys = [
        "rate",
        "loss",
        "latency",
        "jitter",
        "jitter_strength",
        "reorder_packets",
    ];
    let qos_objects = [
        &back["default_link"]["ingress"],
        &back["default_link"]["egress"],
        &back["flows"][0]["link"]["ingress"],
        &back["flows"][0]["link"]["egress"],
    ];
    for q in qos_objects {
        for k in q.as_object().unwrap().keys() {
            assert!(
                keys.contains(&k.as_str()),
                "{k} is not one of synthetic-network's keys: {back}"
            );
        }
    }
    assert_eq!(
        back["default_link"]["ingress"]["rate"],
        json!(100_000_000.0)
    );
    assert_eq!(back["default_link"]["ingress"]["latency"], json!(5.0));
    assert_eq!(back["flows"][0]["label"], json!("from_a"));
    assert_eq!(
        back["flows"][0]["flow"],
        json!({"ip": a_ip, "protocol": 17, "port_min": 40000, "port_max": 40010})
    );
    assert_eq!(
        back["flows"][0]["link"]["egress"]["rate"],
        json!(50_000_000.0)
    );
    // A refused POST: a 4xx JSON error naming the field; nothing changes.
    let bad =
        json!({"default_link": {"ingress": {"loss": 2}, "egress": {}}, "flows": []}).to_string();
    let refused = request(
        &ns,
        API,
        "POST",
        "/qos",
        &[("Host", host), ("Content-Type", "application/json")],
        bad.as_bytes(),
    );
    assert_eq!(
        assert_error(&refused, 422)["field"],
        json!("default_link.ingress.loss")
    );

    // Traffic with known tuples: 40 datagrams A:40001 → B:40002 (ingress, keyed by
    // source), 25 datagrams B:40003 → A:40004 (egress, keyed by destination).
    let send = |from: &str, src: &str, dst: &str, n: usize, payload: usize| {
        let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        in_ns(from, move || {
            let s = UdpSocket::bind(src)?;
            for _ in 0..n {
                s.send_to(&vec![7u8; payload], dst)?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(())
        })
        .join()
        .unwrap()
        .unwrap();
    };
    let (a, b) = (&rig.topo.a.name, &rig.topo.b.name);
    send(
        a,
        &format!("{A_V4}:40001"),
        &format!("{B_V4}:40002"),
        40,
        100,
    );
    send(
        b,
        &format!("{B_V4}:40003"),
        &format!("{A_V4}:40004"),
        25,
        10,
    );
    std::thread::sleep(Duration::from_millis(2300));
    let decode = |dir: &str| -> Vec<(u64, u64, u64)> {
        let p = request(
            &ns,
            API,
            "GET",
            &format!("/top/{dir}.profile"),
            &[("Host", host), ("Content-Type", "application/octet-stream")],
            b"",
        );
        assert_eq!((p.status, p.body.len()), (200, 49_152), "{dir}");
        assert_eq!(p.header("content-type"), Some("application/octet-stream"));
        p.body
            .chunks(24)
            .map(|c| {
                let u = |i: usize| u64::from_le_bytes(c[i..i + 8].try_into().unwrap());
                (u(0), u(8), u(16))
            })
            .filter(|(packets, _, _)| *packets > 0)
            .collect()
    };
    let id = |port: u64| port << 48 | 17 << 32 | u64::from(a_ip);
    // 100-byte payload: 142-byte frames; 10-byte payload: 52, padded to 60.
    let ingress = decode("ingress");
    assert!(
        ingress.contains(&(40, 40 * (20 + 142 + 4) * 8, id(40001))),
        "ingress slots: {ingress:?}"
    );
    let egress = decode("egress");
    assert!(
        egress.contains(&(25, 25 * (20 + 60 + 4) * 8, id(40004))),
        "egress slots: {egress:?}"
    );
    // The same flows in our own flow list, as 5-tuples.
    let flows = rig.get("/api/v1/flows?direction=ingress").json();
    let f = flows["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["src_port"] == json!(40001))
        .unwrap_or_else(|| panic!("{flows}"));
    assert_eq!(
        (
            f["src"].clone(),
            f["dst"].clone(),
            f["dst_port"].clone(),
            f["packets"].clone(),
            f["bytes"].clone(),
            f["undelivered"].clone()
        ),
        (
            json!(A_V4),
            json!(B_V4),
            json!(40002),
            json!(40),
            json!(40 * 142),
            json!(0)
        )
    );
}

#[test]
fn root_api_port_in_use_token_and_off() {
    let _s = serial();
    // A busy port: a clear error that says what to do.
    let topo = Topology::create("apip", Middle::Synthnet).expect("topology");
    let (tx, rx) = std::sync::mpsc::channel();
    let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
    let holder = in_ns(&topo.middle().name, move || {
        let l = std::net::TcpListener::bind("127.0.0.1:8080")?;
        tx.send(()).ok();
        let _ = hold_rx.recv();
        drop(l);
        Ok(())
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let spec = SpecFile::new("api", START);
    let out = topo
        .middle()
        .command(env!("CARGO_BIN_EXE_synthnet"))
        .args(["bridge", "outer", "inner"])
        .arg(&spec.path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("already in use") && err.contains("--api off"),
        "{err}"
    );
    hold_tx.send(()).unwrap();
    holder.join().unwrap().unwrap();
    // --api off: nothing listens.
    let b = BridgeProc::start(&topo, &spec.path, &["--stats", "0", "--api", "off"]);
    let refused = in_ns(&topo.middle().name, || {
        Ok(std::net::TcpStream::connect("127.0.0.1:8080").is_err())
    })
    .join()
    .unwrap()
    .unwrap();
    assert!(refused, "--api off still listens");
    drop(b);
    // A token: needed everywhere but /healthz and the page.
    let token = spec.dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let tok = token.to_str().unwrap();
    let _b = BridgeProc::start(
        &topo,
        &spec.path,
        &["--stats", "0", "--api-token-file", tok, "--persist"],
    );
    let ns = topo.middle().name.clone();
    assert_error(&request(&ns, API, "GET", "/api/v1/spec", &[], b""), 401);
    assert_error(
        &request(
            &ns,
            API,
            "GET",
            "/api/v1/spec",
            &[("Authorization", "Bearer wrong")],
            b"",
        ),
        401,
    );
    let ok = request(
        &ns,
        API,
        "GET",
        "/api/v1/spec",
        &[("Authorization", "Bearer s3cret")],
        b"",
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(request(&ns, API, "GET", "/healthz", &[], b"").status, 200);
    // synthnet ctl with the token file.
    let ctl = topo
        .middle()
        .command(env!("CARGO_BIN_EXE_synthnet"))
        .args([
            "ctl",
            "--api-token-file",
            tok,
            "patch",
            r#"{"ingress": {"latency": 33}}"#,
        ])
        .output()
        .unwrap();
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert_eq!(spec.read()["ingress"]["latency"], json!(33));
    let ctl = topo
        .middle()
        .command(env!("CARGO_BIN_EXE_synthnet"))
        .args([
            "ctl",
            "--token-file",
            tok,
            "patch",
            r#"{"ingress": {"latency": -1}}"#,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&ctl.stderr);
    assert!(
        !ctl.status.success() && err.contains("ingress.latency"),
        "{err}"
    );
}
