//! Addresses: read, and re-created exactly (flags, lifetimes, labels that follow a
//! rename) on another interface; CIDR parsing and membership.

use super::Address;
use anyhow::{anyhow, Context, Result};
use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::Handle;
use std::net::IpAddr;

pub(super) fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
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

pub(super) async fn addresses(handle: &Handle, index: Option<u32>) -> Result<Vec<Address>> {
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

pub(super) fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(v4) => v4.is_link_local(),
    }
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
pub(super) async fn add_address(
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

/// The address `a` on interface `index`, with only what identifies it (a delete
/// request: the kernel matches a label too, and labels follow renames).
pub(super) fn identity_on(a: &Address, index: u32) -> AddressMessage {
    let mut m = a.message.clone();
    m.header.index = index;
    m.attributes
        .retain(|x| matches!(x, AddressAttribute::Address(_) | AddressAttribute::Local(_)));
    m
}

/// The order to add addresses in so that they list as they did: IPv4 in the order
/// read (primary before its secondaries), IPv6 backwards (the kernel lists the
/// newest of a scope first).
pub(super) fn creation_order(addrs: &[Address]) -> Vec<&Address> {
    let v4 = addrs.iter().filter(|a| a.addr.is_ipv4());
    let v6 = addrs.iter().filter(|a| a.addr.is_ipv6()).rev();
    v4.chain(v6).collect()
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::netlink) fn cache_info(
        preferred: u32,
        valid: u32,
    ) -> rtnetlink::packet_route::address::CacheInfo {
        let mut c = rtnetlink::packet_route::address::CacheInfo::default();
        c.ifa_preferred = preferred;
        c.ifa_valid = valid;
        c.cstamp = 1;
        c.tstamp = 2;
        c
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
