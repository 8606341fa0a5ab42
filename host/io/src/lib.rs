//! # synthnet-io: where packets enter and leave
//!
//! The I/O layer, above the core: engine apps on real interfaces and on capture files.
//! It is the only crate of the host with `unsafe` code (the AF_PACKET ring and batched
//! send in [`afpacket`]); each block says why it is sound in a `// SAFETY:` comment.
//!
//! - [`afpacket`]: a TPACKET_V2 receive ring and `sendmmsg` batches per interface, with
//!   `virtio_net_hdr` offload headers, following an interface by name across faults.
//! - [`pcap`]: pcap/pcapng captures, and the apps that feed them to an engine and keep
//!   what comes out.
//! - [`netlink`]: veth, addresses and routes over rtnetlink, for `synthnet takeover` and
//!   `synthnet attach`, and the record that puts them back.
//! - [`netns`]: a target's network namespace entered from the host (setns on a
//!   dedicated thread), and a process's death as a pidfd.
//! - [`nsproc`]: new namespaces and processes for `synthnet run` (between `fork` and
//!   `exec`), a file bound over a path, the terminal's foreground group.
//! - [`heap`]: freed heap memory given back to the system (after compiling plugins).
//! - [`process`]: process-wide settings (a closed pipe ends a printing command quietly).
//!
//! Features: `bench` adds `afpacket::Flood`, the raw generator of `synthnet bench-bridge`
//! (turned on by synthnet-testkit, its one user); `test-hooks` adds faults the crate's
//! own tests inject (`afpacket::test_hooks`). The bridge needs neither.

#![deny(unsafe_code)]
#![warn(unreachable_pub)]

#[allow(unsafe_code)]
pub mod afpacket;
#[allow(unsafe_code)]
pub mod heap;
pub mod netlink;
#[allow(unsafe_code)]
pub mod netns;
#[allow(unsafe_code)]
pub mod nsproc;
pub mod pcap;
#[allow(unsafe_code)]
pub mod process;
