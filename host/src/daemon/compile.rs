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
//!
//! **Cache.** The child hands its compiled module back through an on-disk cache
//! ([`cache_dir`]: `/var/cache/synthnet/modules` as root, else
//! `$XDG_CACHE_HOME/synthnet/modules` or `~/.cache/synthnet/modules`;
//! `SYNTHNET_CACHE_DIR` overrides it), one entry per module keyed by the SHA-256 of its
//! bytes and by wasmtime's version, target and settings
//! ([`synthnet_runtime::precompiled::artifact_tag`]). An entry is verified before it is
//! loaded ([`synthnet_runtime::precompiled::unseal`]); a corrupt or foreign one is
//! compiled again. So a plugin is compiled once per machine, and a bridge that starts
//! again loads it without compiling. The directory must be ours and writable by nobody
//! else; if it is not, nothing is cached, and a module that passed the child's budget
//! is compiled again in the bridge. The cache is kept to [`CACHE_ENTRIES`] entries and
//! [`CACHE_BYTES`], least recently used first out (a hit renews an entry), so modules
//! sent one after another through the API cannot fill the disk.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use synthnet_runtime::loader::{read_file, MAX_MODULE_BYTES};
use synthnet_runtime::precompiled::{artifact_tag, content_key, seal, unseal};
use synthnet_runtime::{CompileCheck, WasmRuntime};

/// The default compile budget.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(10);
/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "__compile-check";
/// The child's exit status when it refused the module (its message on stdout).
const REFUSED: u8 = 3;

/// The largest cache entry read back (a compiled module is a few times its wasm).
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// The most entries, and bytes, the cache keeps.
pub const CACHE_ENTRIES: usize = 256;
pub const CACHE_BYTES: u64 = 1 << 30;

/// Where compiled modules are cached (see the module's documentation).
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("SYNTHNET_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(d.into());
    }
    if nix::unistd::geteuid().is_root() {
        return Some("/var/cache/synthnet/modules".into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
    Some(base.join("synthnet").join("modules"))
}

/// The cache directory, made if missing, and the tag of this build's artifacts; `None`
/// (said once, in the log) when there is none we can trust.
fn open_cache() -> Option<(PathBuf, String)> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = cache_dir()?;
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .and_then(|_| super::safefile::check_private_dir(&dir));
    if let Err(e) = made {
        log::warn!("compiled plugins are not cached: {e}");
        return None;
    }
    match artifact_tag() {
        Ok(tag) => Some((dir, tag)),
        Err(e) => {
            log::warn!("compiled plugins are not cached: {e}");
            None
        }
    }
}

/// A [`CompileCheck`] that compiles each module in a child within `budget`, through
/// the on-disk cache.
pub fn checker(budget: Duration) -> CompileCheck {
    let cache = open_cache();
    if let Some((dir, _)) = &cache {
        log::info!("compiled plugins are cached in {}", dir.display());
    }
    Arc::new(move |name: &str, bytes: &[u8]| {
        let entry = cache
            .as_ref()
            .map(|(dir, tag)| dir.join(format!("{}-{tag}.cwasm", content_key(bytes))));
        if let Some(path) = &entry {
            match cached(path, bytes) {
                Ok(Some(e)) => {
                    renew(path);
                    return Ok(Some(e));
                }
                Ok(None) => {}
                Err(why) => log::warn!(
                    "{name}: its cache entry {} is {why}: compiling it again",
                    path.display()
                ),
            }
        }
        check(name, bytes, budget, entry.as_deref())?;
        if let Some((dir, _)) = &cache {
            prune(dir, CACHE_ENTRIES, CACHE_BYTES);
        }
        // Compiled within the budget: its entry is there now (if it could be written).
        Ok(entry.and_then(|p| cached(&p, bytes).ok().flatten()))
    })
}

