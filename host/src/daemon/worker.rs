//! The configuration worker: the thread that prepares every change after startup
//! (SIGHUP now, the HTTP API and schedules next), so that reading specs, compiling
//! modules and running plugins' init never happen on the packet thread.
//!
//! Requests are handled one at a time, in order: parse the spec, [`prepare`] it against
//! the running configuration, hand the prepared change to the engine thread (and wake
//! it), wait for its [`Report`], and answer the requester with it.

use super::control::Control;
use std::path::PathBuf;
use std::sync::mpsc;
use synthnet_config::plan::{self, Plan};
use synthnet_config::{prepare, ApplyError, Prepared, Report, RunningView};
use synthnet_runtime::Loader;

/// What to change.
pub enum Change {
    /// Re-read the spec file (and changed plugin files).
    Reload,
    /// Run this plan.
    Replace(Box<Plan>),
}

/// A change and where to send its report (none: log it only).
pub struct Request {
    pub change: Change,
    pub reply: Option<mpsc::Sender<Report>>,
}

/// The engine thread's side: prepared changes in, reports (with the view of what runs
/// afterwards) out.
pub struct EngineSide {
    pub commits: mpsc::Receiver<Prepared>,
    pub reports: mpsc::Sender<(Report, RunningView)>,
}

/// Start the worker. `spec` is the file a reload re-reads (`None`: the built-in default,
/// nothing to re-read).
pub fn spawn(
    mut loader: Loader,
    mut view: RunningView,
    spec: Option<PathBuf>,
    ctl: Control,
) -> std::io::Result<(mpsc::Sender<Request>, EngineSide)> {
    let (req_tx, req_rx) = mpsc::channel::<Request>();
    let (commit_tx, commit_rx) = mpsc::channel();
    let (report_tx, report_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("synthnet-config".into())
        .spawn(move || {
            for req in req_rx {
                let plan = match req.change {
                    Change::Replace(p) => Ok(*p),
                    Change::Reload => match &spec {
                        Some(path) => {
                            log::info!("reload: reading {}", path.display());
                            plan::load(path).map_err(ApplyError::from)
                        }
                        None => Err(ApplyError {
                            field: None,
                            message:
                                "running the built-in default spec: there is no file to re-read"
                                    .into(),
                        }),
                    },
                };
                let report = match plan.and_then(|p| prepare(&view, p, &mut loader)) {
                    Err(e) => Report::refused(view.generation, e),
                    Ok(prepared) => {
                        if commit_tx.send(prepared).is_err() {
                            return; // the engine is gone
                        }
                        ctl.wake();
                        match report_rx.recv() {
                            Ok((report, v)) => {
                                view = v;
                                report
                            }
                            Err(_) => return,
                        }
                    }
                };
                match &report.outcome {
                    synthnet_config::Outcome::Applied(c) => {
                        log::info!("generation {}: applied ({c})", report.generation)
                    }
                    synthnet_config::Outcome::Refused(e) => log::error!(
                        "change refused, generation {} keeps running: {e}",
                        report.generation
                    ),
                }
                if let Some(reply) = req.reply {
                    let _ = reply.send(report);
                }
            }
        })?;
    Ok((
        req_tx,
        EngineSide {
            commits: commit_rx,
            reports: report_tx,
        },
    ))
}
