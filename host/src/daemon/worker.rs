//! The configuration worker: the thread that prepares every change after startup
//! (SIGHUP, the HTTP API), so that reading specs, compiling modules and running plugins'
//! init never happen on the packet thread.
//!
//! Requests are handled one at a time, in order — the worker is what serialises
//! concurrent changes: parse the spec, [`prepare`] it against the running
//! configuration, hand the prepared change to the engine thread (and wake it), wait for
//! its [`Report`], and answer the requester with it. The worker also keeps the spec *as
//! written* ([`SpecState`]): an applied change that came from outside the file (the API)
//! is written back to the spec file atomically, so a later SIGHUP or restart keeps it; a
//! refused change leaves the file and the running configuration as they were.

use super::control::Control;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};
use synthnet_config::plan::{self, Plan};
use synthnet_config::{prepare, ApplyError, Outcome, Prepared, Report, RunningView};
use synthnet_runtime::Loader;

/// What to change.
pub enum Change {
    /// Re-read the spec file (and changed plugin files).
    Reload,
    /// Run this spec (JSON, any of the spec shapes).
    Replace(Value),
    /// Merge this JSON merge patch (RFC 7396) into the spec as written, and run that.
    Patch(Value),
    /// Back to the spec the bridge started with.
    Reset,
    /// Would this spec apply? Prepared against what runs, then thrown away.
    Validate(Value),
}

/// The worker's answer to a request.
#[derive(Debug)]
pub enum Answer {
    /// A change was applied or refused. `saved`: the file the applied spec was written
    /// to (none for a refusal, a reload, or a bridge without a spec file).
    Changed {
        report: Report,
        saved: Option<PathBuf>,
    },
    /// A validation: the plan, or why it would be refused.
    Checked(Result<Box<Plan>, ApplyError>),
}

pub type Reply = Box<dyn FnOnce(Answer) + Send>;

/// A change and who wants its answer (none: log it only).
pub struct Request {
    pub change: Change,
    pub reply: Option<Reply>,
}

/// The spec that runs, as written and as planned, and where it lives.
#[derive(Debug, Clone)]
pub struct SpecState {
    pub generation: u64,
    /// The spec file (`None`: the built-in default runs, and changes are not saved).
    pub path: Option<PathBuf>,
    pub spec: Value,
    pub plan: Plan,
}

/// The engine thread's side: prepared changes in, reports (with the view of what runs
/// afterwards) out.
pub struct EngineSide {
    pub commits: mpsc::Receiver<Prepared>,
    pub reports: mpsc::Sender<(Report, RunningView)>,
}

/// The worker's handles: where to send requests, and the spec state it keeps current.
#[derive(Clone)]
pub struct Handle {
    pub requests: mpsc::Sender<Request>,
    pub state: Arc<RwLock<SpecState>>,
}

impl Handle {
    /// Send a request; `false` when the worker is gone.
    pub fn send(&self, change: Change, reply: Option<Reply>) -> bool {
        self.requests.send(Request { change, reply }).is_ok()
    }

