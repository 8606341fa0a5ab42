//! `synthnet ctl`: a client of a running bridge's HTTP API, for people and scripts.
//! Every subcommand is one request (`watch` follows the stats stream). Answers are
//! printed for people — aligned tables with units (`stats`, `flows`), readable text
//! (`get`, the report of a change) — or, with `--json`, as the API's JSON. An error
//! answer (`{"error", "status", "field"}`) becomes a non-zero exit with its message,
//! and an API nobody answers says what to check (a bridge running? in which network
//! namespace? `--api`, `SYNTHNET_API`).
//!
//! [`CtlArgs`] are the command line and run it; [`table`] lays out columns.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;
use ureq::Agent;

/// Talk to a running bridge's HTTP API: see and change what runs, read the
/// counters (tables for people; --json for scripts).
#[derive(clap::Args, Debug)]
#[command(after_long_help = CTL_EXAMPLES)]
pub struct CtlArgs {
    /// The API's address, host:port, as the bridge printed it (also from SYNTHNET_API).
    /// A bridge in another network namespace is reached from inside it:
    /// `ip netns exec NAME synthnet ctl …`.
    #[arg(
        long,
        env = "SYNTHNET_API",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR",
        global = true
    )]
    pub api: String,
    /// A file holding the API's bearer token (its first line): the file given to the
    /// bridge's --api-token-file. (`--token-file` is the old name.)
    #[arg(long, alias = "token-file", value_name = "FILE", global = true)]
    pub api_token_file: Option<PathBuf>,
    /// Print the API's answer as it comes, as JSON (for scripts), instead of text and
    /// tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

const CTL_EXAMPLES: &str = "\
Examples:
  synthnet ctl stats                                   # rates, held packets, drops, per stage
  synthnet ctl flows --top 5                           # the busiest 5-tuples
  synthnet ctl patch '{\"ingress\": {\"latency\": 80}}'   # change one setting
  synthnet ctl set spec.json                           # run another spec
  synthnet ctl save kept.json                          # write what runs to a file
  synthnet ctl --json stats | jq .directions           # the API's JSON
  ip netns exec blue synthnet ctl --api 127.0.0.1:8080 get   # a bridge in netns blue

Changes through ctl (and the API, and the web UI) live in memory: the bridge's spec file
is not rewritten unless the bridge runs with --persist. SIGHUP to the bridge re-reads
its file; `ctl reset` goes back to the spec it started with.";

/// `synthnet ctl`'s subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum CtlCommand {
    /// Print the running spec (as written), whether it differs from the spec file, its
    /// generation and its schedule's progress.
    #[command(
        after_long_help = "Examples:\n  synthnet ctl get\n  synthnet ctl get --json | jq .plan"
    )]
    Get,
    /// Replace the running spec with SPEC.
    #[command(
        after_long_help = "Examples:\n  synthnet ctl set specs/native.json\n  echo '{\"ingress\": {\"latency\": 30}}' | synthnet ctl set -"
    )]
    Set {
        /// The spec: a JSON file in any spec form, or `-` for standard input.
        spec: String,
    },
    /// Merge a JSON merge patch (RFC 7396) into the running spec as written: keys
    /// given replace, `null` removes.
    #[command(
        after_long_help = "Examples:\n  synthnet ctl patch '{\"ingress\": {\"latency\": 80, \"loss\": 0.01}}'\n  synthnet ctl patch '{\"egress\": {\"rate\": null}}'"
    )]
    Patch {
        /// The patch, as JSON text.
        #[arg(value_name = "JSON")]
        patch: String,
    },
    /// Would SPEC apply? A dry run: prints its plan (every stage, setting and unit) or
    /// why it would be refused; changes nothing.
    #[command(after_long_help = "Examples:\n  synthnet ctl validate spec.json")]
    Validate {
        /// The spec: a JSON file, or `-` for standard input.
        spec: String,
    },
    /// Go back to the spec the bridge started with.
    #[command(after_long_help = "Examples:\n  synthnet ctl reset")]
    Reset,
    /// Write the spec that runs, as written, to FILE (atomically), e.g. to keep changes
    /// made through the API or the web UI.
    #[command(
        after_long_help = "Examples:\n  synthnet ctl save spec.json     # keep what runs; then `kill -HUP` reloads it"
    )]
    Save {
        /// Where to write it (`-`: standard output).
        file: PathBuf,
    },
    /// Rates, held packets and drops per direction, then each stage's counters.
    #[command(after_long_help = "Examples:\n  synthnet ctl stats\n  synthnet ctl stats --json")]
    Stats,
    /// The busiest flows (5-tuples, counted after impairment), by current rate.
    #[command(
        after_long_help = "Examples:\n  synthnet ctl flows\n  synthnet ctl flows --direction ingress --top 5"
    )]
    Flows {
        /// `ingress` or `egress`; left out: both.
        #[arg(long)]
        direction: Option<String>,
        /// How many flows to show.
        #[arg(long, default_value_t = 20, value_name = "N")]
        top: usize,
    },
    /// Follow the stats: one line a second, until the bridge stops or Ctrl-C.
    #[command(after_long_help = "Examples:\n  synthnet ctl watch")]
    Watch,
    /// Hand a command (JSON) to a running stage and print its reply.
    #[command(
        after_long_help = "Examples:\n  synthnet ctl command ingress/default/lb '{\"op\": \"status\"}'\n  synthnet ctl command egress/dns/stall '{\"cmd\": \"reset\"}'"
    )]
    Command {
        /// The stage: DIRECTION/FLOW/NAME, as `ctl stats` names it (the default chain's
        /// flow is `default`).
        stage: String,
        /// The command, as JSON text (what the plugin takes: see its documentation).
        #[arg(value_name = "JSON")]
        command: String,
    },
}

