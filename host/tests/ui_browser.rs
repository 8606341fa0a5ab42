//! The web UI in a real browser against the real bridge. `synthnet bridge --api` runs in
//! the middle namespace of a topology; Debian's `chromium`, driven by `chromedriver` over
//! W3C WebDriver (plain HTTP/JSON, spoken here with the suite's one HTTP client, `common::http`), runs in that same
//! namespace and loads the page from the bridge's loopback API. The test talks to both
//! from threads that entered the namespace. **These tests need root** (namespaces, raw
//! sockets) and the `chromium` and `chromium-driver` packages (`scripts/deps` installs
//! them); without either they fail and say so, never skip.
//!
//! - `root_ui_changes_latency_and_ping_follows_with_no_loss`: latency 20 → 80 ms each
//!   way through the page's inputs; ping RTT moves from 40 to 160 ms (median within
//!   0.5 ms) and a UDP stream running across the change loses nothing. Saves a
//!   screenshot (`qos-form-live-charts.png`).
//! - `root_ui_presets_rates_with_units_and_the_users_file`: a preset and a rate typed
//!   as "20 Mbit/s" apply; the spec file stays byte-identical and the page says what
//!   runs differs from it; applying an unchanged form says "nothing changed" and makes
//!   no new generation.
//!
//! Screenshots of each view go to `target/artifacts/`, or to `$SYNTHNET_SCREENSHOTS`
//! (`scripts/screenshots` sets `docs/ui`, where they are committed).
//! - `root_ui_shows_the_spec_and_names_a_refused_field`: the page shows the running
//!   spec's values and units, every control has a label and Tab walks the fields, and a
//!   refused change (loss 5) names `ingress.loss` in `#result` and changes nothing.
//! - `root_ui_sends_stage_commands_and_shows_counters_and_schedule`: `tx-stall` and
//!   `lb-hash` stages take commands from the page; a stall's backlog shows in the
//!   counters and drains on `reset`; a bad command is refused naming the problem; a
//!   schedule's progress shows.

mod common;

use common::bridge::pinned_topology;
use common::bridge::BridgeProc;
use common::files::SpecFile;
use common::serial;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use synthnet_testkit::netns::{self, Topology};
use synthnet_testkit::traffic;

/// The bridge's API port and chromedriver's, on the middle namespace's own loopback
/// (a fresh namespace: nothing else listens there).
const API_PORT: u16 = 18080;
const DRIVER_PORT: u16 = 19515;
const ENTER: &str = "\u{E007}";
const TAB: &str = "\u{E004}";

/// Sets of 100 pings until one's median RTT is within `tolerance_ms` of `expected_ms`,
/// at most five (as the bridge's latency accuracy test does: on a shared 2-core VM a
/// scheduling hiccup can spoil a set; a bridge really off fails them all). Every set's
/// (mean, median), and whether one passed.
fn rtt_sets(
    ns: &netns::Netns,
    target: &str,
    expected_ms: f64,
    tolerance_ms: f64,
) -> (Vec<(f64, f64)>, bool) {
    let mut sets = Vec::new();
    for _ in 0..5 {
        let (mean, median) = common::ping_rtts(ns, target, 100, "0.02");
        sets.push((mean, median));
        if (median - expected_ms).abs() < tolerance_ms {
            return (sets, true);
        }
    }
    (sets, false)
}

/// One request (`Connection: close`) to `port` on the loopback of namespace `ns`; the
/// status and the body as JSON (`Null` if empty, a string if not JSON).
fn http(
    ns: &str,
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let a = common::http::try_request(
        Some(ns),
        &format!("127.0.0.1:{port}"),
        method,
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
        Duration::from_secs(90),
    )?;
    let text = a.text();
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((a.status, value))
}

/// The bridge's API, in the middle namespace.
struct Api {
    ns: String,
}

impl Api {
    fn get(&self, path: &str) -> Value {
        let (status, v) = http(&self.ns, API_PORT, "GET", path, None)
            .unwrap_or_else(|e| panic!("API GET {path}: {e}"));
        assert_eq!(status, 200, "API GET {path}: {v}");
        v
    }

