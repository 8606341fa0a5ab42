//! The `synthnet` command line. A thin layer over the library: parse, run, print the
//! error chain once.

#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use synthnet::commands::{
    attach, bench, bench_bridge as fwdbench, bridge, check, ctl, demo, replay, run, scaffold,
    takeover,
};
use synthnet::daemon::control::Control;
use synthnet::daemon::load_plan as plan_of;
use synthnet::daemon::timing::Timing;
use synthnet_config::plan;
use synthnet_core::Direction;

#[derive(Parser)]
#[command(
    name = "synthnet",
    version,
    about = "A userspace synthetic network: wasm packet functions between two interfaces"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: compile the plugin module on standard input within CPU_SECS (the
    /// bridge's compile budget; see `--compile-budget`).
    #[command(name = "__compile-check", hide = true)]
    CompileCheck {
        /// CPU seconds the compile may take.
        cpu_secs: u64,
        /// The plugin's name, for messages.
        name: String,
        /// The module's entry point, if not the default.
        entry: Option<PathBuf>,
    },
    /// Bridge two interfaces: the spec's ingress chain on OUTER → INNER, its egress
    /// chain on INNER → OUTER. SIGHUP reloads the spec (and changed plugins) without
    /// losing a packet; SIGINT/SIGTERM stop. Needs root or CAP_NET_RAW.
    #[command(after_long_help = BRIDGE_EXAMPLES)]
    Bridge(bridge::BridgeArgs),
    /// Run a command behind a synthetic link, in namespaces of its own (as Mahimahi's
    /// `mm-delay` does): no root needed, nothing left behind. The exit code is the
    /// command's (125: the link failed; 127: no such command).
    #[command(mut_arg("api", |a| a.default_value("auto")), mut_arg("stats", |a| a.default_value("0")))]
    Run(run::RunArgs),
    /// (internal) The bridge stage of `synthnet run`, in its namespaces.
    #[command(name = "__run-outer", hide = true)]
    RunOuter {
        /// The run's plan (JSON).
        plan: String,
    },
    /// (internal) The init of `synthnet run`'s command namespace.
    #[command(name = "__run-inner", hide = true)]
    RunInner {
        /// The run's plan (JSON).
        plan: String,
    },
    /// Impair something already running: put the interface of a process's network
    /// namespace (pid:N), a named namespace (netns:NAME) or a container (docker:NAME)
    /// behind synthnet from the host, without restarting it; established connections
    /// survive. Ctrl-C, SIGTERM or `attach --detach TARGET` put everything back
    /// exactly; if synthnet dies, a watchdog does (unless --fail-closed). Needs root.
    Attach(attach::AttachArgs),
    /// Two network namespaces joined through synthnet: ping across and compare what the
    /// spec configures with what ping measures; removes everything it made (also on
    /// Ctrl-C). Needs root.
    #[command(
        after_long_help = "Examples:\n  sudo synthnet demo\n  sudo synthnet demo specs/synthetic-network-simple.json --count 50"
    )]
    Demo {
        /// The spec; left out: the built-in default spec.
        spec: Option<PathBuf>,
        /// Pings per address family (the loss figure's 95% interval is printed: with
        /// 200, a 1% loss is told from none).
        #[arg(long, default_value_t = 200)]
        count: u32,
        /// Seconds between pings (below 0.2 needs root, which the demo has anyway).
        #[arg(long, default_value_t = 0.02)]
        interval: f64,
    },
    /// Validate a spec and print the resolved plan (every chain, setting and unit).
    #[command(
        after_long_help = "Examples:\n  synthnet check specs/native.json\n  synthnet check specs/*.json\n  synthnet check -          # the built-in default spec"
    )]
    Check {
        /// The specs (JSON), checked one after another; `-` for the built-in default
        /// spec. Fails if any is invalid, naming it.
        #[arg(required = true, num_args = 1..)]
        spec: Vec<PathBuf>,
        /// The bridge's `--timing` setting to state the promise of (departure accuracy
        /// against CPU).
        #[arg(long, value_enum, default_value_t = Timing::default(), value_name = "SETTING")]
        timing: Timing,
    },
    /// Run one direction of a spec offline over a capture, on a virtual clock.
    #[command(
        after_long_help = "Examples:\n  synthnet replay --spec specs/native.json --direction ingress --in specs/sample.pcap --out out.pcapng\n  synthnet replay --spec - --direction egress --in cap.pcap --out out.pcap --log why.jsonl --seed 7"
    )]
    Replay {
        /// The spec (JSON); `-` for the built-in default spec.
        #[arg(long)]
        spec: PathBuf,
        /// Which chain to run: `ingress` (outer → inner) or `egress` (inner → outer).
        #[arg(long)]
        direction: Direction,
        /// pcap or pcapng capture (Ethernet).
        #[arg(long = "in")]
        input: PathBuf,
        /// Where to write what leaves: nanosecond pcap, or pcapng when the name ends in
        /// `.pcapng` (then each packet's comment says what every stage did to it).
        #[arg(long = "out")]
        output: PathBuf,
        /// Write why each packet to FILE: one JSON line per event (arrival, each
        /// stage's decision and its reason, departure).
        #[arg(long)]
        log: Option<PathBuf>,
        /// Where to write what stages send back toward the sender (their reverse port);
        /// without it those packets are only counted.
        #[arg(long = "reverse-out")]
        reverse_out: Option<PathBuf>,
        /// Override the spec's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        /// A command log (`synthnet bridge --command-log`): hand each command to its
        /// stage at exactly its `at_ns`, counted from the capture's first packet.
        #[arg(long, value_name = "FILE")]
        commands: Option<PathBuf>,
    },
    /// Forwarding benchmark on real veths in namespaces (needs root): synthnet with no
    /// plugins and with the four QoS plugins against the kernel's veth and veth+bridge
    /// paths, measured side by side: 64 B and 1500 B floods (rate and forwarder CPU per
    /// packet), TCP throughput, idle CPU and RTT.
    #[command(
        after_long_help = "Examples:\n  sudo synthnet bench-bridge\n  sudo synthnet bench-bridge --only tcp --seconds 5 --json"
    )]
    BenchBridge {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Flood rounds per path, interleaved; each path reports its best.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Only tests whose name contains this: flood-64, flood-1500, tcp, idle.
        #[arg(long, default_value = "")]
        only: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Instead: for each timing setting (all three unless `--timing` is given), the
        /// CPU per packet at 1, 10 and 100 kpps of 200-byte UDP through 1 ms ± 1 ms each
        /// way beside the sender's own, and the ping error through 10 ms each way.
        #[arg(long)]
        sweep: bool,
        /// The sweep's timing settings (repeatable).
        #[arg(long, value_enum, requires = "sweep")]
        timing: Vec<Timing>,
    },
    /// Put this container's application behind a synthetic link: move the interface's
    /// addresses, routes and MAC (SYNTHETIC_NETWORK=CIDR picks it; default: the default
    /// route's) onto a veth pair, bridge the real interface to it with the spec
    /// (SPEC, else SYNTHNET_SPEC, else /opt/etc/synthetic_network.json, else the built-in
    /// default), run the application (`-- CMD`, else ENTRY, else /opt/bin/entry, else
    /// none: a sidecar) and exit with its code; undone on exit. Exit code 3: the bridge
    /// died (the application was stopped). Needs CAP_NET_ADMIN and CAP_NET_RAW.
    #[command(after_long_help = TAKEOVER_EXAMPLES)]
    Takeover {
        /// The spec (JSON).
        spec: Option<PathBuf>,
        /// Passed to the bridge: where its API listens (`off`: none).
        #[arg(long)]
        api: Option<String>,
        /// Passed to the bridge: the API's bearer token file.
        #[arg(long)]
        api_token_file: Option<PathBuf>,
        /// Passed to the bridge: a host name the API's Host/Origin checks accept.
        #[arg(long)]
        api_host: Vec<String>,
        /// Seconds between the bridge's stats lines on stderr; 0: none.
        #[arg(long, default_value_t = 0.0, value_name = "SECS")]
        stats: f64,
        /// Keep the spec file as it is: changes through the API live in memory. By
        /// default takeover writes them back to the file (--persist), as
        /// synthetic-network's image did.
        #[arg(long)]
        no_persist: bool,
        /// Put back what a killed takeover left in this network namespace (from its
        /// record in /run/synthnet), stop its orphaned bridge, and exit.
        #[arg(long, conflicts_with_all = ["spec", "command"])]
        restore: bool,
        /// The application and its arguments.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Talk to a running bridge's HTTP API: see and change what runs, read the
    /// counters (tables for people; --json for scripts).
    Ctl(ctl::CtlArgs),
    /// Plugin authoring: a new plugin crate, ready to build.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// In-memory engine benchmark (no sockets, virtual clock, one core).
    #[command(
        after_long_help = "Examples:\n  synthnet bench\n  synthnet bench --only qos-chain --rounds 5\n  synthnet bench --chain latency,jitter --json"
    )]
    Bench {
        /// One JSON object per line and case.
        #[arg(long)]
        json: bool,
        /// Wall-clock seconds per case and round.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Rounds over all cases, interleaved; each case reports its best round.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Only cases whose label (`case/runtime/size`, e.g. `qos-chain/wasm/64`)
        /// contains this.
        #[arg(long, default_value = "")]
        only: String,
        /// Instead of the standard cases, time this chain of built-in plugins (with the
        /// benchmark's settings), e.g. `latency,jitter`, in wasm and native.
        #[arg(long, value_delimiter = ',')]
        chain: Vec<String>,
        /// Instead of the standard cases, time every built-in plugin alone, in each of
        /// its models (distributions, loss models, queues), in wasm and native.
        #[arg(long)]
        plugins: bool,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a ready-to-build plugin crate that forwards every packet.
    #[command(
        after_long_help = "Examples:\n  synthnet plugin new odd-drop\n  cd odd-drop && cargo build --release --target wasm32-unknown-unknown"
    )]
    New {
        /// The plugin's name: letters, digits, '-' and '_' (the crate is
        /// `NAME`, the wasm file `NAME.wasm` with '-' as '_').
        name: String,
        /// Directory to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

const BRIDGE_EXAMPLES: &str = "\
Examples:
  sudo synthnet bridge veth-out veth-in spec.json
  sudo synthnet bridge eth1 eth2 spec.json --api 127.0.0.1:9000 --persist
  sudo synthnet bridge veth-out veth-in --stats 5 2>bridge.log    # a stats line every 5 s

On a terminal the bridge redraws one status line (rates, held packets, drops); -q hides
it, -v adds drops by cause and plugin counters, --stats SECS logs lines instead.
Changes through the API and web UI live in memory unless --persist; SIGHUP re-reads the
spec file.";

const TAKEOVER_EXAMPLES: &str = "\
Examples:
  # in a container started with --cap-add NET_ADMIN --cap-add NET_RAW:
  synthnet takeover --api 0.0.0.0:80 -- /opt/bin/entry
  synthnet takeover spec.json --no-persist -- ./server
  synthnet takeover --restore        # put back what a killed takeover left";

/// The spec at `path`; `-` is the built-in default.
fn load_plan(path: &std::path::Path) -> Result<plan::Plan> {
    plan_of((path.as_os_str() != "-").then_some(path))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A front door's terminal belongs to the command it runs: only warnings and errors.
    let quiet = matches!(
        cli.command,
        Command::Run(_) | Command::RunOuter { .. } | Command::RunInner { .. }
    );
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(if quiet {
            "warn"
        } else {
            "info"
        }));
    logger.format_timestamp_millis();
    // The bridge's status line is redrawn in place on a terminal: a log line clears it
    // first (it comes back at its next second).
    if matches!(cli.command, Command::Bridge(_)) && std::io::stderr().is_terminal() {
        logger.format(|buf, record| {
            use std::io::Write;
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "{}[{} {style}{:<5}{style:#} {}] {}",
                synthnet::commands::status::CLEAR,
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        });
    }
    logger.init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("synthnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    // What a printing command writes may go to `head`: a closed pipe ends it quietly.
    if matches!(
        cli.command,
        Command::Check { .. } | Command::Replay { .. } | Command::Bench { .. } | Command::Ctl(_)
    ) {
        synthnet_io::process::die_on_broken_pipe();
    }
    match cli.command {
        // synthnet's own failures are 125, as `docker run`'s: CMD's codes stay CMD's.
        Command::Run(args) => run::run(args).or_else(|e| {
            eprintln!("synthnet run: {e:#}");
            Ok(ExitCode::from(run::LINK_FAILED))
        }),
        Command::RunOuter { plan } => run::outer_main(&plan),
        Command::RunInner { plan } => Ok(run::inner_main(&plan)),
        Command::CompileCheck {
            cpu_secs,
            name,
            entry,
        } => Ok(synthnet::daemon::compile::child(
            cpu_secs,
            &name,
            entry.as_deref(),
        )),
        Command::Bridge(args) => {
            bridge::serve(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Attach(args) => {
            attach::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchBridge {
            seconds,
            rounds,
            only,
            json,
            sweep,
            timing,
        } => {
            let exe = std::env::current_exe().context("locate the synthnet binary")?;
            if !json {
                println!(
                    "test        path                      forwarded / throughput   synthnet CPU"
                );
            }
            fwdbench::run(
                &fwdbench::BenchOptions {
                    seconds: seconds.max(0.5),
                    rounds,
                    exe,
                    only,
                    sweep: sweep.then(|| {
                        if timing.is_empty() {
                            Timing::ALL.to_vec()
                        } else {
                            timing
                        }
                    }),
                },
                |r| {
                    if json {
                        println!("{}", serde_json::to_string(r).unwrap_or_default());
                    } else {
                        println!("{}", fwdbench::format_row(r));
                    }
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            spec,
            count,
            interval,
        } => {
            let ctl = Control::new()?;
            ctl.install_signal_handlers()?;
            demo::run(
                &demo::DemoOptions {
                    spec,
                    count: count.max(1),
                    interval,
                },
                &ctl,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            spec: specs,
            timing,
        } => {
            // Held packets leave as the timing setting promises (the spec's delays are
            // the least a packet waits; this is what may come on top).
            println!("timing {timing}: {}", timing.promise());
            let many = specs.len() > 1;
            for spec in &specs {
                if many {
                    println!("== {}", spec.display());
                }
                let plan = load_plan(spec)?;
                check::check(&plan).with_context(|| format!("invalid spec {}", spec.display()))?;
                print!("{}", synthnet_config::describe(&plan));
                println!("ok");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            spec,
            direction,
            input,
            output,
            log,
            reverse_out,
            seed,
            json,
            commands,
        } => {
            let mut plan = load_plan(&spec)?;
            if let Some(s) = seed {
                plan.seed = s;
            }
            let capture = synthnet_io::pcap::read_capture(&input)?;
            for note in &capture.notes {
                eprintln!("synthnet: note: {note}");
            }
            let commands = match &commands {
                Some(f) => synthnet_config::cmdlog::read(f)
                    .map_err(|e| anyhow::anyhow!("--commands {e}"))?,
                None => Vec::new(),
            };
            let (_, summary) = replay::replay_and_write(
                &plan,
                direction,
                capture.frames,
                &commands,
                &output,
                log.as_deref(),
            )?;
            if let Some(r) = &reverse_out {
                synthnet_io::pcap::write_pcap(r, &summary.reverse)?;
            }
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{summary}");
                println!("wrote {}", output.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Takeover {
            spec,
            api,
            api_token_file,
            api_host,
            stats,
            no_persist,
            restore,
            command,
        } => {
            if restore {
                takeover::restore_here()?;
                return Ok(ExitCode::SUCCESS);
            }
            if !(stats >= 0.0 && stats.is_finite()) {
                anyhow::bail!("--stats: must be a number of seconds ≥ 0, got {stats}");
            }
            let mut api_args = Vec::new();
            if let Some(a) = api {
                api_args.extend(["--api".to_string(), a]);
            }
            if let Some(f) = api_token_file {
                api_args.extend(["--api-token-file".to_string(), f.display().to_string()]);
            }
            for h in api_host {
                api_args.extend(["--api-host".to_string(), h]);
            }
            let code = takeover::run(&takeover::TakeoverOptions {
                spec,
                api_args,
                stats_secs: stats,
                persist: !no_persist,
                command,
            })?;
            Ok(ExitCode::from(code))
        }
        Command::Ctl(args) => {
            ctl::main(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin {
            command: PluginCommand::New { name, dir },
        } => {
            let root = scaffold::new_plugin(&name, &dir)?;
            println!("created {}", root.display());
            println!(
                "build it:  cd {} && cargo build --release --target wasm32-unknown-unknown",
                root.display()
            );
            println!("then name target/wasm32-unknown-unknown/release/{}.wasm in a spec (see its README.md)", name.replace('-', "_"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            json,
            seconds,
            rounds,
            only,
            chain,
            plugins,
        } => {
            anyhow::ensure!(
                seconds > 0.0 && seconds.is_finite(),
                "--seconds must be a positive number"
            );
            if !bench::HAS_NATIVE {
                eprintln!("(this binary has no native builds of the plugins: the native cases are skipped; build with `cargo build --release --features native` for the wasm/native ratio)");
            }
            if !json {
                println!(
                    "{:<18} {:<7} {:>6} {:>9} {:>9} {:>8}",
                    "case", "runtime", "bytes", "Mpps", "out Mpps", "ns/pkt"
                );
            }
            let results = bench::run_all(
                Duration::from_secs_f64(seconds),
                rounds,
                &only,
                &chain,
                plugins,
                |r| {
                    if json {
                        println!("{}", serde_json::to_string(r).unwrap_or_default());
                    } else {
                        println!(
                            "{:<18} {:<7} {:>6} {:>9.2} {:>9.2} {:>8.1}",
                            r.case,
                            format!("{:?}", r.runtime).to_lowercase(),
                            r.packet_size,
                            r.mpps,
                            r.delivered_mpps,
                            r.ns_per_packet
                        );
                    }
                },
            )
            .context("benchmark failed")?;
            if !json {
                bench::print_ratios(&results);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every argument of every visible command says what it is, and every command that
    /// does something shows examples (`--help`).
    #[test]
    fn every_argument_has_a_description_and_every_command_examples() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name()).trim().to_string();
            for a in cmd.get_arguments() {
                let builtin = matches!(a.get_id().as_str(), "help" | "version");
                if !builtin && !a.is_hide_set() && a.get_help().is_none() {
                    missing.push(format!(
                        "{here}: argument {} has no description",
                        a.get_id()
                    ));
                }
            }
            let subs: Vec<_> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
            let is_leaf = subs.is_empty() || cmd.get_name() == "ctl";
            let examples = cmd
                .get_after_long_help()
                .or(cmd.get_after_help())
                .is_some_and(|h| h.to_string().contains("Examples:"));
            if !path.is_empty() && is_leaf && !examples && cmd.get_name() != "help" {
                missing.push(format!("{here}: no Examples: section"));
            }
            for s in subs {
                walk(s, &here, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
