//! The command log: one JSON line per command a plugin was handed, with its engine time,
//! so that `synthnet replay --commands FILE` can hand the same commands at the same
//! virtual times (`synthnet bridge --command-log FILE` appends to it).
//!
//! A line is `{"at_ns", "stage", "command"}`, plus `"source": "schedule"` for a command
//! the spec's schedule sent (a replay of that spec sends it itself, so replay skips
//! such lines), `"unix_ns"` (the wall clock then, to line a log up with a capture) and
//! `"refused"` (the plugin's message, when it refused; it was delivered all the same).

use crate::plan::{check_command, StageId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Who sent a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The HTTP API or `synthnet ctl command`.
    #[default]
    Api,
    /// The spec's schedule.
    Schedule,
}

impl Source {
    fn is_api(&self) -> bool {
        *self == Source::Api
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Engine time: ns since the bridge started (in a replay: since the capture's first
    /// packet).
    pub at_ns: u64,
    pub stage: StageId,
    pub command: Value,
    #[serde(default, skip_serializing_if = "Source::is_api")]
    pub source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unix_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// An open log, appended to one line per command.
pub struct Writer {
    file: std::fs::File,
}

impl Writer {
    /// Open `path` for appending (created if missing).
    pub fn open(path: &Path) -> std::io::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Writer { file })
    }

    /// Append one line (one `write`, so lines of concurrent writers never interleave).
    pub fn append(&mut self, e: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }
}

/// The largest command log read.
pub const MAX_LOG_BYTES: u64 = 256 << 20;

/// Why a command log could not be read: the file, the line (from 1) when one is bad,
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {reason}", path.display(), line.map(|n| format!(" line {n}")).unwrap_or_default())]
pub struct ReadError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
}

/// Read a command log: its entries in time order (equal times in file order). A bad
/// line is an error naming the file and the line number; blank lines are skipped.
pub fn read(path: &Path) -> Result<Vec<Entry>, ReadError> {
    let fail = |line, reason: String| ReadError {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let bytes = synthnet_runtime::loader::read_file(path, MAX_LOG_BYTES)
        .map_err(|e| fail(None, e.to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| fail(None, "not UTF-8 text".into()))?;
    parse(&text).map_err(|(n, e)| fail(Some(n), e))
}

/// [`read`] of text already read: the entries, or the line number (from 1) and why.
pub fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let e: Entry = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
        check_command(&e.command).map_err(|m| (i + 1, format!("command: {m}")))?;
        out.push(e);
    }
    out.sort_by_key(|e| e.at_ns);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_lines_are_named() {
        let e = Entry {
            at_ns: 5,
            stage: "ingress/default/lb".parse().unwrap(),
            command: serde_json::json!({"remove": 3}),
            source: Source::Api,
            unix_ns: None,
            refused: None,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"at_ns":5,"stage":"ingress/default/lb","command":{"remove":3}}"#
        );
        let text = format!("{line}\n\n{}\n", line.replace("\"at_ns\":5", "\"at_ns\":2"));
        let got = parse(&text).unwrap();
        assert_eq!(got.iter().map(|e| e.at_ns).collect::<Vec<_>>(), [2, 5]);
        for (bad, n) in [
            (format!("{line}\n{{\"at_ns\": 1}}\n"), 2),
            (format!("{line}\nnot json\n"), 2),
            (
                "{\"at_ns\":1,\"stage\":\"in/x/y\",\"command\":1}".to_string(),
                1,
            ),
            (format!("\n\n{}", line.replace("}}", "},\"extra\":1}")), 3),
        ] {
            assert_eq!(parse(&bad).unwrap_err().0, n, "{bad}");
        }
    }

    #[test]
    fn equal_times_keep_file_order() {
        let text = (0..5)
            .map(|k| {
                format!(
                    r#"{{"at_ns":{},"stage":"ingress/default/x","command":{k}}}"#,
                    7 - (k % 2)
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let got: Vec<i64> = parse(&text)
            .unwrap()
            .iter()
            .map(|e| e.command.as_i64().unwrap())
            .collect();
        assert_eq!(got, [1, 3, 0, 2, 4]);
    }
}
