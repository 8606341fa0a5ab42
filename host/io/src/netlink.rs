//! Netlink (rtnetlink) for `synthnet takeover`: read an interface's addresses, routes and
//! MAC, put a veth pair behind it, move the addresses and routes to the application's
//! end of the pair, and put everything back afterwards — in-process, no `ip` binary.
//!
//! Main types: [`Interface`] (a link as read), [`Takeover`] (what was changed, enough to
//! undo it). [`interface_in`] and [`default_route_interface`] pick the interface.
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
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
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

/// A network interface as read over netlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
}

/// One address as read: family, prefix and the message to re-create it.
#[derive(Debug, Clone)]
pub struct Address {
    pub addr: IpAddr,
    pub prefix_len: u8,
    message: AddressMessage,
}

/// What [`take_over`] changed: enough for [`undo`].
#[derive(Debug, Clone)]
pub struct Takeover {
    /// The real interface (synthnet's outer side).
    pub outer: Interface,
    /// The addresses moved to [`APP_END`].
    pub addresses: Vec<Address>,
    /// The routes moved to [`APP_END`] (those the kernel does not derive from an address).
    routes: Vec<RouteMessage>,
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
    };
    for a in &msg.attributes {
        match a {
            LinkAttribute::IfName(n) => iface.name = n.clone(),
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

/// `addr` as a fresh request for interface `index`: the same address, prefix, scope and
/// broadcast, no label (a label must start with the interface's name) and no DAD wait
/// (the address was in use a moment ago; waiting would stall IPv6 for a second).
fn address_on(addr: &Address, index: u32) -> AddressMessage {
    let mut m = addr.message.clone();
    m.header.index = index;
    m.attributes.retain(|a| {
        matches!(
            a,
            AddressAttribute::Address(_)
                | AddressAttribute::Local(_)
                | AddressAttribute::Broadcast(_)
        )
    });
    if addr.addr.is_ipv6() {
        m.attributes.push(AddressAttribute::Flags(
            AddressFlags::Nodad | AddressFlags::Permanent,
        ));
    }
    m
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

/// Put a veth pair behind `outer`: see the module documentation. On an error part way,
/// what was done is undone before the error returns.
pub fn take_over(outer: &Interface) -> Result<Takeover> {
    let outer = outer.clone();
    with_handle(|h| async move {
        for name in [APP_END, WIRE_END, HOLD_BRIDGE] {
            if link_by_name(&h, name).await?.is_some() {
                bail!("an interface named {name} exists already (a takeover is running, or one was not undone)");
            }
        }
        let moved: Vec<Address> = addresses(&h, Some(outer.index))
            .await?
            .into_iter()
            .filter(|a| !is_link_local(&a.addr))
            .collect();
        if moved.is_empty() {
            bail!("{} has no address to take over", outer.name);
        }
        let routes: Vec<RouteMessage> = routes(&h)
            .await?
            .into_iter()
            .filter(|r| movable_route(r, outer.index))
            .collect();
        let t = Takeover {
            outer,
            addresses: moved,
            routes,
        };
        if let Err(e) = apply(&h, &t).await {
            if let Err(u) = revert(&h, &t).await {
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
    for a in &t.addresses {
        let mut req = h.address().add(app.index, a.addr, a.prefix_len);
        *req.message_mut() = address_on(a, app.index);
        req.execute()
            .await
            .with_context(|| format!("add {}/{} to {APP_END}", a.addr, a.prefix_len))?;
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

async fn revert(h: &Handle, t: &Takeover) -> Result<()> {
    let mut errors = Vec::new();
    // Deleting one end of a veth deletes both, and with them their addresses and routes.
    if let Some(app) = link_by_name(h, APP_END).await? {
        if let Err(e) = h.link().del(app.index).execute().await {
            errors.push(format!("delete {APP_END}: {e}"));
        }
    }
    if let Some(hold) = link_by_name(h, HOLD_BRIDGE).await? {
        if let Err(e) = h.link().del(hold.index).execute().await {
            errors.push(format!("delete {HOLD_BRIDGE}: {e}"));
        }
    }
    let outer = &t.outer;
    let present = addresses(h, Some(outer.index)).await.unwrap_or_default();
    for a in &t.addresses {
        if present.iter().any(|p| p.addr == a.addr) {
            continue;
        }
        let mut req = h.address().add(outer.index, a.addr, a.prefix_len);
        *req.message_mut() = address_on(a, outer.index);
        if let Err(e) = req.execute().await {
            errors.push(format!(
                "give {}/{} back to {}: {e}",
                a.addr, a.prefix_len, outer.name
            ));
        }
    }
    for r in &t.routes {
        if let Err(e) = h
            .route()
            .add(route_via(r, outer.index))
            .replace()
            .execute()
            .await
        {
            errors.push(format!(
                "give route {} back to {}: {e}",
                describe_route(r),
                outer.name
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("; "))
    }
}

/// Undo [`take_over`]: delete the veth pair and the hold bridge, give the addresses and
/// routes back to the real interface. Goes on past errors and reports them all.
pub fn undo(t: &Takeover) -> Result<()> {
    let t = t.clone();
    with_handle(|h| async move { revert(&h, &t).await })
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
