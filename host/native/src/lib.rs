//! # synthnet-native: the built-in plugins compiled natively
//!
//! The same plugin source as the embedded wasm, compiled into the host and driven
//! through the very same region layout and batch encoding. Used by `synthnet bench`
//! (built with `--features native`: the wasm/native ratio) and by the native-vs-wasm
//! differential tests. Not part of the default build: it compiles every built-in a
//! second time.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

use synthnet_runtime::{fingerprint, Answer, Factory, Instance, PluginError};
use synthnet_sdk::abi::Layout;
use synthnet_sdk::{Guest, Plugin};

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

pub struct NativeInstance<P: Plugin> {
    guest: Guest<P>,
    lay: Layout,
}

impl<P: Plugin + Send> Instance for NativeInstance<P> {
    fn layout(&self) -> &Layout {
        &self.lay
    }
    fn memory(&mut self) -> &mut [u8] {
        self.guest.region_mut()
    }
    fn process(&mut self, n: u32, now_ns: u64) -> Result<u32, String> {
        Ok(self.guest.process(n, now_ns))
    }
    fn snapshot(&mut self) -> Result<Vec<u8>, String> {
        Ok(self.guest.snapshot().to_vec())
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.guest.restore(state)
    }
    fn command(&mut self, cmd: &[u8], now_ns: u64) -> Result<Answer, String> {
        Ok(match self.guest.command(cmd, now_ns) {
            Ok(verdicts) => Answer::Reply {
                verdicts,
                reply: self.guest.reply().to_vec(),
            },
            Err(e) => Answer::Refused(e),
        })
    }
}

/// Makes native instances of plugin type `P` with one JSON config.
pub struct NativeFactory<P> {
    name: String,
    config: Vec<u8>,
    _p: std::marker::PhantomData<fn() -> P>,
}

impl<P: Plugin + Send + 'static> NativeFactory<P> {
    pub fn new(name: &str, config: &[u8]) -> Self {
        NativeFactory {
            name: name.to_string(),
            config: config.to_vec(),
            _p: std::marker::PhantomData,
        }
    }
}

impl<P: Plugin + Send + 'static> Factory for NativeFactory<P> {
    fn plugin(&self) -> &str {
        &self.name
    }
    fn instantiate(&self, seed: u64) -> Result<Box<dyn Instance>, PluginError> {
        let mut guest =
            Guest::<P>::new(&self.config, seed).map_err(|e| PluginError::new(&self.name, e))?;
        let addr = guest.header_addr();
        let lay = Layout::parse(guest.region_mut(), addr)
            .map_err(|e| PluginError::new(&self.name, e.0))?;
        Ok(Box::new(NativeInstance { guest, lay }))
    }
    fn fingerprint(&self) -> u64 {
        fingerprint(&[b"native", self.name.as_bytes(), &self.config])
    }
}
