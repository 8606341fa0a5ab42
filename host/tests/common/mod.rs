//! Helpers shared by the integration tests: build engines from built-in or test plugins,
//! wasm or native, and run them on a virtual clock; and run the real `synthnet bridge` in
//! a namespace topology ([`BridgeProc`], [`SpecFile`], ping RTTs).
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use synthnet_core::clock::VirtualClock;
use synthnet_core::{AppId, Engine, PacketPool};
use synthnet_runtime::DEFAULT_MEMORY_LIMIT;
use synthnet_runtime::{registry, Factory, PluginApp, WasmFactory, WasmRuntime};
use synthnet_testkit::apps::{Received, Sink, Source};

pub fn runtime() -> Arc<WasmRuntime> {
    static RT: OnceLock<Arc<WasmRuntime>> = OnceLock::new();
    RT.get_or_init(|| WasmRuntime::new().expect("wasmtime starts"))
        .clone()
}

/// A wasm factory for a built-in plugin.
pub fn wasm(name: &str, config: &str) -> Arc<dyn Factory> {
    let module = runtime()
        .load(name, registry::wasm(name).expect("built-in"))
        .expect("loads");
    Arc::new(WasmFactory::new(
        module,
        config.as_bytes(),
        DEFAULT_MEMORY_LIMIT,
    ))
}

/// A wasm factory for the misbehaving test plugin, with a small memory cap.
pub fn testbed(config: &str) -> Arc<dyn Factory> {
    let bytes =
        std::fs::read(registry::test_only_path("testbed").expect("testbed is a test-only plugin"))
            .expect("testbed.wasm was built by synthnet-runtime's build.rs");
    let module = runtime().load("testbed", &bytes).expect("loads");
    Arc::new(WasmFactory::new(module, config.as_bytes(), 16 << 20))
}

pub fn native(name: &str, config: &str) -> Arc<dyn Factory> {
    synthnet_native::factory(name, config.as_bytes()).expect("built-in")
}

/// source → plugins… → recording sink. Returns (engine, source, sink).
pub struct Line {
    pub engine: Engine,
    pub source: AppId,
    pub sink: AppId,
    pub plugins: Vec<AppId>,
    pub now: u64,
}

impl Line {
    /// `count` packets of `size` bytes, one every `interval_ns`, through `chain`.
    pub fn new(
        chain: Vec<(&str, Arc<dyn Factory>)>,
        size: usize,
        interval_ns: u64,
        count: u64,
    ) -> Line {
        let mut engine = Engine::new(PacketPool::new(1 << 16, 2048));
        let source = engine.add(Box::new(Source::new(size, interval_ns, 0, count, 256)));
        Self::finish(engine, source, chain)
    }

    pub fn finish(mut engine: Engine, source: AppId, chain: Vec<(&str, Arc<dyn Factory>)>) -> Line {
        let mut ids = vec![source];
        let mut plugins = vec![];
        for (i, (name, f)) in chain.into_iter().enumerate() {
            let app =
                PluginApp::instantiate(name, f, 1000 + i as u64, 1 << 20).expect("instantiates");
            let id = engine.add(Box::new(app));
            plugins.push(id);
            ids.push(id);
        }
        let sink = engine.add(Box::new(Sink::new(true)));
        ids.push(sink);
        engine.chain(&ids);
        Line {
            engine,
            source,
            sink,
            plugins,
            now: 0,
        }
    }

    pub fn run_until(&mut self, end_ns: u64) {
        let mut clock = VirtualClock::at(self.now);
        clock
            .run(&mut self.engine, end_ns)
            .expect("the engine makes progress");
        self.now = clock.now_ns;
    }

    pub fn received(&mut self) -> &[Received] {
        &self
            .engine
            .app_mut::<Sink>(self.sink)
            .expect("sink")
            .received
    }

    pub fn plugin(&mut self, i: usize) -> &mut PluginApp {
        let id = self.plugins[i];
        self.engine.app_mut::<PluginApp>(id).expect("plugin app")
    }
}

/// |observed − expected| < 3σ for a binomial count.
pub fn within_3_sigma(hits: u64, n: u64, p: f64) -> bool {
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (hits as f64 - n as f64 * p).abs() < 3.0 * sigma
}

/// Swap `app`'s instance for one of `factory` (instantiated here first, as the apply
/// path does off the packet thread). An instantiation error leaves `app` untouched.
pub fn swap(
    app: &mut PluginApp,
    factory: Arc<dyn Factory>,
    seed: u64,
) -> Result<synthnet_runtime::Handover, synthnet_runtime::PluginError> {
    let inst = factory.instantiate(seed)?;
    Ok(app.commit_swap(inst, factory, seed))
}

// ---- The real bridge in namespaces (for the namespace tests) ----------------------------

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use synthnet_testkit::netns::{self, Topology};

/// A `synthnet bridge` process in the middle namespace of a topology, its stderr
/// collected line by line; killed on drop.
pub struct BridgeProc {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl BridgeProc {
    /// `synthnet bridge outer inner SPEC EXTRA…`, once it logs that it is bridging.
    pub fn start(topo: &Topology, spec: &Path, extra: &[&str]) -> BridgeProc {
        let mut child = topo
            .middle()
            .command(env!("CARGO_BIN_EXE_synthnet"))
            .args(["bridge", "outer", "inner"])
            .arg(spec)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start synthnet bridge");
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let err = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let b = BridgeProc { child, log };
        b.wait_for("bridging", Duration::from_secs(30));
        b
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first log line containing `needle`; fails the test after `timeout`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let t = Instant::now();
        loop {
            if let Some(l) = self.lines().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                t.elapsed() < timeout,
                "bridge never logged {needle:?}; log:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BridgeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A spec file in a temporary directory that lives as long as the value.
pub struct SpecFile {
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl SpecFile {
    pub fn new(json: &str) -> SpecFile {
        let dir = std::env::temp_dir().join(netns::unique("spec"));
        std::fs::create_dir_all(&dir).expect("make a temporary directory");
        let path = dir.join("spec.json");
        std::fs::write(&path, json).expect("write the spec");
        SpecFile { dir, path }
    }
}

impl Drop for SpecFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every reply's RTT from `ping` in namespace `ns`: (mean, median) in ms. Fails the
/// test unless every ping is answered.
pub fn ping_rtts(ns: &netns::Netns, target: &str, count: u32, interval: &str) -> (f64, f64) {
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
        .expect("run ping");
    let mut rtts: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(rtts.len(), count as usize, "every ping answered");
    rtts.sort_by(f64::total_cmp);
    let mean = rtts.iter().sum::<f64>() / rtts.len() as f64;
    (mean, rtts[rtts.len() / 2])
}

/// Sets of 100 pings 20 ms apart until one's median RTT is within `tolerance_ms` of
/// `expected_ms` (at most five sets: on a shared 2-core VM a scheduling hiccup can spoil
/// one; a bridge really off fails them all). Returns every set's (mean, median) and
/// whether one passed.
pub fn rtt_sets(
    ns: &netns::Netns,
    target: &str,
    expected_ms: f64,
    tolerance_ms: f64,
) -> (Vec<(f64, f64)>, bool) {
    let mut sets = Vec::new();
    for _ in 0..5 {
        let (mean, median) = ping_rtts(ns, target, 100, "0.02");
        sets.push((mean, median));
        if (median - expected_ms).abs() < tolerance_ms {
            return (sets, true);
        }
    }
    (sets, false)
}
