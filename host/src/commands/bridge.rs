//! `synthnet bridge OUTER INNER [SPEC]`: the main job, and the one way every front door
//! (`run`, `attach`, `takeover`) ends up serving a link.
//!
//! [`BridgeArgs`] are the command's flags; [`ApiArgs`] are the API's, shared by every
//! command that serves one. [`serve`] runs a bridge to its end: claim and open both
//! interfaces, apply the spec, start the API on a listener bound before anything else,
//! say that it is ready, and forward packets until SIGINT/SIGTERM.

use anyhow::{Context, Result};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::api::ApiOptions;
use crate::daemon::control::Control;
use crate::daemon::timing::Timing;
use crate::daemon::{Bridge, Options};

const BRIDGE_EXAMPLES: &str = "\
Examples:
  sudo synthnet bridge veth-out veth-in spec.json
  sudo synthnet bridge eth1 eth2 spec.json --api 127.0.0.1:9000 --persist
  sudo synthnet bridge veth-out veth-in --stats 5 2>bridge.log    # a stats line every 5 s

On a terminal the bridge redraws one status line (rates, held packets, drops); -q hides
it, -v adds drops by cause and plugin counters, --stats SECS logs lines instead.
Changes through the API and web UI live in memory unless --persist; SIGHUP re-reads the
spec file.";

/// Flows per interface's table when none is given: enough for the API's flow list.
pub const DEFAULT_FLOW_TABLE: usize = 4096;

/// `--flow-table` as given, else its default: the tables exist for the API (flow list,
/// `/top`), so with the API off they cost memory and time per packet for nobody.
pub fn flow_table_size(given: Option<usize>, api_on: bool) -> usize {
    given.unwrap_or(if api_on { DEFAULT_FLOW_TABLE } else { 0 })
}

/// Seconds given on the command line: a finite number ≥ 0.
pub fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("must be a number of seconds ≥ 0, got {s:?}")),
    }
}

/// Bridge two interfaces: the spec's ingress chain on OUTER → INNER, its egress
/// chain on INNER → OUTER. SIGHUP reloads the spec (and changed plugins) without
/// losing a packet; SIGINT/SIGTERM stop. Needs root or CAP_NET_RAW.
#[derive(clap::Args, Debug)]
#[command(after_long_help = BRIDGE_EXAMPLES)]
pub struct BridgeArgs {
    /// The outside interface (towards the network).
    pub outer: String,
    /// The inside interface (towards the application).
    pub inner: String,
    /// The spec (JSON); left out: the built-in default spec.
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Write one line to this inherited file descriptor once the bridge forwards
    /// packets (and its API listens), then close it: how a supervisor knows it is up.
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<i32>,
    /// No status line on the terminal (log lines still go to stderr).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// A status line with more detail: drops by cause and plugins' own counters.
    #[arg(short, long)]
    pub verbose: bool,
}

/// The engine's flags, the same for every command that runs a bridge.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Print a stats line on stderr every SECS seconds (a log, one line each, for files
    /// and CI); 0: none. On a terminal, `bridge` shows a status line redrawn in place
    /// instead (see -q, -v).
    #[arg(long, default_value_t = 0.0, value_parser = seconds, value_name = "SECS")]
    pub stats: f64,
    /// Receive ring frames per interface (2 KiB each).
    #[arg(long, default_value_t = 4096)]
    pub ring_frames: usize,
    /// Flows each interface counts for the API's flow list and synthetic-network's
    /// /top profiles (0: no per-flow accounting). Default: 4096, or 0 with `--api off`
    /// (nothing would read the tables).
    #[arg(long, value_name = "N")]
    pub flow_table: Option<usize>,
    /// Append every command handed to a plugin (API, `ctl command`, the schedule) to
    /// FILE, one JSON line each with its engine time, for `synthnet replay --commands`.
    #[arg(long, value_name = "FILE")]
    pub command_log: Option<PathBuf>,
    /// Seconds a plugin file may take to compile (CPU and wall clock, in a child
    /// process); a module that takes longer is refused, naming it. 0: no budget
    /// (compiled in the bridge, however long it takes).
    #[arg(long, default_value_t = crate::daemon::compile::DEFAULT_BUDGET.as_secs_f64(), value_parser = seconds, value_name = "SECS")]
    pub compile_budget: f64,
    /// How hard the engine works to send each packet at exactly its time: `precise`
    /// spins up to 500 µs before each departure; `balanced` spins at most the median
    /// timer lateness (≤ 100 µs); `lean` never wakes early and lets departures within
    /// 250 µs share a wake-up (within 1 ms). `synthnet check` prints each promise.
    #[arg(long, value_enum, default_value_t = Timing::default(), value_name = "SETTING")]
    pub timing: Timing,
    /// Write every change made through the API or the UI back to the spec file
    /// (atomically). Without it the file is never written: changes live in memory,
    /// and SIGHUP re-reads the file.
    #[arg(long)]
    pub persist: bool,
}

