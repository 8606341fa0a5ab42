//! What `synthnet bridge` writes to a terminal and to a pipe: on a terminal a status
//! line redrawn in place (cleared with CR + erase-line before each draw and before each
//! log line), `-q` none; on a pipe (a log file, CI) no periodic line unless `--stats
//! SECS`. The terminal is a pseudo-terminal from util-linux's `script`. **These tests
//! need root** (namespaces, raw sockets) and fail without it.

use std::process::Command;
use synthnet_testkit::netns::{self, Netns};

const SYNTHNET: &str = env!("CARGO_BIN_EXE_synthnet");

/// A namespace with a veth pair `outer` ⇄ `inner`, both up.
fn pair(tag: &str) -> Netns {
    assert!(netns::is_root(), "this test needs root (namespaces)");
    let ns = Netns::create(&netns::unique(tag)).expect("namespace");
    ns.ip(&[
        "link", "add", "outer", "type", "veth", "peer", "name", "inner",
    ])
    .unwrap();
    ns.ip(&["link", "set", "outer", "up"]).unwrap();
    ns.ip(&["link", "set", "inner", "up"]).unwrap();
    ns
}

/// Run the bridge with `flags` for `secs` on a pseudo-terminal; everything it wrote.
fn on_a_terminal(ns: &Netns, flags: &str, secs: f64) -> String {
    let dir = std::env::temp_dir().join(netns::unique("tty"));
    std::fs::create_dir_all(&dir).unwrap();
    let typescript = dir.join("typescript");
    // The bridge gets its SIGINT from a `timeout` inside the terminal session, so it
    // stops as a user's Ctrl-C stops it, and `script` returns only once it has exited
    // (a signal to `script` itself would leave the bridge to be killed, or outlive it and
    // still hold the interface's lock when the next run starts). The outer `timeout`
    // only guards against a hang.
    let status = Command::new("timeout")
        .args(["-s", "KILL", "60", "ip", "netns", "exec", &ns.name])
        .args(["script", "-qfec"])
        .arg(format!(
            "timeout --preserve-status -s INT {secs} {SYNTHNET} bridge outer inner --api off {flags}"
        ))
        .arg(&typescript)
        .status()
        .expect("run script");
    let text = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status}:\n{text}");
    text
}

#[test]
fn root_bridge_status_line_on_a_terminal_quiet_and_logs_on_a_pipe() {
    let ns = pair("stat");
    let tty = on_a_terminal(&ns, "", 3.5);
    let draws = tty.matches("\r\x1b[2Kingress ").count();
    assert!(draws >= 2, "{draws} status draws in 3.5 s:\n{tty:?}");
    assert!(
        tty.contains("| held ") && tty.contains(" out | egress "),
        "{tty:?}"
    );
    // Log lines clear the status line first.
    assert!(tty.contains("\r\x1b[2K["), "{tty:?}");
    let quiet = on_a_terminal(&ns, "-q", 2.5);
    assert!(!quiet.contains("| held "), "-q still draws:\n{quiet:?}");

    // On a pipe: the log only, no periodic line (a minute of a log file would hold 60).
    let out = ns
        .command("timeout")
        .args([
            "--preserve-status",
            "-s",
            "INT",
            "2.5",
            SYNTHNET,
            "bridge",
            "outer",
            "inner",
            "--api",
            "off",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("bridging outer"), "{err}");
    assert!(!err.contains("| held") && !err.contains("stats:"), "{err}");
    assert!(!err.contains('\x1b'), "escape codes on a pipe: {err:?}");
    // --stats SECS: a line every SECS, as before.
    let out = ns
        .command("timeout")
        .args([
            "--preserve-status",
            "-s",
            "INT",
            "2.5",
            SYNTHNET,
            "bridge",
            "outer",
            "inner",
            "--api",
            "off",
        ])
        .args(["--stats", "0.5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let lines = err.lines().filter(|l| l.starts_with("stats:")).count();
    assert!(
        lines >= 3,
        "{lines} stats lines in 2.5 s with --stats 0.5:\n{err}"
    );
}
