//! Files a real bridge writes on its own — the spec it saves after an API change, its
//! temporary file, its interface locks — with a FIFO or a symbolic link planted at
//! each (issue 22, N3). Every change is either refused with a message naming the path
//! or written safely; the file a link points to is never touched, and the
//! configuration thread keeps answering. **These tests need root** (namespaces, raw
//! sockets, `/run/synthnet`); each says so in its name and fails without it.

mod common;

use common::bridge::pinned_topology;
use common::files::{SpecFile, TempDir};
use common::rig::Rig;
use common::serial;
use serde_json::json;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const START: &str = r#"{"ingress":{"latency":5},"egress":{}}"#;

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

fn is_fifo(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_fifo())
}

fn is_link(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Removes a planted path on drop, whether the test passed or not.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn root_api_saves_refuse_links_and_fifos_and_touch_no_victim() {
    let _s = serial();
    let t0 = Instant::now();
    let rig = Rig::start("wrn1", START, &["--persist"]);
    let pid = rig.bridge.child.id();
    let spec = rig.spec_file.path.clone();
    let dir = spec.parent().unwrap().to_path_buf();
    let victims = TempDir::new("wrn1v");
    let victim = victims.join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let generation = |rig: &Rig| rig.spec()["generation"].as_u64().unwrap();
    let put = |rig: &Rig, latency: u32| {
        let t = Instant::now();
        let a = rig.call(
            "PUT",
            "/api/v1/spec",
            &json!({"ingress": {"latency": latency}, "egress": {}}).to_string(),
        );
        (a, t.elapsed())
    };

    // 1. The old predictable temporary name (and the next pids) taken by a FIFO and by
    // links to the victim: the save goes through a name nobody could guess.
    let mut planted = vec![];
    for (i, p) in [pid, pid + 1].into_iter().enumerate() {
        let p = dir.join(format!(".spec.json.synthnet-{p}.tmp"));
        if i == 0 {
            mkfifo(&p);
        } else {
            std::os::unix::fs::symlink(&victim, &p).unwrap();
        }
        planted.push(Planted(p));
    }
    let (a, took) = put(&rig, 11);
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(took < Duration::from_secs(5), "the save took {took:?}");
    assert_eq!(rig.spec_file.read()["ingress"]["latency"], 11);
    assert!(std::fs::symlink_metadata(&spec)
        .unwrap()
        .file_type()
        .is_file());
    assert!(is_fifo(&planted[0].0) && is_link(&planted[1].0));
    let g = generation(&rig);

    // 2. The spec path itself a link to the victim: refused, naming it; nothing changes.
    std::fs::remove_file(&spec).unwrap();
    std::os::unix::fs::symlink(&victim, &spec).unwrap();
    let (a, took) = put(&rig, 12);
    assert_eq!(a.status, 422, "{}", a.text());
    let msg = a.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains(&spec.display().to_string()) && msg.contains("symbolic link"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(5), "the refusal took {took:?}");
    assert_eq!(generation(&rig), g);
    assert!(is_link(&spec));

    // 3. The spec path a FIFO: refused at once (no reader is waited for).
    std::fs::remove_file(&spec).unwrap();
    mkfifo(&spec);
    let (a, took) = put(&rig, 13);
    assert_eq!(a.status, 422, "{}", a.text());
    let msg = a.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        msg.contains(&spec.display().to_string()) && msg.contains("FIFO"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(5), "the refusal took {took:?}");
    assert_eq!(generation(&rig), g);
    // SIGHUP on a FIFO is refused too, and the configuration thread goes on.
    let refused = rig.bridge.count("change refused");
    rig.bridge.signal(nix::sys::signal::Signal::SIGHUP);
    let t = Instant::now();
    while rig.bridge.count("change refused") == refused {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "SIGHUP with a FIFO at the spec path: no answer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = rig.bridge.lines();
    let last = lines
        .iter()
        .rfind(|l| l.contains("change refused"))
        .cloned()
        .unwrap_or_default();
    assert!(last.contains("not a regular file"), "{last}");
    assert_eq!(generation(&rig), g);
    assert!(is_fifo(&spec));

    // 4. A regular file again: the next change applies and is saved.
    std::fs::remove_file(&spec).unwrap();
    std::fs::write(&spec, START).unwrap();
    let (a, _) = put(&rig, 14);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(generation(&rig), g + 1);
    assert_eq!(rig.spec_file.read()["ingress"]["latency"], 14);

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    // Nothing of ours left in the directory: the spec and what the test planted.
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("synthnet-") && !planted.iter().any(|p| p.0.ends_with(n)))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    println!(
        "saves with a FIFO and links planted: refused or written safely; test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// A bridge whose interface lock (`/run/synthnet/<netns inode>-outer.lock`) is a link
/// to a victim or a FIFO refuses to start, naming it, without blocking or writing.
#[test]
fn root_bridge_refuses_a_link_or_fifo_at_its_lock() {
    let _s = serial();
    let t0 = Instant::now();
    let topo = pinned_topology("wrn2");
    let spec = SpecFile::new("wrn2", START);
    let victims = TempDir::new("wrn2v");
    let victim = victims.join("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let ino = std::fs::metadata(format!("/run/netns/{}", topo.middle().name))
        .expect("the namespace's file")
        .ino();
    {
        use std::os::unix::fs::DirBuilderExt;
        // As the bridge makes it: private to root.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create("/run/synthnet")
            .unwrap();
    }
    let lock = PathBuf::from(format!("/run/synthnet/{ino}-outer.lock"));
    let _ = std::fs::remove_file(&lock);
    for kind in ["symbolic link", "FIFO"] {
        let planted = Planted(lock.clone());
        if kind == "FIFO" {
            mkfifo(&lock);
        } else {
            std::os::unix::fs::symlink(&victim, &lock).unwrap();
        }
        let mut child = topo
            .middle()
            .command(env!("CARGO_BIN_EXE_synthnet"))
            .args(["bridge", "outer", "inner"])
            .arg(&spec.path)
            .args(["--api", "off", "--stats", "0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start synthnet bridge");
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("the bridge neither started nor refused with a {kind} at its lock");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            !status.success(),
            "started with a {kind} at its lock: {err}"
        );
        assert!(
            err.contains(&lock.display().to_string()) && err.contains(kind),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        drop(planted);
    }
    println!(
        "lock paths with a link and a FIFO: refused; test took {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
