//! The configuration worker: the thread that prepares every change after startup
//! (SIGHUP, the HTTP API, a schedule's steps), so that reading specs, compiling modules
//! and running plugins' init never happen on the packet thread.
//!
//! Requests are handled one at a time, in order — the worker is what serialises
//! concurrent changes: parse the spec, [`prepare`] it against the running
//! configuration, hand the prepared change to the engine thread (and wake it), wait for
//! its [`Report`], and answer the requester with it. The worker also keeps the spec *as
//! written* ([`SpecState`]). **The user's file is theirs**: a change through the API
//! lives in memory only, and SIGHUP re-reads the file (replacing what the API changed);
//! [`SpecState::file_spec`] is what the file held when last read or written, so the API
//! can say when what runs differs from it. With `persist` (`synthnet bridge --persist`,
//! the default of `takeover`), an applied change is written back to the spec file
//! atomically, so a later SIGHUP or restart keeps it. A refused change leaves the file
//! and the running configuration as they were.
//!
//! **Schedules.** A spec's schedule starts when the spec is applied (the engine time of
//! its commit). The worker prepares each step ahead of its time (compiled and
//! instantiated here) and hands it to the engine thread as a [`Timed`] action, which
//! the engine commits at exactly its time, between two breaths; the engine tells the
//! worker ([`Change::Stepped`]) and the worker prepares the next one. A step that
//! replaces the plan must be prepared against the plan before it, so at most one such
//! step waits at the engine; command-only steps are handed over as soon as they can.
//! A new spec (PUT, PATCH, reset, SIGHUP) ends the running schedule — the engine drops
//! its waiting steps when it commits the new spec — and starts its own.
//!
//! **Commands** (`Change::Command`) go the same way, in order with the changes: the
//! engine delivers each between two breaths at its `now`; the worker logs it (the
//! command log) and counts it per stage.

use super::control::Control;
use super::safefile::Staged;
use super::EngineClock;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use synthnet_config::apply::CommandError;
use synthnet_config::cmdlog::{self, Source};
use synthnet_config::plan::{Plan, StageCommand, Step};
use synthnet_config::spec;
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
    /// Hand this command to its stage, now.
    Command(StageCommand),
    /// The engine did a scheduled step (sent by the engine thread).
    Stepped(Box<Stepped>),
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
    /// A command: the plugin's reply or why not, and the engine time it was handed over.
    Commanded {
        at_ns: u64,
        result: Result<Value, CommandError>,
    },
}

pub type Reply = Box<dyn FnOnce(Answer) + Send>;

/// A change and who wants its answer (none: log it only).
pub struct Request {
    pub change: Change,
    pub reply: Option<Reply>,
}

/// How far the running schedule is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Progress {
    /// Steps in all (a ramp counts one per move).
    pub steps: usize,
    /// Steps the engine did so far.
    pub done: usize,
    /// Of those, steps whose change was refused (they changed nothing).
    pub failed: usize,
    /// Engine time the schedule started at (its spec was applied), ns.
    pub started_at_ns: u64,
    /// The next step (index from 0) and its engine time; none when all are done.
    pub next_step: Option<usize>,
    pub next_at_ns: Option<u64>,
    /// Engine time of the last step done, and how late it came (ns after its time).
    pub last_at_ns: Option<u64>,
    pub last_late_ns: Option<u64>,
    pub last_error: Option<String>,
}

/// The spec that runs, as written and as planned, and where it lives.
#[derive(Debug, Clone)]
pub struct SpecState {
    pub generation: u64,
    /// The spec file (`None`: the built-in default runs, and changes are not saved).
    pub path: Option<PathBuf>,
    pub spec: Value,
    pub plan: Plan,
    /// The spec's schedule, while it has one.
    pub schedule: Option<Progress>,
    /// Whether applied changes are written back to `path` (`--persist`).
    pub persist: bool,
    /// What `path` held when it was last read (startup, SIGHUP) or written (a persisted
    /// change), as JSON; `None` without a file.
    pub file_spec: Option<Value>,
}