    /// Wait until the API answers `/healthz`.
    fn wait_ready(&self, bridge: &BridgeProc) {
        let t = Instant::now();
        loop {
            if let Ok((200, v)) = http(&self.ns, API_PORT, "GET", "/healthz", None) {
                if v["ok"] == true {
                    return;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the API never answered /healthz on 127.0.0.1:{API_PORT}; bridge log:\n{}",
                bridge.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---- chromedriver and a W3C WebDriver session --------------------------------------------

/// `chromedriver` in the middle namespace; killed on drop.
struct ChromeDriver {
    child: Child,
    ns: String,
}

impl ChromeDriver {
    fn start(ns: &netns::Netns) -> ChromeDriver {
        for (bin, pkg) in [
            ("/usr/bin/chromedriver", "chromium-driver"),
            ("/usr/bin/chromium", "chromium"),
        ] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: this test needs Debian's {pkg} package (scripts/deps installs it)"
            );
        }
        let child = ns
            .command("/usr/bin/chromedriver")
            .arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = ChromeDriver {
            child,
            ns: ns.name.clone(),
        };
        let t = Instant::now();
        loop {
            if let Ok((200, v)) = http(&d.ns, DRIVER_PORT, "GET", "/status", None) {
                if v["value"]["ready"] == true {
                    return d;
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver never became ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A headless Chromium session (as root it needs `--no-sandbox`).
    fn session(&self) -> Session {
        let profile = std::env::temp_dir().join(netns::unique("chromium"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let (status, v) = http(&self.ns, DRIVER_PORT, "POST", "/session", Some(&caps))
            .expect("new WebDriver session");
        assert_eq!(status, 200, "new WebDriver session: {v}");
        let id = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        Session {
            ns: self.ns.clone(),
            id,
            profile,
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser; closed (the browser process ends) on drop.
struct Session {
    ns: String,
    id: String,
    profile: PathBuf,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Session {
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.id);
        let (status, v) = http(&self.ns, DRIVER_PORT, method, &full, body.as_ref())
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Clear the field `css` and type `text` into it, as a user does.
    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Keys sent to the element that has the focus.
    fn keys(&self, text: &str) {
        let active = self.cmd("GET", "/element/active", None);
        let e = active[ELEMENT].as_str().expect("an active element");
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The `value` of the input `css`, or `None` while it does not exist.
    fn value_of(&self, css: &str) -> Option<String> {
        let v = self.js(&format!(
            "const e = document.querySelector({}); return e ? e.value : null;",
            Value::String(css.into())
        ));
        v.as_str().map(str::to_string)
    }

    fn text_of(&self, css: &str) -> String {
        let v = self.js(&format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            Value::String(css.into())
        ));
        v.as_str()
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_string()
    }

    /// `#result`'s state and text once its state is not "pending" or "idle".
    fn wait_result(&self, timeout: Duration) -> (String, String) {
        let t = Instant::now();
        loop {
            let v = self.js(
                "const r = document.querySelector('#result'); return [r.dataset.state, r.textContent];",
            );
            let state = v[0].as_str().unwrap_or_default().to_string();
            if state != "pending" && state != "idle" {
                return (state, v[1].as_str().unwrap_or_default().to_string());
            }
            assert!(t.elapsed() < timeout, "#result still says {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The page as a PNG (WebDriver answers base64).
    fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd("GET", "/screenshot", None);
        base64_decode(v.as_str().expect("base64 text")).expect("valid base64")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = http(
            &self.ns,
            DRIVER_PORT,
            "DELETE",
            &format!("/session/{}", self.id),
            None,
        );
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Bridge (with the API), chromedriver and a browser showing the page, in `topo`.
fn start_all(topo: &Topology, spec: &SpecFile) -> (BridgeProc, Api, ChromeDriver, Session) {
    let listen = format!("127.0.0.1:{API_PORT}");
    let bridge = BridgeProc::start(topo, &spec.path, &["--stats", "0", "--api", &listen]);
    let api = Api {
        ns: topo.middle().name.clone(),
    };
    api.wait_ready(&bridge);
    let driver = ChromeDriver::start(topo.middle());
    let browser = driver.session();
    browser.goto(&format!("http://{listen}/"));
    (bridge, api, driver, browser)
}

/// Wait until the page shows `want` in the input `css` (it fills its form from
/// GET /api/v1/spec after loading).
fn wait_value(browser: &Session, css: &str, want: &str) {
    let t = Instant::now();
    loop {
        let got = browser.value_of(css);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{css} shows {got:?}, expected {want:?}; #chains: {}",
            browser.text_of("#chains")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn root_ui_changes_latency_and_ping_follows_with_no_loss() {
    let _g = serial();
    let topo = pinned_topology("ui");
    let spec = SpecFile::new(
        "spec",
        r#"{"ingress": {"latency": 20}, "egress": {"latency": 20}}"#,
    );
    let (_bridge, api, _driver, browser) = start_all(&topo, &spec);
    wait_value(&browser, "#default-ingress-latency", "20");
    wait_value(&browser, "#default-egress-latency", "20");
    let generation = api.get("/api/v1/spec")["generation"].clone();

    // Before: 20 ms each way. Let the kernel settle after the namespaces were made.
    std::thread::sleep(Duration::from_secs(2));
    let (before, ok) = rtt_sets(&topo.a, netns::B_V4, 40.0, 0.5);
    eprintln!("20 ms each way: (mean, median) RTT of each set of 100 pings: {before:?} ms");
    assert!(ok, "RTT before {before:?} ms, configured 40 ms");

    // A UDP stream A → B across the change: 1000 datagrams/s for 6 s.
    let (a, b) = (topo.a.name.clone(), topo.b.name.clone());
    let dst = SocketAddr::new(netns::B_V4.parse().expect("an address"), 7400);
    let stream = std::thread::spawn(move || {
        traffic::udp_stream(
            &a,
            &b,
            dst,
            traffic::Stream {
                count: 6000,
                pps: 1000,
                size: 100,
                linger: Duration::from_millis(600),
            },
            |_| {},
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Through the page: type 80 into both latency fields, Enter applies.
    let t = Instant::now();
    browser.type_into("#default-ingress-latency", "80");
    browser.type_into("#default-egress-latency", &format!("80{ENTER}"));
    let (state, text) = browser.wait_result(Duration::from_secs(10));
    eprintln!(
        "#result after {:.0} ms: {text:?}",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(state, "applied", "#result: {text}");
    assert!(text.contains("Applied"), "#result: {text}");
    let r = stream
        .join()
        .expect("stream thread")
        .expect("the UDP stream ran");
    eprintln!(
        "UDP stream across the change: sent {}, lost {}",
        r.sent,
        r.lost()
    );
    assert_eq!(r.lost(), 0, "the change through the page lost packets");
    assert!(r.in_order() && r.duplicates() == 0);

    // The running spec says 80, one generation on.
    let now = api.get("/api/v1/spec");
    assert_eq!(now["spec"]["ingress"]["latency"], 80, "{now}");
    assert_eq!(now["spec"]["egress"]["latency"], 80, "{now}");
    assert_eq!(
        now["generation"].as_u64(),
        generation.as_u64().map(|g| g + 1),
        "{now}"
    );

    // After: 80 ms each way.
    let (after, ok) = rtt_sets(&topo.a, netns::B_V4, 160.0, 0.5);
    eprintln!("80 ms each way: (mean, median) RTT of each set of 100 pings: {after:?} ms");
    assert!(ok, "RTT after {after:?} ms, configured 160 ms");

    // The page as it is now (charts with the stream and the pings in them), kept.
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    let path = screenshot_dir().join("qos-form-live-charts.png");
    std::fs::write(&path, &png).expect("write the screenshot");
    eprintln!("screenshot: {} ({} bytes)", path.display(), png.len());
}

#[test]
fn root_ui_shows_the_spec_and_names_a_refused_field() {
    let _g = serial();
    let topo = pinned_topology("uiv");
    let spec = SpecFile::new(
        "spec",
        r#"{"ingress": {"latency": 20, "rate": 10000000}, "egress": {"latency": 20}}"#,
    );
    let (_bridge, api, _driver, browser) = start_all(&topo, &spec);
    wait_value(&browser, "#default-ingress-latency", "20");
    // The spec's values, with their units; fields left out are empty.
    assert_eq!(
        browser.value_of("#default-egress-latency").as_deref(),
        Some("20")
    );
    // Rates in the unit that fits, picked beside the field; loss in percent.
    assert_eq!(
        browser.value_of("#default-ingress-rate").as_deref(),
        Some("10")
    );
    assert_eq!(
        browser.js("const s = document.querySelector('#default-ingress-rate-scale'); return s.options[s.selectedIndex].text"),
        "Mbit/s"
    );
    assert_eq!(browser.text_of("#default-ingress-rate-hint"), "= 10 Mbit/s");
    assert_eq!(browser.text_of("#default-ingress-latency-unit"), "ms");
    assert_eq!(browser.text_of("#default-ingress-loss-unit"), "%");
    assert_eq!(
        browser.value_of("#default-ingress-loss").as_deref(),
        Some("")
    );
    assert_eq!(browser.text_of("#shape"), "SyntheticNetworkSimple");
    let before = api.get("/api/v1/spec");
    assert_eq!(
        browser.text_of("#generation"),
        before["generation"].to_string()
    );

    // Accessible: every control has a label, the result region is live, and Tab goes
    // from one field to the next.
    let unlabelled = browser.js(
        "return Array.from(document.querySelectorAll('input, select, textarea'))
           .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.id);",
    );
    assert_eq!(unlabelled, json!([]), "controls without a label");
    assert_eq!(
        browser.js("return document.querySelector('#result').getAttribute('aria-live')"),
        "polite"
    );
    assert_eq!(
        browser.js("return document.querySelector('#apply').tagName"),
        "BUTTON"
    );
    browser.click("#default-ingress-latency");
    browser.keys(TAB);
    assert_eq!(
        browser.js("return document.activeElement.id"),
        "default-ingress-jitter"
    );

    // Loss 500 % is refused; #result names the field and the reason, the field is
    // marked and focused, and nothing changed.
    browser.type_into("#default-ingress-loss", &format!("500{ENTER}"));
    let (state, text) = browser.wait_result(Duration::from_secs(10));
    eprintln!("#result: {text:?}");
    assert_eq!(state, "refused", "#result: {text}");
    assert!(
        text.contains("ingress.loss") && text.contains("must be within 0..=1"),
        "#result: {text}"
    );
    assert_eq!(
        browser.js("return document.activeElement.id"),
        "default-ingress-loss"
    );
    assert_eq!(
        browser.js(
            "return document.querySelector('#default-ingress-loss').getAttribute('aria-invalid')"
        ),
        "true"
    );
    let after = api.get("/api/v1/spec");
    assert_eq!(after["generation"], before["generation"], "{after}");
    assert_eq!(
        after["spec"], before["spec"],
        "the refused change changed the spec"
    );
}

/// Where to save screenshots of each view (`scripts/screenshots` sets it to `docs/ui`);
/// `target/artifacts` otherwise.
fn screenshot_dir() -> PathBuf {
    let d = std::env::var_os("SYNTHNET_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn root_ui_presets_rates_with_units_and_the_users_file() {
    let _g = serial();
    let topo = pinned_topology("uip");
    let spec = SpecFile::new(
        "spec",
        r#"{"ingress": {"latency": 20, "rate": 10000000}, "egress": {"latency": 20}}"#,
    );
    let file_before = std::fs::read(&spec.path).unwrap();
    let (_bridge, api, _driver, browser) = start_all(&topo, &spec);
    wait_value(&browser, "#default-ingress-latency", "20");
    let g0 = api.get("/api/v1/spec")["generation"].as_u64().unwrap();
    // A preset on egress, and a rate typed with its unit on ingress.
    browser.js("const p = document.querySelector('#default-egress-preset');
         p.value = 'Slow 3G'; p.dispatchEvent(new Event('change')); return null;");
    assert_eq!(
        browser.value_of("#default-egress-latency").as_deref(),
        Some("200")
    );
    browser.type_into("#default-ingress-rate", "20 Mbit/s");
    assert_eq!(browser.text_of("#default-ingress-rate-hint"), "= 20 Mbit/s");
    browser.keys(ENTER);
    let (state, text) = browser.wait_result(Duration::from_secs(10));
    assert_eq!(state, "applied", "#result: {text}");
    let now = api.get("/api/v1/spec");
    assert_eq!(now["generation"].as_u64(), Some(g0 + 1), "{now}");
    assert_eq!(now["spec"]["ingress"]["rate"], json!(20_000_000), "{now}");
    assert_eq!(now["spec"]["ingress"]["latency"], json!(20), "{now}");
    assert_eq!(now["spec"]["egress"]["latency"], json!(200), "{now}");
    assert_eq!(now["spec"]["egress"]["rate"], json!(400_000), "{now}");
    assert_eq!(
        now["plan"]["ingress"]["default"][0]["config"]["rate_bps"],
        json!(20_000_000),
        "{now}"
    );
    // The user's file is untouched, and the page says what runs differs from it.
    assert_eq!(std::fs::read(&spec.path).unwrap(), file_before);
    let path_text = wait_js(
        &browser,
        "document.querySelector('#spec-path').dataset.differs === 'true' && document.querySelector('#spec-path').textContent",
        "the page says what runs differs from the file",
        Duration::from_secs(5),
    );
    assert!(
        path_text.as_str().unwrap_or("").contains("differs"),
        "{path_text}"
    );
    std::fs::write(
        screenshot_dir().join("qos-form-presets-units.png"),
        browser.screenshot(),
    )
    .unwrap();
    // Apply again with nothing changed: said so, and no new generation.
    browser.js("document.querySelector('#result').dataset.state = 'idle'; return null;");
    browser.click("#apply");
    let (state, text) = browser.wait_result(Duration::from_secs(10));
    assert_eq!(state, "applied", "#result: {text}");
    assert!(text.contains("nothing changed"), "#result: {text}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(api.get("/api/v1/spec")["generation"].as_u64(), Some(g0 + 1));
    // A page loaded now starts its charts with the seconds the bridge already kept.
    // (One sample a second: wait until the bridge has kept five, so the oldest predates
    // the reload by about four seconds, more than a loaded CI machine takes to load the
    // page and fetch the history: with three, a page that took over a second to get
    // there failed the check below.)
    let kept_since = std::time::Instant::now();
    let kept = loop {
        let kept = api.get("/api/v1/stats/history")["samples"]
            .as_array()
            .unwrap()
            .len();
        if kept >= 5 || kept_since.elapsed() > Duration::from_secs(10) {
            break kept;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(kept >= 5, "the bridge kept {kept} s of stats");
    browser.js("location.reload(); return null;");
    wait_js(
        &browser,
        "document.readyState === 'complete' && typeof samples !== 'undefined' && performance.now() < 3000",
        "the page reloaded",
        Duration::from_secs(5),
    );
    wait_value(&browser, "#default-ingress-latency", "20");
    let charted = wait_js(
        &browser,
        // The oldest sample charted predates the page's load (navigation start).
        "samples.length >= 5 && Date.now() - samples[0].t > performance.now() && String(samples.length)",
        "the charts start with the kept history",
        Duration::from_secs(4),
    );
    eprintln!("after a reload the charts hold {charted} samples (the bridge kept {kept})");
    // A flow's protocol is a dropdown of names (synthetic-network's numbers behind it),
    // and its address takes CIDR text.
    browser.click("#add-flow");
    let proto = browser.js("const s = document.querySelector('#flow1-match-protocol');
         return s ? [s.tagName, s.options[s.selectedIndex].text] : null;");
    assert_eq!(proto, json!(["SELECT", "udp"]));
    browser.js(
        "document.querySelector('#flow1-match-protocol').value = '6';
         document.querySelector('#flow1-match-ip').value = '10.77.0.0/24'; return null;",
    );
    let flow = browser.js("harvest(); return work.flows[0].flow;");
    assert_eq!(flow["protocol"], json!(6), "{flow}");
    assert_eq!(flow["ip"], json!("10.77.0.0/24"), "{flow}");
    browser.click("#revert");

    // Save is there for downloading what runs.
    assert_eq!(
        browser.js("return document.querySelector('#save').textContent"),
        "Save"
    );
}

// ---- stage commands, plugin counters and the schedule ------------------------------------

/// Wait until `script` (a JS expression) is truthy in the page; its last value on timeout.
fn wait_js(browser: &Session, script: &str, what: &str, timeout: Duration) -> Value {
    let t = Instant::now();
    loop {
        let v = browser.js(&format!("return {script};"));
        if v.as_bool().unwrap_or(false) || (v.is_string() && v != "") {
            return v;
        }
        assert!(
            t.elapsed() < timeout,
            "{what}: still {v} after {timeout:?}; #chains: {}",
            browser.text_of("#chains")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The reply box `css` once its state is not "pending" or "idle": (state, text).
fn wait_reply(browser: &Session, css: &str) -> (String, String) {
    let sel = Value::String(css.into());
    wait_js(
        browser,
        &format!(
            "(() => {{ const r = document.querySelector({sel});
               return r && r.dataset.state !== 'pending' && r.dataset.state !== 'idle'; }})()"
        ),
        css,
        Duration::from_secs(10),
    );
    let v = browser.js(&format!(
        "const r = document.querySelector({sel}); return [r.dataset.state, r.textContent];"
    ));
    (
        v[0].as_str().unwrap_or_default().to_string(),
        v[1].as_str().unwrap_or_default().to_string(),
    )
}

/// The value the page shows for the plugin counter `name` of the stage whose counters
/// box is `css` (`None` while it shows none).
fn counter_in_page(browser: &Session, css: &str, name: &str) -> Option<u64> {
    let sel = Value::String(format!("{css} [data-counter=\"{name}\"]"));
    let v = browser.js(&format!(
        "const e = document.querySelector({sel}); return e ? e.textContent : null;"
    ));
    v.as_str()?.split_whitespace().last()?.parse().ok()
}

/// A UDP stream of `count` 1000-byte datagrams A → B at 1000/s to `port`: the report.
fn udp_a_to_b(topo: &Topology, port: u16, count: u64) -> traffic::UdpReport {
    let dst = SocketAddr::new(netns::B_V4.parse().expect("an address"), port);
    traffic::udp_stream(
        &topo.a.name,
        &topo.b.name,
        dst,
        traffic::Stream {
            count,
            pps: 1000,
            size: 1000,
            linger: Duration::from_millis(500),
        },
        |_| {},
    )
    .expect("the UDP stream ran")
}

/// **Needs root.** A native spec with `tx-stall` (scaled: it stalls after 100 kB) on
/// A → B and `lb-hash` on B → A, and a schedule of two commands (one due at once, one
/// in ten minutes). From the page: `status` answers; traffic stalls the link and the
/// stage's `backlog_packets` counter shows the 100 parked packets; `reset` flushes them
/// (the counter drains to 0) and traffic passes again; bad JSON and an unknown command
/// are refused, naming the problem, with the input focused; the schedule's timeline
/// shows one entry done and the next.
#[test]
fn root_ui_sends_stage_commands_and_shows_counters_and_schedule() {
    let _g = serial();
    let topo = pinned_topology("uicmd");
    let spec = SpecFile::new(
        "ui-cmd",
        r#"{"ingress": [{"plugin": "tx-stall", "name": "tx", "config": {
               "after_bytes": 100000, "backlog_packets": 100, "watchdog_ms": 500}}],
            "egress": [{"plugin": "lb-hash", "name": "lb", "config": {"targets": ["t1", "t2"]}}],
            "schedule": [
              {"at_s": 0.5, "command": {"stage": "egress/default/lb", "command": {"op": "status"}}},
              {"at_s": 600, "command": {"stage": "ingress/default/tx", "command": {"cmd": "reset"}}}]}"#,
    );
    let (_bridge, api, _driver, browser) = start_all(&topo, &spec);
    let tx = "#default-ingress-tx";
    wait_js(
        &browser,
        &format!("!!document.querySelector('{tx}-command')"),
        "the command control of stage tx",
        Duration::from_secs(15),
    );
    assert!(
        browser
            .js("return !!document.querySelector('#default-egress-lb-cmd-predict')")
            .as_bool()
            == Some(true),
        "lb-hash offers predict"
    );
    // Every control still has a label (the command inputs included).
    let unlabelled = browser.js(
        "return Array.from(document.querySelectorAll('input, select, textarea'))
           .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.id);",
    );
    assert_eq!(unlabelled, json!([]), "controls without a label");

    // status, from its quick button: the plugin's reply, pretty-printed.
    browser.click(&format!("{tx}-cmd-status"));
    let (state, text) = wait_reply(&browser, &format!("{tx}-command-reply"));
    eprintln!("status reply: {text}");
    assert_eq!(state, "answered", "{text}");
    assert!(
        text.contains("\"counters\"") && text.contains('\n'),
        "{text}"
    );

    // Traffic stalls the link: 300 datagrams of 1000 bytes; about 100 kB pass, the next
    // 100 are parked, the rest dropped. The page shows the backlog.
    let r = udp_a_to_b(&topo, 7400, 300);
    eprintln!(
        "before the reset: sent {}, received {}",
        r.sent,
        r.received.len()
    );
    assert!(
        r.received.len() < 120,
        "the stage stalled: {} of 300 arrived",
        r.received.len()
    );
    let counters = format!("{tx}-counters");
    let t = Instant::now();
    while counter_in_page(&browser, &counters, "backlog_packets") != Some(100) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "backlog_packets in the page: {}",
            browser.text_of(&counters)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("stalled, the page shows: {}", browser.text_of(&counters));
    assert_eq!(counter_in_page(&browser, &counters, "stalled"), Some(1));

    // reset, from its quick button: the backlog is flushed, the counter drains to 0.
    browser.click(&format!("{tx}-cmd-reset"));
    let (state, text) = wait_reply(&browser, &format!("{tx}-command-reply"));
    eprintln!("reset reply: {text}");
    assert_eq!(state, "answered", "{text}");
    assert!(text.contains("\"flushed_packets\": 100"), "{text}");
    let t = Instant::now();
    while counter_in_page(&browser, &counters, "backlog_packets") != Some(0) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "backlog_packets in the page after the reset: {}",
            browser.text_of(&counters)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counter_in_page(&browser, &counters, "stalled"), Some(0));
    assert_eq!(counter_in_page(&browser, &counters, "resets"), Some(1));
    // Traffic resumes: 50 kB, under the trigger, all arrive.
    let r = udp_a_to_b(&topo, 7401, 50);
    eprintln!("after the reset: sent {}, lost {}", r.sent, r.lost());
    assert_eq!(r.lost(), 0, "traffic after the reset");

    // Bad JSON is not sent: the reply names it and the input is focused and marked.
    let lb = "#default-egress-lb-command";
    browser.type_into(lb, &format!("{{\"op\": {ENTER}"));
    let (state, text) = wait_reply(&browser, &format!("{lb}-reply"));
    eprintln!("bad JSON: {text}");
    assert_eq!(state, "refused", "{text}");
    assert!(text.contains("command: the JSON does not parse"), "{text}");
    assert_eq!(
        browser.js("return document.activeElement.id"),
        "default-egress-lb-command"
    );
    assert_eq!(
        browser.js(&format!(
            "return document.querySelector('{lb}').getAttribute('aria-invalid')"
        )),
        "true"
    );
    // An unknown command: the plugin refuses it (409), naming the field.
    browser.type_into(lb, &format!("{{\"op\": \"nope\"}}{ENTER}"));
    let (state, text) = wait_reply(&browser, &format!("{lb}-reply"));
    eprintln!("unknown command: {text}");
    assert_eq!(state, "refused", "{text}");
    assert!(
        text.contains("409") && text.contains("op: must be one of"),
        "{text}"
    );
    assert_eq!(
        browser.js("return document.activeElement.id"),
        "default-egress-lb-command"
    );
    // Nothing of that was applied as a spec.
    assert_eq!(
        browser.js("return document.querySelector('#result').dataset.state"),
        "idle"
    );

    // The schedule: the first command done, the second next (in ten minutes).
    wait_js(
        &browser,
        "!document.querySelector('#schedule-box').hidden
           && document.querySelectorAll('#schedule-steps li[data-state=done]').length === 1",
        "the schedule's timeline",
        Duration::from_secs(10),
    );
    let items = browser.js(
        "return Array.from(document.querySelectorAll('#schedule-steps li'))
           .map(l => [l.dataset.state, l.textContent]);",
    );
    eprintln!(
        "schedule: {} / {items}",
        browser.text_of("#schedule-summary")
    );
    assert_eq!(items[0][0], "done", "{items}");
    assert!(
        items[0][1].as_str().unwrap_or("").contains("at 0.5 s"),
        "{items}"
    );
    assert_eq!(items[1][0], "next", "{items}");
    assert!(
        items[1][1]
            .as_str()
            .unwrap_or("")
            .contains("command ingress/default/tx"),
        "{items}"
    );
    assert!(
        browser
            .text_of("#schedule-summary")
            .starts_with("1 of 2 steps done"),
        "{}",
        browser.text_of("#schedule-summary")
    );
    // The commands counted per stage show next to it.
    let stats = api.get("/api/v1/stats");
    eprintln!("commands: {}", stats["commands"]);
    wait_js(
        &browser,
        "document.querySelector('#chains .stage[data-stage=\"ingress/default/tx\"] .stage-stats')
           .textContent.includes('commands: 2 answered')",
        "tx's command count",
        Duration::from_secs(5),
    );
    // The page as it is now: the native chain editor with commands and counters.
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    std::fs::write(screenshot_dir().join("native-chain-commands.png"), &png)
        .expect("write the screenshot");
}
