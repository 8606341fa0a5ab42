//! `synthnet attach`, make before break: [`attach_plan`] reads what will change,
//! [`attach_make`] renames the real interface and makes the pair that takes its name,
//! [`attach_switch`] moves addresses and routes over once the bridge forwards.

use super::addr::{add_address, addresses, creation_order, identity_on};
use super::link::{link_by_name, links, set_index_up};
use super::restore::restore_all;
use super::route::{attach_movable, describe_route, oif_of, route_via, routes, table_of};
use super::takeover::{refuse_existing, what_moves};
use super::{with_handle, Takeover, MAIN_TABLE};
use anyhow::{anyhow, bail, Context, Result};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth};

/// The names attach gives the real interface, the wire end and the hold bridge in a
/// target: from the real interface's index, so they are unique in its namespace and
/// at most 15 bytes.
fn attach_names(index: u32) -> (String, String, String) {
    (
        format!("snr-{index}"),
        format!("snw-{index}"),
        format!("snh-{index}"),
    )
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
    set_index_up(h, wire.index, Some(outer.mtu), &t.wire_end).await?;
    set_index_up(h, app.index, None, &t.app_end).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are unique per interface index and fit IFNAMSIZ.
    #[test]
    fn attach_names_follow_the_index() {
        assert_eq!(
            attach_names(12),
            ("snr-12".into(), "snw-12".into(), "snh-12".into())
        );
        let (a, b, c) = attach_names(u32::MAX);
        assert!(a.len() < 16 && b.len() < 16 && c.len() < 16);
    }
}
