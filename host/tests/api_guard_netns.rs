//! The API's guard on a real bridge over real HTTP (issue 22, N5–N7): a token in the
//! URL only for the stats stream, the `Bearer` scheme in any case, one well-formed
//! `Host`, and warnings any client can cause kept to a few lines a second.
//! **These tests need root** (namespaces, raw sockets); each says so in its name.

mod common;

use common::files::TempDir;
use common::http::{request, Answer, API};
use common::rig::Rig;
use common::serial;
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use synthnet_testkit::traffic::in_ns;

const START: &str = r#"{"ingress":{"latency":5},"egress":{}}"#;
const TOKEN: &str = "s3cret-token-1234";

/// The status of `GET path` on a stream: only the head is read (a stream never ends).
fn stream_status(ns: &str, path: &str, headers: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {API}\r\n{headers}\r\n");
    in_ns(ns, move || {
        let mut s = std::net::TcpStream::connect(API)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(req.as_bytes())?;
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.windows(2).any(|w| w == b"\r\n") {
            let n = s.read(&mut buf)?;
            anyhow::ensure!(n > 0, "closed before a status line");
            got.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&got).into_owned();
        Ok(line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    })
    .join()
    .unwrap()
    .unwrap()
}

fn error_of(a: &Answer) -> String {
    a.json()["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn root_api_token_in_the_url_only_for_streams_and_bearer_in_any_case() {
    let _s = serial();
    let t0 = Instant::now();
    let dir = TempDir::new("agn1");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let tf = token_file.display().to_string();
    let rig = Rig::start("agn1", START, &["--api-token-file", &tf]);
    let ns = rig.topo.middle().name.clone();
    let json_ct = ("Content-Type", "application/json");
    let body = json!({"ingress": {"latency": 9}, "egress": {}}).to_string();
    let generation = || {
        let bearer = format!("Bearer {TOKEN}");
        request(
            &ns,
            API,
            "GET",
            "/healthz",
            &[("Authorization", &bearer)],
            b"",
        )
        .json()["generation"]
            .as_u64()
            .unwrap()
    };
    let g = generation();

    // A change with the token in the URL: refused, nothing changes.
    let q = format!("/api/v1/spec?access_token={TOKEN}");
    let a = request(&ns, API, "PUT", &q, &[json_ct], body.as_bytes());
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(error_of(&a).contains("only for streams"), "{}", a.text());
    let a = request(&ns, API, "PATCH", &q, &[json_ct], body.as_bytes());
    assert_eq!(a.status, 401, "{}", a.text());
    let r = format!("/api/v1/reset?access_token={TOKEN}");
    assert_eq!(request(&ns, API, "POST", &r, &[json_ct], b"{}").status, 401);
    // Nor a read that is not a stream.
    assert_eq!(request(&ns, API, "GET", &q, &[], b"").status, 401);
    assert_eq!(generation(), g);

    // The stream takes it (EventSource cannot set headers); a wrong one is refused.
    let s = format!("/api/v1/stats/stream?access_token={TOKEN}");
    assert_eq!(stream_status(&ns, &s, ""), 200);
    assert_eq!(
        stream_status(&ns, "/api/v1/stats/stream?access_token=wrong", ""),
        401
    );

    // The scheme in any case, with one space or more.
    for scheme in ["bearer", "BEARER", "Bearer ", "bEaReR"] {
        let v = format!("{scheme} {TOKEN}");
        let a = request(
            &ns,
            API,
            "GET",
            "/api/v1/spec",
            &[("Authorization", &v)],
            b"",
        );
        assert_eq!(a.status, 200, "{scheme:?}: {}", a.text());
    }
    let v = format!("bearer {TOKEN}");
    let a = request(
        &ns,
        API,
        "PUT",
        "/api/v1/spec",
        &[json_ct, ("Authorization", &v)],
        body.as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(generation(), g + 1);
    for bad in [
        format!("Basic {TOKEN}"),
        format!("bearer{TOKEN}"),
        "bearer x".into(),
    ] {
        let a = request(
            &ns,
            API,
            "GET",
            "/api/v1/spec",
            &[("Authorization", &bad)],
            b"",
        );
        assert_eq!(a.status, 401, "{bad:?}: {}", a.text());
    }
    println!(
        "query tokens and bearer case: test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn root_api_refuses_a_malformed_or_duplicated_host() {
    let _s = serial();
    let t0 = Instant::now();
    let rig = Rig::start("agn2", START, &[]);
    let ns = rig.topo.middle().name.clone();
    let json_ct = ("Content-Type", "application/json");
    let body = json!({"ingress": {"latency": 9}, "egress": {}}).to_string();
    let g = rig.spec()["generation"].as_u64().unwrap();
    for host in [
        "[::1]evil",
        "[::1]evil.example",
        "[::1",
        "[::1]:",
        "127.0.0.1:99999",
        "127.0.0.1:80:80",
        "user@127.0.0.1",
        "",
    ] {
        for (method, path) in [("GET", "/api/v1/spec"), ("PUT", "/api/v1/spec")] {
            let a = request(
                &ns,
                API,
                method,
                path,
                &[("Host", host), json_ct],
                body.as_bytes(),
            );
            assert_eq!(a.status, 400, "{method} with Host {host:?}: {}", a.text());
        }
    }
    // Two Host headers, the first ours: 400, whichever order.
    for hosts in [[API, "evil.example"], ["evil.example", API], [API, API]] {
        let a = request(
            &ns,
            API,
            "PUT",
            "/api/v1/spec",
            &[("Host", hosts[0]), ("Host", hosts[1]), json_ct],
            body.as_bytes(),
        );
        assert_eq!(a.status, 400, "Host {hosts:?}: {}", a.text());
        assert!(error_of(&a).contains("more than one Host"), "{}", a.text());
    }
    // An absolute-form target naming another host than the Host header.
    let a = request(
        &ns,
        API,
        "PUT",
        "http://evil.example/api/v1/spec",
        &[json_ct],
        body.as_bytes(),
    );
    assert_eq!(a.status, 400, "{}", a.text());
    assert_eq!(rig.spec()["generation"].as_u64().unwrap(), g);
    // Well-formed ones still work.
    for host in ["[::1]:8080", "[::1]", "127.0.0.1", "LOCALHOST:8080"] {
        let a = request(&ns, API, "GET", "/healthz", &[("Host", host)], b"");
        assert_eq!(a.status, 200, "Host {host:?}: {}", a.text());
    }
    println!(
        "malformed and duplicated Host: test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// N7: 400 commands to a stage that does not exist, from any client: a few warning
/// lines a second, then one that counts the rest — and each line names a few running
/// stages, not all of them.
#[test]
fn root_api_repeated_warnings_are_rate_limited() {
    let _s = serial();
    let t0 = Instant::now();
    let rig = Rig::start("agn3", START, &[]);
    let ns = rig.topo.middle().name.clone();
    let sent = Instant::now();
    let mut n = 0;
    while n < 400 || sent.elapsed() < Duration::from_millis(1200) {
        let a = request(
            &ns,
            API,
            "POST",
            "/api/v1/stages/ingress/default/nosuch/command",
            &[("Content-Type", "application/json")],
            b"{}",
        );
        assert_eq!(a.status, 404, "{}", a.text());
        n += 1;
    }
    let secs = sent.elapsed().as_secs_f64();
    // One more after a quiet second: the count of what was left out comes out.
    std::thread::sleep(Duration::from_millis(1100));
    let a = request(
        &ns,
        API,
        "POST",
        "/api/v1/stages/ingress/default/nosuch/command",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(a.status, 404);
    std::thread::sleep(Duration::from_millis(200));
    let logged = rig.bridge.count("not delivered");
    let most = 5 * (secs.ceil() as usize + 2);
    assert!(
        logged <= most,
        "{logged} warning lines for {n} bad commands in {secs:.1} s (at most {most})"
    );
    assert!(
        rig.bridge.count("similar lines left out") >= 1,
        "{}",
        rig.bridge.lines().join("\n")
    );
    println!(
        "{n} bad commands in {secs:.1} s: {logged} warning lines; test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
