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

use anyhow::{anyhow, bail, Context, Result};
use futures_util::stream::TryStreamExt;
use rtnetlink::packet_core::{Emitable, Parseable};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// The gateways of the moved routes (for the log: the real ones, not a guess).
    pub fn gateways(&self) -> Vec<IpAddr> {
        self.routes.iter().filter_map(gateway_of).collect()
    }

    /// The moved routes, one line each (`default via 10.77.0.1`, `10.1.0.0/16 via …`).
    pub fn describe_routes(&self) -> Vec<String> {
        self.routes.iter().map(describe_route).collect()
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

fn interface_of(msg: &LinkMessage) -> Interface {
    let mut iface = Interface {
        index: msg.header.index,
        name: String::new(),
        mac: Vec::new(),
        mtu: 1500,
        up: msg.header.flags.contains(LinkFlags::Up),
        controller: None,
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => iface.name = n.clone(),
            LinkAttribute::Controller(c) if *c != 0 => iface.controller = Some(*c),
            LinkAttribute::Address(m) => iface.mac = m.clone(),
            LinkAttribute::Mtu(m) => iface.mtu = *m,
            _ => {}
        }
    }
    iface
}

async fn links(handle: &Handle) -> Result<Vec<Interface>> {
    let mut out = Vec::new();
    let mut s = handle.link().get().execute();
    while let Some(m) = s.try_next().await.context("list interfaces")? {
        out.push(interface_of(&m));
    }
    Ok(out)
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Interface>> {
    Ok(links(handle).await?.into_iter().find(|l| l.name == name))
}

fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS
    // otherwise (where both are present they are equal).
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

async fn addresses(handle: &Handle, index: Option<u32>) -> Result<Vec<Address>> {
    let mut req = handle.address().get();
    if let Some(i) = index {
        req = req.set_link_index_filter(i);
    }
    let mut s = req.execute();
    let mut out = Vec::new();
    while let Some(m) = s.try_next().await.context("list addresses")? {
        if index.is_some_and(|i| m.header.index != i) {
            continue;
        }
        if let Some(addr) = address_of(&m) {
            out.push(Address {
                addr,
                prefix_len: m.header.prefix_len,
                message: m,
            });
        }
    }
    Ok(out)
}

async fn routes(handle: &Handle) -> Result<Vec<RouteMessage>> {
    let mut out = Vec::new();
    for req in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut s = handle.route().get(req).execute();
        while let Some(m) = s.try_next().await.context("list routes")? {
            out.push(m);
        }
    }
    Ok(out)
}

fn oif_of(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn gateway_of(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => ip_of(g),
        _ => None,
    })
}

fn describe_route(r: &RouteMessage) -> String {
    let dst = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => ip_of(d),
            _ => None,
        })
        .map(|d| format!("{d}/{}", r.header.destination_prefix_length))
        .unwrap_or_else(|| "default".to_string());
    match gateway_of(r) {
        Some(g) => format!("{dst} via {g}"),
        None => dst,
    }
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
}

/// A route of the main table through `index` that the kernel does not make by itself
/// (its `proto kernel` routes come back with the addresses; IPv6 link-local and
/// multicast routes stay with the interface).
fn movable_route(r: &RouteMessage, index: u32) -> bool {
    oif_of(r) == Some(index)
        && table_of(r) == MAIN_TABLE
        && r.header.kind == RouteType::Unicast
        && r.header.protocol != RouteProtocol::Kernel
        && !r.attributes.iter().any(|a| match a {
            RouteAttribute::Destination(d) => ip_of(d).is_some_and(|ip| is_link_local(&ip)),
            _ => false,
        })
}

/// `route` re-pointed at interface `index`, without the attributes the kernel reports
/// but does not take back (cache info, expiry).
fn route_via(route: &RouteMessage, index: u32) -> RouteMessage {
    let mut r = route.clone();
    r.attributes.retain(|a| {
        !matches!(
            a,
            RouteAttribute::CacheInfo(_) | RouteAttribute::Expires(_) | RouteAttribute::Oif(_)
        )
    });
    r.attributes.push(RouteAttribute::Oif(index));
    r
}

/// Parse `a.b.c.d/n` or `x::y/n`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8)> {
    let (ip, len) = s
        .trim()
        .split_once('/')
        .ok_or_else(|| anyhow!("{s:?} is not a CIDR (like 10.77.0.0/16)"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| anyhow!("{s:?}: {ip:?} is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| anyhow!("{s:?}: prefix length must be 0..={max}, got {len:?}"))?;
    Ok((ip, len))
}

/// Whether `ip` lies in `net/len`.
pub fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    fn bits(ip: IpAddr) -> (u128, u32) {
        match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    }
    let ((n, w1), (i, w2)) = (bits(net), bits(ip));
    if w1 != w2 {
        return false;
    }
    let len = u32::from(len).min(w1);
    if len == 0 {
        return true;
    }
    let shift = w1 - len;
    (n >> shift) == (i >> shift)
}

/// The interface holding an address inside `net/len`.
pub fn interface_in(net: IpAddr, len: u8) -> Result<Interface> {
    with_handle(|h| async move {
        let addrs = addresses(&h, None).await?;
        let hit = addrs
            .iter()
            .find(|a| cidr_contains(net, len, a.addr))
            .ok_or_else(|| anyhow!("no interface has an address in {net}/{len}"))?;
        let index = hit.message.header.index;
        links(&h)
            .await?
            .into_iter()
            .find(|l| l.index == index)
            .ok_or_else(|| anyhow!("interface {index} vanished"))
    })
}

/// The interface of the default route (IPv4 first, then IPv6).
pub fn default_route_interface() -> Result<Interface> {
    with_handle(|h| async move {
        let rs = routes(&h).await?;
        let index = rs
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0 && table_of(r) == MAIN_TABLE)
            .find_map(oif_of)
            .ok_or_else(|| anyhow!("no default route (set SYNTHETIC_NETWORK to a CIDR)"))?;
        links(&h)
            .await?
            .into_iter()
            .find(|l| l.index == index)
            .ok_or_else(|| anyhow!("interface {index} of the default route vanished"))
    })
}