impl CtlArgs {
    /// `synthnet ctl`: one request, its answer printed.
    pub fn run(self) -> Result<std::process::ExitCode> {
        // What it prints may go to `head`: a closed pipe ends it quietly.
        synthnet_io::process::die_on_broken_pipe();
        main(self).map(|()| std::process::ExitCode::SUCCESS)
    }
}

fn main(args: CtlArgs) -> Result<()> {
    let token = args
        .api_token_file
        .as_deref()
        .map(|f| read_token(f, "--api-token-file"))
        .transpose()?;
    let target = Target {
        api: args.api,
        token,
    };
    let req = match args.command {
        CtlCommand::Get => Request::Get,
        CtlCommand::Set { spec } => Request::Set(spec),
        CtlCommand::Patch { patch } => Request::Patch(patch),
        CtlCommand::Validate { spec } => Request::Validate(spec),
        CtlCommand::Reset => Request::Reset,
        CtlCommand::Save { file } => Request::Save(file),
        CtlCommand::Stats => Request::Stats,
        CtlCommand::Flows { direction, top } => Request::Flows { direction, top },
        CtlCommand::Watch => Request::Watch,
        CtlCommand::Command { stage, command } => Request::Command {
            stage,
            json: command,
        },
    };
    let out = run(&target, req, args.json)?;
    print!("{out}");
    Ok(())
}

/// What to ask.
pub enum Request {
    Get,
    Set(String),
    Patch(String),
    Validate(String),
    Reset,
    Save(PathBuf),
    Stats,
    Flows {
        direction: Option<String>,
        top: usize,
    },
    Watch,
    /// A command (JSON) for a running stage (`DIRECTION/FLOW/NAME`).
    Command {
        stage: String,
        json: String,
    },
}

/// Where the API is and how to be let in.
pub struct Target {
    /// `host:port`.
    pub api: String,
    pub token: Option<String>,
}

impl Target {
    /// Why a request got no answer, and what to check.
    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        let from_env = std::env::var("SYNTHNET_API").ok();
        let source = match from_env.as_deref() {
            Some(v) if v == self.api => " (from SYNTHNET_API)",
            _ => "",
        };
        anyhow::anyhow!(
            "cannot reach the synthnet API at {api}{source}: {e}\n\
             check:\n  \
             - is a bridge running? `synthnet bridge`, `run`, `attach` and `takeover` print the API's address when they start\n  \
             - is it in another network namespace? its loopback is not this one's: `ip netns exec NAME synthnet ctl --api {api} …`\n  \
             - is it another address? give it with --api HOST:PORT or SYNTHNET_API (now {env})",
            api = self.api,
            env = from_env
                .map(|v| format!("SYNTHNET_API={v}"))
                .unwrap_or_else(|| "unset".into()),
        )
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    fn agent(&self, timeout: Option<Duration>) -> Agent {
        Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .build()
            .into()
    }

