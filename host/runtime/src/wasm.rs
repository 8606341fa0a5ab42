//! wasm instances on wasmtime: one `Store` per instance, modules compiled once and
//! pre-linked (`InstancePre`) off the packet path, typed exports fetched once and kept
//! in the instance (so a swapped instance can never be called through an old handle).
//!
//! Every instance is bounded: linear memory by a cap (growing past it
//! traps), CPU by a budget per call ([`DEADLINE_TICKS`] ticks of [`TICK`] for a batch,
//! [`SETUP_DEADLINE_TICKS`] for the other calls). A ticker thread advances wasmtime's
//! epoch every tick; when a call reaches its deadline, the CPU time its thread has
//! used since the call began is checked: past the budget, the call is interrupted;
//! short of it (the machine did not run the thread — a loaded host, a noisy VM), it
//! goes on, checked again a tick later. So a looping plugin is cut off after its
//! budget of CPU, and a valid one is never cut off for time it did not get. A trap of
//! any kind is an error value here, never a host crash.

use crate::instance::{fingerprint, Answer, Factory, Instance, PluginError};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthnet_sdk::abi::{self, Layout};
use wasmtime::{
    Caller, Config, Engine, InstancePre, Linker, Memory, Module, Store, Trap, TypedFunc,
    UpdateDeadline,
};

/// Epoch tick period. Each tick is a wake-up of the ticker thread (13–35 µs of CPU on
/// a VM), paid while the bridge holds packets: at 2 ms it cost 7–13 µs per packet at
/// 1,000 packets/s, more than the packet's own forwarding. The budget is CPU time,
/// checked at each tick past the deadline, so a longer tick only lets a runaway call
/// run up to one tick past its budget before it is cut off.
pub const TICK: Duration = Duration::from_millis(10);
/// Ticks a batch call (`synthnet_process`) may run: 20 ms of CPU (a 4 µs batch once
/// reached a 4 ms wall-clock deadline under VM scheduling noise; the CPU check keeps a
/// valid call that was not run from being cut off, the margin keeps one that ran
/// slowly).
pub const DEADLINE_TICKS: u64 = 2;
/// Ticks the other calls (`alloc`, `init`, `snapshot`, `restore`) may run: 1 s. They
/// run off the packet thread (init) or once per change (state hand-over), and a valid
/// plugin may do real work in its init (build a table, parse a trace).
pub const SETUP_DEADLINE_TICKS: u64 = 100;
/// Largest table a plugin may have (funcref elements; Rust plugins use a few hundred).
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Default cap on a plugin's linear memory.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;
/// Log lines a plugin instance may write per second; the rest are counted and dropped.
const LOG_LINES_PER_SEC: u32 = 20;

/// The wasmtime engine and its epoch ticker. Shared by every module.
pub struct WasmRuntime {
    engine: Engine,
    stop: Arc<AtomicBool>,
    ticker: Arc<Ticker>,
}

