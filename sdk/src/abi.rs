//! The link ABI, version 1: the byte layout shared by the host and every plugin.
//!
//! This module is the single source of truth for offsets and constants; `docs/ABI.md`
//! explains the contract in prose. Everything is little-endian. A plugin owns one
//! contiguous *region* of its linear memory, allocated once at init, and describes it in a
//! [`hdr`] header whose address `synthnet_init` returns. Per batch the host writes
//! [`desc`] descriptors (and, if the plugin asked for them, packet bytes into per-packet
//! slots), calls `synthnet_process(n, now_ns)` once, and reads back [`verdict`] records.
//!
//! Minor version 1 adds, all optional: commands (`synthnet_command`, `synthnet_reply`),
//! parking ([`verdict::FLAG_PARK`], [`verdict::ID_PARKED`]) and the reverse port
//! ([`PORT_REVERSE`], `outputs = 2`). A host speaking 1.1 runs 1.0 plugins unchanged.

/// `"SNP1"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"SNP1");
pub const ABI_MAJOR: u16 = 1;
/// The newest minor version this SDK speaks (and declares: a plugin using none of the
/// 1.1 additions is still a valid 1.0 plugin, and a 1.1 host runs both).
pub const ABI_MINOR: u16 = 1;

/// Export that marks a module as speaking ABI major version 1 (returns the minor).
pub const EXPORT_VERSION: &str = "synthnet_abi_v1";
/// Prefix of the version marker; a module exporting `synthnet_abi_v<N>` speaks major N.
pub const EXPORT_VERSION_PREFIX: &str = "synthnet_abi_v";
pub const EXPORT_ALLOC: &str = "synthnet_alloc";
pub const EXPORT_INIT: &str = "synthnet_init";
pub const EXPORT_PROCESS: &str = "synthnet_process";
pub const EXPORT_ERROR: &str = "synthnet_error";
pub const EXPORT_SNAPSHOT: &str = "synthnet_snapshot";
pub const EXPORT_RESTORE: &str = "synthnet_restore";
/// 1.1, optional: `synthnet_command(ptr, len, now_ns) -> i32`, verdicts written or -1.
pub const EXPORT_COMMAND: &str = "synthnet_command";
/// 1.1, with `synthnet_command`: `synthnet_reply() -> i32`, address of `[len][JSON]`.
pub const EXPORT_REPLY: &str = "synthnet_reply";
/// Largest command a host sends, bytes of UTF-8 JSON.
pub const MAX_COMMAND_LEN: usize = 64 << 10;
/// The only import: `synthnet.log(level, ptr, len)`.
pub const IMPORT_MODULE: &str = "synthnet";
pub const IMPORT_LOG: &str = "log";

/// Output port value that means "drop this packet".
pub const PORT_DROP: u16 = 0xFFFF;
/// Verdict id that means "a new packet made of the verdict's bytes".
pub const ID_NEW: u32 = 0xFFFF_FFFF;
/// Port 1 of a plugin with two outputs (1.1): back out of the interface the packet's
/// direction reads from, toward its sender, skipping the opposite direction's chain.
pub const PORT_REVERSE: u16 = 1;
/// Most outputs a plugin may declare: port 0 and the reverse port.
pub const MAX_OUTPUTS: u16 = 2;
/// `wake_at_ns` value that means "no timer".
pub const NO_WAKE: u64 = u64::MAX;
/// Largest batch a host will hand over in one call.
pub const MAX_BATCH_LIMIT: u32 = 1024;
/// Largest packet (a GSO super-packet) the host ever carries.
pub const MAX_PACKET: u32 = 65_536;

/// Verdict flag: the bytes at `data_off..data_off+data_len` replace the packet's
/// captured prefix (its first `cap_len` bytes); the uncaptured tail is kept.
pub const VF_REPLACE: u16 = 1;
/// Verdict flag (1.1): park the packet in the host (see [`verdict::FLAG_PARK`]).
pub const VF_PARK: u16 = 2;
/// Mask of verdict flags defined in v1.1; the others are reserved and must be zero.
pub const VF_KNOWN: u16 = VF_REPLACE | VF_PARK;

/// Descriptor flag: the packet is longer than the captured bytes.
pub const DF_TRUNCATED: u16 = 1;

