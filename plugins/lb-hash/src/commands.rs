//! Membership changes, as the `add`, `remove`, `set` and `predict` commands give them:
//! parsing, applying (a new mapper, the flows it breaks) and predicting.

use super::*;

/// A membership change, as a command gives it.
pub(crate) enum Change {
    Add {
        target: String,
        position: Option<usize>,
    },
    Remove {
        target: String,
    },
    Set {
        targets: Vec<String>,
    },
}

fn str_field<'a>(cmd: &'a Value, field: &str) -> Result<&'a str, String> {
    match cmd.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(format!("{field}: must be a string, got {v}")),
        None => Err(format!("{field}: missing")),
    }
}

fn parse_change(cmd: &Value, op: &str) -> Result<Change, String> {
    let allowed: &[&str] = match op {
        "add" => &["op", "target", "position"],
        "remove" => &["op", "target"],
        "set" => &["op", "targets"],
        _ => {
            return Err(format!(
                "op: must be one of add, remove, set, predict, status; got {op:?}"
            ))
        }
    };
    if let Some(obj) = cmd.as_object() {
        if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{k}: unknown field for op {op:?} (it takes {})",
                allowed[1..].join(", ")
            ));
        }
    }
    Ok(match op {
        "add" => Change::Add {
            target: str_field(cmd, "target")?.to_string(),
            position: match cmd.get("position") {
                None => None,
                Some(v) => Some(v.as_u64().ok_or_else(|| {
                    format!("position: must be an index ≥ 0 into targets, got {v}")
                })? as usize),
            },
        },
        "remove" => Change::Remove {
            target: str_field(cmd, "target")?.to_string(),
        },
        // "set", the only op left.
        _ => Change::Set {
            targets: match cmd.get("targets") {
                Some(Value::Array(a)) => a
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("targets[{i}]: must be a string, got {v}"))
                    })
                    .collect::<Result<_, _>>()?,
                Some(v) => return Err(format!("targets: must be a list of names, got {v}")),
                None => return Err("targets: missing".into()),
            },
        },
    })
}

impl LbHash {
    /// The member list a change leads to, registering new names. Nothing else changes.
    pub(crate) fn members_after(&mut self, ch: &Change) -> Result<Vec<u16>, String> {
        let mut members = self.mapper.members.clone();
        match ch {
            Change::Add { target, position } => {
                let id = self.intern("target", target)?;
                if members.contains(&id) {
                    return Err(format!("target: {target:?} is already a member"));
                }
                let at = position.unwrap_or(members.len());
                if at > members.len() {
                    return Err(format!(
                        "position: must be within 0..={} (the number of targets), got {at}",
                        members.len()
                    ));
                }
                members.insert(at, id);
            }
            Change::Remove { target } => {
                let at = self
                    .id_of(target)
                    .and_then(|id| members.iter().position(|&m| m == id))
                    .ok_or_else(|| format!("target: {target:?} is not a member"))?;
                members.remove(at);
            }
            Change::Set { targets } => {
                members.clear();
                for (i, t) in targets.iter().enumerate() {
                    let field = format!("targets[{i}]");
                    let id = self.intern(&field, t)?;
                    if members.contains(&id) {
                        return Err(format!("{field}: {t:?} is listed twice"));
                    }
                    members.push(id);
                }
            }
        }
        if members.is_empty() {
            return Err("targets: the change would leave no target".into());
        }
        if members.len() > MAX_TARGETS {
            return Err(format!(
                "targets: at most {MAX_TARGETS}, the change makes {}",
                members.len()
            ));
        }
        Ok(members)
    }

    /// The live flows `m` maps elsewhere than home while the current mapper maps them
    /// home: what applying `m` now would break. (slot, where they would go)
    fn breaks(&self, m: &Mapper, now_ns: u64) -> Vec<(usize, u16)> {
        let mut out = Vec::new();
        for (s, f) in self.flows.iter().enumerate() {
            if !f.used || self.expired(f, now_ns) {
                continue;
            }
            let to = m.map(f.hash);
            if !self.misrouted(&self.mapper, f) && self.misrouted(m, f) {
                out.push((s, to));
            }
        }
        out
    }

    /// Whether `m` sends flow `f` elsewhere than home.
    fn misrouted(&self, m: &Mapper, f: &Flow) -> bool {
        m.map(f.hash) != f.home || (self.rehash_moves && f.var != f.var0)
    }