/// What the epoch ticker thread reads: whether it may park, and whether a call runs.
struct Ticker {
    /// The ticker may park while this is set (an idle bridge need not wake 500×/s)…
    paused: AtomicBool,
    /// …but never while a plugin call is in flight on any thread.
    active: AtomicUsize,
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Ticker {
    /// A plugin call starts: the ticker must tick until it ends.
    fn enter(self: &Arc<Self>) -> CallGuard {
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.paused.load(Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
        CallGuard(self.clone())
    }
}

/// Marks a plugin call in flight; dropped when it returns.
struct CallGuard(Arc<Ticker>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WasmRuntime {
    /// The engine settings every runtime uses (a module compiled under them, here or
    /// in another process, can be loaded by any runtime).
    pub(crate) fn config() -> Config {
        let mut c = Config::new();
        c.epoch_interruption(true);
        c.cranelift_opt_level(wasmtime::OptLevel::Speed);
        c.max_wasm_stack(512 << 10);
        c
    }

    pub fn new() -> Result<Arc<Self>, PluginError> {
        let engine = Engine::new(&Self::config())
            .map_err(|e| PluginError::new("wasmtime", format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = Arc::new(Ticker {
            paused: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            thread: std::sync::OnceLock::new(),
        });
        let (e, s, t) = (engine.clone(), stop.clone(), ticker.clone());
        let thread = std::thread::Builder::new()
            .name("synthnet-epoch".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    // A call that starts after this check unparks us (park returns at
                    // once if the unpark came first).
                    if t.paused.load(Ordering::SeqCst) && t.active.load(Ordering::SeqCst) == 0 {
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(TICK);
                    e.increment_epoch();
                }
            })
            .map_err(|e| {
                PluginError::new("wasmtime", format!("cannot start the epoch ticker: {e}"))
            })?
            .thread()
            .clone();
        let _ = ticker.thread.set(thread);
        Ok(Arc::new(WasmRuntime {
            engine,
            stop,
            ticker,
        }))
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Let the ticker stop until [`WasmRuntime::resume`]: call before a long idle sleep.
    /// (Each tick is a wake-up of the machine.) It keeps ticking while a plugin call
    /// runs on any thread, so every call always has its CPU deadline.
    pub fn pause(&self) {
        self.ticker.paused.store(true, Ordering::SeqCst);
    }

    /// Tick again.
    pub fn resume(&self) {
        if self.ticker.paused.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.ticker.thread.get() {
                t.unpark();
            }
        }
    }

    /// Compile and check a module: it must be valid wasm, speak link ABI v1 and export
    /// what v1 requires. `name` is used in messages (a built-in name or a path).
    pub fn load(
        self: &Arc<Self>,
        name: &str,
        bytes: &[u8],
    ) -> Result<Arc<WasmModule>, PluginError> {
        let err = |m: String| PluginError::new(name, m);
        if !bytes.starts_with(b"\0asm") {
            return Err(err(
                "not a wasm module: it does not start with the wasm magic bytes \\0asm (build the plugin with --target wasm32-unknown-unknown)".into(),
            ));
        }
        check_size(bytes).map_err(err)?;
        let module = Module::new(&self.engine, bytes)
            .map_err(|e| err(format!("not a valid wasm module: {e:#}")))?;
        self.finish(name, module, bytes)
    }

    /// Compile and check `bytes` as [`WasmRuntime::load`] does, and return the
    /// compiled form (wasmtime's artifact) for a cache.
    pub fn precompile(&self, name: &str, bytes: &[u8]) -> Result<Vec<u8>, PluginError> {
        let err = |m: String| PluginError::new(name, m);
        if !bytes.starts_with(b"\0asm") {
            return Err(err("not a wasm module: it does not start with the wasm magic bytes \\0asm (build the plugin with --target wasm32-unknown-unknown)".into()));
        }
        check_size(bytes).map_err(err)?;
        self.engine
            .precompile_module(bytes)
            .map_err(|e| err(format!("not a valid wasm module: {e:#}")))
    }

    /// Check a compiled `module` of `bytes`: link ABI v1 and its exports, then link it.
    pub(crate) fn finish(
        self: &Arc<Self>,
        name: &str,
        module: Module,
        bytes: &[u8],
    ) -> Result<Arc<WasmModule>, PluginError> {
        let err = |m: String| PluginError::new(name, m);
        let versions: Vec<String> = module
            .exports()
            .map(|e| e.name().to_string())
            .filter(|n| n.starts_with(abi::EXPORT_VERSION_PREFIX))
            .collect();
        if !versions.iter().any(|v| v == abi::EXPORT_VERSION) {
            return Err(err(if versions.is_empty() {
                format!("not a synthnet plugin: it has no `{}` export (build it with synthnet-sdk's export_plugin!)", abi::EXPORT_VERSION)
            } else {
                format!(
                    "built for link ABI {}, but this synthnet speaks v{}: rebuild it against synthnet-sdk {}",
                    versions.iter().map(|v| format!("v{}", v.trim_start_matches(abi::EXPORT_VERSION_PREFIX))).collect::<Vec<_>>().join(", "),
                    abi::ABI_MAJOR,
                    env!("CARGO_PKG_VERSION")
                )
            }));
        }
        for need in [
            abi::EXPORT_ALLOC,
            abi::EXPORT_INIT,
            abi::EXPORT_PROCESS,
            abi::EXPORT_ERROR,
            "memory",
        ] {
            if module.get_export(need).is_none() {
                return Err(err(format!(
                    "missing the `{need}` export that link ABI v1 requires"
                )));
            }
        }
        let mut linker = Linker::<HostState>::new(&self.engine);
        linker
            .func_wrap(abi::IMPORT_MODULE, abi::IMPORT_LOG, host_log)
            .map_err(|e| err(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&module).map_err(|e| {
            err(format!(
                "cannot link: {e:#} (a plugin may import only synthnet.log)"
            ))
        })?;
        let hash = fingerprint(&[b"wasm", bytes]);
        Ok(Arc::new(WasmModule {
            name: name.to_string(),
            pre,
            engine: self.engine.clone(),
            hash,
            rt: self.clone(),
        }))
    }
}

impl Drop for WasmRuntime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.thread.get() {
            t.unpark();
        }
    }
}

/// A compiled, pre-linked plugin module.
pub struct WasmModule {
    name: String,
    pre: InstancePre<HostState>,
    engine: Engine,
    hash: u64,
    rt: Arc<WasmRuntime>,
}

impl WasmModule {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Hash of the module's bytes.
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// What a store may grow to, and the record of what it refused: a plugin's memory fault
/// is recognised from this record, not from the wording of wasmtime's error.
struct Limits {
    memory_bytes: usize,
    table_elements: usize,
    refused: Option<Refused>,
}

/// A growth the limits refused (the call then traps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    Memory { desired: usize, limit: usize },
    Table { desired: usize, limit: usize },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Refused::Memory { desired, limit } => write!(
                f,
                "exceeded its memory limit (asked for {desired} bytes of linear memory, the limit is {limit})"
            ),
            Refused::Table { desired, limit } => write!(
                f,
                "exceeded its table limit (asked for a table of {desired} elements, the limit is {limit})"
            ),
        }
    }
}

impl Limits {
    /// Growth to `desired`: past the module's own declared `maximum`, refused the way
    /// the wasm spec says (`memory.grow` answers -1); past our cap `ours`, a trap,
    /// recorded as `refused`, so the plugin stops with a message naming the cap.
    fn grow(
        &mut self,
        desired: usize,
        ours: usize,
        maximum: Option<usize>,
        refused: fn(usize, usize) -> Refused,
    ) -> wasmtime::Result<bool> {
        if desired > ours {
            let r = refused(desired, ours);
            self.refused = Some(r);
            wasmtime::bail!("{r}");
        }
        Ok(maximum.is_none_or(|m| desired <= m))
    }
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired, self.memory_bytes, maximum, |desired, limit| {
            Refused::Memory { desired, limit }
        })
    }
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Growth the limits allowed but the system could not back: a trap too.
        Err(error)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(desired, self.table_elements, maximum, |desired, limit| {
            Refused::Table { desired, limit }
        })
    }
    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }
    fn instances(&self) -> usize {
        1
    }
    fn memories(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        4
    }
}