/// Whether an interface of this name exists.
pub fn interface_exists(name: &str) -> Result<bool> {
    let name = name.to_string();
    with_handle(|h| async move { Ok(link_by_name(&h, &name).await?.is_some()) })
}

/// Refuse when an interface of one of `names` exists already (`why` says what that
/// means).
async fn refuse_existing(h: &Handle, names: &[&str], why: &str) -> Result<()> {
    for name in names {
        if link_by_name(h, name).await?.is_some() {
            bail!("an interface named {name} exists already ({why})");
        }
    }
    Ok(())
}

/// What moves off `outer`: its addresses but the link-local ones (there must be one at
/// least, or there is nothing to `verb`), and the routes `movable` picks.
async fn what_moves(
    h: &Handle,
    outer: &Interface,
    movable: fn(&RouteMessage, u32) -> bool,
    verb: &str,
) -> Result<(Vec<Address>, Vec<RouteMessage>)> {
    let moved: Vec<Address> = addresses(h, Some(outer.index))
        .await?
        .into_iter()
        .filter(|a| !is_link_local(&a.addr))
        .collect();
    if moved.is_empty() {
        bail!("{} has no address to {verb}", outer.name);
    }
    let routes: Vec<RouteMessage> = routes(h)
        .await?
        .into_iter()
        .filter(|r| movable(r, outer.index))
        .collect();
    Ok((moved, routes))
}

/// Put a veth pair behind `outer`: see the module documentation. `before` sees what
/// will change before anything does (to write the record a crash is restored from;
/// its error stops the takeover). On an error part way, what was done is undone
/// before the error returns.
pub fn take_over(
    outer: &Interface,
    before: impl FnOnce(&Takeover) -> Result<()>,
) -> Result<Takeover> {
    let outer = outer.clone();
    with_handle(|h| async move {
        refuse_existing(
            &h,
            &[APP_END, WIRE_END, HOLD_BRIDGE],
            "a takeover is running, or one was not undone",
        )
        .await?;
        let (moved, routes) = what_moves(&h, &outer, movable_route, "take over").await?;
        let t = Takeover {
            outer,
            addresses: moved,
            routes,
            renamed: None,
            app_end: APP_END.to_string(),
            wire_end: WIRE_END.to_string(),
            hold: HOLD_BRIDGE.to_string(),
        };
        before(&t)?;
        if let Err(e) = apply(&h, &t).await {
            if let Err(u) = restore_all(&h, &t).await {
                log::warn!("undoing a partial takeover: {u:#}");
            }
            return Err(e);
        }
        Ok(t)
    })
}

async fn apply(h: &Handle, t: &Takeover) -> Result<()> {
    let outer = &t.outer;
    h.link()
        .add(
            LinkVeth::new(APP_END, WIRE_END)
                .address(outer.mac.clone())
                .mtu(outer.mtu)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("create veth pair {APP_END}/{WIRE_END}"))?;
    h.link()
        .add(LinkBridge::new(HOLD_BRIDGE).down().build())
        .execute()
        .await
        .with_context(|| format!("create bridge {HOLD_BRIDGE}"))?;
    let app = link_by_name(h, APP_END)
        .await?
        .ok_or_else(|| anyhow!("{APP_END} vanished"))?;
    let wire = link_by_name(h, WIRE_END)
        .await?
        .ok_or_else(|| anyhow!("{WIRE_END} vanished"))?;
    let hold = link_by_name(h, HOLD_BRIDGE)
        .await?
        .ok_or_else(|| anyhow!("{HOLD_BRIDGE} vanished"))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(wire.index)
                .mtu(outer.mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("set {WIRE_END} up"))?;
    h.link()
        .set(LinkUnspec::new_with_index(app.index).up().build())
        .execute()
        .await
        .with_context(|| format!("set {APP_END} up"))?;
    // From here eth0's own stack no longer sees what arrives (module documentation).
    h.link()
        .set(
            LinkUnspec::new_with_index(outer.index)
                .controller(hold.index)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("make {} a port of {HOLD_BRIDGE}", outer.name))?;
    for r in &t.routes {
        // Gone by itself when its gateway's subnet goes with the address; fine.
        let _ = h.route().del(r.clone()).execute().await;
    }
    for a in &t.addresses {
        h.address()
            .del(a.message.clone())
            .execute()
            .await
            .with_context(|| format!("remove {}/{} from {}", a.addr, a.prefix_len, outer.name))?;
    }
    for a in creation_order(&t.addresses) {
        add_address(h, a, app.index, &outer.name, APP_END).await?;
    }
    for r in &t.routes {
        h.route()
            .add(route_via(r, app.index))
            .replace()
            .execute()
            .await
            .with_context(|| format!("add route {} on {APP_END}", describe_route(r)))?;
    }
    Ok(())
}