/// How much of each packet the plugin sees.
pub mod access {
    /// Descriptors only: no packet bytes are copied (fastest).
    pub const META: u32 = 0;
    /// The first `snap_len` bytes of each packet.
    pub const HEADERS: u32 = 1;
    /// The whole packet, up to `slot_size` bytes.
    pub const FULL: u32 = 2;
}

/// Header, at the address `synthnet_init` returns. Offsets of u32/u16/u64 fields.
pub mod hdr {
    pub const MAGIC: usize = 0; // u32
    pub const ABI_MAJOR: usize = 4; // u16
    pub const ABI_MINOR: usize = 6; // u16
    pub const FLAGS: usize = 8; // u32, reserved, zero
    pub const MAX_BATCH: usize = 12; // u32
    pub const MAX_VERDICTS: usize = 16; // u32
    pub const ACCESS: usize = 20; // u32, see `access`
    pub const SNAP_LEN: usize = 24; // u32
    pub const SLOT_SIZE: usize = 28; // u32
    pub const N_INPUTS: usize = 32; // u16
    pub const N_OUTPUTS: usize = 34; // u16
    pub const DESC_OFF: usize = 36; // u32, address of descriptor array
    pub const VERDICT_OFF: usize = 40; // u32, address of verdict array
    pub const DATA_OFF: usize = 44; // u32, address of data slots
    pub const EMIT_OFF: usize = 48; // u32, address of the emit area
    pub const EMIT_CAP: usize = 52; // u32
    pub const COUNTERS_OFF: usize = 56; // u32, address of u64 counters
    pub const N_COUNTERS: usize = 60; // u32
    pub const NAMES_OFF: usize = 64; // u32, newline-separated counter names
    pub const NAMES_LEN: usize = 68; // u32
    pub const STATE_VERSION: usize = 72; // u32, 0 = no state hand-over
    pub const REGION_LEN: usize = 76; // u32, bytes from the header to the region's end
    pub const WAKE_AT_NS: usize = 80; // u64, written by the plugin after every call
    pub const LEN: usize = 96;
}

/// Descriptor written by the host, one per packet, `desc::LEN` bytes apart.
pub mod desc {
    pub const ID: usize = 0; // u32, index in this batch
    pub const WIRE_LEN: usize = 4; // u32, full packet length
    pub const DATA_OFF: usize = 8; // u32, address of the captured bytes (0 if none)
    pub const CAP_LEN: usize = 12; // u32, captured bytes
    pub const IN_PORT: usize = 16; // u16
    pub const FLAGS: usize = 18; // u16, see DF_*
    pub const RESERVED: usize = 20; // u32, zero
    /// u64: when the packet reached this plugin, ns: the time it entered synthnet, or
    /// the exact time an earlier stage scheduled it for (not the breath that moved it).
    pub const ARRIVAL_NS: usize = 24;
    pub const LEN: usize = 32;
}

/// Verdict written by the plugin, `verdict::LEN` bytes apart.
pub mod verdict {
    pub const ID: usize = 0; // u32, a descriptor id, or ID_NEW
    pub const PORT: usize = 4; // u16, output port, or PORT_DROP
    pub const FLAGS: usize = 6; // u16, see VF_*
    pub const AT_NS: usize = 8; // u64, deliver at (0 or past = now)
    pub const DATA_OFF: usize = 16; // u32, address of replacement / new bytes
    pub const DATA_LEN: usize = 20; // u32
    pub const LEN: usize = 24;

    /// Flag (1.1): the packet waits in the host, in the stage's parked queue (FIFO),
    /// until the plugin releases or drops it; `port` is the port it will leave on and
    /// `deliver_at` is ignored. Parked packets count as held.
    pub const FLAG_PARK: u16 = super::VF_PARK;
    /// Id of a control verdict (1.1) on the parked queue: with port 0 it releases the
    /// oldest `data_len` parked packets (0 = all) at `deliver_at`, each on its own port;
    /// with port `PORT_DROP` it drops them. `flags` and `data_off` must be 0.
    pub const ID_PARKED: u32 = 0xFFFF_FFFE;
}

