//! The offline driver: one direction of a plan on a virtual clock, the schedule's
//! changes and a command log's commands handed over at their exact instants, and the
//! trace of what happened to each packet turned into text. `synthnet replay` feeds it a
//! capture and writes what leaves; the driver knows nothing of files.

use crate::errors::{ApplyError, CommandError};
use crate::plan::StageCommand;
use crate::{cmdlog, Network, Outcome, Plan};
use std::collections::HashMap;
use synthnet_core::clock::{Stalled, VirtualClock};
use synthnet_core::trace::{Event as TraceEvent, Trace, What};
use synthnet_core::{Direction, Engine};
use synthnet_runtime::{Loader, PluginApp};

/// Why an offline run stopped short.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The engine made no progress at one instant.
    #[error("replay")]
    Stalled(#[source] Stalled),
    #[error("the schedule's change at {at_s:.3} s was refused: {error}")]
    Refused { at_s: f64, error: Box<ApplyError> },
    /// A command that could not be delivered (`what` says where it comes from).
    #[error("{what} to {stage}: {error}")]
    Command {
        what: String,
        stage: String,
        error: Box<CommandError>,
    },
}

/// Record what every stage does in `trace` (again after each change: new stages).
pub fn trace_stages(engine: &mut Engine, trace: Option<&Trace>) {
    let Some(t) = trace else { return };
    let ids: Vec<_> = engine.apps().map(|(id, _)| id).collect();
    for id in ids {
        if let Some(app) = engine.app_mut::<PluginApp>(id) {
            app.set_trace(Some(t.clone()));
        }
    }
}

/// Why each packet: one JSON line per event (`replay --log`), and for each frame that
/// left, in departure order, its story in one line (the pcapng comment).
///
/// Packets are numbered by their frame in the input, from 0; a copy is `N.copyK`,
/// an injected packet `newK`. Events: `arrived`; at each stage `forwarded`, `delayed`
/// (`until_ns`, `delay_ns`), `parked` (then `forwarded`, `delayed` or `dropped` when
/// the plugin releases or drops it), `dropped` (`cause`: `plugin` when the plugin dropped it,
/// else the host's reason: `no_verdict`, `plugin_fault`, `bad_verdict`,
/// `plugin_down`), `copied` (`of`), `injected`, with `modified` when the stage changed
/// its bytes; `departed`. A packet the host dropped after a stage's decision (a full
/// delay line, a full link, an empty pool: the summary counts them by cause) ends with
/// `lost`.
#[derive(Debug, Default)]
pub struct Why {
    pub lines: Vec<String>,
    pub comments: Vec<String>,
}

impl Why {
    pub fn from_events(events: Vec<TraceEvent>) -> Why {
        use serde_json::json;
        struct Live {
            name: String,
            story: Vec<String>,
            copies: u32,
        }
        let mut live: HashMap<u32, Live> = HashMap::new();
        let mut why = Why::default();
        let mut new = 0u64;
        let ms = |ns: u64| ns as f64 / 1e6;
        for e in events {
            let stage = e.stage.as_deref().unwrap_or("");
            let mut line = json!({"t_ns": e.at_ns});
            let name = |live: &mut HashMap<u32, Live>, id: u32| -> String {
                live.entry(id)
                    .or_insert_with(|| Live {
                        name: format!("buffer{id}"),
                        story: Vec::new(),
                        copies: 0,
                    })
                    .name
                    .clone()
            };
            let (event, told) = match &e.what {
                What::Arrived { frame } => {
                    live.insert(
                        e.packet,
                        Live {
                            name: frame.to_string(),
                            story: Vec::new(),
                            copies: 0,
                        },
                    );
                    line["frame"] = json!(frame);
                    ("arrived", None)
                }
                What::Copied { of } => {
                    let (oname, story) = match live.get_mut(of) {
                        Some(o) => {
                            o.copies += 1;
                            (format!("{}.copy{}", o.name, o.copies), o.story.clone())
                        }
                        None => (format!("buffer{of}.copy"), Vec::new()),
                    };
                    line["of"] = json!(name(&mut live, *of));
                    live.insert(
                        e.packet,
                        Live {
                            name: oname,
                            story,
                            copies: 0,
                        },
                    );
                    ("copied", Some(format!("{stage}: a copy")))
                }
                What::Injected => {
                    live.insert(
                        e.packet,
                        Live {
                            name: format!("new{new}"),
                            story: Vec::new(),
                            copies: 0,
                        },
                    );
                    new += 1;
                    ("injected", Some(format!("{stage}: injected")))
                }
                What::Forwarded => ("forwarded", Some(format!("{stage}: forwarded"))),
                What::Delayed { until_ns } => {
                    line["until_ns"] = json!(until_ns);
                    line["delay_ns"] = json!(until_ns - e.at_ns);
                    (
                        "delayed",
                        Some(format!("{stage}: delayed {:.3} ms", ms(until_ns - e.at_ns))),
                    )
                }
                What::Parked => ("parked", Some(format!("{stage}: parked"))),
                What::Dropped { cause } => {
                    line["cause"] = json!(cause);
                    ("dropped", Some(format!("{stage}: dropped ({cause})")))
                }
                What::Departed => ("departed", None),
            };
            line["packet"] = json!(name(&mut live, e.packet));
            line["event"] = json!(event);
            if !stage.is_empty() {
                line["stage"] = json!(stage);
            }
            if e.modified {
                line["modified"] = json!(true);
            }
            why.lines.push(line.to_string());
            if let (Some(mut t), Some(l)) = (told, live.get_mut(&e.packet)) {
                if e.modified {
                    t.push_str(", modified");
                }
                l.story.push(t);
            }
            match e.what {
                What::Departed => {
                    let story = live.remove(&e.packet).map(|l| l.story).unwrap_or_default();
                    why.comments.push(story.join("; "));
                }
                What::Dropped { .. } => {
                    live.remove(&e.packet);
                }
                _ => {}
            }
        }
        let mut rest: Vec<Live> = live.into_values().collect();
        rest.sort_by(|a, b| a.name.cmp(&b.name));
        for l in rest {
            why.lines.push(
                json!({"packet": l.name, "event": "lost", "cause": "dropped by the host after a stage's decision (hold_full, a full link or pool_empty: see the summary's drops)"})
                    .to_string(),
            );
        }
        why
    }
}