/// Address flags the kernel takes from a request; the others (secondary, tentative,
/// deprecated, permanent, DAD failed) are states it sets by itself.
fn requestable_flags(f: AddressFlags) -> AddressFlags {
    f & (AddressFlags::Nodad
        | AddressFlags::Optimistic
        | AddressFlags::Homeaddress
        | AddressFlags::Managetempaddr
        | AddressFlags::Noprefixroute
        | AddressFlags::Mcautojoin
        | AddressFlags::StablePrivacy)
}

fn flags_of(m: &AddressMessage) -> AddressFlags {
    m.attributes
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Flags(f) => Some(*f),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(m.header.flags.bits())))
}

/// `addr` as a request for interface `index`, now named `cur_name`: the same address,
/// prefix, scope, broadcast, flags and remaining lifetimes; its label (which must start
/// with the interface's name) follows the interface's name, as the kernel does on a
/// rename.
fn address_request(addr: &Address, index: u32, orig_name: &str, cur_name: &str) -> AddressMessage {
    let mut m = addr.message.clone();
    m.header.index = index;
    m.header.flags = AddressHeaderFlags::empty();
    let flags = requestable_flags(flags_of(&addr.message));
    m.attributes.retain(|a| {
        matches!(
            a,
            AddressAttribute::Address(_)
                | AddressAttribute::Local(_)
                | AddressAttribute::Broadcast(_)
                | AddressAttribute::Label(_)
                | AddressAttribute::CacheInfo(_)
        )
    });
    for a in &mut m.attributes {
        match a {
            AddressAttribute::Label(l) => {
                if let Some(rest) = l.strip_prefix(orig_name) {
                    *l = format!("{cur_name}{rest}");
                } else {
                    *l = cur_name.to_string();
                }
            }
            AddressAttribute::CacheInfo(c) => {
                c.cstamp = 0;
                c.tstamp = 0;
            }
            _ => {}
        }
    }
    m.attributes.push(AddressAttribute::Flags(flags));
    m
}

/// Add `addr` to interface `index` (named `cur_name`) without a DAD wait — the address
/// was in use a moment ago, and an IPv6 address is "tentative" (its packets dropped)
/// for 1–2 s while DAD runs — then, if it did not carry `nodad` before, give it back its
/// own flags (a replace does not start DAD again).
async fn add_address(
    h: &Handle,
    addr: &Address,
    index: u32,
    orig_name: &str,
    cur_name: &str,
) -> Result<()> {
    let m = address_request(addr, index, orig_name, cur_name);
    let flags = requestable_flags(flags_of(&addr.message));
    let what = || format!("add {}/{} to {cur_name}", addr.addr, addr.prefix_len);
    if addr.addr.is_ipv6() && !flags.contains(AddressFlags::Nodad) {
        let mut fast = m.clone();
        for a in &mut fast.attributes {
            if let AddressAttribute::Flags(f) = a {
                *f |= AddressFlags::Nodad;
            }
        }
        let mut req = h.address().add(index, addr.addr, addr.prefix_len);
        *req.message_mut() = fast;
        req.execute().await.with_context(what)?;
        let mut req = h.address().add(index, addr.addr, addr.prefix_len).replace();
        *req.message_mut() = m;
        req.execute().await.with_context(what)?;
    } else {
        let mut req = h.address().add(index, addr.addr, addr.prefix_len);
        *req.message_mut() = m;
        req.execute().await.with_context(what)?;
    }
    Ok(())
}

/// The temporary name of the application's end while a restore gives the real
/// interface its name back.
fn aside_name(index: u32) -> String {
    format!("sna-{index}")
}

/// The order to add addresses in so that they list as they did: IPv4 in the order
/// read (primary before its secondaries), IPv6 backwards (the kernel lists the
/// newest of a scope first).
fn creation_order(addrs: &[Address]) -> Vec<&Address> {
    let v4 = addrs.iter().filter(|a| a.addr.is_ipv4());
    let v6 = addrs.iter().filter(|a| a.addr.is_ipv6()).rev();
    v4.chain(v6).collect()
}

/// The names attach gives the real interface, the wire end and the hold bridge in a
/// target: from the real interface's index, so they are unique in its namespace and
/// at most 15 bytes.
pub fn attach_names(index: u32) -> (String, String, String) {
    (
        format!("snr-{index}"),
        format!("snw-{index}"),
        format!("snh-{index}"),
    )
}

/// A route through `index` that attach moves: every table but `local` (the kernel's
/// own), unicast, not made by the kernel from an address, not link-local.
fn attach_movable(r: &RouteMessage, index: u32) -> bool {
    oif_of(r) == Some(index)
        && table_of(r) != LOCAL_TABLE
        && r.header.kind == RouteType::Unicast
        && r.header.protocol != RouteProtocol::Kernel
        && !r.attributes.iter().any(|a| match a {
            RouteAttribute::Destination(d) => ip_of(d).is_some_and(|ip| is_link_local(&ip)),
            _ => false,
        })
}

