//! Giving freed heap memory back to the system.
//!
//! Compiling a large plugin makes wasmtime's compiler allocate hundreds of MB and free
//! them again; glibc's allocator keeps freed arena memory mapped, so a bridge that once
//! compiled a big module would keep that memory for good. [`trim`] asks glibc to return
//! what it can (`malloc_trim`); the configuration worker calls it after each change.

/// Return free heap memory to the system; `true` when some was released.
pub fn trim() -> bool {
    // SAFETY: malloc_trim has no preconditions: it takes glibc's arena locks itself and
    // only releases memory no allocation owns.
    unsafe { libc::malloc_trim(0) != 0 }
}