struct HostState {
    limits: Limits,
    /// This thread's CPU time when the running call began, and the call's budget.
    call_cpu_start: Duration,
    call_budget: Duration,
    name: Arc<str>,
    log_window: Instant,
    log_lines: u32,
    log_dropped: u64,
}

fn host_log(mut caller: Caller<'_, HostState>, level: u32, ptr: u32, len: u32) {
    let Some(mem) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return;
    };
    let msg = {
        let data = mem.data(&caller);
        let (a, n) = (ptr as usize, (len as usize).min(1024));
        String::from_utf8_lossy(
            data.get(a..a.saturating_add(n))
                .unwrap_or(b"<log message outside memory>"),
        )
        .into_owned()
    };
    let st = caller.data_mut();
    if st.log_window.elapsed() >= Duration::from_secs(1) {
        if st.log_dropped > 0 {
            log::warn!(target: "plugin", "{}: {} log lines dropped (rate limit)", st.name, st.log_dropped);
        }
        st.log_window = Instant::now();
        st.log_lines = 0;
        st.log_dropped = 0;
    }
    if st.log_lines >= LOG_LINES_PER_SEC {
        st.log_dropped += 1;
        return;
    }
    st.log_lines += 1;
    let lvl = match level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        _ => log::Level::Debug,
    };
    log::log!(target: "plugin", lvl, "{}: {}", st.name, msg);
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// How old a reading of this thread's CPU time may be and still stand for a call's
/// start: reading it is a system call (not a vDSO one), 2–3% of the packet thread's time
/// at low rates when taken for every call, while the calls of one breath come within
/// microseconds. An older reading only makes a call's measured CPU larger, by at most
/// this: the 20 ms budget is then at least 19 ms.
const CPU_READING_REUSE: Duration = Duration::from_millis(1);