/// Read everything `synthnet attach` will change in this thread's namespace, before
/// changing anything: interface `name` (default: the default route's), its link state,
/// its addresses with flags and lifetimes, the routes through it in every table.
/// Refused, changing nothing, when the interface does not exist, has no address, or
/// is already a port of another device (a takeover or attach holds it).
pub fn attach_plan(name: Option<&str>) -> Result<Takeover> {
    let name = name.map(str::to_string);
    with_handle(|h| async move {
        let outer = match &name {
            Some(n) => link_by_name(&h, n)
                .await?
                .ok_or_else(|| anyhow!("the target has no interface {n:?}"))?,
            None => {
                let rs = routes(&h).await?;
                let index = rs
                    .iter()
                    .filter(|r| {
                        r.header.destination_prefix_length == 0 && table_of(r) == MAIN_TABLE
                    })
                    .find_map(oif_of)
                    .ok_or_else(|| {
                        anyhow!(
                            "the target has no default route: name its interface with --interface"
                        )
                    })?;
                links(&h)
                    .await?
                    .into_iter()
                    .find(|l| l.index == index)
                    .ok_or_else(|| anyhow!("interface {index} of the default route vanished"))?
            }
        };
        if let Some(c) = outer.controller {
            let by = links(&h)
                .await?
                .into_iter()
                .find(|l| l.index == c)
                .map_or_else(|| c.to_string(), |l| l.name);
            bail!("{} is a port of {by}: already attached or taken over (`synthnet attach --restore` puts a crashed one back)", outer.name);
        }
        let (renamed, wire, hold) = attach_names(outer.index);
        refuse_existing(
            &h,
            &[&renamed, &wire, &hold],
            "in the target: an attach is running, or one was not undone: try `synthnet attach --restore`",
        )
        .await?;
        let (moved, routes) = what_moves(&h, &outer, attach_movable, "move").await?;
        Ok(Takeover {
            app_end: outer.name.clone(),
            outer,
            addresses: moved,
            routes,
            renamed: Some(renamed),
            wire_end: wire,
            hold,
        })
    })
}

/// Attach, first half (make): rename the real interface live (an UP interface can be
/// renamed since Linux 6.2; a down/up would drop its routes and IPv6 addresses), then
/// create the veth pair whose application end takes the real interface's name, MAC
/// and MTU, and set both ends up. Nothing reaches the new pair yet: the caller starts
/// the bridge between this and [`attach_switch`]. On an error, everything is put back.
pub fn attach_make(t: &Takeover) -> Result<()> {
    let t = t.clone();
    with_handle(|h| async move {
        let r = make(&h, &t).await;
        if r.is_err() {
            if let Err(u) = restore_all(&h, &t).await {
                log::warn!("putting back a partial attach: {u:#}");
            }
        }
        r
    })
}

async fn make(h: &Handle, t: &Takeover) -> Result<()> {
    let outer = &t.outer;
    let renamed = t.renamed.as_deref().unwrap_or(&outer.name);
    h.link()
        .set(
            LinkUnspec::new_with_index(outer.index)
                .name(renamed)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("rename {} to {renamed}", outer.name))?;
    h.link()
        .add(
            LinkVeth::new(&t.app_end, &t.wire_end)
                .address(outer.mac.clone())
                .mtu(outer.mtu)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("create veth pair {}/{}", t.app_end, t.wire_end))?;
    let wire = link_by_name(h, &t.wire_end)
        .await?
        .ok_or_else(|| anyhow!("{} vanished", t.wire_end))?;
    let app = link_by_name(h, &t.app_end)
        .await?
        .ok_or_else(|| anyhow!("{} vanished", t.app_end))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(wire.index)
                .mtu(outer.mtu)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("set {} up", t.wire_end))?;
    h.link()
        .set(LinkUnspec::new_with_index(app.index).up().build())
        .execute()
        .await
        .with_context(|| format!("set {} up", t.app_end))?;
    Ok(())
}

/// Attach, second half, once the bridge forwards: the addresses onto the application's
/// end (IPv6 without a DAD wait), every route replaced onto it, and only then the
/// addresses taken off the real interface, which becomes a port of a bridge kept down
/// (module documentation). Make before break: at no moment is an address missing or a
/// route without a way out. On an error, everything is put back.
pub fn attach_switch(t: &Takeover) -> Result<()> {
    let t = t.clone();
    with_handle(|h| async move {
        let r = switch(&h, &t).await;
        if r.is_err() {
            if let Err(u) = restore_all(&h, &t).await {
                log::warn!("putting back a partial attach: {u:#}");
            }
        }
        r
    })
}

