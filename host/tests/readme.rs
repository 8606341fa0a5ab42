//! The README's commands, run as written, so the README cannot drift from the tool.
//!
//! Every line of a ```sh block that runs `synthnet` is listed in [`COVERED`]; a command
//! added to the README without being run here fails
//! `readme_synthnet_commands_are_all_run_by_this_test`. The root test then runs each in a
//! scratch directory with the built binary first on `PATH`, in the README's order, with
//! only these substitutions, which a reader makes too: `sudo` left out (we are root;
//! this machine may have no sudo), `blue` the test's own network namespace, `PORT` the
//! port `attach` printed. Other tools' commands (`./scripts/run`, `cargo`) are not run.
//!
//! **The root test needs root** (namespaces, raw sockets, `attach`) and fails without it.
//! Its namespaces are unique and removed on drop, also when it fails.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use synthnet_testkit::netns::{self, Middle, Netns, Topology};

const README: &str = include_str!("../../README.md");
const SYNTHNET: &str = env!("CARGO_BIN_EXE_synthnet");

/// Every synthnet command of the README, in its order, exactly as written (comments
/// cut off). Each is run by `root_readme_commands_run_as_written`.
const COVERED: &[&str] = &[
    "synthnet run slow.json -- ping -c 3 10.0.2.2",
    "synthnet run slow.json",
    "sudo \"$(command -v synthnet)\" attach netns:blue slow.json --api auto",
    "synthnet ctl --api 127.0.0.1:PORT patch '{\"ingress\": {\"latency\": 200}}'",
    "synthnet check specs/native.json",
    "sudo \"$(command -v synthnet)\" bridge outer inner slow.json --api 127.0.0.1:8080",
    "synthnet ctl get",
    "synthnet ctl patch '{\"ingress\": {\"loss\": 0.05}}'",
    "synthnet ctl stats",
    "synthnet ctl flows --top 5",
    "synthnet ctl save kept.json",
    "synthnet plugin new odd-drop",
];

/// The lines of the README's ```sh blocks, comments cut off.
fn sh_lines() -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in README.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            inside = !inside && t == "```sh";
            continue;
        }
        if inside && !t.is_empty() && !t.starts_with('#') {
            let cmd = t.split("  #").next().unwrap_or(t).trim();
            out.push(cmd.to_string());
        }
    }
    out
}

/// The README's synthnet commands.
fn synthnet_lines() -> Vec<String> {
    sh_lines()
        .into_iter()
        .filter(|l| l.contains("synthnet ") || l.contains("synthnet)"))
        .collect()
}

#[test]
fn readme_synthnet_commands_are_all_run_by_this_test() {
    let found = synthnet_lines();
    assert_eq!(
        found,
        COVERED.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "the README's synthnet commands changed: run the new ones in this test"
    );
    assert!(
        README.lines().count() <= 200,
        "the README is over 200 lines"
    );
    // The two commands CI and people rely on.
    let all = sh_lines();
    assert!(all.iter().any(|l| l == "./scripts/run"), "no ./scripts/run");
    assert!(
        all.iter().any(|l| l == "./scripts/test"),
        "no ./scripts/test"
    );
}

/// A scratch directory with the repository's `specs/` linked in, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let d = std::env::temp_dir().join(netns::unique("readme"));
        std::fs::create_dir_all(&d).unwrap();
        let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
        std::os::unix::fs::symlink(specs.canonicalize().unwrap(), d.join("specs")).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// README line `line` as a shell command in `dir`, with the substitutions the module
/// names, the binary first on PATH, and `ns` (if any) as its network namespace.
fn shell(dir: &Path, line: &str, subst: &[(&str, &str)], ns: Option<&str>) -> Command {
    let mut l = line.to_string();
    if let Some(rest) = l.strip_prefix("sudo ") {
        l = rest.to_string();
    }
    for (from, to) in subst {
        l = l.replace(from, to);
    }
    let bin = Path::new(SYNTHNET).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, "sh", "-c", &l]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", &l]);
            c
        }
    };
    c.current_dir(dir)
        .env("PATH", path)
        .env("SHELL", "/bin/sh")
        .env_remove("SYNTHNET_API");
    c
}

/// Run README line `line` to its end; its standard output (it must succeed).
fn run(dir: &Path, line: &str, subst: &[(&str, &str)], env: &[(&str, &str)]) -> String {
    let mut c = shell(dir, line, subst, None);
    c.envs(env.iter().copied());
    let out = c.output().unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{line}: {}\n{o}\n{e}", out.status);
    o
}

/// The minimum RTT of ping's summary line, in ms (the first ping of a fresh path also
/// waits for neighbour resolution across the delayed link).
fn ping_min(out: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .unwrap_or_else(|| panic!("no ping summary in:\n{out}"));
    let nums = line.split('=').nth(1).unwrap().trim();
    nums.split('/').next().unwrap().parse().unwrap()
}