    /// The spec that runs now.
    pub fn spec(&self) -> SpecState {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Start the worker with `loader` and `view` (what runs now) and the spec that runs,
/// as written (`startup`).
pub fn spawn(
    mut loader: Loader,
    mut view: RunningView,
    startup: SpecState,
    ctl: Control,
) -> std::io::Result<(Handle, EngineSide)> {
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    let (commit_tx, commit_rx) = mpsc::channel();
    let (report_tx, report_rx) = mpsc::channel::<(Report, RunningView)>();
    let state = Arc::new(RwLock::new(startup.clone()));
    let shared = state.clone();
    let path = startup.path.clone();
    let base = path
        .as_deref()
        .map(plan::base_of)
        .unwrap_or(Path::new("."))
        .to_path_buf();
    std::thread::Builder::new()
        .name("synthnet-config".into())
        .spawn(move || {
            for req in req_rx {
                let current = shared
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .spec
                    .clone();
                let planned = |v: Value| -> Result<(Value, Plan), ApplyError> {
                    let p = super::live(plan::from_value(&v, &base)?)?;
                    Ok((v, p))
                };
                // The spec to run, and whether it must be written to the file.
                let (wanted, save) = match req.change {
                    Change::Validate(v) => {
                        let checked = planned(v).and_then(|(_, p)| {
                            prepare(&view, p.clone(), &mut loader).map(|_| Box::new(p))
                        });
                        if let Some(reply) = req.reply {
                            reply(Answer::Checked(checked));
                        }
                        continue;
                    }
                    Change::Reload => match &path {
                        Some(p) => {
                            log::info!("reload: reading {}", p.display());
                            (
                                plan::load_value(p)
                                    .map_err(ApplyError::from)
                                    .and_then(|(v, p)| Ok((v, super::live(p)?))),
                                false,
                            )
                        }
                        None => (
                            Err(ApplyError {
                                field: None,
                                message:
                                    "running the built-in default spec: there is no file to re-read"
                                        .into(),
                            }),
                            false,
                        ),
                    },
                    Change::Replace(v) => (planned(v), true),
                    Change::Patch(patch) => {
                        let mut v = current;
                        merge_patch(&mut v, &patch);
                        (planned(v), true)
                    }
                    Change::Reset => (planned(startup.spec.clone()), true),
                };
                let save_to = path.as_ref().filter(|_| save);
                let outcome = wanted.and_then(|(value, p)| {
                    // Write the new spec next to the file before committing, so that a
                    // change that cannot be saved is refused and changes nothing.
                    let staged = save_to
                        .map(|f| Staged::write(f, &value))
                        .transpose()
                        .map_err(|e| ApplyError {
                            field: None,
                            message: format!("cannot save the spec: {e}"),
                        })?;
                    let prepared = prepare(&view, p.clone(), &mut loader)?;
                    Ok((value, p, staged, prepared))
                });
                let (report, saved) = match outcome {
                    Err(e) => (Report::refused(view.generation, e), None),
                    Ok((value, p, staged, prepared)) => {
                        if commit_tx.send(prepared).is_err() {
                            return; // the engine is gone
                        }
                        ctl.wake();
                        let Ok((mut report, v)) = report_rx.recv() else {
                            return;
                        };
                        view = v;
                        let mut saved = None;
                        if let Outcome::Applied(changes) = &mut report.outcome {
                            if let Some(s) = staged {
                                match s.commit() {
                                    Ok(f) => saved = Some(f),
                                    Err(e) => changes
                                        .warnings
                                        .push(format!("applied, but not saved: {e}")),
                                }
                            }
                            let mut st = shared.write().unwrap_or_else(|e| e.into_inner());
                            *st = SpecState {
                                generation: report.generation,
                                path: path.clone(),
                                spec: value,
                                plan: p,
                            };
                        }
                        (report, saved)
                    }
                };
                // Compiling may have borrowed hundreds of MB from the allocator: give
                // them back now that the change is done.
                synthnet_io::heap::trim();
                match &report.outcome {
                    Outcome::Applied(c) => {
                        log::info!("generation {}: applied ({c})", report.generation)
                    }
                    Outcome::Refused(e) => log::error!(
                        "change refused, generation {} keeps running: {e}",
                        report.generation
                    ),
                }
                if let Some(reply) = req.reply {
                    reply(Answer::Changed { report, saved });
                }
            }
        })?;
    Ok((
        Handle {
            requests: req_tx,
            state,
        },
        EngineSide {
            commits: commit_rx,
            reports: report_tx,
        },
    ))
}

/// A spec written to a temporary file beside its destination; [`Staged::commit`]
/// renames it over the destination (atomic on one filesystem), dropping removes it.
struct Staged {
    tmp: Option<PathBuf>,
    dest: PathBuf,
}

impl Staged {
    fn write(dest: &Path, value: &Value) -> std::io::Result<Staged> {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = dest.with_file_name(format!(
            ".{}.synthnet-{}.tmp",
            name.unwrap_or_default(),
            std::process::id()
        ));
        let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        text.push('\n');
        let mut f = std::fs::File::create(&tmp)?;
        let staged = Staged {
            tmp: Some(tmp),
            dest: dest.to_path_buf(),
        };
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        Ok(staged)
    }

    fn commit(mut self) -> std::io::Result<PathBuf> {
        let tmp = self.tmp.take().expect("staged once");
        std::fs::rename(&tmp, &self.dest).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(self.dest.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            let _ = std::fs::remove_file(t);
        }
    }
}

/// Apply JSON merge patch `patch` to `target` (RFC 7396): objects merge key by key,
/// `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(t) = target else {
        unreachable!("made an object above")
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The RFC's own example (section 3).
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        let mut doc = json!({"a": [1, 2]});
        merge_patch(&mut doc, &json!({"a": [3]}));
        assert_eq!(doc, json!({"a": [3]}));
        let mut doc = json!({"a": "b"});
        merge_patch(&mut doc, &json!(["c"]));
        assert_eq!(doc, json!(["c"]));
        let mut doc = json!("x");
        merge_patch(&mut doc, &json!({"a": {"b": 1}}));
        assert_eq!(doc, json!({"a": {"b": 1}}));
    }
}