async fn switch(h: &Handle, t: &Takeover) -> Result<()> {
    let outer = &t.outer;
    let app = link_by_name(h, &t.app_end)
        .await?
        .filter(|l| l.index != outer.index)
        .ok_or_else(|| anyhow!("{} vanished", t.app_end))?;
    for a in creation_order(&t.addresses) {
        add_address(h, a, app.index, &outer.name, &t.app_end).await?;
    }
    for r in &t.routes {
        h.route()
            .add(route_via(r, app.index))
            .replace()
            .execute()
            .await
            .with_context(|| format!("route {} onto {}", describe_route(r), t.app_end))?;
    }
    // Secondaries first: removing a primary takes its secondaries with it (unless
    // promote_secondaries is set), and then theirs would fail.
    for a in t.addresses.iter().rev() {
        if let Err(e) = h.address().del(identity_on(a, outer.index)).execute().await {
            log::debug!("remove {} from the real interface: {e}", a.addr);
        }
    }
    let left: Vec<String> = addresses(h, Some(outer.index))
        .await?
        .iter()
        .filter(|p| t.addresses.iter().any(|a| a.addr == p.addr))
        .map(|p| p.addr.to_string())
        .collect();
    if !left.is_empty() {
        bail!("cannot remove {} from the real interface", left.join(", "));
    }
    for r in &t.routes {
        // A replace took most of them over already; what is left goes.
        let _ = h.route().del(route_via(r, outer.index)).execute().await;
    }
    h.link()
        .add(LinkBridge::new(&t.hold).down().build())
        .execute()
        .await
        .with_context(|| format!("create bridge {}", t.hold))?;
    let hold = link_by_name(h, &t.hold)
        .await?
        .ok_or_else(|| anyhow!("{} vanished", t.hold))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(outer.index)
                .controller(hold.index)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("make the real interface a port of {}", t.hold))?;
    Ok(())
}

/// Restore, first half (make): the real interface out of the hold bridge, its
/// addresses and routes back on it, while the application's end still has them too.
/// Safe to run on a partial or already restored state; goes on past errors.
async fn restore_make(h: &Handle, t: &Takeover, errors: &mut Vec<String>) -> Result<Interface> {
    let outer = &t.outer;
    let real = links(h)
        .await?
        .into_iter()
        .find(|l| l.index == outer.index)
        .ok_or_else(|| {
            anyhow!(
                "the real interface (index {}, was {}) is gone: nothing to put back",
                outer.index,
                outer.name
            )
        })?;
    let mut real = real;
    if real.controller.is_some() {
        if let Err(e) = h
            .link()
            .set(
                LinkUnspec::new_with_index(real.index)
                    .nocontroller()
                    .build(),
            )
            .execute()
            .await
        {
            errors.push(format!("take {} out of {}: {e}", real.name, t.hold));
        }
    }
    // The name first, while the addresses are off the real interface: a rename
    // relabels an interface's IPv4 addresses (the second and later get ":N"), and a
    // label must start with the interface's name. The application's end, which has
    // the name, steps aside under a temporary one until it is deleted.
    if real.name != outer.name {
        if let Ok(Some(app)) = link_by_name(h, &outer.name).await {
            if app.index != real.index {
                let aside = aside_name(outer.index);
                if let Err(e) = h
                    .link()
                    .set(
                        LinkUnspec::new_with_index(app.index)
                            .name(aside.clone())
                            .build(),
                    )
                    .execute()
                    .await
                {
                    errors.push(format!("rename {} to {aside}: {e}", outer.name));
                }
            }
        }
        match h
            .link()
            .set(
                LinkUnspec::new_with_index(real.index)
                    .name(outer.name.clone())
                    .build(),
            )
            .execute()
            .await
        {
            Ok(()) => real.name = outer.name.clone(),
            Err(e) => errors.push(format!("rename {} back to {}: {e}", real.name, outer.name)),
        }
    }
    let present = addresses(h, Some(real.index)).await.unwrap_or_default();
    for a in creation_order(&t.addresses) {
        if present.iter().any(|p| p.addr == a.addr) {
            continue;
        }
        if let Err(e) = add_address(h, a, real.index, &outer.name, &real.name).await {
            errors.push(format!("give {}/{} back: {e:#}", a.addr, a.prefix_len));
        }
    }
    for r in &t.routes {
        if let Err(e) = h
            .route()
            .add(route_via(r, real.index))
            .replace()
            .execute()
            .await
        {
            errors.push(format!("give route {} back: {e}", describe_route(r)));
        }
    }
    // Break: the application's end gives the addresses up, so that its prefix routes
    // (older than the real interface's, so preferred) stop pulling traffic into a
    // bridge that is about to stop.
    let app = match link_by_name(h, &aside_name(outer.index)).await {
        Ok(Some(l)) => Some(l),
        _ => link_by_name(h, &t.app_end).await.ok().flatten(),
    };
    if let Some(app) = app.filter(|a| a.index != real.index) {
        for a in t.addresses.iter().rev() {
            let _ = h.address().del(identity_on(a, app.index)).execute().await;
        }
    }
    Ok(real)
}

/// The address `a` on interface `index`, with only what identifies it (a delete
/// request: the kernel matches a label too, and labels follow renames).
fn identity_on(a: &Address, index: u32) -> AddressMessage {
    let mut m = a.message.clone();
    m.header.index = index;
    m.attributes
        .retain(|x| matches!(x, AddressAttribute::Address(_) | AddressAttribute::Local(_)));
    m
}

