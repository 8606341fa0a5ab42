//! The `synthnet` command line. A thin layer over the library: parse, run, print the
//! error chain once.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;
use synthnet::bench;

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
    /// In-memory engine benchmark (no sockets, virtual clock, one core).
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
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("synthnet: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bench {
            json,
            seconds,
            rounds,
            only,
            chain,
        } => {
            anyhow::ensure!(
                seconds > 0.0 && seconds.is_finite(),
                "--seconds must be a positive number"
            );
            if !json {
                println!(
                    "{:<12} {:<7} {:>6} {:>9} {:>9} {:>8}",
                    "case", "runtime", "bytes", "Mpps", "out Mpps", "ns/pkt"
                );
            }
            let results = bench::run_all(
                Duration::from_secs_f64(seconds),
                rounds,
                &only,
                &chain,
                |r| {
                    if json {
                        println!("{}", serde_json::to_string(r).unwrap_or_default());
                    } else {
                        println!(
                            "{:<12} {:<7} {:>6} {:>9.2} {:>9.2} {:>8.1}",
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
                for size in [64, 1500] {
                    let get = |case: &str, rt| {
                        results
                            .iter()
                            .find(|r| r.case == case && r.runtime == rt && r.packet_size == size)
                            .map(|r| r.mpps)
                    };
                    if let (Some(w), Some(n)) = (
                        get("qos-chain", bench::BenchRuntime::Wasm),
                        get("qos-chain", bench::BenchRuntime::Native),
                    ) {
                        println!("qos-chain {size} B: wasm/native = {:.2}", w / n);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
