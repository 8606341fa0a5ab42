//! The way back from a takeover or an attach ([`restore`]), make before break and safe
//! on a half-done state: addresses and routes back on the real interface first, then
//! the pair and the hold bridge deleted and the interface's name, MTU, MAC and state
//! given back.

use super::addr::{add_address, addresses, creation_order, identity_on};
use super::link::{link_by_name, links};
use super::route::{describe_route, route_via};
use super::{with_handle, Interface, Takeover};
use anyhow::{anyhow, bail, Result};
use rtnetlink::{Handle, LinkUnspec};

/// The temporary name of the application's end while a restore gives the real
/// interface its name back.
fn aside_name(index: u32) -> String {
    format!("sna-{index}")
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

pub(super) async fn restore_all(h: &Handle, t: &Takeover) -> Result<()> {
    let mut errors = Vec::new();
    let real = restore_make(h, t, &mut errors).await?;
    restore_break(h, t, &real, &mut errors).await;
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("; "))
    }
}

/// Put back what [`take_over`](super::take_over) or an attach changed, in this thread's namespace, make
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

/// Undo [`take_over`](super::take_over): see [`restore`].
pub fn undo(t: &Takeover) -> Result<()> {
    restore(t)
}
