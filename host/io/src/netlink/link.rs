//! Links: read (as [`Interface`]) and the plain operations on them — a veth pair made
//! (its peer, if asked, in another namespace) or deleted, a bridge made, a port put in
//! it, an interface set up, a permanent neighbour entry. The test kit builds its
//! topologies with these.

use super::{with_handle, Interface};
use crate::netns::Namespace;
use anyhow::{anyhow, Context, Result};
use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

pub(super) fn interface_of(msg: &LinkMessage) -> Interface {
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

pub(super) async fn links(handle: &Handle) -> Result<Vec<Interface>> {
    let mut out = Vec::new();
    let mut s = handle.link().get().execute();
    while let Some(m) = s.try_next().await.context("list interfaces")? {
        out.push(interface_of(&m));
    }
    Ok(out)
}

pub(super) async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Interface>> {
    Ok(links(handle).await?.into_iter().find(|l| l.name == name))
}

/// Set interface `name` up, with MTU `mtu` when given.
pub fn set_up(name: &str, mtu: Option<u32>) -> Result<()> {
    let name = name.to_string();
    with_handle(|h| async move {
        let link = link_by_name(&h, &name)
            .await?
            .ok_or_else(|| anyhow!("no interface named {name:?}"))?;
        set_index_up(&h, link.index, mtu, &name).await
    })
}

/// Set the interface with index `index` (called `name` in errors) up, with MTU `mtu`
/// when given: the one "set up" of every netlink path (attach, takeover, run, tests).
pub(super) async fn set_index_up(
    h: &Handle,
    index: u32,
    mtu: Option<u32>,
    name: &str,
) -> Result<()> {
    let mut m = LinkUnspec::new_with_index(index).up();
    if let Some(mtu) = mtu {
        m = m.mtu(mtu);
    }
    h.link()
        .set(m.build())
        .execute()
        .await
        .with_context(|| format!("set {name} up"))?;
    Ok(())
}

/// Make the veth pair `name` ⇄ `peer`, both ends down: `name` in this namespace, `peer`
/// in `peer_ns` when given (`ip link add NAME type veth peer name PEER netns NS`), else
/// here too.
pub fn add_veth(name: &str, peer: &str, peer_ns: Option<&Namespace>) -> Result<()> {
    let (name, peer) = (name.to_string(), peer.to_string());
    let ns_fd = peer_ns.map(|ns| ns.as_fd().as_raw_fd());
    with_handle(|h| async move {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new().name(peer.clone());
        if let Some(fd) = ns_fd {
            peer_msg = peer_msg.setns_by_fd(fd);
        }
        let pair = LinkVeth::new(&name, &peer)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
            .build();
        h.link()
            .add(pair)
            .execute()
            .await
            .with_context(|| format!("create veth pair {name}/{peer}"))
    })
}

/// Make the bridge `name`, down.
pub fn add_bridge(name: &str) -> Result<()> {
    let name = name.to_string();
    with_handle(|h| async move {
        h.link()
            .add(LinkBridge::new(&name).build())
            .execute()
            .await
            .with_context(|| format!("create bridge {name}"))
    })
}

/// Make interface `name` a port of `controller` (a bridge).
pub fn set_controller(name: &str, controller: &str) -> Result<()> {
    let (name, controller) = (name.to_string(), controller.to_string());
    with_handle(|h| async move {
        let link = link_by_name(&h, &name)
            .await?
            .ok_or_else(|| anyhow!("no interface named {name:?}"))?;
        let ctl = link_by_name(&h, &controller)
            .await?
            .ok_or_else(|| anyhow!("no interface named {controller:?}"))?;
        h.link()
            .set(
                LinkUnspec::new_with_index(link.index)
                    .controller(ctl.index)
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("make {name} a port of {controller}"))
    })
}

/// Interface `name` as read, if it exists.
pub fn interface(name: &str) -> Result<Option<Interface>> {
    let name = name.to_string();
    with_handle(|h| async move { link_by_name(&h, &name).await })
}

/// A permanent neighbour entry on interface `name`: `ip` is at link-layer address `mac`
/// (`ip neigh replace IP lladdr MAC dev NAME nud permanent`).
pub fn set_neighbour(name: &str, ip: IpAddr, mac: &[u8]) -> Result<()> {
    let (name, mac) = (name.to_string(), mac.to_vec());
    with_handle(|h| async move {
        let link = link_by_name(&h, &name)
            .await?
            .ok_or_else(|| anyhow!("no interface named {name:?}"))?;
        h.neighbours()
            .add(link.index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .with_context(|| format!("a permanent neighbour {ip} on {name}"))
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
