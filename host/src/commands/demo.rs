//! `synthnet demo`: two network namespaces joined through synthnet, a ping across, the
//! configured next to the measured — and everything removed again, also on Ctrl-C and
//! on error.

use crate::daemon::control::Control;
use crate::daemon::{Bridge, Options};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;
use synthnet_config::Plan;
use synthnet_core::Direction;
use synthnet_runtime::PluginRef;
use synthnet_testkit::netns::{self, Middle, Topology};

/// Two network namespaces joined through synthnet: ping across and compare what the
/// spec configures with what ping measures; removes everything it made (also on
/// Ctrl-C). Needs root.
#[derive(clap::Args, Clone, Debug)]
#[command(
    after_long_help = "Examples:\n  sudo synthnet demo\n  sudo synthnet demo specs/synthetic-network-simple.json --count 50"
)]
pub struct DemoArgs {
    /// The spec; left out: the built-in default spec.
    pub spec: Option<PathBuf>,
    /// Pings per address family (the loss figure's 95% interval is printed: with
    /// 200, a 1% loss is told from none).
    #[arg(long, default_value_t = 200)]
    pub count: u32,
    /// Seconds between pings (below 0.2 needs root, which the demo has anyway).
    #[arg(long, default_value_t = 0.02)]
    pub interval: f64,
}

impl DemoArgs {
    /// `synthnet demo`: set up, ping, report, tear down (also on Ctrl-C).
    pub fn run(mut self) -> Result<ExitCode> {
        self.count = self.count.max(1);
        let ctl = Control::new()?;
        ctl.install_signal_handlers()?;
        run(&self, &ctl)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// What a plan promises a ping, where it can tell: (mean added RTT ms, loss ratio of a
/// round trip). `None` for a figure some stage of the default chains affects in a way
/// this does not model (a user's plugin, a shaper that may queue or drop, corruption).
pub fn expected(plan: &Plan) -> (Option<f64>, Option<f64>) {
    let mut rtt = Some(0.0);
    let mut pass = Some(1.0);
    for dir in Direction::BOTH {
        for s in &plan.direction(dir).default {
            let num =
                |k: &str, default: f64| s.config.get(k).and_then(|v| v.as_f64()).unwrap_or(default);
            let name = match &s.plugin {
                PluginRef::Builtin(name) => name.as_str(),
                PluginRef::File(_) => "",
            };
            match name {
                "latency" => rtt = rtt.map(|r| r + num("delay_ms", 0.0)),
                // Uniform in [0, jitter_ms] for a `strength` share of packets.
                "jitter" => {
                    rtt = rtt.map(|r| r + num("strength", 1.0) * num("jitter_ms", 0.0) / 2.0)
                }
                "loss" => pass = pass.map(|p| p * (1.0 - num("loss_ratio", 0.0))),
                // A ping is far below any sensible rate: the shaper neither queues nor
                // drops it (the queue could, under other traffic; then this is wrong).
                "rate" => {}
                // Corruption makes the reply fail its checksum: lost, at a rate this
                // does not know; other plugins: unknown.
                _ => {
                    rtt = None;
                    pass = None;
                }
            }
        }
    }
    (rtt, pass.map(|p| 1.0 - p))
}

/// A 95 % (Wilson score) interval for a loss ratio seen as `lost` of `n`.
pub fn loss_interval(lost: u32, n: u32) -> (f64, f64) {
    let n = n.max(1) as f64;
    let p = lost as f64 / n;
    let z: f64 = 1.96;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The summary lines of `ping -q`: (sent, received, avg RTT ms).
pub fn parse_ping(out: &str) -> Option<(u32, u32, Option<f64>)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty());
    let sent = nums.next()?.parse().ok()?;
    let received = nums.next()?.parse().ok()?;
    let avg = out
        .lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok());
    Some((sent, received, avg))
}

/// Stops the bridge thread and waits for it when dropped (before the namespaces go).
struct Running {
    ctl: Control,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ctl.request_stop();
        if let Some(h) = self.handle.take() {
            match h.join() {
                Ok(Err(e)) => eprintln!("synthnet: bridge: {e:#}"),
                Err(_) => eprintln!("synthnet: the bridge thread panicked"),
                Ok(Ok(())) => {}
            }
        }
    }
}

