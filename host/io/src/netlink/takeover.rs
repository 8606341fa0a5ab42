//! `synthnet takeover` (inside a container): which interface, and the veth pair and
//! hold bridge put behind it with its addresses and routes moved over ([`take_over`];
//! the picture is in the parent module's documentation).

use super::addr::{add_address, addresses, cidr_contains, creation_order, is_link_local};
use super::link::{link_by_name, links, set_index_up};
use super::restore::restore_all;
use super::route::{describe_route, movable_route, oif_of, route_via, routes, table_of};
use super::{with_handle, Address, Interface, Takeover};
use super::{APP_END, HOLD_BRIDGE, MAIN_TABLE, WIRE_END};
use anyhow::{anyhow, bail, Context, Result};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};
use std::net::IpAddr;

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

/// Refuse when an interface of one of `names` exists already (`why` says what that
/// means).
pub(super) async fn refuse_existing(h: &Handle, names: &[&str], why: &str) -> Result<()> {
    for name in names {
        if link_by_name(h, name).await?.is_some() {
            bail!("an interface named {name} exists already ({why})");
        }
    }
    Ok(())
}

/// What moves off `outer`: its addresses but the link-local ones (there must be one at
/// least, or there is nothing to `verb`), and the routes `movable` picks.
pub(super) async fn what_moves(
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
    set_index_up(h, wire.index, Some(outer.mtu), WIRE_END).await?;
    set_index_up(h, app.index, None, APP_END).await?;
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
