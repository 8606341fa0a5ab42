//! Routes: read, described for the log, sorted into those a takeover or an attach moves
//! and those the kernel keeps, and re-pointed at another interface.

use super::addr::is_link_local;
use super::{LOCAL_TABLE, MAIN_TABLE};
use anyhow::{Context, Result};
use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub(super) async fn routes(handle: &Handle) -> Result<Vec<RouteMessage>> {
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

pub(super) fn oif_of(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

pub(super) fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

pub(super) fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
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

pub(super) fn describe_route(r: &RouteMessage) -> String {
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

/// A route of the main table through `index` that the kernel does not make by itself
/// (its `proto kernel` routes come back with the addresses; IPv6 link-local and
/// multicast routes stay with the interface).
pub(super) fn movable_route(r: &RouteMessage, index: u32) -> bool {
    oif_of(r) == Some(index)
        && table_of(r) == MAIN_TABLE
        && r.header.kind == RouteType::Unicast
        && r.header.protocol != RouteProtocol::Kernel
        && !r.attributes.iter().any(|a| match a {
            RouteAttribute::Destination(d) => ip_of(d).is_some_and(|ip| is_link_local(&ip)),
            _ => false,
        })
}

/// A route through `index` that attach moves: every table but `local` (the kernel's
/// own), unicast, not made by the kernel from an address, not link-local.
pub(super) fn attach_movable(r: &RouteMessage, index: u32) -> bool {
    oif_of(r) == Some(index)
        && table_of(r) != LOCAL_TABLE
        && r.header.kind == RouteType::Unicast
        && r.header.protocol != RouteProtocol::Kernel
        && !r.attributes.iter().any(|a| match a {
            RouteAttribute::Destination(d) => ip_of(d).is_some_and(|ip| is_link_local(&ip)),
            _ => false,
        })
}

/// `route` re-pointed at interface `index`, without the attributes the kernel reports
/// but does not take back (cache info, expiry).
pub(super) fn route_via(route: &RouteMessage, index: u32) -> RouteMessage {
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
