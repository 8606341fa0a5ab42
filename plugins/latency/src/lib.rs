//! `latency`: a constant delay. Every packet leaves `delay_ms` after it reached this
//! stage; order is kept (a delay lowered by a reload never lets a packet overtake one
//! that is already held).

use synthnet_sdk::{export_plugin, ms_to_ns, Batch, Plugin};

pub use synthnet_builtins::latency::Config;
use synthnet_builtins::Builtin;

pub struct Latency {
    delay_ns: u64,
    /// Departure time of the last packet: the floor for the next one (FIFO).
    last_departure_ns: u64,
}

impl Plugin for Latency {
    type Config = Config;
    const STATE_VERSION: u32 = 1;

    fn new(config: Config, _seed: u64) -> Result<Self, String> {
        config.validate()?;
        let delay_ns = ms_to_ns(config.delay_ms);
        Ok(Latency {
            delay_ns,
            last_departure_ns: 0,
        })
    }

    fn process(&mut self, batch: &mut Batch<'_>) {
        for i in 0..batch.len() {
            let at =
                (batch.arrival_ns(i).saturating_add(self.delay_ns)).max(self.last_departure_ns);
            self.last_departure_ns = at;
            batch.send(i, 0, at);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.last_departure_ns.to_le_bytes().to_vec()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let b: [u8; 8] = state
            .try_into()
            .map_err(|_| "latency state must be 8 bytes".to_string())?;
        self.last_departure_ns = u64::from_le_bytes(b);
        Ok(())
    }
}

export_plugin!(Latency);

#[cfg(test)]
mod tests {
    use super::*;
    use synthnet_sdk::Harness;

    #[test]
    fn every_packet_leaves_exactly_delay_later() {
        let mut h = Harness::<Latency>::new(r#"{"delay_ms": 20}"#, 1).unwrap();
        for t in [0u64, 5, 1_000_000, 3_000_000] {
            h.push(&[0; 64], t);
        }
        let out = h.run(3_000_000);
        let at: Vec<u64> = out.iter().map(|o| o.at_ns).collect();
        assert_eq!(at, [20_000_000, 20_000_005, 21_000_000, 23_000_000]);
    }

    #[test]
    fn lowering_the_delay_keeps_order_across_restore() {
        let mut old = Harness::<Latency>::new(r#"{"delay_ms": 100}"#, 1).unwrap();
        old.push(&[0; 64], 0);
        old.run(0);
        let state = old.snapshot();
        let mut new = Harness::<Latency>::new(r#"{"delay_ms": 10}"#, 1).unwrap();
        new.restore(&state).unwrap();
        new.push(&[0; 64], 1);
        // Without the hand-over it would leave at 10 ms + 1 ns, before the held packet.
        assert_eq!(new.run(1)[0].at_ns, 100_000_000);
    }

    #[test]
    fn bad_config_is_refused_with_the_field_name() {
        let e = Harness::<Latency>::new(r#"{"delay_ms": -1}"#, 1)
            .err()
            .unwrap();
        assert!(e.contains("delay_ms"), "{e}");
        let e = Harness::<Latency>::new(r#"{"dealy_ms": 1}"#, 1)
            .err()
            .unwrap();
        assert!(e.contains("dealy_ms"), "{e}");
    }
}