impl SpecState {
    /// Whether what runs differs from what the spec file held when last read or
    /// written (`false` without a file: there is nothing to differ from).
    pub fn differs_from_file(&self) -> bool {
        self.file_spec.as_ref().is_some_and(|f| f != &self.spec)
    }
}

/// A scheduled step, prepared, for the engine to do at `at_ns`.
pub struct Timed {
    /// Which schedule (a newer spec's schedule has a higher number).
    pub schedule: u64,
    pub step: usize,
    pub at_ns: u64,
    pub commit: Option<Prepared>,
    pub command: Option<StageCommand>,
}

/// What the engine did for a scheduled step.
pub struct Stepped {
    pub schedule: u64,
    pub step: usize,
    /// When it was due, and when the engine did it (engine clock).
    pub due_ns: u64,
    pub at_ns: u64,
    /// The commit's report and the view afterwards (a step with a plan).
    pub report: Option<(Report, RunningView)>,
    pub command: Option<(StageCommand, Result<Value, CommandError>)>,
}

/// What the worker asks of the engine thread.
pub enum ToEngine {
    /// Commit now. Applied, it also drops every waiting scheduled step (the new spec
    /// ends the running schedule). Answered with [`Done::Committed`].
    Commit(Prepared),
    /// Do this at its time (not answered: [`Change::Stepped`] tells when done).
    At(Box<Timed>),
    /// Hand a command over now. Answered with [`Done::Commanded`].
    Command(StageCommand),
}

/// The engine thread's answers, with its clock when it acted.
pub enum Done {
    Committed {
        at_ns: u64,
        report: Box<Report>,
        view: Box<RunningView>,
    },
    Commanded {
        at_ns: u64,
        result: Result<Value, CommandError>,
    },
}

/// The engine thread's side: what to do in, answers out.
pub struct EngineSide {
    pub inbox: mpsc::Receiver<ToEngine>,
    pub answers: mpsc::Sender<Done>,
}

/// Commands handed to plugins, per stage: (answered, refused).
pub type CommandCounts = BTreeMap<String, (u64, u64)>;

/// The worker's handles: where to send requests, and the spec state it keeps current.
#[derive(Clone)]
pub struct Handle {
    pub requests: mpsc::Sender<Request>,
    pub state: Arc<RwLock<SpecState>>,
    pub clock: EngineClock,
    pub commands: Arc<Mutex<CommandCounts>>,
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

