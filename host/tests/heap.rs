//! Compiling a large plugin does not leave the process holding the compiler's memory:
//! after [`synthnet_io::heap::trim`] (which the configuration worker calls after every
//! change) the resident size comes back down. One test alone in its binary, so nothing
//! else allocates meanwhile.

mod common;

/// Resident memory of this process, bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages
        * nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .unwrap()
            .unwrap_or(4096) as u64
}

#[test]
fn the_compilers_memory_is_given_back() {
    let rt = common::runtime();
    // 19,000 functions each with some work: just under the function-count limit, and
    // a few hundred MB of compiler memory.
    let mut text = String::from(
        r#"(module (memory (export "memory") 1)
            (func (export "synthnet_abi_v1") (result i32) i32.const 0)
            (func (export "synthnet_alloc") (param i32) (result i32) i32.const 0)
            (func (export "synthnet_init") (param i32 i32 i64) (result i32) i32.const 0)
            (func (export "synthnet_process") (param i32 i64) (result i32) i32.const 0)
            (func (export "synthnet_error") (result i32) i32.const 0)"#,
    );
    for i in 0..19_000 {
        text.push_str(&format!(
            " (func (param i32) (result i32) local.get 0 i32.const {i} i32.add i32.const 3 i32.mul i32.const 7 i32.xor)"
        ));
    }
    text.push(')');
    let bytes = wat::parse_str(&text).unwrap();
    drop(text);
    synthnet_io::heap::trim();
    let before = rss();
    let module = rt.load("many.wasm", &bytes).expect("compiles");
    let peak = rss();
    drop(module);
    drop(bytes);
    synthnet_io::heap::trim();
    let after = rss();
    eprintln!(
        "resident: {} MiB before, {} MiB after compiling, {} MiB after trimming",
        before >> 20,
        peak >> 20,
        after >> 20
    );
    let grown = peak.saturating_sub(before);
    assert!(
        grown > 20 << 20,
        "compiling grew the process by only {} MiB: nothing to test",
        grown >> 20
    );
    assert!(
        after < before + grown / 4,
        "after trimming, {} MiB of the {} MiB compiling took are still resident",
        (after - before.min(after)) >> 20,
        grown >> 20
    );
}