impl EngineArgs {
    /// The bridge's options for these flags between `outer` and `inner`.
    pub fn options(
        &self,
        outer: String,
        inner: String,
        spec: Option<PathBuf>,
        api_on: bool,
    ) -> Result<Options> {
        anyhow::ensure!(
            (64..=1 << 20).contains(&self.ring_frames),
            "--ring-frames: must be within 64..=1048576, got {}",
            self.ring_frames
        );
        let flow_table = flow_table_size(self.flow_table, api_on);
        anyhow::ensure!(
            flow_table <= 1 << 20,
            "--flow-table: must be at most 1048576 flows, got {flow_table}"
        );
        Ok(Options {
            outer,
            inner,
            spec,
            stats: (self.stats > 0.0).then(|| Duration::from_secs_f64(self.stats)),
            ring_frames: self.ring_frames,
            flow_table,
            publish: api_on,
            command_log: self.command_log.clone(),
            compile_budget: (self.compile_budget > 0.0)
                .then(|| Duration::from_secs_f64(self.compile_budget)),
            timing: self.timing,
            persist: self.persist,
        })
    }
}

/// Where the HTTP API listens and who may use it.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Serve the HTTP API and web UI on ADDR (host:port); `auto`: a free port on
    /// 127.0.0.1; `off`: no API.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub api: String,
    /// Require `Authorization: Bearer TOKEN` with the token in this file (first line).
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// A host name the API answers to besides IP addresses and localhost (repeatable).
    #[arg(long, value_name = "NAME")]
    pub api_host: Vec<String>,
}

impl ApiArgs {
    pub fn is_on(&self) -> bool {
        self.api != "off"
    }

    /// Bind the listener now, in this thread's network namespace (a busy port is an
    /// error before anything else starts); `None` when the API is off.
    pub fn open(&self) -> Result<Option<ApiOptions>> {
        if !self.is_on() {
            return Ok(None);
        }
        let token = match &self.api_token_file {
            None => None,
            Some(f) => Some(crate::commands::ctl::read_token(f, "--api-token-file")?),
        };
        let addr = if self.api == "auto" {
            "127.0.0.1:0"
        } else {
            self.api.as_str()
        };
        Ok(Some(ApiOptions {
            listener: crate::api::bind(addr)?,
            token,
            hosts: self.api_host.clone(),
        }))
    }

    /// The same flags as arguments, for a child `synthnet` that serves the API itself.
    pub fn to_args(&self) -> Vec<String> {
        let mut out = vec!["--api".to_string(), self.api.clone()];
        if let Some(f) = &self.api_token_file {
            out.extend(["--api-token-file".to_string(), f.display().to_string()]);
        }
        for h in &self.api_host {
            out.extend(["--api-host".to_string(), h.clone()]);
        }
        out
    }

    /// Tell the user where the API is and how `ctl` reaches it (on stderr: standard
    /// output belongs to the command a front door runs).
    pub fn announce(&self, addr: SocketAddr) {
        let token = match &self.api_token_file {
            Some(f) => format!(" --api-token-file {}", f.display()),
            None => String::new(),
        };
        eprintln!("synthnet: web UI and API on http://{addr}/ — control it with: synthnet ctl --api {addr}{token} patch '{{\"ingress\": {{\"latency\": 100}}}}'");
    }
}

impl BridgeArgs {
    /// `synthnet bridge`: run to the end.
    pub fn run(self) -> Result<ExitCode> {
        let ready = self
            .ready_fd
            .map(|fd| synthnet_io::process::inherited_fd(fd).context("--ready-fd"))
            .transpose()?;
        let mut opts = self
            .engine
            .options(self.outer, self.inner, self.spec, self.api.is_on())?;
        // A status line where a person watches, unless the stats log is asked for.
        let status = !self.quiet
            && opts.stats.is_none()
            && ready.is_none()
            && std::io::stderr().is_terminal();
        opts.publish |= status;
        let ctl = Control::new()?;
        ctl.install_reload_handler()?;
        let mut b = Bridge::new(opts, &ctl)?;
        // After the bridge claimed its interfaces (a second bridge on them is told so),
        // before it runs.
        let api = self.api.open()?;
        let line = match b.board() {
            Some(board) if status => Some(crate::commands::status::StatusLine::start(
                board,
                self.verbose,
            )?),
            _ => None,
        };
        let result = run_bridge(&mut b, &ctl, api, |addr| {
            if let Some(a) = addr {
                if self.api.api == "auto" {
                    self.api.announce(a);
                }
            }
            if let Some(fd) = ready {
                signal_ready(fd);
            }
        });
        drop(line);
        result.map(|()| ExitCode::SUCCESS)
    }
}