/// Restore, second half (break): delete the veth pair (through its wire end: deleting
/// one end deletes both, with the addresses and routes on them) and the hold bridge,
/// give the real interface back its name, MTU, MAC and link state.
async fn restore_break(h: &Handle, t: &Takeover, real: &Interface, errors: &mut Vec<String>) {
    let outer = &t.outer;
    for name in [&t.wire_end, &aside_name(outer.index), &t.hold] {
        match link_by_name(h, name).await {
            // Never the real interface, whatever its name is now.
            Ok(Some(l)) if l.index != outer.index => {
                if let Err(e) = h.link().del(l.index).execute().await {
                    errors.push(format!("delete {name}: {e}"));
                }
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("look for {name}: {e:#}")),
        }
    }
    let mut set = LinkUnspec::new_with_index(real.index);
    let mut what = Vec::new();
    if real.name != outer.name {
        set = set.name(outer.name.clone());
        what.push(format!("name {}", outer.name));
    }
    if real.mtu != outer.mtu {
        set = set.mtu(outer.mtu);
        what.push(format!("MTU {}", outer.mtu));
    }
    if real.mac != outer.mac && !outer.mac.is_empty() {
        set = set.address(outer.mac.clone());
        what.push("MAC".to_string());
    }
    if real.up != outer.up {
        set = if outer.up { set.up() } else { set.down() };
        what.push(if outer.up { "up" } else { "down" }.to_string());
    }
    if !what.is_empty() {
        if let Err(e) = h.link().set(set.build()).execute().await {
            errors.push(format!(
                "give {} back its {}: {e}",
                real.name,
                what.join(", ")
            ));
        }
    }
}

async fn restore_all(h: &Handle, t: &Takeover) -> Result<()> {
    let mut errors = Vec::new();
    let real = restore_make(h, t, &mut errors).await?;
    restore_break(h, t, &real, &mut errors).await;
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("; "))
    }
}

/// Put back what [`take_over`] or an attach changed, in this thread's namespace, make
/// before break: the addresses and routes back on the real interface first, then the
/// veth pair and hold bridge deleted, the name, MTU, MAC and link state given back.
/// Works on a partial or already restored state; goes on past errors and reports
/// them all.
pub fn restore(t: &Takeover) -> Result<()> {
    let t = t.clone();
    with_handle(|h| async move { restore_all(&h, &t).await })
}

/// The first half of [`restore`] alone (addresses and routes back on the real
/// interface, which leaves the hold bridge): a detaching bridge calls it while it still
/// forwards, stops, then calls [`restore`] to finish.
pub fn restore_paths(t: &Takeover) -> Result<()> {
    let t = t.clone();
    with_handle(|h| async move {
        let mut errors = Vec::new();
        restore_make(&h, &t, &mut errors).await?;
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("{}", errors.join("; "))
        }
    })
}

/// Undo [`take_over`]: see [`restore`].
pub fn undo(t: &Takeover) -> Result<()> {
    restore(t)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex string");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(s.get(i..i + 2).unwrap_or("zz"), 16)
                .map_err(|_| anyhow!("not hex: {s:?}"))
        })
        .collect()
}

fn emitted<M: Emitable>(m: &M) -> String {
    let mut buf = vec![0u8; m.buffer_len()];
    m.emit(&mut buf);
    hex(&buf)
}

impl Takeover {
    /// The record as JSON: the real interface as it was, and every address and route
    /// as the netlink message the kernel gave (hex), so that another process — the
    /// watchdog, `attach --restore` — puts back exactly what was there.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "interface": {
                "index": self.outer.index,
                "name": self.outer.name,
                "mac": hex(&self.outer.mac),
                "mtu": self.outer.mtu,
                "up": self.outer.up,
            },
            "renamed": self.renamed,
            "app_end": self.app_end,
            "wire_end": self.wire_end,
            "hold": self.hold,
            "addresses": self.addresses.iter().map(|a| emitted(&a.message)).collect::<Vec<_>>(),
            "routes": self.routes.iter().map(emitted).collect::<Vec<_>>(),
        })
    }

    /// The record written by [`Takeover::to_json`].
    pub fn from_json(v: &serde_json::Value) -> Result<Takeover> {
        let s = |v: &serde_json::Value, k: &str| -> Result<String> {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| anyhow!("record: no {k:?}"))
        };
        let i = v
            .get("interface")
            .ok_or_else(|| anyhow!("record: no interface"))?;
        let outer = Interface {
            index: i
                .get("index")
                .and_then(|x| x.as_u64())
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| anyhow!("record: no interface index"))?,
            name: s(i, "name")?,
            mac: unhex(&s(i, "mac")?)?,
            mtu: i
                .get("mtu")
                .and_then(|x| x.as_u64())
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| anyhow!("record: no MTU"))?,
            up: i.get("up").and_then(|x| x.as_bool()).unwrap_or(true),
            controller: None,
        };
        let list = |k: &str| -> Result<Vec<Vec<u8>>> {
            v.get(k)
                .and_then(|x| x.as_array())
                .ok_or_else(|| anyhow!("record: no {k:?}"))?
                .iter()
                .map(|x| unhex(x.as_str().unwrap_or("")))
                .collect()
        };
        let mut addrs = Vec::new();
        for b in list("addresses")? {
            let m =
                AddressMessage::parse(&b[..]).map_err(|e| anyhow!("record: an address: {e}"))?;
            let addr = address_of(&m).ok_or_else(|| anyhow!("record: an address without IP"))?;
            addrs.push(Address {
                addr,
                prefix_len: m.header.prefix_len,
                message: m,
            });
        }
        let mut routes = Vec::new();
        for b in list("routes")? {
            routes.push(RouteMessage::parse(&b[..]).map_err(|e| anyhow!("record: a route: {e}"))?);
        }
        Ok(Takeover {
            outer,
            addresses: addrs,
            routes,
            renamed: v
                .get("renamed")
                .and_then(|x| x.as_str())
                .map(str::to_string),
            app_end: s(v, "app_end")?,
            wire_end: s(v, "wire_end")?,
            hold: s(v, "hold")?,
        })
    }

    /// The real interface's name while taken over.
    pub fn real_name(&self) -> &str {
        self.renamed.as_deref().unwrap_or(&self.outer.name)
    }
}