/// A long-running README command (`attach`, `bridge`): started, with its stderr
/// collected and searched line by line.
struct Daemon {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn start(mut c: Command) -> Daemon {
        let mut child = c
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        Daemon {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The first stderr line containing `what`, within `timeout`.
    fn wait_for(&mut self, what: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(what) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {what:?} within {timeout:?}:\n{}", self.log.join("\n"));
    }

    /// SIGINT, then its exit (it must end cleanly within 15 s).
    fn interrupt(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.try_recv() {
                    self.log.push(l);
                }
                assert!(s.success(), "{s}:\n{}", self.log.join("\n"));
                return;
            }
            assert!(Instant::now() < end, "did not stop on SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn root_readme_commands_run_as_written() {
    assert!(
        netns::is_root(),
        "this test needs root (namespaces, raw sockets, attach)"
    );
    let _s = common::serial();
    let scratch = Scratch::new();
    let dir = scratch.0.as_path();
    let cmd = |i: usize| COVERED[i];
    // The quick start's spec, made by its own line.
    let echo = sh_lines()
        .into_iter()
        .find(|l| l.starts_with("echo ") && l.ends_with("> slow.json"))
        .expect("the quick start writes slow.json");
    run(dir, &echo, &[], &[]);

    // run: a command behind the link (50 ms each way), then a shell.
    let out = run(dir, cmd(0), &[], &[]);
    assert!(out.contains("3 received"), "{out}");
    let rtt = ping_min(&out);
    assert!(
        (100.0..130.0).contains(&rtt),
        "RTT {rtt} ms, configured 100:\n{out}"
    );
    let mut sh = shell(dir, cmd(1), &[], None)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sh.stdin
        .take()
        .unwrap()
        .write_all(b"ping -c 1 10.0.2.2 && echo shell-ran\nexit 0\n")
        .unwrap();
    let out = sh.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("shell-ran"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // attach netns:blue — a namespace with an interface and a neighbour to ping.
    let blue = Netns::create(&netns::unique("blue")).expect("namespace blue");
    let peer = Netns::create(&netns::unique("peer")).expect("its peer");
    netns::ip(&[
        "link", "add", "eth0", "netns", &blue.name, "type", "veth", "peer", "name", "eth0",
        "netns", &peer.name,
    ])
    .unwrap();
    for (ns, addr) in [(&blue, "10.48.0.2/24"), (&peer, "10.48.0.1/24")] {
        ns.ip(&["addr", "add", addr, "dev", "eth0"]).unwrap();
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    }
    blue.ip(&["route", "add", "default", "via", "10.48.0.1"])
        .unwrap();
    let ping_blue = || {
        let o = blue
            .command("ping")
            .args(["-c", "3", "-i", "0.2", "10.48.0.1"])
            .output()
            .unwrap();
        ping_min(&String::from_utf8_lossy(&o.stdout))
    };
    ping_blue(); // neighbours resolved
                 // `exec`: signals reach synthnet, not the shell that started it.
    let mut attach = Daemon::start(shell(
        dir,
        cmd(2),
        &[("blue", &blue.name), ("\"$(", "exec \"$(")],
        None,
    ));
    let line = attach.wait_for("web UI and API on http://", Duration::from_secs(60));
    let addr = line
        .split("http://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let port = addr.rsplit(':').next().unwrap().to_string();
    attach.wait_for("attached", Duration::from_secs(30));
    let rtt = ping_blue();
    assert!((100.0..115.0).contains(&rtt), "attached: RTT {rtt} ms");
    let out = run(dir, cmd(3), &[("PORT", &port)], &[]);
    assert!(out.contains("applied: generation"), "{out}");
    let rtt = ping_blue();
    assert!(
        (250.0..290.0).contains(&rtt),
        "after the patch: RTT {rtt} ms"
    );
    // The other ctl lines, against this API through SYNTHNET_API, as the README says.
    let api = [("SYNTHNET_API", addr.as_str())];
    let get = run(dir, cmd(6), &[], &api);
    assert!(
        get.contains("spec file:") && get.contains("differs from the file"),
        "{get}"
    );
    let out = run(dir, cmd(7), &[], &api);
    assert!(out.contains("not written to any file"), "{out}");
    let stats = run(dir, cmd(8), &[], &api);
    assert!(
        stats.contains("direction") && stats.contains("ingress") && stats.contains("pps"),
        "{stats}"
    );
    let flows = run(dir, cmd(9), &[], &api);
    assert!(flows.contains("flows tracked"), "{flows}");
    run(dir, cmd(10), &[], &api);
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("kept.json")).unwrap()).unwrap();
    assert_eq!(kept["ingress"]["latency"], serde_json::json!(200));
    assert_eq!(kept["ingress"]["loss"], serde_json::json!(0.05));
    // The user's file is theirs: slow.json is what the echo wrote.
    let slow: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("slow.json")).unwrap()).unwrap();
    assert_eq!(slow["ingress"]["latency"], serde_json::json!(50));
    attach.interrupt();
    let rtt = ping_blue();
    assert!(rtt < 20.0, "after Ctrl-C: RTT {rtt} ms");

    // check.
    let out = run(dir, cmd(4), &[], &[]);
    assert!(out.trim_end().ends_with("ok"), "{out}");

    // bridge outer inner, in a namespace that has them; its lock files go on exit.
    let topo = Topology::create("rdme", Middle::Synthnet).expect("topology");
    let mut bridge = Daemon::start(shell(
        dir,
        cmd(5),
        &[("\"$(", "exec \"$(")],
        Some(&topo.middle().name),
    ));
    bridge.wait_for(
        "API and web UI on http://127.0.0.1:8080",
        Duration::from_secs(60),
    );
    bridge.wait_for("bridging outer", Duration::from_secs(30));
    // The bridge's claims: `<netns inode>-<interface>.lock` in /run/synthnet.
    let ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/run/netns/{}", topo.middle().name))
            .unwrap()
            .ino()
    };
    let locks: Vec<PathBuf> = ["outer", "inner"]
        .iter()
        .map(|i| PathBuf::from(format!("/run/synthnet/{ino}-{i}.lock")))
        .collect();
    for l in &locks {
        assert!(l.is_file(), "no lock file {} while bridging", l.display());
    }
    bridge.interrupt();
    for l in &locks {
        assert!(!l.exists(), "{} left after a clean exit", l.display());
    }

    // plugin new.
    let out = run(dir, cmd(11), &[], &[]);
    assert!(out.contains("created"), "{out}");
    assert!(dir.join("odd-drop/Cargo.toml").is_file());
}