/// Little-endian field access on byte slices; `None` when out of range, never a panic.
pub mod le {
    #[inline(always)]
    pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
    }
    #[inline(always)]
    pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
    }
    #[inline(always)]
    pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
    }
    #[inline(always)]
    pub fn put_u16(b: &mut [u8], off: usize, v: u16) -> Option<()> {
        b.get_mut(off..off + 2)?.copy_from_slice(&v.to_le_bytes());
        Some(())
    }
    #[inline(always)]
    pub fn put_u32(b: &mut [u8], off: usize, v: u32) -> Option<()> {
        b.get_mut(off..off + 4)?.copy_from_slice(&v.to_le_bytes());
        Some(())
    }
    #[inline(always)]
    pub fn put_u64(b: &mut [u8], off: usize, v: u64) -> Option<()> {
        b.get_mut(off..off + 8)?.copy_from_slice(&v.to_le_bytes());
        Some(())
    }
}

/// A plugin's region, as described by its header: absolute addresses in the plugin's
/// memory. The guest builds it at init; the host parses and validates it once, after
/// which every per-batch access is inside memory the host has checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub header: u32,
    pub max_batch: u32,
    pub max_verdicts: u32,
    pub access: u32,
    pub snap_len: u32,
    pub slot_size: u32,
    pub n_inputs: u16,
    pub n_outputs: u16,
    pub desc_off: u32,
    pub verdict_off: u32,
    pub data_off: u32,
    pub emit_off: u32,
    pub emit_cap: u32,
    pub counters_off: u32,
    pub n_counters: u32,
    pub names_off: u32,
    pub names_len: u32,
    pub state_version: u32,
    pub region_len: u32,
}