thread_local! {
    /// The last reading of this thread's CPU time, and when it was taken.
    static CPU_READING: std::cell::Cell<Option<(Instant, Duration)>> =
        const { std::cell::Cell::new(None) };
}

/// This thread's CPU time at most [`CPU_READING_REUSE`] ago (never later than now).
fn recent_thread_cpu() -> Duration {
    let now = Instant::now();
    CPU_READING.with(|c| match c.get() {
        Some((at, cpu)) if now.duration_since(at) < CPU_READING_REUSE => cpu,
        _ => {
            let cpu = thread_cpu();
            c.set(Some((now, cpu)));
            cpu
        }
    })
}

/// Give the next call `ticks` ticks of CPU, counted from now.
fn arm(store: &mut Store<HostState>, ticks: u64) {
    let s = store.data_mut();
    s.call_cpu_start = recent_thread_cpu();
    s.call_budget = TICK * ticks as u32;
    store.set_epoch_deadline(ticks);
}

/// Why a batch call failed, in words a user can act on.
fn describe(store: &mut Store<HostState>, e: wasmtime::Error) -> String {
    describe_within(store, e, DEADLINE_TICKS)
}

/// Why a setup call (alloc, init, snapshot, restore) failed.
fn describe_setup(store: &mut Store<HostState>, e: wasmtime::Error) -> String {
    describe_within(store, e, SETUP_DEADLINE_TICKS)
}

fn describe_within(store: &mut Store<HostState>, e: wasmtime::Error, ticks: u64) -> String {
    if let Some(refused) = store.data_mut().limits.refused.take() {
        return refused.to_string();
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "ran past its CPU deadline ({} ms)",
            ticks * TICK.as_millis() as u64
        ),
        Some(t) => format!("trapped: {t}"),
        // One line: the root cause, not the wasm backtrace.
        None => e.root_cause().to_string(),
    }
}

/// Most functions a plugin may have (the built-ins have a few hundred).
pub const MAX_FUNCTIONS: u32 = 20_000;
/// Largest function body a plugin may have, in bytes.
pub const MAX_FUNCTION_BYTES: usize = 512 << 10;