    /// Send one request; the JSON answer, or its error as an error.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<Value> {
        let agent = self.agent(Some(Duration::from_secs(150)));
        let url = self.url(path);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (m, b) => {
                let mut r = match m {
                    "PUT" => agent.put(&url),
                    "PATCH" => agent.patch(&url),
                    _ => agent.post(&url),
                }
                .header("Content-Type", "application/json");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send(b.unwrap_or("{}"))
            }
        };
        let mut resp = resp.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .context("reading the answer")?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("the answer is not JSON (HTTP {status}): {text}"))?;
        if !status.is_success() {
            let msg = v["error"].as_str().unwrap_or("error");
            match v["field"].as_str() {
                Some(f) => anyhow::bail!("{f}: {msg} (HTTP {})", status.as_u16()),
                None => anyhow::bail!("{msg} (HTTP {})", status.as_u16()),
            }
        }
        Ok(v)
    }
}

/// A spec argument: a file, or `-` for standard input; checked to be JSON here.
fn spec_text(arg: &str) -> Result<String> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the spec from stdin")?
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    };
    serde_json::from_str::<Value>(&text).with_context(|| format!("{arg} is not JSON"))?;
    Ok(text)
}

/// Run `req` against `target`: what to print (`json`: the API's answer as JSON;
/// otherwise text and tables for people).
pub fn run(target: &Target, req: Request, json: bool) -> Result<String> {
    let (v, view): (Value, fn(&Value) -> String) = match req {
        Request::Get => (target.call("GET", "/api/v1/spec", None)?, show_spec),
        Request::Set(spec) => (
            target.call("PUT", "/api/v1/spec", Some(&spec_text(&spec)?))?,
            show_change,
        ),
        Request::Patch(patch) => {
            serde_json::from_str::<Value>(&patch).context("the patch is not JSON")?;
            (
                target.call("PATCH", "/api/v1/spec", Some(&patch))?,
                show_change,
            )
        }
        Request::Validate(spec) => (
            target.call("POST", "/api/v1/spec/validate", Some(&spec_text(&spec)?))?,
            |v| {
                format!(
                    "{}ok: it would apply\n",
                    v["description"].as_str().unwrap_or("")
                )
            },
        ),
        Request::Reset => (target.call("POST", "/api/v1/reset", None)?, show_change),
        Request::Save(file) => {
            let v = target.call("GET", "/api/v1/spec", None)?;
            let mut text = serde_json::to_string_pretty(&v["spec"])?;
            text.push('\n');
            if file.as_os_str() == "-" {
                return Ok(text);
            }
            crate::daemon::safefile::write(&file, text.as_bytes())
                .with_context(|| format!("cannot write {}", file.display()))?;
            if json {
                return Ok(format!(
                    "{}\n",
                    json!({"path": file, "generation": v["generation"]})
                ));
            }
            return Ok(format!(
                "wrote the running spec (generation {}) to {}\n",
                v["generation"],
                file.display()
            ));
        }
        Request::Stats => (target.call("GET", "/api/v1/stats", None)?, show_stats),
        Request::Flows { direction, top } => {
            let mut path = format!("/api/v1/flows?top={top}");
            if let Some(d) = direction {
                path.push_str(&format!("&direction={d}"));
            }
            (target.call("GET", &path, None)?, show_flows)
        }
        Request::Watch => {
            watch(target, json)?;
            return Ok(String::new());
        }
        Request::Command { stage, json } => {
            let id: synthnet_config::plan::StageId = stage
                .parse()
                .map_err(|e: String| anyhow::anyhow!("STAGE: {e}"))?;
            serde_json::from_str::<Value>(&json).context("the command is not JSON")?;
            let path = format!("/api/v1/stages/{id}/command");
            // A plugin's reply is its own JSON: shown as it is.
            (target.call("POST", &path, Some(&json))?, |v| {
                format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
            })
        }
    };
    Ok(if json {
        format!("{}\n", serde_json::to_string_pretty(&v)?)
    } else {
        view(&v)
    })
}

/// `GET /api/v1/spec` for people: where the spec comes from, whether the file holds
/// what runs, the spec as written, the schedule.
pub fn show_spec(v: &Value) -> String {
    let mut s = format!("generation {}\n", v["generation"]);
    match v["path"].as_str() {
        None => s.push_str("spec:       the built-in default (no file)\n"),
        Some(p) => {
            s.push_str(&format!("spec file:  {p}\n"));
            if v["differs_from_file"].as_bool().unwrap_or(false) {
                s.push_str(
                    "            what runs differs from the file (changed through the API or UI, not saved;\n            `synthnet ctl save FILE` writes it, SIGHUP re-reads the file)\n",
                );
            } else {
                s.push_str("            what runs is what the file holds\n");
            }
            s.push_str(if v["persist"].as_bool().unwrap_or(false) {
                "            changes are written back to the file (--persist)\n"
            } else {
                "            changes live in memory; the file is not rewritten\n"
            });
        }
    }
    if let Some(p) = v["schedule"].as_object() {
        s.push_str(&format!(
            "schedule:   {} of {} steps done{}\n",
            p.get("done").unwrap_or(&json!(0)),
            p.get("steps").unwrap_or(&json!(0)),
            p.get("last_error")
                .and_then(|e| e.as_str())
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        ));
    }
    s.push_str("running spec, as written:\n");
    s.push_str(&serde_json::to_string_pretty(&v["spec"]).unwrap_or_default());
    s.push('\n');
    s
}

