//! `synthnet check`: a spec validated exactly as the bridge and replay would run it.
//!
//! The plan goes through the one apply path into a network with no interfaces (a source
//! and a sink per direction that never see a packet): every plugin is compiled and
//! instantiated with its config (the plugin's own validation runs), and the graph is
//! built as it would be live. What `check` accepts, `bridge` and `replay` run.

use anyhow::Result;
use synthnet_config::{Network, Outcome, Plan, Ports};
use synthnet_core::{App, Counters, Ctx, Direction, Engine, PacketPool};
use synthnet_runtime::{Loader, WasmRuntime};

/// An app that does nothing: the ends of a dry-run network.
struct Idle(Counters);

impl App for Idle {
    fn breathe(&mut self, _: &mut Ctx<'_>) {}
    fn counters(&self) -> &Counters {
        &self.0
    }
}

/// Build `plan` the way the bridge would, without interfaces. `Err` says why not.
pub fn check(plan: &Plan) -> Result<()> {
    let mut engine = Engine::new(PacketPool::new(1024, 2048));
    let mut ports = Vec::new();
    for d in Direction::BOTH {
        let source = engine.add(Box::new(Idle(Counters::default())));
        let sink = engine.add(Box::new(Idle(Counters::default())));
        ports.push((d, Ports { source, sink }));
    }
    let mut net = Network::new(engine, ports);
    let mut loader = Loader::new(WasmRuntime::new()?);
    match net.apply(plan.clone(), &mut loader).outcome {
        Outcome::Applied(_) => Ok(()),
        Outcome::Refused(e) => Err(e.into()),
    }
}
