//! The ABI 1.1 additions through the native `Harness`: commands (reply, refusal, bad
//! JSON, the default refusal), parking (release in order at a time, partial release,
//! drop), the reverse port, and a timer armed from a command.

use serde_json::{json, Value};
use synthnet_sdk::{Access, Batch, Harness, Plugin, REVERSE};

/// Parks every packet on the port given by its first byte; commands:
/// `{"release": n, "at_ns": t}`, `{"drop": n}`, `{"inject": [bytes]}`,
/// `{"wake_at_ns": t}`, `{"echo": v}`; anything else is refused.
struct Parker {
    parked: u64,
    ticks: Vec<u64>,
}

impl Plugin for Parker {
    type Config = Value;
    const ACCESS: Access = Access::Headers(8);
    const OUTPUTS: u16 = 2;
    const EMIT_CAP: u32 = 1024;

    fn new(_: Value, _: u64) -> Result<Self, String> {
        Ok(Parker {
            parked: 0,
            ticks: Vec::new(),
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        for i in 0..batch.len() {
            let port = batch.data(i)[0] as u16;
            batch.park(i, port);
            self.parked += 1;
        }
    }

    fn tick(&mut self, batch: &mut Batch<'_>) {
        self.ticks.push(batch.now_ns());
    }

    fn command(&mut self, cmd: &Value, batch: &mut Batch<'_>) -> Result<Value, String> {
        if let Some(n) = cmd.get("release").and_then(Value::as_u64) {
            let at = cmd.get("at_ns").and_then(Value::as_u64).unwrap_or(0);
            batch.release_parked(at, n as u32);
            let k = if n == 0 {
                self.parked
            } else {
                n.min(self.parked)
            };
            self.parked -= k;
            return Ok(json!({ "released": k }));
        }
        if let Some(n) = cmd.get("drop").and_then(Value::as_u64) {
            batch.drop_parked(n as u32);
            let k = if n == 0 {
                self.parked
            } else {
                n.min(self.parked)
            };
            self.parked -= k;
            return Ok(json!({ "dropped": k }));
        }
        if let Some(b) = cmd.get("inject").and_then(Value::as_array) {
            let bytes: Vec<u8> = b.iter().map(|x| x.as_u64().unwrap_or(0) as u8).collect();
            batch.inject(REVERSE, 0, &bytes);
            return Ok(json!("injected"));
        }
        if let Some(t) = cmd.get("wake_at_ns").and_then(Value::as_u64) {
            batch.wake_at(t);
            return Ok(json!({ "armed": batch.pending_wake() }));
        }
        if let Some(v) = cmd.get("echo") {
            return Ok(json!({ "echo": v, "now_ns": batch.now_ns() }));
        }
        Err(format!("unknown command {cmd}"))
    }
}

fn frame(port: u8, tag: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0] = port;
    f[1] = tag;
    f
}

#[test]
fn a_command_is_answered_or_refused_with_the_plugins_message() {
    let mut h = Harness::<Parker>::new("{}", 1).unwrap();
    let r = h.command(r#"{"echo": [1, "two"]}"#, 77).unwrap();
    assert_eq!(r, json!({ "echo": [1, "two"], "now_ns": 77 }));
    let e = h.command(r#"{"nope": 1}"#, 78).unwrap_err();
    assert_eq!(e, r#"unknown command {"nope":1}"#);
    let e = h.command("{not json", 79).unwrap_err();
    assert!(e.starts_with("invalid command JSON"), "{e}");
    // A refused command leaves the last reply alone and the plugin working.
    assert_eq!(h.command(r#"{"echo": 3}"#, 80).unwrap()["echo"], 3);
}

#[test]
fn a_plugin_without_command_refuses_with_the_default_message() {
    struct Pass;
    impl Plugin for Pass {
        type Config = Value;
        fn new(_: Value, _: u64) -> Result<Self, String> {
            Ok(Pass)
        }
    }
    let mut h = Harness::<Pass>::new("{}", 1).unwrap();
    assert_eq!(
        h.command("{}", 0).unwrap_err(),
        "this plugin takes no commands"
    );
}

#[test]
fn parked_packets_leave_in_order_at_the_release_time_on_their_own_ports() {
    let mut h = Harness::<Parker>::new("{}", 1).unwrap();
    for tag in 0..5 {
        h.push(&frame(tag % 2, tag), 100);
    }
    assert!(h.run(1_000).is_empty(), "parked packets are no output");
    assert_eq!(h.parked(), 5);
    // Release two at a later time, then the rest "now" (a time in the past).
    assert_eq!(
        h.command(r#"{"release": 2, "at_ns": 5000}"#, 2_000)
            .unwrap(),
        json!({ "released": 2 })
    );
    assert_eq!(h.parked(), 3);
    let out = h.take_outputs();
    let got: Vec<_> = out
        .iter()
        .map(|o| (o.input, o.port, o.at_ns, o.bytes[1]))
        .collect();
    assert_eq!(got, [(None, Some(0), 5000, 0), (None, Some(1), 5000, 1)]);
    assert_eq!(out[0].bytes, frame(0, 0), "bytes as parked");
    h.command(r#"{"release": 0, "at_ns": 10}"#, 3_000).unwrap();
    assert_eq!(h.parked(), 0);
    // Command outputs come first out of the next run.
    h.push(&frame(0, 9), 3_500);
    let out = h.run(4_000);
    let got: Vec<_> = out.iter().map(|o| (o.port, o.at_ns, o.bytes[1])).collect();
    assert_eq!(
        got,
        [
            (Some(0), 3_000, 2),
            (Some(1), 3_000, 3),
            (Some(0), 3_000, 4)
        ]
    );
    assert_eq!(h.parked(), 1, "the new packet is parked");
}

#[test]
fn dropping_parked_packets_takes_the_oldest_and_releases_nothing() {
    let mut h = Harness::<Parker>::new("{}", 1).unwrap();
    for tag in 0..4 {
        h.push(&frame(0, tag), 0);
    }
    h.run(10);
    h.command(r#"{"drop": 3}"#, 20).unwrap();
    assert_eq!(h.parked(), 1);
    assert!(h.take_outputs().is_empty());
    h.command(r#"{"release": 0}"#, 30).unwrap();
    let out = h.take_outputs();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bytes[1], 3, "the youngest was kept");
    // Releasing from an empty queue is no error.
    h.command(r#"{"release": 0}"#, 40).unwrap();
    assert!(h.take_outputs().is_empty());
}

#[test]
fn packets_sent_on_the_reverse_port_are_outputs_on_port_1() {
    assert_eq!(REVERSE, 1);
    let mut h = Harness::<Parker>::new("{}", 1).unwrap();
    h.command(r#"{"inject": [1, 2, 3]}"#, 50).unwrap();
    let out = h.run(60);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].input, out[0].port, out[0].at_ns, &out[0].bytes[..]),
        (None, Some(REVERSE), 50, &[1u8, 2, 3][..])
    );
}

#[test]
fn a_command_arms_the_timer_and_keeps_an_armed_one() {
    let mut h = Harness::<Parker>::new("{}", 1).unwrap();
    let r = h.command(r#"{"wake_at_ns": 500}"#, 100).unwrap();
    assert_eq!(r, json!({ "armed": 500 }));
    assert_eq!(h.wake_at(), Some(500));
    // Another command does not disarm it; an earlier request wins.
    h.command(r#"{"echo": 1}"#, 200).unwrap();
    assert_eq!(h.wake_at(), Some(500));
    h.command(r#"{"wake_at_ns": 400}"#, 300).unwrap();
    assert_eq!(h.wake_at(), Some(400));
    h.run(450);
    assert_eq!(h.plugin().ticks, [450]);
    assert_eq!(h.wake_at(), None);
}

/// The host ticks a timer that is due before it hands over a command; the harness
/// dropped that tick (the command's call re-armed only a future timer).
#[test]
fn a_due_timer_ticks_before_a_command_as_in_the_host() {
    let mut h = Harness::<Parker>::new("{}", 1).unwrap();
    h.command(r#"{"wake_at_ns": 500}"#, 100).unwrap();
    let r = h.command(r#"{"echo": 1}"#, 700).unwrap();
    assert_eq!(r["now_ns"], 700);
    assert_eq!(
        h.plugin().ticks,
        [700],
        "the due tick, at the command's time"
    );
    assert_eq!(h.wake_at(), None);
    // Also when the command is refused.
    h.command(r#"{"wake_at_ns": 800}"#, 710).unwrap();
    assert!(h.command(r#"{"nonsense": 1}"#, 900).is_err());
    assert_eq!(h.plugin().ticks, [700, 900]);
}

#[test]
fn a_refused_command_leaves_the_timer_as_it_was() {
    struct Fickle;
    impl Plugin for Fickle {
        type Config = Value;
        fn new(_: Value, _: u64) -> Result<Self, String> {
            Ok(Fickle)
        }
        fn command(&mut self, cmd: &Value, batch: &mut Batch<'_>) -> Result<Value, String> {
            batch.cancel_wake();
            batch.wake_at(cmd["at"].as_u64().unwrap_or(0));
            match cmd["ok"].as_bool() {
                Some(true) => Ok(Value::Null),
                _ => Err("no".into()),
            }
        }
    }
    let mut h = Harness::<Fickle>::new("{}", 1).unwrap();
    h.command(r#"{"ok": true, "at": 500}"#, 0).unwrap();
    assert_eq!(h.wake_at(), Some(500));
    assert!(h.command(r#"{"ok": false, "at": 900}"#, 10).is_err());
    assert_eq!(h.wake_at(), Some(500));
    h.command(r#"{"ok": true, "at": 900}"#, 20).unwrap();
    assert_eq!(h.wake_at(), Some(900));
}

#[test]
fn more_than_two_outputs_are_refused_as_the_host_would() {
    struct Three;
    impl Plugin for Three {
        type Config = Value;
        const OUTPUTS: u16 = 3;
        fn new(_: Value, _: u64) -> Result<Self, String> {
            Ok(Three)
        }
    }
    let e = Harness::<Three>::new("{}", 1).err().unwrap();
    assert!(e.contains("3 outputs"), "{e}");
}