    /// Commands handed to plugins so far, per stage.
    pub fn command_counts(&self) -> CommandCounts {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The running schedule.
struct Schedule {
    id: u64,
    origin_ns: u64,
    steps: Vec<Step>,
    /// Steps handed to the engine so far.
    sent: usize,
    /// Whether a step with a plan waits at the engine (the next such step must be
    /// prepared against the plan it brings).
    commit_waiting: bool,
    progress: Progress,
}

/// The worker thread's state.
struct Worker {
    loader: Loader,
    view: RunningView,
    startup: SpecState,
    ctl: Control,
    path: Option<PathBuf>,
    base: PathBuf,
    shared: Arc<RwLock<SpecState>>,
    clock: EngineClock,
    to_engine: mpsc::Sender<ToEngine>,
    from_engine: mpsc::Receiver<Done>,
    schedule: Option<Schedule>,
    schedules: u64,
    log: Option<cmdlog::Writer>,
    counts: Arc<Mutex<CommandCounts>>,
}

/// Start the worker with `loader` and `view` (what runs now, committed at engine time
/// `applied_ns`), the spec that runs, as written (`startup`), and where to log commands.
pub fn spawn(
    loader: Loader,
    view: RunningView,
    startup: SpecState,
    applied_ns: u64,
    clock: EngineClock,
    log: Option<cmdlog::Writer>,
    ctl: Control,
) -> std::io::Result<(Handle, EngineSide)> {
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    let (to_engine, inbox) = mpsc::channel();
    let (answers, from_engine) = mpsc::channel::<Done>();
    let state = Arc::new(RwLock::new(startup.clone()));
    let counts = Arc::new(Mutex::new(CommandCounts::new()));
    let path = startup.path.clone();
    let base = path
        .as_deref()
        .map(spec::base_of)
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut worker = Worker {
        loader,
        view,
        startup: startup.clone(),
        ctl,
        path,
        base,
        shared: state.clone(),
        clock,
        to_engine,
        from_engine,
        schedule: None,
        schedules: 0,
        log,
        counts: counts.clone(),
    };
    std::thread::Builder::new()
        .name("synthnet-config".into())
        .spawn(move || {
            // The startup spec's schedule counts from its commit.
            worker.start_schedule(&startup.plan, applied_ns);
            for req in req_rx {
                if !worker.handle(req) {
                    return; // the engine is gone
                }
            }
        })?;
    Ok((
        Handle {
            requests: req_tx,
            state,
            clock,
            commands: counts,
        },
        EngineSide { inbox, answers },
    ))
}

impl Worker {
    /// Ask the engine thread and wait for its answer (`None`: it is gone).
    fn engine(&mut self, msg: ToEngine) -> Option<Done> {
        self.to_engine.send(msg).ok()?;
        self.ctl.wake();
        self.from_engine.recv().ok()
    }

    fn state(&self) -> std::sync::RwLockWriteGuard<'_, SpecState> {
        self.shared.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Handle one request; `false` when the engine is gone.
    fn handle(&mut self, req: Request) -> bool {
        let planned = |v: Value, base: &Path| -> Result<(Value, Plan), ApplyError> {
            let p = spec::from_value(&v, base)?;
            Ok((v, p))
        };
        // The spec to run, and whether it must be written to the file.
        let reload = matches!(req.change, Change::Reload);
        let (wanted, save) = match req.change {
            Change::Stepped(s) => {
                self.stepped(*s);
                return true;
            }
            Change::Command(c) => {
                let Some(Done::Commanded { at_ns, result }) =
                    self.engine(ToEngine::Command(c.clone()))
                else {
                    return false;
                };
                self.record(at_ns, &c, &result, Source::Api);
                if let Some(reply) = req.reply {
                    reply(Answer::Commanded { at_ns, result });
                }
                return true;
            }
            Change::Validate(v) => {
                let checked = planned(v, &self.base).and_then(|(_, p)| {
                    prepare(&self.view, p.clone(), &mut self.loader).map(|_| Box::new(p))
                });
                if let Some(reply) = req.reply {
                    reply(Answer::Checked(checked));
                }
                return true;
            }
            Change::Reload => match &self.path {
                Some(p) => {
                    log::info!("reload: reading {}", p.display());
                    (spec::load_value(p).map_err(ApplyError::from), false)
                }
                None => (
                    Err(ApplyError {
                        field: None,
                        message: "running the built-in default spec: there is no file to re-read"
                            .into(),
                    }),
                    false,
                ),
            },
            Change::Replace(v) => (planned(v, &self.base), true),
            Change::Patch(patch) => {
                let mut v = self
                    .shared
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .spec
                    .clone();
                merge_patch(&mut v, &patch);
                (planned(v, &self.base), true)
            }
            Change::Reset => (planned(self.startup.spec.clone(), &self.base), true),
        };
        let save_to = self.path.clone().filter(|_| save && self.startup.persist);
        let outcome = wanted.and_then(|(value, p)| {
            // Write the new spec next to the file before committing, so that a
            // change that cannot be saved is refused and changes nothing.
            let staged = save_to
                .as_deref()
                .map(|f| stage_spec(f, &value))
                .transpose()
                .map_err(|e| ApplyError {
                    field: None,
                    message: format!("cannot save the spec: {e}"),
                })?;
            let prepared = prepare(&self.view, p.clone(), &mut self.loader)?;
            Ok((value, p, staged, prepared))
        });
        let (report, saved) = match outcome {
            Err(e) => (Report::refused(self.view.generation, e), None),
            Ok((value, p, staged, prepared)) => {
                let Some((mut report, at_ns)) = self.commit(prepared, &p) else {
                    return false;
                };
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
                    let mut state = self.state();
                    // The file holds what runs once it was read (SIGHUP) or saved.
                    let file_spec = if reload || saved.is_some() {
                        Some(value.clone())
                    } else {
                        state.file_spec.take()
                    };
                    *state = SpecState {
                        generation: report.generation,
                        path: self.path.clone(),
                        spec: value,
                        plan: p.clone(),
                        schedule: None,
                        persist: self.startup.persist,
                        file_spec,
                    };
                    drop(state);
                    self.start_schedule(&p, at_ns);
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
            Outcome::Refused(e) => crate::log_throttled!(
                log::Level::Error,
                5,
                "change refused, generation {} keeps running: {e}",
                report.generation
            ),
        }
        if let Some(reply) = req.reply {
            reply(Answer::Changed { report, saved });
        }
        true
    }

    /// Commit `prepared` (a change to `plan`) now: the report and the engine time of the
    /// commit. A scheduled step the engine did meanwhile makes the preparation stale;
    /// then it is prepared again against what runs. `None`: the engine is gone.
    fn commit(&mut self, mut prepared: Prepared, plan: &Plan) -> Option<(Report, u64)> {
        let mut tries = 0;
        loop {
            let base = self.view.generation;
            let Done::Committed {
                at_ns,
                report,
                view,
            } = self.engine(ToEngine::Commit(prepared))?
            else {
                return None;
            };
            let report = *report;
            self.view = *view;
            tries += 1;
            if report.is_applied() || report.generation == base || tries >= 5 {
                if report.is_applied() {
                    // The engine dropped the old schedule's waiting steps.
                    self.schedule = None;
                }
                return Some((report, at_ns));
            }
            match prepare(&self.view, plan.clone(), &mut self.loader) {
                Ok(p) => prepared = p,
                Err(e) => return Some((Report::refused(self.view.generation, e), at_ns)),
            }
        }
    }

    /// Start `plan`'s schedule (if it has one), counted from engine time `origin_ns`.
    fn start_schedule(&mut self, plan: &Plan, origin_ns: u64) {
        self.schedule = None;
        if plan.schedule.is_empty() {
            return;
        }
        self.schedules += 1;
        let steps = plan.schedule.clone();
        let first = steps[0].at_ns;
        log::info!(
            "schedule: {} steps from {:.3} s to {:.3} s after this spec was applied (engine time {:.6} s)",
            steps.len(),
            first as f64 / 1e9,
            steps[steps.len() - 1].at_ns as f64 / 1e9,
            origin_ns as f64 / 1e9
        );
        self.schedule = Some(Schedule {
            id: self.schedules,
            origin_ns,
            progress: Progress {
                steps: steps.len(),
                done: 0,
                failed: 0,
                started_at_ns: origin_ns,
                next_step: Some(0),
                next_at_ns: Some(origin_ns.saturating_add(first)),
                last_at_ns: None,
                last_late_ns: None,
                last_error: None,
            },
            steps,
            sent: 0,
            commit_waiting: false,
        });
        self.feed();
    }

    /// Hand the engine every step it can be given now: prepared against what will run
    /// at its time.
    fn feed(&mut self) {
        loop {
            let Some(s) = self.schedule.as_mut() else {
                return;
            };
            let Some(step) = s.steps.get(s.sent) else {
                break;
            };
            if step.plan.is_some() && s.commit_waiting {
                break;
            }
            let at_ns = s.origin_ns.saturating_add(step.at_ns);
            let (id, index) = (s.id, s.sent);
            let (plan, command) = (step.plan.clone(), step.command.clone());
            let commit = match plan {
                None => None,
                Some(p) => match prepare(&self.view, *p, &mut self.loader) {
                    Ok(prepared) => Some(prepared),
                    Err(e) => {
                        // Not even prepared: the step (and its command) is skipped.
                        log::error!(
                            "schedule: step {} of {} (at {:.3} s) refused, it changes nothing: {e}",
                            index + 1,
                            s.steps.len(),
                            step.at_ns as f64 / 1e9
                        );
                        s.sent += 1;
                        s.progress.done += 1;
                        s.progress.failed += 1;
                        s.progress.last_error = Some(e.to_string());
                        self.publish_progress();
                        continue;
                    }
                },
            };
            let s = self.schedule.as_mut().expect("checked above");
            s.commit_waiting |= commit.is_some();
            s.sent += 1;
            let timed = Timed {
                schedule: id,
                step: index,
                at_ns,
                commit,
                command,
            };
            if self.to_engine.send(ToEngine::At(Box::new(timed))).is_err() {
                return;
            }
            self.ctl.wake();
        }
        self.publish_progress();
    }

    /// The engine did a scheduled step.
    fn stepped(&mut self, s: Stepped) {
        if let Some((c, result)) = &s.command {
            self.record(s.at_ns, c, result, Source::Schedule);
        }
        let current = self.schedule.as_ref().is_some_and(|x| x.id == s.schedule);
        if !current {
            return; // a schedule a newer spec ended (its view came with that commit)
        }
        let late = s.at_ns.saturating_sub(s.due_ns);
        let mut error = None;
        if let Some((report, view)) = s.report {
            self.view = view;
            match &report.outcome {
                Outcome::Applied(c) => {
                    self.state().generation = report.generation;
                    log::info!(
                        "schedule: step {} applied {:.1} µs after its time, generation {} ({c})",
                        s.step + 1,
                        late as f64 / 1e3,
                        report.generation
                    );
                }
                Outcome::Refused(e) => {
                    log::error!("schedule: step {} refused: {e}", s.step + 1);
                    error = Some(e.to_string());
                }
            }
            if let Some(x) = self.schedule.as_mut() {
                x.commit_waiting = false;
            }
        }
        if let Some((c, Err(e))) = &s.command {
            error.get_or_insert_with(|| format!("{}: {e}", c.stage));
        }
        if let Some(x) = self.schedule.as_mut() {
            let p = &mut x.progress;
            p.done += 1;
            p.last_at_ns = Some(s.at_ns);
            p.last_late_ns = Some(late);
            if let Some(e) = error {
                p.failed += 1;
                p.last_error = Some(e);
            }
        }
        self.feed();
    }

    /// Copy the schedule's progress where the API reads it.
    fn publish_progress(&mut self) {
        let progress = self.schedule.as_mut().map(|s| {
            let p = &mut s.progress;
            p.next_step = (p.done < s.steps.len()).then_some(p.done);
            p.next_at_ns = p
                .next_step
                .map(|i| s.origin_ns.saturating_add(s.steps[i].at_ns));
            p.clone()
        });
        self.state().schedule = progress;
    }

    /// Log and count a command the engine handled.
    fn record(
        &mut self,
        at_ns: u64,
        c: &StageCommand,
        result: &Result<Value, CommandError>,
        source: Source,
    ) {
        let refused = match result {
            Ok(_) => None,
            Err(f) if f.delivered() => Some(f.to_string()),
            Err(f) => {
                // Any client can send these: at most a few lines a second.
                crate::warn_throttled!(5, "command to {} not delivered: {f}", c.stage);
                return;
            }
        };
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(c.stage.to_string()).or_default();
            if refused.is_some() {
                n.1 += 1;
            } else {
                n.0 += 1;
            }
        }
        match &refused {
            None => log::info!(
                "command to {} at {:.6} s: {}",
                c.stage,
                at_ns as f64 / 1e9,
                c.command
            ),
            Some(m) => crate::warn_throttled!(
                5,
                "command to {} at {:.6} s refused: {m}",
                c.stage,
                at_ns as f64 / 1e9
            ),
        }
        if let Some(w) = self.log.as_mut() {
            let entry = cmdlog::Entry {
                at_ns,
                stage: c.stage.clone(),
                command: c.command.clone(),
                source,
                unix_ns: Some(self.clock.unix_ns(at_ns)),
                refused,
            };
            if let Err(e) = w.append(&entry) {
                log::error!("command log: cannot write: {e}");
            }
        }
    }
}

/// `value` as the spec file's text, staged beside `dest` (see [`super::safefile`]).
fn stage_spec(dest: &Path, value: &Value) -> std::io::Result<Staged> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    Staged::write(dest, text.as_bytes())
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
