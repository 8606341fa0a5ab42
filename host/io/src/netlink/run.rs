//! `synthnet run`: the veth between the namespaces it makes, and the command's side of
//! it (addresses, default routes); the networks already in use, which a new link's
//! address plan avoids.

use super::addr::addresses;
use super::link::{link_by_name, set_index_up};
use super::route::{ip_of, routes};
use super::with_handle;
use anyhow::{anyhow, Context, Result};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::route::RouteAttribute;
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
        set_index_up(&h, ours.index, Some(mtu), &name).await
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