/// Why a header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Layout {
    /// Address of the captured bytes of batch slot `i`.
    #[inline(always)]
    pub fn slot_addr(&self, i: u32) -> u32 {
        self.data_off + i * self.slot_size
    }
    #[inline(always)]
    pub fn desc_addr(&self, i: u32) -> usize {
        self.desc_off as usize + i as usize * desc::LEN
    }
    #[inline(always)]
    pub fn verdict_addr(&self, i: u32) -> usize {
        self.verdict_off as usize + i as usize * verdict::LEN
    }
    pub fn region_end(&self) -> u64 {
        self.header as u64 + self.region_len as u64
    }

    /// Write this layout as a header into `region` (whose first byte is `self.header`).
    pub fn write_header(&self, region: &mut [u8]) -> Option<()> {
        use le::*;
        put_u32(region, hdr::MAGIC, MAGIC)?;
        put_u16(region, hdr::ABI_MAJOR, ABI_MAJOR)?;
        put_u16(region, hdr::ABI_MINOR, ABI_MINOR)?;
        put_u32(region, hdr::FLAGS, 0)?;
        put_u32(region, hdr::MAX_BATCH, self.max_batch)?;
        put_u32(region, hdr::MAX_VERDICTS, self.max_verdicts)?;
        put_u32(region, hdr::ACCESS, self.access)?;
        put_u32(region, hdr::SNAP_LEN, self.snap_len)?;
        put_u32(region, hdr::SLOT_SIZE, self.slot_size)?;
        put_u16(region, hdr::N_INPUTS, self.n_inputs)?;
        put_u16(region, hdr::N_OUTPUTS, self.n_outputs)?;
        put_u32(region, hdr::DESC_OFF, self.desc_off)?;
        put_u32(region, hdr::VERDICT_OFF, self.verdict_off)?;
        put_u32(region, hdr::DATA_OFF, self.data_off)?;
        put_u32(region, hdr::EMIT_OFF, self.emit_off)?;
        put_u32(region, hdr::EMIT_CAP, self.emit_cap)?;
        put_u32(region, hdr::COUNTERS_OFF, self.counters_off)?;
        put_u32(region, hdr::N_COUNTERS, self.n_counters)?;
        put_u32(region, hdr::NAMES_OFF, self.names_off)?;
        put_u32(region, hdr::NAMES_LEN, self.names_len)?;
        put_u32(region, hdr::STATE_VERSION, self.state_version)?;
        put_u32(region, hdr::REGION_LEN, self.region_len)?;
        put_u64(region, hdr::WAKE_AT_NS, NO_WAKE)
    }

    /// Parse and validate the header at `addr` in `mem` (a plugin's whole memory).
    /// Every array the header names must lie inside the region, the region inside
    /// `mem`, and the sizes within the limits of ABI v1.
    pub fn parse(mem: &[u8], addr: u32) -> Result<Layout, LayoutError> {
        use le::*;
        let err = |m: &str| LayoutError(m.to_string());
        let a = addr as usize;
        let h = mem
            .get(a..a.saturating_add(hdr::LEN))
            .ok_or_else(|| err("header lies outside the plugin's memory"))?;
        let g32 = |o| u32_at(h, o).unwrap_or(0);
        let g16 = |o| u16_at(h, o).unwrap_or(0);
        if g32(hdr::MAGIC) != MAGIC {
            return Err(err(
                "header has a bad magic number (not a synthnet plugin header)",
            ));
        }
        let (major, minor) = (g16(hdr::ABI_MAJOR), g16(hdr::ABI_MINOR));
        if major != ABI_MAJOR || minor > ABI_MINOR {
            return Err(LayoutError(format!(
                "plugin header speaks ABI {major}.{minor}; this synthnet speaks {ABI_MAJOR}.{ABI_MINOR}"
            )));
        }
        if g32(hdr::FLAGS) != 0 {
            return Err(err("header sets reserved flag bits"));
        }
        let lay = Layout {
            header: addr,
            max_batch: g32(hdr::MAX_BATCH),
            max_verdicts: g32(hdr::MAX_VERDICTS),
            access: g32(hdr::ACCESS),
            snap_len: g32(hdr::SNAP_LEN),
            slot_size: g32(hdr::SLOT_SIZE),
            n_inputs: g16(hdr::N_INPUTS),
            n_outputs: g16(hdr::N_OUTPUTS),
            desc_off: g32(hdr::DESC_OFF),
            verdict_off: g32(hdr::VERDICT_OFF),
            data_off: g32(hdr::DATA_OFF),
            emit_off: g32(hdr::EMIT_OFF),
            emit_cap: g32(hdr::EMIT_CAP),
            counters_off: g32(hdr::COUNTERS_OFF),
            n_counters: g32(hdr::N_COUNTERS),
            names_off: g32(hdr::NAMES_OFF),
            names_len: g32(hdr::NAMES_LEN),
            state_version: g32(hdr::STATE_VERSION),
            region_len: g32(hdr::REGION_LEN),
        };
        if lay.max_batch == 0 || lay.max_batch > MAX_BATCH_LIMIT {
            return Err(LayoutError(format!(
                "max_batch {} is outside 1..={MAX_BATCH_LIMIT}",
                lay.max_batch
            )));
        }
        if lay.max_verdicts < lay.max_batch || lay.max_verdicts > 16 * MAX_BATCH_LIMIT {
            return Err(err(
                "max_verdicts must be at least max_batch and at most 16384",
            ));
        }
        match lay.access {
            access::META => {}
            access::HEADERS | access::FULL => {
                if lay.snap_len == 0 || lay.slot_size < lay.snap_len || lay.slot_size > MAX_PACKET {
                    return Err(err("snap_len/slot_size are inconsistent"));
                }
            }
            other => return Err(LayoutError(format!("unknown access mode {other}"))),
        }
        if lay.n_inputs == 0 || lay.n_outputs == 0 || lay.n_outputs == PORT_DROP {
            return Err(err("a plugin needs at least one input and one output"));
        }
        let start = addr as u64;
        let end = lay.region_end();
        if end > mem.len() as u64 {
            return Err(err("region extends past the plugin's memory"));
        }
        let inside = |off: u32, len: u64, what: &str| -> Result<(), LayoutError> {
            let (o, e) = (off as u64, off as u64 + len);
            if len > 0 && (o < start || e > end) {
                Err(LayoutError(format!(
                    "{what} lies outside the plugin's region"
                )))
            } else {
                Ok(())
            }
        };
        inside(
            lay.desc_off,
            lay.max_batch as u64 * desc::LEN as u64,
            "descriptor array",
        )?;
        inside(
            lay.verdict_off,
            lay.max_verdicts as u64 * verdict::LEN as u64,
            "verdict array",
        )?;
        if lay.access != access::META {
            inside(
                lay.data_off,
                lay.max_batch as u64 * lay.slot_size as u64,
                "data slots",
            )?;
        }
        inside(lay.emit_off, lay.emit_cap as u64, "emit area")?;
        inside(lay.counters_off, lay.n_counters as u64 * 8, "counter table")?;
        inside(lay.names_off, lay.names_len as u64, "counter names")?;
        Ok(lay)
    }
}

