//! Helpers shared by the integration tests: build engines from built-in or test plugins,
//! wasm or native, and run them on a virtual clock.
#![allow(dead_code)]

pub mod bridge;
pub mod files;
pub mod http;
pub mod replay;
pub mod rig;

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use synthnet_core::clock::VirtualClock;
use synthnet_core::{AppId, Engine, PacketPool};
use synthnet_runtime::DEFAULT_MEMORY_LIMIT;
use synthnet_runtime::{registry, Factory, PluginApp, WasmFactory, WasmRuntime};
use synthnet_testkit::apps::{Received, Sink, Source};

/// One test of the binary at a time: live tests share ports and two cores, and their
/// timing does not survive a neighbour. A test that failed holding it does not poison it.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// End of a test with a time budget: print its time, fail past `budget` (a hang or a
/// slowdown of several times then shows, where the usual time is a fraction of it).
pub fn within_budget(t0: std::time::Instant, budget: std::time::Duration) {
    let took = t0.elapsed();
    eprintln!("time: {:.1} s (budget {budget:?})", took.as_secs_f64());
    assert!(
        took < budget,
        "took {took:?}, over this test's budget of {budget:?}"
    );
}

/// Every reply's RTT from `ping` in namespace `ns`: (mean, median) in ms. Fails the
/// test unless every ping is answered.
pub fn ping_rtts(
    ns: &synthnet_testkit::netns::Netns,
    target: &str,
    count: u32,
    interval: &str,
) -> (f64, f64) {
    let p = synthnet_testkit::traffic::ping(ns, target, count, interval).expect("ping");
    assert_eq!(p.received(), count, "every ping answered: {p:?}");
    (p.mean_ms().unwrap(), p.median_ms().unwrap())
}

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
