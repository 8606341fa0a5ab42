//! Compiling a plugin file within a budget. wasmtime cannot stop a compile running in
//! its own thread, and a module within every size limit can still take minutes of
//! Cranelift time; the one configuration worker would wait behind it, and every
//! change queued after it too.
//!
//! So before the bridge compiles a new or changed plugin file, it compiles it once in a
//! child process (`synthnet __compile-check`, this same binary) that may use at most
//! the budget in CPU time (`RLIMIT_CPU`) and is killed when the budget has passed on
//! the wall clock. A module that does not finish in time is refused, naming it and the
//! budget; its compile has stopped with the child. One that does is compiled again in
//! the bridge, which then takes about as long again, at most.
//!
//! The budget is `--compile-budget` ([`DEFAULT_BUDGET`]: about 20 times the largest
//! built-in's compile time on a 2-core machine).

use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthnet_runtime::loader::MAX_MODULE_BYTES;
use synthnet_runtime::{CompileCheck, WasmRuntime};

/// The default compile budget.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(10);
/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "__compile-check";
/// The child's exit status when it refused the module (its message on stdout).
const REFUSED: u8 = 3;

/// A [`CompileCheck`] that compiles each module in a child within `budget`.
pub fn checker(budget: Duration) -> CompileCheck {
    Arc::new(move |name: &str, bytes: &[u8]| check(name, bytes, budget))
}

fn over_budget(budget: Duration, how: &str) -> String {
    format!(
        "compiling it takes longer than the compile budget of {:.1} s ({how}; --compile-budget sets it): refused, and its compile was stopped",
        budget.as_secs_f64()
    )
}

fn check(name: &str, bytes: &[u8], budget: Duration) -> Result<(), String> {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            log::warn!("{name}: cannot compile it within a budget (no path to synthnet: {e}); compiling it here");
            return Ok(());
        }
    };
    let cpu_secs = budget.as_secs_f64().ceil().max(1.0) as u64;
    let mut child = match Command::new(&exe)
        .arg(SUBCOMMAND)
        .arg(cpu_secs.to_string())
        .arg(name)
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            log::warn!(
                "{name}: cannot compile it within a budget ({} does not start: {e}); compiling it here",
                exe.display()
            );
            return Ok(());
        }
    };
    // Fed from a thread: a module is up to 16 MiB, far more than a pipe holds.
    let mut stdin = child.stdin.take();
    let input = bytes.to_vec();
    let feeder = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            let _ = s.write_all(&input);
        }
    });
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(64 << 10).read_to_string(&mut out);
        }
        out
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() >= budget => {
                // Our own child, by its handle.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for its compile: {e}"));
            }
        }
    };
    let _ = feeder.join();
    let said = reader.join().unwrap_or_default();
    let Some(status) = status else {
        return Err(over_budget(budget, "wall clock"));
    };
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(c), _) if c == REFUSED as i32 => Err(said.trim().to_string()),
        (_, Some(sig)) if sig == nix::libc::SIGXCPU || sig == nix::libc::SIGKILL => {
            Err(over_budget(budget, "CPU time"))
        }
        _ => Err(format!(
            "its compile failed ({status}){}",
            if said.is_empty() {
                String::new()
            } else {
                format!(": {}", said.trim())
            }
        )),
    }
}

/// The child: compile the module on standard input within `cpu_secs` of CPU; exit 0
/// when it compiles and links as a plugin, [`REFUSED`] with the reason on standard
/// output when it does not.
pub fn child(cpu_secs: u64, name: &str) -> ExitCode {
    if let Err(e) = synthnet_io::process::limit_cpu(cpu_secs) {
        println!("cannot limit the compile's CPU time: {e}");
        return ExitCode::from(REFUSED);
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin()
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut bytes)
    {
        println!("cannot read the module: {e}");
        return ExitCode::from(REFUSED);
    }
    let rt = match WasmRuntime::new() {
        Ok(rt) => rt,
        Err(e) => {
            println!("{e}");
            return ExitCode::from(REFUSED);
        }
    };
    match rt.load(name, &bytes) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.message);
            ExitCode::from(REFUSED)
        }
    }
}