fn run(opts: &DemoArgs, ctl: &Control) -> Result<()> {
    if !netns::is_root() {
        bail!(
            "synthnet demo needs root: it creates network namespaces and veth pairs and \
             opens raw sockets. Run it as root, e.g. `sudo synthnet demo`."
        );
    }
    let topo = Topology::create("demo", Middle::Synthnet)?;
    eprintln!(
        "demo: namespaces {} (outside, {}) ── {} (synthnet: outer ⇄ inner) ── {} (inside, {})",
        topo.a.name,
        netns::A_V4,
        topo.middle().name,
        topo.b.name,
        netns::B_V4
    );
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Plan, String>>();
    let bridge_ctl = ctl.clone();
    let s_name = topo.middle().name.clone();
    let spec = opts.spec.clone();
    let handle = std::thread::Builder::new()
        .name("synthnet-bridge".into())
        .spawn(move || -> Result<()> {
            let setup = || -> Result<Bridge> {
                netns::enter(&s_name)?;
                Bridge::new(
                    Options {
                        outer: "outer".into(),
                        inner: "inner".into(),
                        spec,
                        stats: None,
                        ring_frames: 4096,
                        flow_table: 0,
                        publish: false,
                        command_log: None,
                        compile_budget: Some(crate::daemon::compile::DEFAULT_BUDGET),
                        timing: Default::default(),
                        persist: false,
                    },
                    &bridge_ctl,
                )
            };
            let mut b = match setup() {
                Ok(b) => b,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return Ok(());
                }
            };
            let _ = ready_tx.send(Ok(b.plan().clone()));
            b.run(&bridge_ctl)
        })
        .context("spawn the bridge thread")?;
    let running = Running {
        ctl: ctl.clone(),
        handle: Some(handle),
    };
    let plan = match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => bail!("the bridge did not start: {e}"),
        Err(_) => bail!("the bridge did not start within 30 s"),
    };
    let (rtt, loss) = expected(&plan);
    eprintln!(
        "demo: spec {} — pinging {} from {} ({} pings, {} s apart)",
        opts.spec
            .as_ref()
            .map_or("built-in default".into(), |p| p.display().to_string()),
        netns::B_V4,
        netns::A_V4,
        opts.count,
        opts.interval
    );
    let mut results = Vec::new();
    for (label, target) in [("IPv4", netns::B_V4), ("IPv6", netns::B_V6)] {
        if ctl.stopping() {
            break;
        }
        // One ping first, not counted: it waits for ARP/neighbour discovery, which
        // crosses the synthetic network too.
        let _ = topo
            .a
            .command("ping")
            .args(["-q", "-n", "-c", "1", "-W", "5", target])
            .output();
        let out = topo
            .a
            .command("ping")
            .args([
                "-q",
                "-n",
                "-c",
                &opts.count.to_string(),
                "-i",
                &opts.interval.to_string(),
                "-W",
                "5",
                target,
            ])
            .output()
            .context("cannot run ping (is iputils-ping installed?)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(r) = parse_ping(&text) else {
            bail!(
                "could not read ping's output: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        results.push((label, r));
    }
    drop(running);
    let known = |v: Option<f64>, unit: &str| {
        v.map_or("     (n/a)".to_string(), |v| format!("{v:>8.2} {unit}"))
    };
    println!("                     configured      measured");
    for (label, (sent, recv, avg)) in &results {
        let lost_n = sent.saturating_sub(*recv);
        let lost = lost_n as f64 / (*sent).max(1) as f64;
        let (lo, hi) = loss_interval(lost_n, *sent);
        println!(
            "{label} RTT (mean)      {}   {}",
            known(rtt, "ms"),
            avg.map_or("no replies".into(), |a| format!("{a:>8.2} ms"))
        );
        println!(
            "{label} loss            {}    {:>8.2} %   ({recv}/{sent} replies; 95% interval {:.2}–{:.2} %)",
            known(loss.map(|l| l * 100.0), "%"),
            lost * 100.0,
            lo * 100.0,
            hi * 100.0
        );
    }
    println!("(configured RTT: latency both ways plus mean jitter; the host path adds ~0.1 ms;");
    println!(" n/a: a stage affects it in a way the demo does not model)");
    drop(topo);
    eprintln!("demo: namespaces removed");
    Ok(())
}
