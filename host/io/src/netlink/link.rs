//! Links: read (as [`Interface`]) and the plain operations on them — a veth pair made
//! or deleted, an interface set up.

use super::{with_handle, Interface};
use anyhow::{anyhow, Context, Result};
use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, LinkVeth};

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