    fn live_flows(&self, now_ns: u64) -> impl Iterator<Item = &Flow> {
        self.flows
            .iter()
            .filter(move |f| f.used && !self.expired(f, now_ns))
    }

    fn flow_json(&self, f: &Flow, to: u16) -> Value {
        json!({
            "proto": if f.key.proto == ipproto::TCP { "tcp" } else { "udp" },
            "src": f.key.addr(&f.key.src),
            "src_port": f.key.src_port,
            "dst": f.key.addr(&f.key.dst),
            "dst_port": f.key.dst_port,
            "home": self.name(f.home),
            "to": self.name(to),
        })
    }

    fn member_names(&self, members: &[u16]) -> Vec<&str> {
        members.iter().map(|&id| self.name(id)).collect()
    }

    /// Answer a command (`op`: add, remove, set, predict, status). A refused command
    /// changes nothing.
    pub fn handle_command(&mut self, cmd: &Value, now_ns: u64) -> Result<Value, String> {
        if !cmd.is_object() {
            return Err(format!(
                "command: must be a JSON object with \"op\", got {cmd}"
            ));
        }
        let op = str_field(cmd, "op")?;
        match op {
            "status" => {
                let live: Vec<&Flow> = self.live_flows(now_ns).collect();
                let misrouted = live
                    .iter()
                    .filter(|f| self.misrouted(&self.mapper, f))
                    .count();
                let mut homes = serde_json::Map::new();
                for &id in &self.mapper.members {
                    let n = live.iter().filter(|f| f.home == id).count();
                    homes.insert(self.name(id).to_string(), json!(n));
                }
                Ok(json!({
                    "algorithm": self.algo.name(),
                    "targets": self.member_names(&self.mapper.members),
                    "flows": live.len(),
                    "misrouted_flows": misrouted,
                    "flows_by_home": homes,
                    "unbalanced": self.unbalanced,
                }))
            }
            "predict" => {
                let change = cmd
                    .get("change")
                    .ok_or("change: missing (the change to predict, e.g. {\"op\": \"remove\", \"target\": \"t3\"})")?;
                let cop = str_field(change, "op").map_err(|e| format!("change.{e}"))?;
                let ch = parse_change(change, cop).map_err(|e| format!("change.{e}"))?;
                let limit = match cmd.get("limit") {
                    None => DEFAULT_LIST_LIMIT,
                    Some(v) => v
                        .as_u64()
                        .ok_or_else(|| format!("limit: must be a count ≥ 0, got {v}"))?
                        as usize,
                };
                // Names a prediction registers are harmless: ids are only names.
                let members = self.members_after(&ch).map_err(|e| format!("change.{e}"))?;
                let (m, _) = self.build(members, Some(&self.mapper.buckets), now_ns);
                let b = self.breaks(&m, now_ns);
                let listed: Vec<Value> = b
                    .iter()
                    .take(limit)
                    .map(|&(s, to)| self.flow_json(&self.flows[s], to))
                    .collect();
                Ok(json!({
                    "targets": self.member_names(&m.members),
                    "flows": self.live_flows(now_ns).count(),
                    "breaks": b.len(),
                    "flows_broken": listed,
                }))
            }
            _ => {
                let ch = parse_change(cmd, op)?;
                let members = self.members_after(&ch)?;
                let (m, unbalanced) = self.build(members, Some(&self.mapper.buckets), now_ns);
                let broken = self.breaks(&m, now_ns).len();
                self.mapper = m;
                self.unbalanced = unbalanced;
                self.counters[ctr::CHANGES] += 1;
                Ok(json!({
                    "targets": self.member_names(&self.mapper.members),
                    "flows": self.live_flows(now_ns).count(),
                    "broken": broken,
                }))
            }
        }
    }

    /// `resilient`: give idle buckets of members above their share to those below.
    pub(crate) fn upkeep(&mut self, now_ns: u64) {
        if !self.unbalanced || now_ns < self.next_upkeep_ns {
            return;
        }
        self.next_upkeep_ns = now_ns.saturating_add(UPKEEP_NS);
        let members = self.mapper.members.clone();
        let (m, unbalanced) = self.build(members, Some(&self.mapper.buckets), now_ns);
        self.mapper = m;
        self.unbalanced = unbalanced;
    }

    pub(crate) fn flush_counters(&mut self, batch: &mut Batch<'_>) {
        for (i, c) in self.counters.iter_mut().enumerate() {
            if *c != 0 {
                batch.count(i, *c);
                *c = 0;
            }
        }
    }
}
