//! What [`export_plugin!`](crate::export_plugin) expands to: the wasm exports of ABI 1.1
//! over one [`Guest`](crate::Guest), plus the `synthnet.log` import. Every plugin exports
//! `synthnet_command` and `synthnet_reply`; one that does not implement
//! `Plugin::command` refuses every command with the trait's default message.
//!
//! The instance and its transfer buffers live in thread-locals behind `RefCell`s: free on
//! single-threaded wasm, sound on any target (a re-entrant call is a borrow panic, which
//! in wasm traps and the host contains, never two live `&mut`).

#![allow(unsafe_code)]

use std::cell::RefCell;

thread_local! {
    /// Bytes the host writes before `init`/`restore` (config, state).
    static INBOX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Bytes the plugin hands back: `[len: u32 LE][bytes]` (errors, snapshots).
    static OUTBOX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Address of the outbox's bytes, 0 when it is empty (no message).
pub fn outbox_addr() -> u32 {
    OUTBOX.with_borrow(|b| {
        if b.is_empty() {
            0
        } else {
            b.as_ptr() as usize as u32
        }
    })
}

/// `synthnet_alloc`: make room for `len` inbound bytes and return their address.
pub fn alloc(len: u32) -> u32 {
    INBOX.with_borrow_mut(|b| {
        b.clear();
        b.resize(len as usize, 0);
        b.as_ptr() as usize as u32
    })
}

/// Copy of the first `len` inbound bytes.
pub fn inbox(len: u32) -> Vec<u8> {
    INBOX.with_borrow(|b| b[..(len as usize).min(b.len())].to_vec())
}

/// Run `f` on the first `len` inbound bytes, in place: a command (up to 64 KiB, any
/// number of times) reuses the one inbox and copies nothing.
pub fn with_inbox<R>(len: u32, f: impl FnOnce(&[u8]) -> R) -> R {
    INBOX.with_borrow(|b| f(&b[..(len as usize).min(b.len())]))
}

/// Put `bytes` in the outbox and return its address.
pub fn outbox(bytes: &[u8]) -> u32 {
    OUTBOX.with_borrow_mut(|b| {
        b.clear();
        b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        b.extend_from_slice(bytes);
        b.as_ptr() as usize as u32
    })
}

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "synthnet")]
extern "C" {
    #[link_name = "log"]
    fn host_log(level: u32, ptr: u32, len: u32);
}

/// Log levels for [`log`].
pub mod level {
    pub const ERROR: u32 = 1;
    pub const WARN: u32 = 2;
    pub const INFO: u32 = 3;
    pub const DEBUG: u32 = 4;
}

/// Write a line to the host's log (rate-limited there). Never call it per packet.
pub fn log(level: u32, msg: &str) {
    #[cfg(target_arch = "wasm32")]
    // SAFETY: the host reads `len` bytes at `ptr` with bounds checks; the slice is live.
    unsafe {
        host_log(level, msg.as_ptr() as usize as u32, msg.len() as u32)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = level;
        eprintln!("plugin: {msg}");
    }
}

/// Send panics to the host's log before the module traps.
pub fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    std::panic::set_hook(Box::new(|info| log(level::ERROR, &info.to_string())));
}

/// Generate the ABI v1 exports for a [`Plugin`](crate::Plugin) type. Outside wasm it
/// only names the type (`SynthnetPlugin`, for the host's native builds), so native
/// builds of several plugins link side by side.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The plugin type this crate exports (the host's native builds find it here).
        #[doc(hidden)]
        #[allow(dead_code)]
        pub type SynthnetPlugin = $plugin;

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        mod __synthnet_exports {
            #[allow(unused_imports)]
            use super::*;
            use $crate::export as x;
            thread_local! {
                static GUEST: ::std::cell::RefCell<Option<$crate::Guest<$plugin>>> =
                    const { ::std::cell::RefCell::new(None) };
            }

            #[no_mangle]
            pub extern "C" fn synthnet_abi_v1() -> u32 {
                $crate::abi::ABI_MINOR as u32
            }

            #[no_mangle]
            pub extern "C" fn synthnet_alloc(len: u32) -> u32 {
                x::alloc(len)
            }

            #[no_mangle]
            pub extern "C" fn synthnet_init(_ptr: u32, len: u32, seed: u64) -> u32 {
                x::install_panic_hook();
                let config = x::inbox(len);
                match $crate::Guest::<$plugin>::new(&config, seed) {
                    Ok(g) => {
                        let addr = g.header_addr();
                        GUEST.with_borrow_mut(|s| *s = Some(g));
                        addr
                    }
                    Err(e) => {
                        x::outbox(e.as_bytes());
                        0
                    }
                }
            }

            #[no_mangle]
            pub extern "C" fn synthnet_error() -> u32 {
                x::outbox_addr()
            }

            #[no_mangle]
            pub extern "C" fn synthnet_process(n: u32, now_ns: u64) -> u32 {
                GUEST.with_borrow_mut(|g| match g {
                    Some(g) => g.process(n, now_ns),
                    None => 0,
                })
            }

            #[no_mangle]
            pub extern "C" fn synthnet_command(_ptr: u32, len: u32, now_ns: u64) -> i32 {
                let done = GUEST.with_borrow_mut(|g| match g {
                    Some(g) => x::with_inbox(len, |cmd| g.command(cmd, now_ns)),
                    None => Err("the plugin is not initialised".into()),
                });
                match done {
                    Ok(nv) => nv as i32,
                    Err(e) => {
                        x::outbox(e.as_bytes());
                        -1
                    }
                }
            }

            #[no_mangle]
            pub extern "C" fn synthnet_reply() -> u32 {
                GUEST.with_borrow(|g| match g {
                    Some(g) if !g.reply_framed().is_empty() => {
                        g.reply_framed().as_ptr() as usize as u32
                    }
                    _ => 0,
                })
            }

            #[no_mangle]
            pub extern "C" fn synthnet_snapshot() -> u32 {
                GUEST.with_borrow_mut(|g| match g {
                    Some(g) => {
                        let bytes = g.snapshot().to_vec();
                        x::outbox(&bytes)
                    }
                    None => 0,
                })
            }

            #[no_mangle]
            pub extern "C" fn synthnet_restore(_ptr: u32, len: u32) -> u32 {
                let state = x::inbox(len);
                GUEST.with_borrow_mut(|g| match g {
                    Some(g) => match g.restore(&state) {
                        Ok(()) => 0,
                        Err(e) => {
                            x::outbox(e.as_bytes());
                            1
                        }
                    },
                    None => 1,
                })
            }
        }
    };
}