/// Whether the interface `name` is up (IFF_UP), or `None` when it does not exist.
pub fn is_up(name: &str) -> Result<Option<bool>> {
    let name = name.to_string();
    with_handle(|h| async move {
        let mut s = h.link().get().execute();
        while let Some(m) = s.try_next().await.context("list interfaces")? {
            if interface_of(&m).name == name {
                return Ok(Some(m.header.flags.contains(LinkFlags::Up)));
            }
        }
        Ok(None)
    })
}

// `synthnet run`: the veth between the namespaces it makes, and the command's side of it.

/// Make the veth pair `name` ⇄ `peer` with MTU `mtu`, `name` up in this namespace and
/// `peer` moved into the network namespace of process `pid`.
pub fn veth_into(name: &str, peer: &str, mtu: u32, pid: u32) -> Result<()> {
    let (name, peer) = (name.to_string(), peer.to_string());
    with_handle(|h| async move {
        h.link()
            .add(LinkVeth::new(&name, &peer).mtu(mtu).build())
            .execute()
            .await
            .with_context(|| format!("create veth pair {name}/{peer}"))?;
        let ours = link_by_name(&h, &name)
            .await?
            .ok_or_else(|| anyhow!("{name} vanished"))?;
        let theirs = link_by_name(&h, &peer)
            .await?
            .ok_or_else(|| anyhow!("{peer} vanished"))?;
        h.link()
            .set(
                LinkUnspec::new_with_index(theirs.index)
                    .mtu(mtu)
                    .setns_by_pid(pid)
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("move {peer} into the namespace of process {pid}"))?;
        h.link()
            .set(LinkUnspec::new_with_index(ours.index).mtu(mtu).up().build())
            .execute()
            .await
            .with_context(|| format!("set {name} up"))?;
        Ok(())
    })
}

/// Make the veth pair `name` ⇄ `peer` in this namespace, both ends down.
pub fn add_veth(name: &str, peer: &str) -> Result<()> {
    let (name, peer) = (name.to_string(), peer.to_string());
    with_handle(|h| async move {
        h.link()
            .add(LinkVeth::new(&name, &peer).build())
            .execute()
            .await
            .with_context(|| format!("create veth pair {name}/{peer}"))
    })
}

/// Delete interface `name` (a veth end takes its peer with it).
pub fn delete_link(name: &str) -> Result<()> {
    let name = name.to_string();
    with_handle(|h| async move {
        let link = link_by_name(&h, &name)
            .await?
            .ok_or_else(|| anyhow!("no interface named {name:?}"))?;
        h.link()
            .del(link.index)
            .execute()
            .await
            .with_context(|| format!("delete {name}"))
    })
}

/// Every network this namespace has an address in or a route to (not the default
/// route): where a new link's address plan must not land.
pub fn networks_in_use() -> Result<Vec<(IpAddr, u8)>> {
    with_handle(|h| async move {
        let mut out: Vec<(IpAddr, u8)> = addresses(&h, None)
            .await?
            .into_iter()
            .map(|a| (a.addr, a.prefix_len))
            .collect();
        for r in routes(&h).await? {
            let dst = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => ip_of(d),
                _ => None,
            });
            if let Some(d) = dst {
                if r.header.destination_prefix_length > 0 {
                    out.push((d, r.header.destination_prefix_length));
                }
            }
        }
        Ok(out)
    })
}

/// Set interface `name` up, with MTU `mtu` when given.
pub fn set_up(name: &str, mtu: Option<u32>) -> Result<()> {
    let name = name.to_string();
    with_handle(|h| async move {
        let link = link_by_name(&h, &name)
            .await?
            .ok_or_else(|| anyhow!("no interface named {name:?}"))?;
        let mut m = LinkUnspec::new_with_index(link.index).up();
        if let Some(mtu) = mtu {
            m = m.mtu(mtu);
        }
        h.link()
            .set(m.build())
            .execute()
            .await
            .with_context(|| format!("set {name} up"))?;
        Ok(())
    })
}