/// Mark the entry at `path` used now (its modification time orders the cache).
fn renew(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path);
    if let Ok(f) = file {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Keep the newest `entries` cache entries of `dir` within `bytes` in all; delete the
/// rest, oldest first. Only regular `.cwasm` files are counted or deleted.
fn prune(dir: &Path, entries: usize, bytes: u64) {
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(std::time::SystemTime, u64, PathBuf)> = list
        .filter_map(|e| {
            let e = e.ok()?;
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).ok()?;
            let entry = meta.is_file() && path.extension().is_some_and(|x| x == "cwasm");
            entry.then_some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    found.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut total = 0u64;
    for (i, (_, len, path)) in found.iter().enumerate() {
        total += len;
        if i >= entries || total > bytes {
            match std::fs::remove_file(path) {
                Ok(()) => log::info!(
                    "module cache: removed {} (least recently used)",
                    path.display()
                ),
                Err(e) => log::warn!("module cache: cannot remove {}: {e}", path.display()),
            }
        }
    }
}

/// The verified cache entry at `path` for module `wasm`: `Ok(None)` when there is none.
fn cached(path: &Path, wasm: &[u8]) -> Result<Option<Vec<u8>>, String> {
    match super::safefile::regular_or_absent(path) {
        Ok(None) => return Ok(None),
        Ok(Some(_)) => {}
        Err(e) => return Err(e.to_string()),
    }
    let entry = read_file(path, MAX_ENTRY_BYTES)?;
    unseal(&entry, wasm)?;
    Ok(Some(entry))
}

fn over_budget(budget: Duration, how: &str) -> String {
    format!(
        "compiling it takes longer than the compile budget of {:.1} s ({how}; --compile-budget sets it): refused, and its compile was stopped",
        budget.as_secs_f64()
    )
}

fn check(name: &str, bytes: &[u8], budget: Duration, entry: Option<&Path>) -> Result<(), String> {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            log::warn!("{name}: cannot compile it within a budget (no path to synthnet: {e}); compiling it here");
            return Ok(());
        }
    };
    let cpu_secs = budget.as_secs_f64().ceil().max(1.0) as u64;
    let mut cmd = Command::new(&exe);
    cmd.arg(SUBCOMMAND).arg(cpu_secs.to_string()).arg(name);
    if let Some(p) = entry {
        cmd.arg(p);
    }
    let mut child = match cmd
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
/// when it compiles and links as a plugin (having written its sealed compiled form to
/// `entry`, when given), [`REFUSED`] with the reason on standard output when not.
pub fn child(cpu_secs: u64, name: &str, entry: Option<&Path>) -> ExitCode {
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
    let Some(path) = entry else {
        return match rt.load(name, &bytes) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                println!("{}", e.message);
                ExitCode::from(REFUSED)
            }
        };
    };
    let sealed = rt
        .precompile(name, &bytes)
        .map(|artifact| seal(&bytes, &artifact))
        .and_then(|entry| rt.load_precompiled(name, &bytes, &entry).map(|_| entry));
    match sealed {
        Ok(entry) => {
            // Not cached is no refusal: the bridge then compiles it itself.
            let _ = super::safefile::write(path, &entry);
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", e.message);
            ExitCode::from(REFUSED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_cache_keeps_the_most_recently_used_within_its_limits() {
        let dir = std::env::temp_dir().join(format!("synthnet-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = SystemTime::now() - Duration::from_secs(1000);
        for i in 0..6u64 {
            let p = dir.join(format!("m{i}-tag.cwasm"));
            std::fs::write(&p, vec![0u8; 100]).unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.set_modified(t0 + Duration::from_secs(i * 10)).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), b"not an entry").unwrap();
        // m0 was used just now: it stays, whatever its age.
        renew(&dir.join("m0-tag.cwasm"));
        prune(&dir, 4, u64::MAX);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "m0-tag.cwasm",
                "m3-tag.cwasm",
                "m4-tag.cwasm",
                "m5-tag.cwasm",
                "notes.txt"
            ]
        );
        // By size: 250 bytes keep the two newest.
        prune(&dir, 100, 250);
        let n = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(n, 3, "two entries and the note");
        assert!(dir.join("m0-tag.cwasm").exists() && dir.join("m5-tag.cwasm").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
