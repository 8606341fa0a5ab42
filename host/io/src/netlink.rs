//! Netlink (rtnetlink) for `synthnet takeover` and `synthnet attach`: read an
//! interface's addresses, routes and MAC, put a veth pair behind it, move the addresses
//! and routes to the application's end of the pair, and put everything back afterwards
//! — in-process, no `ip` binary. Everything acts on the calling thread's network
//! namespace ([`crate::netns::run_in`] runs it inside a target's).
//!
//! Main types: [`Interface`] (a link as read), [`Takeover`] (what was changed, enough to
//! put it back, also from another process: [`Takeover::to_json`]). [`interface_in`] and
//! [`default_route_interface`] pick the interface.
//!
//! Two ways in. [`take_over`] (inside a container) creates `sn-app`/`sn-wire` and moves
//! the addresses over. The attach path ([`attach_plan`], [`attach_make`],
//! [`attach_switch`]) is make before break, in the order measured to cost no TCP
//! retransmission: rename the real interface live, create the pair with the real name,
//! MAC and MTU on the application's end, (the caller starts the bridge), add the
//! addresses (IPv6 without DAD) and replace every route, and only then take the
//! addresses off the real interface and mute it. [`restore`] is one way back for both,
//! also make before break, and safe on a half-done state (a crash part way).
//!
//! After [`take_over`], the network namespace looks like this:
//!
//! ```text
//!  network ── eth0 (no addresses; port of a bridge that is kept down)
//!               ⇅ synthnet bridge (AF_PACKET on eth0 and on the wire end)
//!             sn-wire ══veth══ sn-app (eth0's addresses, routes and MAC) ── application
//! ```
//!
//! Why the down bridge: eth0 stays in the same namespace as the application's
//! addresses, and Linux accepts a packet for any local address on any interface (the weak
//! host model) and answers ARP for them on any interface. Left alone, eth0's own stack
//! would answer ARP and take the peers' packets directly, beside synthnet's copy. A port
//! of a bridge that is down hands every received frame to the bridge, which drops it,
//! *after* the packet taps (synthnet's AF_PACKET socket) have seen it: eth0 then carries
//! frames only for synthnet, without any sysctl (`/proc/sys` is read-only in containers).
//! The application's end gets eth0's MAC, so the peers' neighbour caches stay valid.
//!
//! rtnetlink is async; each call here runs its futures to completion on a throwaway
//! current-thread tokio runtime, so callers stay synchronous.

mod addr;
mod attach;
mod link;
mod record;
mod restore;
mod route;
mod run;
mod takeover;

pub use addr::{cidr_contains, parse_cidr};
pub use attach::{attach_make, attach_plan, attach_switch};
pub use link::{
    add_bridge, add_veth, delete_link, interface, set_controller, set_neighbour, set_up,
};
pub use restore::{restore, restore_paths, undo};
pub use run::{configure_guest, networks_in_use, veth_into};
pub use takeover::{default_route_interface, interface_in, take_over};

use anyhow::{Context, Result};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::Handle;
use std::future::Future;
use std::net::IpAddr;

/// The application's end of the veth pair: gets the addresses, routes and MAC.
pub const APP_END: &str = "sn-app";
/// synthnet's end of the veth pair (the bridge's inner interface).
pub const WIRE_END: &str = "sn-wire";
/// The bridge device kept down that silences the real interface's own stack.
pub const HOLD_BRIDGE: &str = "sn-hold";

/// The main routing table (`RT_TABLE_MAIN`).
const MAIN_TABLE: u32 = 254;
/// The kernel's own table of local and broadcast routes (`RT_TABLE_LOCAL`).
const LOCAL_TABLE: u32 = 255;

/// A network interface as read over netlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    /// IFF_UP.
    pub up: bool,
    /// The bridge (or bond) it is a port of, by index.
    pub controller: Option<u32>,
}

/// One address as read: family, prefix and the message to re-create it.
#[derive(Debug, Clone)]
pub struct Address {
    pub addr: IpAddr,
    pub prefix_len: u8,
    message: AddressMessage,
}

/// What [`take_over`] or an attach ([`attach_plan`]) changes: enough for [`restore`],
/// also from another process ([`Takeover::to_json`]).
#[derive(Debug, Clone)]
pub struct Takeover {
    /// The real interface (synthnet's outer side) as it was: index, name, MAC, MTU,
    /// link state.
    pub outer: Interface,
    /// The addresses moved to the application's end, with their flags and lifetimes.
    pub addresses: Vec<Address>,
    /// The routes moved to the application's end (those the kernel does not derive
    /// from an address).
    routes: Vec<RouteMessage>,
    /// The real interface's name while taken over: attach renames it (the application's
    /// end takes its name); takeover does not.
    pub renamed: Option<String>,
    /// The application's end of the veth pair.
    pub app_end: String,
    /// synthnet's end of the veth pair.
    pub wire_end: String,
    /// The bridge kept down that mutes the real interface.
    pub hold: String,
}

impl Takeover {
    /// The moved routes, one line each (`default via 10.77.0.1`, `10.1.0.0/16 via …`).
    pub fn describe_routes(&self) -> Vec<String> {
        self.routes.iter().map(route::describe_route).collect()
    }
}

/// Run `f` with a netlink handle on a throwaway current-thread runtime.
fn with_handle<T, F, Fut>(f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("start the netlink runtime")?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("open a netlink socket")?;
        tokio::spawn(conn);
        f(handle).await
    })
}