/// Give interface `name` (already up) the addresses `addrs` (IPv6 ones without duplicate
/// address detection, usable at once) and a default route via each of `gateways`.
pub fn configure_guest(name: &str, addrs: &[(IpAddr, u8)], gateways: &[IpAddr]) -> Result<()> {
    let (name, addrs, gateways) = (name.to_string(), addrs.to_vec(), gateways.to_vec());
    with_handle(|h| async move {
        let link = link_by_name(&h, &name)
            .await?
            .ok_or_else(|| anyhow!("no interface named {name:?}"))?;
        for (ip, len) in addrs {
            let mut req = h.address().add(link.index, ip, len);
            if ip.is_ipv6() {
                req.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            req.execute()
                .await
                .with_context(|| format!("add {ip}/{len} to {name}"))?;
        }
        for gw in gateways {
            let route = match gw {
                IpAddr::V4(g) => RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(g)
                    .output_interface(link.index)
                    .build(),
                IpAddr::V6(g) => RouteMessageBuilder::<Ipv6Addr>::new()
                    .gateway(g)
                    .output_interface(link.index)
                    .build(),
            };
            h.route()
                .add(route)
                .replace()
                .execute()
                .await
                .with_context(|| format!("add a default route via {gw} on {name}"))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_info(preferred: u32, valid: u32) -> rtnetlink::packet_route::address::CacheInfo {
        let mut c = rtnetlink::packet_route::address::CacheInfo::default();
        c.ifa_preferred = preferred;
        c.ifa_valid = valid;
        c.cstamp = 1;
        c.tstamp = 2;
        c
    }

    #[test]
    fn record_round_trips_addresses_and_routes_exactly() {
        let mut a = AddressMessage::default();
        a.header.family = rtnetlink::packet_route::AddressFamily::Inet;
        a.header.prefix_len = 24;
        a.header.index = 7;
        let ip: IpAddr = "10.9.0.2".parse().unwrap();
        a.attributes = vec![
            AddressAttribute::Address(ip),
            AddressAttribute::Local(ip),
            AddressAttribute::Label("eth0:web".into()),
            AddressAttribute::CacheInfo(cache_info(2000, 3000)),
            AddressAttribute::Flags(AddressFlags::Noprefixroute),
        ];
        let r = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(Ipv4Addr::new(10, 9, 0, 1))
            .output_interface(7)
            .priority(100)
            .table_id(100)
            .build();
        let t = Takeover {
            outer: Interface {
                index: 7,
                name: "eth0".into(),
                mac: vec![2, 0, 0, 0, 0, 9],
                mtu: 1400,
                up: true,
                controller: None,
            },
            addresses: vec![Address {
                addr: ip,
                prefix_len: 24,
                message: a.clone(),
            }],
            routes: vec![r.clone()],
            renamed: Some("snr-7".into()),
            app_end: "eth0".into(),
            wire_end: "snw-7".into(),
            hold: "snh-7".into(),
        };
        let text = serde_json::to_string(&t.to_json()).unwrap();
        let back = Takeover::from_json(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(back.outer, t.outer);
        assert_eq!(back.addresses[0].message, a);
        assert_eq!(back.addresses[0].addr, ip);
        assert_eq!(back.routes, vec![r]);
        assert_eq!(back.real_name(), "snr-7");
        assert_eq!(
            (back.app_end.as_str(), back.wire_end.as_str()),
            ("eth0", "snw-7")
        );
        assert!(Takeover::from_json(&serde_json::json!({"interface": {}})).is_err());
    }

    #[test]
    fn address_request_keeps_flags_lifetimes_and_follows_the_name() {
        let mut a = AddressMessage::default();
        a.header.index = 7;
        let ip: IpAddr = "fd00::2".parse().unwrap();
        a.attributes = vec![
            AddressAttribute::Address(ip),
            AddressAttribute::Label("eth0:1".into()),
            AddressAttribute::CacheInfo(cache_info(20, 30)),
            AddressAttribute::Flags(
                AddressFlags::Permanent | AddressFlags::Tentative | AddressFlags::Noprefixroute,
            ),
        ];
        let addr = Address {
            addr: ip,
            prefix_len: 64,
            message: a,
        };
        let m = address_request(&addr, 9, "eth0", "snr-7");
        assert_eq!(m.header.index, 9);
        assert!(m
            .attributes
            .contains(&AddressAttribute::Label("snr-7:1".into())));
        assert!(m
            .attributes
            .contains(&AddressAttribute::Flags(AddressFlags::Noprefixroute)));
        assert!(m.attributes.iter().any(|x| matches!(x,
            AddressAttribute::CacheInfo(c) if c.ifa_valid == 30 && c.ifa_preferred == 20 && c.cstamp == 0)));
        assert_eq!(
            attach_names(12),
            ("snr-12".into(), "snw-12".into(), "snh-12".into())
        );
    }

    #[test]
    fn cidr_parsing_and_membership() {
        let (n, l) = parse_cidr("10.77.0.0/16").unwrap();
        assert!(cidr_contains(n, l, "10.77.3.4".parse().unwrap()));
        assert!(!cidr_contains(n, l, "10.78.0.1".parse().unwrap()));
        assert!(!cidr_contains(n, l, "fd77::1".parse().unwrap()));
        let (n6, l6) = parse_cidr("fd77::/64").unwrap();
        assert!(cidr_contains(n6, l6, "fd77::2".parse().unwrap()));
        assert!(!cidr_contains(n6, l6, "fd78::2".parse().unwrap()));
        let (z, zl) = parse_cidr("0.0.0.0/0").unwrap();
        assert!(cidr_contains(z, zl, "192.0.2.1".parse().unwrap()));
        assert!(parse_cidr("10.77.0.0").is_err());
        assert!(parse_cidr("10.77.0.0/33").is_err());
        assert!(parse_cidr("eth0/16").is_err());
    }
}