/// A change at an instant of the virtual clock.
enum Event<'a> {
    Plan(&'a Plan),
    /// A command, and where it comes from (for errors).
    Command(&'a StageCommand, String),
}

/// Run the engine through the schedule's steps and the command log's commands, each at
/// its exact virtual time counted from `start` (what arrives before that instant meets
/// what ran before it; at equal times the schedule's steps first, then the log's
/// commands in file order). Returns the commands handed over and those refused.
#[allow(clippy::too_many_arguments)]
pub fn run_timed(
    net: &mut Network,
    clock: &mut VirtualClock,
    start: u64,
    dir: Direction,
    plan: &Plan,
    log: &[cmdlog::Entry],
    loader: &mut Loader,
    done: impl Fn(&Engine) -> bool,
    trace: Option<&Trace>,
) -> Result<(u64, u64), OfflineError> {
    let mut events: Vec<(u64, Event<'_>)> = Vec::new();
    for step in &plan.schedule {
        if let Some(p) = &step.plan {
            events.push((step.at_ns, Event::Plan(p)));
        }
        // A replay runs one direction: the other's commands have no stage here.
        if let Some(c) = step.command.as_ref().filter(|c| c.stage.chain.dir == dir) {
            let at = format!("the schedule's command at {:.3} s", step.at_ns as f64 / 1e9);
            events.push((step.at_ns, Event::Command(c, at)));
        }
    }
    let logged: Vec<StageCommand> = log
        .iter()
        .filter(|e| e.source == cmdlog::Source::Api)
        .map(|e| StageCommand {
            stage: e.stage.clone(),
            command: e.command.clone(),
        })
        .collect();
    for (k, (e, c)) in log
        .iter()
        .filter(|e| e.source == cmdlog::Source::Api)
        .zip(&logged)
        .enumerate()
    {
        if c.stage.chain.dir == dir {
            let at = format!("logged command {} (at_ns {})", k + 1, e.at_ns);
            events.push((e.at_ns, Event::Command(c, at)));
        }
    }
    // Stable: equal times keep the order above.
    events.sort_by_key(|(at, _)| *at);
    let (mut sent, mut refused) = (0, 0);
    for (at_ns, event) in events {
        let at = start.saturating_add(at_ns);
        clock
            .run_until(&mut net.engine, at.saturating_sub(1), &done)
            .map_err(OfflineError::Stalled)?;
        if done(&net.engine) {
            break;
        }
        match event {
            Event::Plan(p) => {
                let report = net.apply(p.clone(), loader);
                if let Outcome::Refused(error) = report.outcome {
                    return Err(OfflineError::Refused {
                        at_s: at_ns as f64 / 1e9,
                        error: Box::new(error),
                    });
                }
                trace_stages(&mut net.engine, trace);
            }
            Event::Command(c, what) => {
                // Delivered at the step's instant, between two breaths.
                clock.now_ns = clock.now_ns.max(at);
                match net.command(&c.stage, clock.now_ns, &c.command) {
                    Ok(_) => sent += 1,
                    Err(f) if f.delivered() => {
                        sent += 1;
                        refused += 1;
                    }
                    Err(error) => {
                        return Err(OfflineError::Command {
                            what,
                            stage: c.stage.to_string(),
                            error: Box::new(error),
                        })
                    }
                }
            }
        }
    }
    Ok((sent, refused))
}
