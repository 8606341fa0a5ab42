//! The record of a takeover or an attach as JSON ([`Takeover::to_json`],
//! [`Takeover::from_json`]): every address and route as the netlink message the kernel
//! gave, so another process puts back exactly what was there.

use super::addr::address_of;
use super::{Address, Interface, Takeover};
use anyhow::{anyhow, bail, Result};
use rtnetlink::packet_core::{Emitable, Parseable};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::route::RouteMessage;

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

#[cfg(test)]
mod tests {
    use super::super::addr::tests::cache_info;
    use super::*;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
    use rtnetlink::RouteMessageBuilder;
    use std::net::{IpAddr, Ipv4Addr};

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
}
