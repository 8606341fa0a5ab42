//! A spec's `"schedule"`: changes to other specs (and commands to stages) at set times
//! after it is applied, ramps cut into steps of [`RAMP_STEP_S`].

use super::fields::typed;
use super::shape::shape_plan;
use crate::plan::{check_command, err, Plan, SpecError, StageCommand, StageId, Step};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

/// Most steps a schedule may expand to (ramps make one every [`RAMP_STEP_S`]).
pub const MAX_SCHEDULE_STEPS: usize = 10_000;
/// A ramp moves its numbers this often.
pub const RAMP_STEP_S: f64 = 0.1;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct StepSpec {
    at_s: f64,
    spec: Option<Value>,
    #[serde(default)]
    ramp_s: f64,
    command: Option<CommandSpec>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    stage: String,
    command: Value,
}

/// A schedule entry's command, checked against `plan` (the plan in force at its time).
fn step_command(c: &CommandSpec, plan: &Plan, at: &str) -> Result<StageCommand, SpecError> {
    let field = format!("{at}.command.stage");
    let stage: StageId = c.stage.parse().map_err(|e: String| err(&field, e))?;
    if !plan.stages(stage.chain.dir).any(|(id, _)| id == stage) {
        return Err(err(
            field,
            format!("no stage {stage} in the plan in force at that time"),
        ));
    }
    check_command(&c.command).map_err(|e| err(format!("{at}.command.command"), e))?;
    Ok(StageCommand {
        stage,
        command: c.command.clone(),
    })
}

/// A spec error inside `at`, with the field's path below it.
fn within(at: &str, e: SpecError) -> SpecError {
    let field = if e.field == "(spec)" {
        at.to_string()
    } else {
        format!("{at}.{}", e.field)
    };
    err(field, e.reason)
}

/// `a` moved a fraction `f` of the way to `b`: numbers both give are interpolated
/// (whole numbers stay whole), anything else is `b`'s.
fn lerp(a: &Value, b: &Value, f: f64) -> Value {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (xf, yf) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            let v = xf + (yf - xf) * f;
            match (x.is_u64() && y.is_u64(), x.is_i64() && y.is_i64()) {
                (true, _) => json!(v.round() as u64),
                (_, true) => json!(v.round() as i64),
                _ => json!(v),
            }
        }
        (Value::Object(x), Value::Object(y)) => Value::Object(
            y.iter()
                .map(|(k, vb)| (k.clone(), x.get(k).map_or(vb.clone(), |va| lerp(va, vb, f))))
                .collect(),
        ),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            Value::Array(x.iter().zip(y).map(|(va, vb)| lerp(va, vb, f)).collect())
        }
        _ => b.clone(),
    }
}

/// The steps of a `"schedule"` (ramps cut into steps), validated.
pub(crate) fn schedule_steps(
    schedule: &Value,
    first: &Value,
    base: &Path,
) -> Result<Vec<Step>, SpecError> {
    let steps: Vec<StepSpec> = typed(schedule).map_err(|e| {
        let field = if e.field == "(spec)" {
            "schedule".to_string()
        } else {
            format!("schedule{}", e.field)
        };
        err(field, e.reason)
    })?;
    let mut out = Vec::new();
    let (mut prev, mut prev_at) = (first.clone(), 0.0f64);
    // The plan in force after the entries so far (commands are checked against it).
    let mut in_force = shape_plan(first, base)?;
    for (i, st) in steps.iter().enumerate() {
        let at = format!("schedule[{i}]");
        if !(st.at_s.is_finite() && (prev_at..=86_400.0).contains(&st.at_s)) {
            return Err(err(
                format!("{at}.at_s"),
                format!(
                    "must be within {prev_at}..=86400 s (not before the step before it), got {}",
                    st.at_s
                ),
            ));
        }
        if !(st.ramp_s.is_finite() && (0.0..=3600.0).contains(&st.ramp_s)) {
            return Err(err(
                format!("{at}.ramp_s"),
                format!("must be within 0..=3600 s, got {}", st.ramp_s),
            ));
        }
        let Some(spec) = &st.spec else {
            let Some(c) = &st.command else {
                return Err(err(at, "needs a \"spec\", a \"command\" or both"));
            };
            if st.ramp_s > 0.0 {
                return Err(err(
                    format!("{at}.ramp_s"),
                    "ramps a spec: this entry has none",
                ));
            }
            out.push(Step {
                at_ns: (st.at_s * 1e9) as u64,
                plan: None,
                command: Some(step_command(c, &in_force, &at)?),
            });
            check_steps(out.len())?;
            prev_at = st.at_s;
            continue;
        };
        if spec.get("schedule").is_some() {
            return Err(err(
                format!("{at}.spec.schedule"),
                "a step cannot have a schedule of its own",
            ));
        }
        let target = shape_plan(spec, base).map_err(|e| within(&format!("{at}.spec"), e))?;
        if st.command.is_some() && st.ramp_s > 0.0 {
            return Err(err(
                format!("{at}.command"),
                "cannot be combined with ramp_s (give the command an entry of its own)",
            ));
        }
        let command = st
            .command
            .as_ref()
            .map(|c| step_command(c, &target, &at))
            .transpose()?;
        let n = (st.ramp_s / RAMP_STEP_S).ceil() as usize;
        if n == 0 {
            out.push(Step {
                at_ns: (st.at_s * 1e9) as u64,
                plan: Some(Box::new(target.clone())),
                command,
            });
        } else {
            for k in 1..=n {
                let f = k as f64 / n as f64;
                let plan = if k == n {
                    target.clone()
                } else {
                    shape_plan(&lerp(&prev, spec, f), base)
                        .map_err(|e| within(&format!("{at}.ramp_s"), e))?
                };
                out.push(Step {
                    at_ns: ((st.at_s + st.ramp_s * f) * 1e9) as u64,
                    plan: Some(Box::new(plan)),
                    command: None,
                });
                if out.len() > MAX_SCHEDULE_STEPS {
                    break;
                }
            }
        }
        check_steps(out.len())?;
        prev = spec.clone();
        prev_at = st.at_s + st.ramp_s;
        in_force = target;
    }
    Ok(out)
}

fn check_steps(n: usize) -> Result<(), SpecError> {
    if n > MAX_SCHEDULE_STEPS {
        return Err(err(
            "schedule",
            format!(
                "more than {MAX_SCHEDULE_STEPS} changes (a ramp makes one every {RAMP_STEP_S} s)"
            ),
        ));
    }
    Ok(())
}