/// One verdict as read by a host, before validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawVerdict {
    pub id: u32,
    pub port: u16,
    pub flags: u16,
    pub at_ns: u64,
    pub data_off: u32,
    pub data_len: u32,
}

/// A packet descriptor as a host writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawDesc {
    pub id: u32,
    pub wire_len: u32,
    pub data_off: u32,
    pub cap_len: u32,
    pub in_port: u16,
    pub flags: u16,
    pub arrival_ns: u64,
}

impl RawDesc {
    /// Encode into one descriptor's bytes.
    #[inline(always)]
    pub fn encode(&self, d: &mut [u8; desc::LEN]) {
        d[0..4].copy_from_slice(&self.id.to_le_bytes());
        d[4..8].copy_from_slice(&self.wire_len.to_le_bytes());
        d[8..12].copy_from_slice(&self.data_off.to_le_bytes());
        d[12..16].copy_from_slice(&self.cap_len.to_le_bytes());
        d[16..18].copy_from_slice(&self.in_port.to_le_bytes());
        d[18..20].copy_from_slice(&self.flags.to_le_bytes());
        d[20..24].copy_from_slice(&0u32.to_le_bytes());
        d[24..32].copy_from_slice(&self.arrival_ns.to_le_bytes());
    }

    /// Encode into `mem` at descriptor slot `self.id` of `lay`.
    #[inline(always)]
    pub fn write(&self, mem: &mut [u8], lay: &Layout) -> Option<()> {
        let at = lay.desc_addr(self.id);
        self.encode(mem.get_mut(at..at + desc::LEN)?.try_into().ok()?);
        Some(())
    }
}

/// The descriptor array of a batch of `n` as `desc::LEN`-byte chunks (`None` if it does
/// not lie in `mem`): one bounds check for the whole batch.
#[inline]
pub fn desc_chunks<'m>(
    mem: &'m mut [u8],
    lay: &Layout,
    n: u32,
) -> Option<core::slice::ChunksExactMut<'m, u8>> {
    let a = lay.desc_off as usize;
    Some(
        mem.get_mut(a..a + n as usize * desc::LEN)?
            .chunks_exact_mut(desc::LEN),
    )
}

/// The first `nv` verdicts as `verdict::LEN`-byte chunks (`None` if they do not lie in
/// `mem`).
#[inline]
pub fn verdict_chunks<'m>(
    mem: &'m [u8],
    lay: &Layout,
    nv: u32,
) -> Option<core::slice::ChunksExact<'m, u8>> {
    let a = lay.verdict_off as usize;
    Some(
        mem.get(a..a.checked_add(nv as usize * verdict::LEN)?)?
            .chunks_exact(verdict::LEN),
    )
}

impl RawVerdict {
    /// Decode verdict `i` of `lay` from `mem`; `None` if it lies outside `mem`.
    #[inline(always)]
    pub fn read(mem: &[u8], lay: &Layout, i: u32) -> Option<RawVerdict> {
        let at = lay.verdict_addr(i);
        Some(Self::decode(
            mem.get(at..at + verdict::LEN)?.try_into().ok()?,
        ))
    }

    /// Decode one verdict's bytes.
    #[inline(always)]
    pub fn decode(v: &[u8; verdict::LEN]) -> RawVerdict {
        RawVerdict {
            id: u32::from_le_bytes([v[0], v[1], v[2], v[3]]),
            port: u16::from_le_bytes([v[4], v[5]]),
            flags: u16::from_le_bytes([v[6], v[7]]),
            at_ns: u64::from_le_bytes([v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]]),
            data_off: u32::from_le_bytes([v[16], v[17], v[18], v[19]]),
            data_len: u32::from_le_bytes([v[20], v[21], v[22], v[23]]),
        }
    }

    /// The replacement / new bytes this verdict names, if they lie inside the region.
    pub fn bytes<'m>(&self, mem: &'m [u8], lay: &Layout) -> Option<&'m [u8]> {
        let (o, e) = (
            self.data_off as u64,
            self.data_off as u64 + self.data_len as u64,
        );
        if o < lay.header as u64 || e > lay.region_end() || self.data_len > MAX_PACKET {
            return None;
        }
        mem.get(o as usize..e as usize)
    }
}

