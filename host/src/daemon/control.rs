//! How the outside reaches the engine thread: stop and reload flags (set by signals,
//! registered once), and a self-pipe that wakes the engine from its sleep to notice them
//! or a prepared change.

use anyhow::Result;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct Control {
    pub stop: Arc<AtomicBool>,
    pub reload: Arc<AtomicBool>,
    wake_tx: Arc<UnixStream>,
    wake_rx: Arc<UnixStream>,
}

impl Control {
    pub fn new() -> Result<Control> {
        let (tx, rx) = UnixStream::pair()?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        Ok(Control {
            stop: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(AtomicBool::new(false)),
            wake_tx: Arc::new(tx),
            wake_rx: Arc::new(rx),
        })
    }

    /// SIGHUP reloads, SIGINT and SIGTERM stop (each also wakes the engine thread).
    pub fn install_signal_handlers(&self) -> Result<()> {
        self.install_reload_handler()?;
        self.install_stop_handlers()
    }

    /// SIGHUP sets the reload flag and wakes the engine thread. Installed before a
    /// bridge starts, so a SIGHUP during startup is kept for after it.
    pub fn install_reload_handler(&self) -> Result<()> {
        use signal_hook::consts::SIGHUP;
        signal_hook::flag::register(SIGHUP, self.reload.clone())?;
        signal_hook::low_level::pipe::register(SIGHUP, self.wake_tx.try_clone()?)?;
        Ok(())
    }

    /// SIGINT and SIGTERM set the stop flag and wake the engine thread. A bridge
    /// installs them once it runs: until then (compiling plugins can take long) they
    /// keep their default action and end the process at once.
    pub fn install_stop_handlers(&self) -> Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, self.stop.clone())?;
            signal_hook::low_level::pipe::register(sig, self.wake_tx.try_clone()?)?;
        }
        Ok(())
    }

    /// Wake the engine thread (it then looks at the flags and its inboxes).
    pub fn wake(&self) {
        let _ = (&*self.wake_tx).write(&[1]);
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The end the engine thread sleeps on.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&*self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
    }
}
