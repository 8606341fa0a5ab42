//! # synthnet-testkit: tools for tests, benchmarks and the demo
//!
//! Not part of the packet path. It may use the core and the I/O layer; it has no
//! `unsafe` (forbidden below): system calls go through `nix` and `socket2`, raw frames
//! (its `bench` feature) and links, addresses and neighbours (its netlink code) through
//! `synthnet-io`.
//!
//! - [`apps`]: a packet source and a recording sink (engine apps for benchmarks and
//!   virtual-clock tests).
//! - [`netns`]: network namespaces and veth pairs, removed on drop.
//! - [`traffic`]: UDP streams, verified TCP transfers, across a topology.
//! - [`flood`]: the raw flood generator of `synthnet bench-bridge`.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod apps;
pub mod flood;
pub mod netns;
pub mod traffic;
