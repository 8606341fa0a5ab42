//! `synthnet ctl`: a small client of a running bridge's HTTP API, for scripts and CI.
//! Every subcommand is one request (`watch` follows the stats stream); the answer is
//! printed as JSON, and an error answer (`{"error", "status", "field"}`) becomes a
//! non-zero exit with its message.

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::BufRead;
use std::time::Duration;
use ureq::Agent;

/// What to ask.
pub enum Request {
    Get,
    Set(String),
    Patch(String),
    Validate(String),
    Reset,
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
        let mut resp =
            resp.with_context(|| format!("cannot reach the synthnet API at {}", self.api))?;
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

/// Run `req` against `target`, printing what it answers.
pub fn run(target: &Target, req: Request) -> Result<()> {
    let v = match req {
        Request::Get => target.call("GET", "/api/v1/spec", None)?,
        Request::Set(spec) => target.call("PUT", "/api/v1/spec", Some(&spec_text(&spec)?))?,
        Request::Patch(json) => {
            serde_json::from_str::<Value>(&json).context("the patch is not JSON")?;
            target.call("PATCH", "/api/v1/spec", Some(&json))?
        }
        Request::Validate(spec) => {
            target.call("POST", "/api/v1/spec/validate", Some(&spec_text(&spec)?))?
        }
        Request::Reset => target.call("POST", "/api/v1/reset", None)?,
        Request::Stats => target.call("GET", "/api/v1/stats", None)?,
        Request::Flows { direction, top } => {
            let mut path = format!("/api/v1/flows?top={top}");
            if let Some(d) = direction {
                path.push_str(&format!("&direction={d}"));
            }
            target.call("GET", &path, None)?
        }
        Request::Watch => return watch(target),
        Request::Command { stage, json } => {
            let id: synthnet_config::plan::StageId = stage
                .parse()
                .map_err(|e: String| anyhow::anyhow!("STAGE: {e}"))?;
            serde_json::from_str::<Value>(&json).context("the command is not JSON")?;
            let path = format!("/api/v1/stages/{id}/command");
            target.call("POST", &path, Some(&json))?
        }
    };
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}

/// Follow the stats stream: one line per second until the bridge goes away.
fn watch(target: &Target) -> Result<()> {
    let mut r = target.agent(None).get(&target.url("/api/v1/stats/stream"));
    if let Some(t) = &target.token {
        r = r.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = r
        .call()
        .with_context(|| format!("cannot reach the synthnet API at {}", target.api))?;
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
            println!("{}", summary(&v));
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