/// The answer to a change (set, patch, reset) for people.
pub fn show_change(v: &Value) -> String {
    let n = |k: &str| v[k].as_array().map_or(0, |a| a.len());
    let names = |k: &str| -> String {
        v[k].as_array()
            .into_iter()
            .flatten()
            .map(|x| match x {
                Value::Array(pair) => pair
                    .first()
                    .and_then(|s| s.as_str())
                    .unwrap_or("?")
                    .to_string(),
                x => x.as_str().unwrap_or("?").to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut s = format!("applied: generation {}\n", v["generation"]);
    for k in ["swapped", "added", "removed"] {
        if n(k) > 0 {
            s.push_str(&format!("  {k}: {}\n", names(k)));
        }
    }
    s.push_str(&format!("  unchanged: {} stages\n", n("kept")));
    for w in v["warnings"].as_array().into_iter().flatten() {
        s.push_str(&format!("  warning: {}\n", w.as_str().unwrap_or("")));
    }
    match (v["persisted"].as_bool(), v["path"].as_str()) {
        (Some(true), Some(p)) => s.push_str(&format!("  written to {p}\n")),
        _ => s.push_str("  not written to any file (`synthnet ctl save FILE` keeps it)\n"),
    }
    s
}

/// `GET /api/v1/stats` as tables: one row per direction, then one per stage.
pub fn show_stats(v: &Value) -> String {
    use crate::daemon::stats::{bps, pps};
    let f = |d: &Value, k: &str| d[k].as_f64().unwrap_or(0.0);
    let u = |d: &Value, k: &str| d[k].as_u64().unwrap_or(0);
    let mut rows = vec![row(&[
        "direction",
        "in",
        "out",
        "out rate",
        "held",
        "dropped",
        "drops by cause",
    ])];
    let mut stages = vec![row(&[
        "stage",
        "plugin",
        "in pkts",
        "out pkts",
        "held",
        "dropped",
        "health",
        "plugin counters",
    ])];
    for d in v["directions"].as_array().into_iter().flatten() {
        let drops: Vec<(String, u64)> = d["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(c, n)| (c.clone(), n.as_u64().unwrap_or(0)))
            .collect();
        let total: u64 = drops.iter().map(|(_, n)| n).sum();
        let causes: Vec<String> = drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        rows.push(vec![
            d["direction"].as_str().unwrap_or("?").to_string(),
            pps(f(d, "rx_pps")),
            pps(f(d, "tx_pps")),
            bps(f(d, "tx_bps")),
            u(d, "held").to_string(),
            total.to_string(),
            if causes.is_empty() {
                "-".into()
            } else {
                causes.join(", ")
            },
        ]);
        for st in d["stages"].as_array().into_iter().flatten() {
            let c = &st["counters"];
            let dropped: u64 = c["drops"]
                .as_object()
                .map(|m| m.values().filter_map(|n| n.as_u64()).sum())
                .unwrap_or_else(|| c["dropped"].as_u64().unwrap_or(0));
            let pc: Vec<String> = st["plugin_counters"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            stages.push(vec![
                st["id"].as_str().unwrap_or("?").to_string(),
                st["plugin"].as_str().unwrap_or("?").to_string(),
                c["rx_packets"].as_u64().unwrap_or(0).to_string(),
                c["tx_packets"].as_u64().unwrap_or(0).to_string(),
                st["held"].as_u64().unwrap_or(0).to_string(),
                dropped.to_string(),
                health(&st["health"]),
                if pc.is_empty() {
                    "-".into()
                } else {
                    pc.join(" ")
                },
            ]);
        }
    }
    let pool = &v["pool"];
    format!(
        "generation {}, up {:.0} s, packet pool {} of {} in use\n\n{}\n{}",
        v["generation"],
        v["uptime_s"].as_f64().unwrap_or(0.0),
        pool["in_use"],
        pool["capacity"],
        table(&rows),
        table(&stages)
    )
}

/// A stage's health in a word.
fn health(h: &Value) -> String {
    match h {
        Value::String(s) => s.clone(),
        Value::Object(m) => m.keys().next().cloned().unwrap_or_else(|| "?".into()),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// An IP protocol number by its name, where it has a common one.
pub fn protocol_name(p: u64) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// `host:port`, with brackets around an IPv6 host; no port for protocols without.
fn endpoint(addr: &Value, port: &Value, with_port: bool) -> String {
    let a = addr.as_str().unwrap_or("?");
    if !with_port {
        a.to_string()
    } else if a.contains(':') {
        format!("[{a}]:{port}")
    } else {
        format!("{a}:{port}")
    }
}

/// `GET /api/v1/flows` as a table.
pub fn show_flows(v: &Value) -> String {
    use crate::daemon::stats::{bps, pps};
    let mut rows = vec![row(&[
        "direction",
        "proto",
        "source",
        "destination",
        "rate",
        "pkts/s",
        "packets",
        "bytes",
        "undelivered",
        "last seen",
    ])];
    for fl in v["flows"].as_array().into_iter().flatten() {
        let proto = fl["protocol"].as_u64().unwrap_or(0);
        let ports = matches!(proto, 6 | 17 | 132);
        rows.push(vec![
            fl["direction"].as_str().unwrap_or("?").to_string(),
            protocol_name(proto),
            endpoint(&fl["src"], &fl["src_port"], ports),
            endpoint(&fl["dst"], &fl["dst_port"], ports),
            bps(fl["bps"].as_f64().unwrap_or(0.0)),
            pps(fl["pps"].as_f64().unwrap_or(0.0)),
            fl["packets"].as_u64().unwrap_or(0).to_string(),
            bytes(fl["bytes"].as_u64().unwrap_or(0)),
            fl["undelivered"].as_u64().unwrap_or(0).to_string(),
            format!(
                "{:.1} s ago",
                fl["last_seen_ms"].as_u64().unwrap_or(0) as f64 / 1e3
            ),
        ]);
    }
    let mut s = table(&rows);
    s.push_str(&format!(
        "{} flows tracked (room for {}); {} packets untracked (table full)\n",
        v["tracked"], v["capacity"], v["untracked_packets"]
    ));
    s
}

/// Bytes in a unit that fits (powers of 1024, as `ls -h`).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Rows laid out in columns: text left-aligned, numbers (cells starting with a digit)
/// right-aligned, two spaces between columns; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let width: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            if c > 0 {
                line.push_str("  ");
            }
            if i > 0 && cell.starts_with(|ch: char| ch.is_ascii_digit()) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Follow the stats stream: one line per second until the bridge goes away (`json`:
/// each event's JSON on a line).
fn watch(target: &Target, json: bool) -> Result<()> {
    let mut r = target.agent(None).get(&target.url("/api/v1/stats/stream"));
    if let Some(t) = &target.token {
        r = r.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = r.call().map_err(|e| target.unreachable(e))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "the stats stream answered HTTP {}",
        resp.status()
    );
    let reader = std::io::BufReader::new(resp.body_mut().as_reader());
    for line in reader.lines() {
        let line = line.context("reading the stats stream")?;
        if let Some(data) = line.strip_prefix("data:") {
            let v: Value = serde_json::from_str(data.trim()).context("a stats event")?;
            if json {
                println!("{v}");
            } else {
                println!("{}", summary(&v));
            }
        }
    }
    Ok(())
}

/// One line of a stats event, in units that fit.
pub fn summary(v: &Value) -> String {
    use crate::daemon::stats::{bps, pps};
    let mut s = format!("generation {}", v["generation"]);
    let mut held = 0;
    for d in v["directions"].as_array().into_iter().flatten() {
        let f = |k: &str| d[k].as_f64().unwrap_or(0.0);
        s.push_str(&format!(
            " | {} {} in, {} {} out",
            d["direction"].as_str().unwrap_or("?"),
            pps(f("rx_pps")),
            pps(f("tx_pps")),
            bps(f("tx_bps"))
        ));
        held += d["held"].as_u64().unwrap_or(0);
        let drops: Vec<String> = d["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        if !drops.is_empty() {
            s.push_str(&format!(" (drops {})", drops.join(" ")));
        }
    }
    s.push_str(&format!(" | held {held}"));
    s
}

/// The token in `file` (its first line, trimmed); `flag` names the option in errors.
pub fn read_token(file: &std::path::Path, flag: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("{flag} {}", file.display()))?;
    let t = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !t.is_empty(),
        "{flag} {}: the file is empty",
        file.display()
    );
    Ok(t)
}
