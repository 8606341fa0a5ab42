//! A `synthnet bridge` process in a test topology's middle namespace, for the
//! namespace tests: its log collected, waited on, signalled, killed on drop.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use synthnet_testkit::netns::{self, Middle, Topology};

/// A `synthnet bridge` process in the middle namespace; killed on drop.
pub struct BridgeProc {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl BridgeProc {
    pub fn start(topo: &Topology, spec: &Path, extra: &[&str]) -> BridgeProc {
        let mut cmd = topo.middle().command(env!("CARGO_BIN_EXE_synthnet"));
        cmd.args(["bridge", "outer", "inner"]).arg(spec).args(extra);
        Self::spawn(cmd)
    }

    /// [`BridgeProc::start`] under `ulimit -n nofile` (soft and hard limits both), as a
    /// service manager might start it.
    pub fn start_with_nofile(
        topo: &Topology,
        spec: &Path,
        extra: &[&str],
        nofile: u32,
    ) -> BridgeProc {
        let mut cmd = topo.middle().command("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_synthnet"))
            .args(["bridge", "outer", "inner"])
            .arg(spec)
            .args(extra);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: std::process::Command) -> BridgeProc {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start synthnet bridge");
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        let b = BridgeProc { child, log };
        b.wait_for("bridging", Duration::from_secs(30));
        b
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

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

    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, and the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(Signal::SIGTERM);
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "bridge ignored SIGTERM"
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

/// `synthnet ctl ARGS` run in namespace `ns` (where the bridge's API listens on its
/// default address), as a user types it.
pub fn ctl(ns: &synthnet_testkit::netns::Netns, args: &[&str]) -> std::process::Output {
    ns.command(env!("CARGO_BIN_EXE_synthnet"))
        .arg("ctl")
        .args(args)
        .output()
        .expect("run synthnet ctl")
}

/// The tests' topology — hosts A and B, synthnet's namespace between them — with static
/// neighbours, so what a test measures carries no ARP/ND. Needs root, and says so.
pub fn pinned_topology(tag: &str) -> Topology {
    assert!(
        netns::is_root(),
        "this test needs root (network namespaces and raw sockets)"
    );
    let t = Topology::create(tag, Middle::Synthnet).expect("build the test topology");
    t.pin_neighbours().expect("static neighbours");
    t
}