/// Refuse a module whose compilation would cost seconds and gigabytes before compiling
/// it: too many functions, or a function too large (a 1.6 MB module of 200,000 trivial
/// functions took 21 s and 1.1 GB to compile).
fn check_size(bytes: &[u8]) -> Result<(), String> {
    use wasmparser::Payload;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a valid wasm module: {e}"))? {
            Payload::CodeSectionStart { count, .. } if count > MAX_FUNCTIONS => {
                return Err(format!(
                    "{count} functions, more than the {MAX_FUNCTIONS} a plugin may have"
                ));
            }
            Payload::CodeSectionEntry(body) if body.range().len() > MAX_FUNCTION_BYTES => {
                return Err(format!(
                    "a function of {} bytes, more than the {MAX_FUNCTION_BYTES} a plugin's function may have",
                    body.range().len()
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A plugin's error message, or a stand-in saying why there is none: a message is
/// always shown.
fn error_message(blob: Option<Vec<u8>>) -> String {
    match blob {
        Some(m) if !m.is_empty() => {
            let m = String::from_utf8_lossy(&m[..m.len().min(4096)]).into_owned();
            // One line, no control characters: it goes into logs.
            m.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        }
        Some(_) => "it failed without a message".into(),
        None => "it failed, and its error message lies outside its memory".into(),
    }
}

/// [`read_blob`], where address 0 means "nothing" (the ABI's "no message").
fn blob_at(mem: &[u8], ptr: u32) -> Option<Vec<u8>> {
    if ptr == 0 {
        return Some(Vec::new());
    }
    read_blob(mem, ptr)
}

/// Read `[len: u32 LE][bytes]` at `ptr` (bounded to 16 MiB).
fn read_blob(mem: &[u8], ptr: u32) -> Option<Vec<u8>> {
    let len = abi::le::u32_at(mem, ptr as usize)? as usize;
    if len > 16 << 20 {
        return None;
    }
    let a = ptr as usize + 4;
    mem.get(a..a + len).map(<[u8]>::to_vec)
}

pub struct WasmInstance {
    ticker: Arc<Ticker>,
    store: Store<HostState>,
    memory: Memory,
    process: TypedFunc<(u32, u64), u32>,
    alloc: TypedFunc<u32, u32>,
    error: TypedFunc<(), u32>,
    snapshot: Option<TypedFunc<(), u32>>,
    restore: Option<TypedFunc<(u32, u32), u32>>,
    /// ABI 1.1, optional: `synthnet_command` and its `synthnet_reply`.
    command: Option<(CommandFunc, TypedFunc<(), u32>)>,
    lay: Layout,
}

/// `synthnet_command(ptr, len, now_ns) -> verdicts, or -1`.
type CommandFunc = TypedFunc<(u32, u32, u64), i32>;

/// Largest reply a command may give, bytes of JSON (as large as a command).
pub const MAX_REPLY_LEN: usize = abi::MAX_COMMAND_LEN;

impl WasmInstance {
    fn new(
        module: &WasmModule,
        config: &[u8],
        seed: u64,
        memory_limit: usize,
    ) -> Result<Self, String> {
        let limits = Limits {
            memory_bytes: memory_limit,
            // Every table's size, not only their number: a table grown by 50 M
            // elements a call took the process to 24 GB.
            table_elements: MAX_TABLE_ELEMENTS,
            refused: None,
        };
        let state = HostState {
            limits,
            call_cpu_start: Duration::ZERO,
            call_budget: Duration::ZERO,
            name: module.name.as_str().into(),
            log_window: Instant::now(),
            log_lines: 0,
            log_dropped: 0,
        };
        let ticker = module.rt.ticker.clone();
        let _call = ticker.enter();
        let mut store = Store::new(&module.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|ctx| {
            let s = ctx.data();
            Ok(
                if thread_cpu().saturating_sub(s.call_cpu_start) >= s.call_budget {
                    UpdateDeadline::Interrupt
                } else {
                    UpdateDeadline::Continue(1)
                },
            )
        });
        arm(&mut store, SETUP_DEADLINE_TICKS);
        let instance = module
            .pre
            .instantiate(&mut store)
            .map_err(|e| describe_setup(&mut store, e))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or("exports no memory")?;
        let f = |e: wasmtime::Error| format!("wrong export signature: {e:#}");
        let alloc = instance
            .get_typed_func::<u32, u32>(&mut store, abi::EXPORT_ALLOC)
            .map_err(f)?;
        let init = instance
            .get_typed_func::<(u32, u32, u64), u32>(&mut store, abi::EXPORT_INIT)
            .map_err(f)?;
        let process = instance
            .get_typed_func::<(u32, u64), u32>(&mut store, abi::EXPORT_PROCESS)
            .map_err(f)?;
        let error = instance
            .get_typed_func::<(), u32>(&mut store, abi::EXPORT_ERROR)
            .map_err(f)?;
        let snapshot = instance
            .get_typed_func::<(), u32>(&mut store, abi::EXPORT_SNAPSHOT)
            .ok();
        let restore = instance
            .get_typed_func::<(u32, u32), u32>(&mut store, abi::EXPORT_RESTORE)
            .ok();
        let version = instance
            .get_typed_func::<(), u32>(&mut store, abi::EXPORT_VERSION)
            .map_err(f)?;
        let minor = version
            .call(&mut store, ())
            .map_err(|e| describe_setup(&mut store, e))?;
        if minor > abi::ABI_MINOR as u32 {
            return Err(format!(
                "built for link ABI {}.{minor}, but this synthnet speaks {}.0 to {}.{}: use a newer synthnet or rebuild it against synthnet-sdk {}",
                abi::ABI_MAJOR,
                abi::ABI_MAJOR,
                abi::ABI_MAJOR,
                abi::ABI_MINOR,
                env!("CARGO_PKG_VERSION")
            ));
        }
        let command = match (
            instance
                .get_export(&mut store, abi::EXPORT_COMMAND)
                .is_some(),
            instance.get_export(&mut store, abi::EXPORT_REPLY).is_some(),
        ) {
            (false, _) => None,
            (true, false) => {
                return Err(format!(
                    "exports `{}` without `{}`, which link ABI 1.1 requires with it",
                    abi::EXPORT_COMMAND,
                    abi::EXPORT_REPLY
                ))
            }
            (true, true) => Some((
                instance
                    .get_typed_func::<(u32, u32, u64), i32>(&mut store, abi::EXPORT_COMMAND)
                    .map_err(f)?,
                instance
                    .get_typed_func::<(), u32>(&mut store, abi::EXPORT_REPLY)
                    .map_err(f)?,
            )),
        };
        let len = u32::try_from(config.len()).map_err(|_| "config too large")?;
        let ptr = alloc
            .call(&mut store, len)
            .map_err(|e| describe_setup(&mut store, e))?;
        memory
            .write(&mut store, ptr as usize, config)
            .map_err(|_| "config buffer lies outside memory")?;
        arm(&mut store, SETUP_DEADLINE_TICKS);
        let hdr = init
            .call(&mut store, (ptr, len, seed))
            .map_err(|e| describe_setup(&mut store, e))?;
        if hdr == 0 {
            let eptr = error
                .call(&mut store, ())
                .map_err(|e| describe_setup(&mut store, e))?;
            return Err(error_message(blob_at(memory.data(&store), eptr)));
        }
        let lay = Layout::parse(memory.data(&store), hdr).map_err(|e| e.0)?;
        drop(_call);
        Ok(WasmInstance {
            ticker,
            store,
            memory,
            process,
            alloc,
            error,
            snapshot,
            restore,
            command,
            lay,
        })
    }
}

impl Instance for WasmInstance {
    fn layout(&self) -> &Layout {
        &self.lay
    }
    #[inline]
    fn memory(&mut self) -> &mut [u8] {
        self.memory.data_mut(&mut self.store)
    }
    #[inline]
    fn process(&mut self, n: u32, now_ns: u64) -> Result<u32, String> {
        let _call = self.ticker.enter();
        arm(&mut self.store, DEADLINE_TICKS);
        self.process
            .call(&mut self.store, (n, now_ns))
            .map_err(|e| describe(&mut self.store, e))
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, String> {
        let Some(f) = &self.snapshot else {
            return Ok(Vec::new());
        };
        let _call = self.ticker.enter();
        arm(&mut self.store, SETUP_DEADLINE_TICKS);
        let ptr = f
            .call(&mut self.store, ())
            .map_err(|e| describe_setup(&mut self.store, e))?;
        read_blob(self.memory.data(&self.store), ptr)
            .ok_or_else(|| "snapshot lies outside memory".into())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let Some(f) = self.restore.clone() else {
            return Ok(());
        };
        let _call = self.ticker.enter();
        arm(&mut self.store, SETUP_DEADLINE_TICKS);
        let len = u32::try_from(state.len()).map_err(|_| "state too large")?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| describe_setup(&mut self.store, e))?;
        self.memory
            .write(&mut self.store, ptr as usize, state)
            .map_err(|_| "state buffer lies outside memory")?;
        if f.call(&mut self.store, (ptr, len))
            .map_err(|e| describe_setup(&mut self.store, e))?
            != 0
        {
            let eptr = self
                .error
                .call(&mut self.store, ())
                .map_err(|e| describe_setup(&mut self.store, e))?;
            return Err(error_message(blob_at(self.memory.data(&self.store), eptr)));
        }
        Ok(())
    }
    fn command(&mut self, cmd: &[u8], now_ns: u64) -> Result<Answer, String> {
        let Some((command, reply)) = self.command.clone() else {
            return Ok(Answer::NoCommands);
        };
        let _call = self.ticker.enter();
        arm(&mut self.store, DEADLINE_TICKS);
        self.call_command(&command, &reply, cmd, now_ns)
    }
}

impl WasmInstance {
    /// `synthnet_alloc` + `synthnet_command` + `synthnet_reply` (or `synthnet_error`),
    /// together within one batch call's CPU budget: a command is a tick.
    fn call_command(
        &mut self,
        command: &CommandFunc,
        reply: &TypedFunc<(), u32>,
        cmd: &[u8],
        now_ns: u64,
    ) -> Result<Answer, String> {
        let len = u32::try_from(cmd.len()).map_err(|_| "command too large")?;
        let ptr = self
            .alloc
            .call(&mut self.store, len)
            .map_err(|e| describe(&mut self.store, e))?;
        self.memory
            .write(&mut self.store, ptr as usize, cmd)
            .map_err(|_| "its command buffer lies outside its memory")?;
        let nv = command
            .call(&mut self.store, (ptr, len, now_ns))
            .map_err(|e| describe(&mut self.store, e))?;
        if nv == -1 {
            let eptr = self
                .error
                .call(&mut self.store, ())
                .map_err(|e| describe(&mut self.store, e))?;
            let msg = error_message(blob_at(self.memory.data(&self.store), eptr));
            return Ok(Answer::Refused(msg));
        }
        let verdicts = u32::try_from(nv).map_err(|_| format!("synthnet_command returned {nv}"))?;
        let rptr = reply
            .call(&mut self.store, ())
            .map_err(|e| describe(&mut self.store, e))?;
        let reply = if rptr == 0 {
            b"null".to_vec()
        } else {
            read_blob(self.memory.data(&self.store), rptr)
                .ok_or("its reply lies outside its memory")?
        };
        if reply.len() > MAX_REPLY_LEN {
            return Err(format!(
                "a reply of {} bytes, more than the {MAX_REPLY_LEN} a command may answer",
                reply.len()
            ));
        }
        Ok(Answer::Reply { verdicts, reply })
    }
}

/// Makes wasm instances of one module with one config.
pub struct WasmFactory {
    module: Arc<WasmModule>,
    config: Vec<u8>,
    memory_limit: usize,
}

impl WasmFactory {
    pub fn new(module: Arc<WasmModule>, config: &[u8], memory_limit: usize) -> Self {
        WasmFactory {
            module,
            config: config.to_vec(),
            memory_limit,
        }
    }
}

impl Factory for WasmFactory {
    fn plugin(&self) -> &str {
        &self.module.name
    }
    fn instantiate(&self, seed: u64) -> Result<Box<dyn Instance>, PluginError> {
        WasmInstance::new(&self.module, &self.config, seed, self.memory_limit)
            .map(|i| Box::new(i) as Box<dyn Instance>)
            .map_err(|e| PluginError::new(&self.module.name, e))
    }
    fn fingerprint(&self) -> u64 {
        fingerprint(&[
            &self.module.hash.to_le_bytes(),
            &self.config,
            &self.memory_limit.to_le_bytes(),
        ])
    }
}
