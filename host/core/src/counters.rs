//! Counters as data: every app counts what it received, sent and dropped, drops by a
//! typed [`DropCause`]. Reports, the stats line, replay summaries and metrics all read
//! these arrays; nothing is converted to a string and parsed back.

use serde::ser::{Serialize, SerializeMap, Serializer};

/// One list of drop causes: the enum, its `ALL` table and its names come from it.
macro_rules! drop_causes {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Why a packet was dropped. Every drop is counted under exactly one cause.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum DropCause {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropCause {
            /// Every cause, in the order of [`Counters::drops`].
            pub const ALL: [DropCause; [$($name),*].len()] = [$(DropCause::$variant),*];

            /// The cause's name in reports, logs and metrics (`link_full`, …).
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropCause::$variant => $name,)*
                }
            }
        }
    };
}

drop_causes! {
    /// An output link was full.
    LinkFull => "link_full",
    /// The plugin said drop (loss, a full shaper queue, …).
    Plugin => "plugin",
    /// The plugin gave the packet no verdict.
    NoVerdict => "no_verdict",
    /// The plugin's batch held an invalid verdict; the whole batch was dropped.
    BadVerdict => "bad_verdict",
    /// The plugin trapped, ran out of time or memory during the batch.
    PluginFault => "plugin_fault",
    /// The plugin was down (restarting after a fault).
    PluginDown => "plugin_down",
    /// A delay line was at its limit.
    HoldFull => "hold_full",
    /// The packet pool was exhausted.
    PoolEmpty => "pool_empty",
    /// The packet did not fit (too long for a buffer, or refused by the interface).
    TooBig => "too_big",
    /// Anything the I/O layer refused (link down, no buffers, …).
    Io => "io",
    /// The kernel's receive ring was full (counted by the kernel).
    RingFull => "ring_full",
}

impl Serialize for DropCause {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Drops by cause, indexed by `DropCause as usize`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops(pub [u64; DropCause::ALL.len()]);

impl Drops {
    #[inline(always)]
    pub fn add(&mut self, cause: DropCause, n: u64) {
        self.0[cause as usize] += n;
    }
    pub fn get(&self, cause: DropCause) -> u64 {
        self.0[cause as usize]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// The causes with a non-zero count, in [`DropCause::ALL`] order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropCause, u64)> + '_ {
        DropCause::ALL
            .iter()
            .map(|&c| (c, self.get(c)))
            .filter(|(_, n)| *n > 0)
    }
    /// Per-cause `self - earlier`, saturating (a counter never runs backwards; this
    /// guards the arithmetic anyway).
    pub fn since(&self, earlier: &Drops) -> Drops {
        let mut d = Drops::default();
        for (i, v) in d.0.iter_mut().enumerate() {
            *v = self.0[i].saturating_sub(earlier.0[i]);
        }
        d
    }
}

impl std::ops::AddAssign<&Drops> for Drops {
    fn add_assign(&mut self, o: &Drops) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a += b;
        }
    }
}

/// Serialized as `{"cause": count, …}` with every cause present.
impl Serialize for Drops {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for c in DropCause::ALL {
            m.serialize_entry(c.name(), &self.get(c))?;
        }
        m.end()
    }
}

/// Per-app counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: Drops,
}

impl Counters {
    #[inline(always)]
    pub fn drop(&mut self, cause: DropCause, n: u64) {
        self.drops.add(cause, n);
    }
    pub fn dropped(&self, cause: DropCause) -> u64 {
        self.drops.get(cause)
    }
}

impl std::ops::AddAssign<&Counters> for Counters {
    fn add_assign(&mut self, o: &Counters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.drops += &o.drops;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_index_the_array() {
        let mut names: Vec<&str> = DropCause::ALL.iter().map(|c| c.name()).collect();
        for (i, c) in DropCause::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropCause::ALL.len());
    }

    #[test]
    fn sums_and_differences() {
        let mut a = Counters::default();
        a.drop(DropCause::Plugin, 3);
        a.rx_packets = 5;
        let mut b = a;
        b += &a;
        assert_eq!((b.rx_packets, b.dropped(DropCause::Plugin)), (10, 6));
        let d = a.drops.since(&b.drops);
        assert_eq!(d.total(), 0, "saturates instead of wrapping");
        assert_eq!(
            b.drops.nonzero().collect::<Vec<_>>(),
            [(DropCause::Plugin, 6)]
        );
    }
}