/// Read the counters (names and values) a plugin publishes.
pub fn read_counters(mem: &[u8], lay: &Layout) -> Vec<(String, u64)> {
    let names = mem
        .get(lay.names_off as usize..(lay.names_off + lay.names_len) as usize)
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    names
        .lines()
        .take(lay.n_counters as usize)
        .enumerate()
        .map(|(i, n)| {
            let v = le::u64_at(mem, lay.counters_off as usize + i * 8).unwrap_or(0);
            (n.to_string(), v)
        })
        .collect()
}

/// The longest packet a host holds: a 64 KiB GSO super-packet plus its Ethernet header
/// (the `Harness` checks verdicts against it).
pub const MAX_PACKET_LEN: usize = 65_536 + 64;

/// Check every verdict of a batch before any is applied, and count in `refs` how many
/// verdicts name each packet. `Ok(true)` when the answer is the common shape — verdict
/// `j` names packet `j`, one each, nothing replaced — which the host takes on a fast
/// path.
///
/// The host runs this on every batch, and so does the SDK's `Harness`: a plugin that
/// passes its own tests is not refused live. `len_of(i)` is the length of packet `i` of
/// the `n` in the batch; `max_len` the longest packet the host can hold.
pub fn validate(
    mem: &[u8],
    lay: &Layout,
    len_of: impl Fn(usize) -> u32,
    n: usize,
    nv: u32,
    max_len: usize,
    refs: &mut [u32],
) -> Result<bool, String> {
    if nv > lay.max_verdicts {
        return Err(format!(
            "{nv} verdicts, more than the {} the header allows",
            lay.max_verdicts
        ));
    }
    let Some(refs) = refs.get_mut(..n) else {
        return Err(format!(
            "a batch of {n}, more than the {} counted",
            refs.len()
        ));
    };
    refs.fill(0);
    let mut in_order = nv as usize == n;
    let chunks = verdict_chunks(mem, lay, nv).ok_or("verdict array lies outside memory")?;
    for (j, c) in chunks.enumerate() {
        let v = RawVerdict::decode(c.try_into().map_err(|_| "short verdict")?);
        in_order &= v.id as usize == j && v.flags == 0;
        if v.id == verdict::ID_PARKED {
            if v.port != 0 && v.port != PORT_DROP {
                return Err(format!(
                    "verdict {j} acts on parked packets with port {:#x} (0 releases, 0xffff drops)",
                    v.port
                ));
            }
            if v.flags != 0 || v.data_off != 0 {
                return Err(format!(
                    "verdict {j} acts on parked packets with flags {:#x} and data_off {:#x} (both must be 0)",
                    v.flags, v.data_off
                ));
            }
            continue;
        }
        if v.flags & !VF_KNOWN != 0 {
            return Err(format!("verdict {j} sets reserved flags {:#x}", v.flags));
        }
        if v.flags & VF_PARK != 0 && v.port == PORT_DROP {
            return Err(format!("verdict {j} parks a packet to drop it"));
        }
        if v.port != PORT_DROP && v.port >= lay.n_outputs {
            return Err(format!(
                "verdict {j} names output port {} of {}",
                v.port, lay.n_outputs
            ));
        }
        let replaces = v.flags & VF_REPLACE != 0;
        if v.id == ID_NEW || replaces {
            let bytes = v.bytes(mem, lay).ok_or_else(|| {
                format!(
                    "verdict {j} points at bytes {:#x}+{} outside the plugin's region",
                    v.data_off, v.data_len
                )
            })?;
            if v.id == ID_NEW && (bytes.is_empty() || bytes.len() > max_len) {
                return Err(format!(
                    "verdict {j} injects a packet of {} bytes",
                    bytes.len()
                ));
            }
        }
        if v.id != ID_NEW {
            let i = v.id as usize;
            if i >= n {
                return Err(format!(
                    "verdict {j} names packet {} of a batch of {n}",
                    v.id
                ));
            }
            let len = len_of(i);
            if replaces {
                let cap = if lay.access == access::META {
                    0
                } else {
                    len.min(lay.snap_len)
                };
                let new_len = len as u64 - cap as u64 + v.data_len as u64;
                if new_len > max_len as u64 {
                    return Err(format!("verdict {j} grows packet {i} to {new_len} bytes"));
                }
            }
            refs[i] += 1;
        }
    }
    Ok(in_order)
}