/// Write the one readiness line to `fd` and close it (a supervisor that went away is
/// no reason to stop).
pub fn signal_ready(fd: OwnedFd) {
    let mut f = std::fs::File::from(fd);
    let _ = writeln!(f, "ready");
}

/// Serve an opened bridge: start its API on `api` (a listener bound earlier, possibly
/// in another network namespace), log what runs ([`Bridge::startup_report`]), call `ready` with the API's address,
/// then forward until SIGINT/SIGTERM.
pub fn run_bridge(
    b: &mut Bridge,
    ctl: &Control,
    api: Option<ApiOptions>,
    ready: impl FnOnce(Option<SocketAddr>),
) -> Result<()> {
    ctl.install_stop_handlers()?;
    forward(b, ctl, api, ready)
}

/// [`run_bridge`] without its signal handlers: forward until someone calls
/// `ctl.request_stop()`. For a front door that must do something between the signal
/// and the bridge's stop (attach puts the addresses back while packets still flow).
pub fn forward(
    b: &mut Bridge,
    ctl: &Control,
    api: Option<ApiOptions>,
    ready: impl FnOnce(Option<SocketAddr>),
) -> Result<()> {
    // Descriptors are what idle API clients would take from the data path: take the
    // whole allowance first, then size the API's share from it.
    let nofile = synthnet_io::process::raise_fd_limit();
    let addr = match (api, b.board()) {
        (Some(api), Some(board)) => Some(crate::api::spawn(api, b.worker(), board, nofile)?),
        _ => None,
    };
    b.startup_report();
    ready(addr);
    b.run(ctl)?;
    log::info!("stopped at generation {}", b.network().generation());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bridge: BridgeArgs,
    }

    #[test]
    fn api_off_means_no_flow_tables_unless_asked_for() {
        assert_eq!(flow_table_size(None, true), DEFAULT_FLOW_TABLE);
        assert_eq!(flow_table_size(None, false), 0);
        assert_eq!(flow_table_size(Some(100), false), 100);
        assert_eq!(flow_table_size(Some(0), true), 0);
    }

    #[test]
    fn bridge_parses_flow_table_as_optional() {
        let cli = Cli::try_parse_from(["bridge", "a", "b", "--api", "off"]).unwrap();
        let b = cli.bridge;
        assert_eq!(flow_table_size(b.engine.flow_table, b.api.is_on()), 0);
    }

    #[test]
    fn stats_must_be_seconds() {
        assert!(Cli::try_parse_from(["bridge", "a", "b", "--stats", "-1"]).is_err());
        assert!(Cli::try_parse_from(["bridge", "a", "b", "--stats", "inf"]).is_err());
        let cli = Cli::try_parse_from(["bridge", "a", "b", "--stats", "0.5"]).unwrap();
        assert_eq!(cli.bridge.engine.stats, 0.5);
    }

    #[test]
    fn api_flags_round_trip_to_a_child() {
        let cli = Cli::try_parse_from([
            "bridge",
            "a",
            "b",
            "--api",
            "auto",
            "--api-token-file",
            "/t",
            "--api-host",
            "h",
        ])
        .unwrap();
        let args = cli.bridge.api.to_args();
        let mut again = vec!["bridge".to_string(), "a".into(), "b".into()];
        again.extend(args);
        let back = Cli::try_parse_from(again).unwrap().bridge.api;
        assert_eq!(back.api, "auto");
        assert_eq!(back.api_token_file, Some(PathBuf::from("/t")));
        assert_eq!(back.api_host, vec!["h".to_string()]);
    }

    #[test]
    fn api_auto_binds_a_free_loopback_port() {
        let a = ApiArgs {
            api: "auto".into(),
            api_token_file: None,
            api_host: vec![],
        };
        let l = a.open().unwrap().unwrap().listener.local_addr().unwrap();
        assert!(l.ip().is_loopback());
        assert_ne!(l.port(), 0);
    }
}
