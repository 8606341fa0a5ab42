//! From a [`Plan`] to apps in an [`Engine`]: load plugins (built-in or from files, each
//! module compiled once), derive every instance's seed from the spec's, and wire one
//! direction: a [`Classifier`] splits packets among the flows' chains (first match wins,
//! else the default chain) and the direction's consumer reads every chain's output.

use crate::engine::{App, AppId, Counters, Ctx, Engine};
use crate::plugin::wasm::{WasmFactory, WasmModule, WasmRuntime};
use crate::plugin::{builtin, Factory, PluginApp, PluginError};
use crate::spec::{Direction, FlowMatch, Limits, Plan, PluginRef, Stage};
use std::any::Any;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use synthnet_sdk::wire::{ethertype, ipproto, EthernetFrame, Ipv4Packet, Ipv6Packet};

/// Loads plugin modules and makes factories for stages. Built-in modules are compiled
/// once; a `.wasm` file is read again on every load and recompiled only when its bytes
/// changed, so a reload picks up a rebuilt plugin and leaves the others alone.
pub struct Loader {
    rt: Arc<WasmRuntime>,
    modules: HashMap<PluginRef, (u64, Arc<WasmModule>)>,
}

impl Loader {
    pub fn new(rt: Arc<WasmRuntime>) -> Self {
        Loader {
            rt,
            modules: HashMap::new(),
        }
    }

    pub fn runtime(&self) -> &Arc<WasmRuntime> {
        &self.rt
    }

    pub fn module(&mut self, plugin: &PluginRef) -> Result<Arc<WasmModule>, PluginError> {
        let (hash, m) = match plugin {
            PluginRef::Builtin(name) => {
                if let Some((_, m)) = self.modules.get(plugin) {
                    return Ok(m.clone());
                }
                let bytes = builtin::wasm(name)
                    .ok_or_else(|| PluginError::new(name, "not a built-in plugin"))?;
                (0, self.rt.load(name, bytes)?)
            }
            PluginRef::File(path) => {
                let shown = path.display().to_string();
                let bytes = std::fs::read(path)
                    .map_err(|e| PluginError::new(&shown, format!("cannot read: {e}")))?;
                let hash = crate::plugin::fingerprint(&[&bytes]);
                if let Some((h, m)) = self.modules.get(plugin) {
                    if *h == hash {
                        return Ok(m.clone());
                    }
                }
                (hash, self.rt.load(&shown, &bytes)?)
            }
        };
        self.modules.insert(plugin.clone(), (hash, m.clone()));
        Ok(m)
    }

    pub fn factory(
        &mut self,
        stage: &Stage,
        limits: &Limits,
    ) -> Result<Arc<dyn Factory>, PluginError> {
        let module = self.module(&stage.plugin)?;
        let config = serde_json::to_vec(&stage.config)
            .map_err(|e| PluginError::new(&stage.name, e.to_string()))?;
        Ok(Arc::new(WasmFactory::new(
            module,
            &config,
            limits.plugin_memory_mib << 20,
        )))
    }
}

/// The seed of one plugin instance: the spec's seed mixed with the instance's place.
pub fn seed_for(seed: u64, dir: Direction, app_name: &str) -> u64 {
    let d: &[u8] = match dir {
        Direction::Ingress => b"ingress",
        Direction::Egress => b"egress",
    };
    let mut h = crate::plugin::fingerprint(&[&seed.to_le_bytes(), d, app_name.as_bytes()]);
    synthnet_sdk::rng::splitmix64(&mut h)
}

/// Instantiate a chain's plugin apps (validating every config with the plugin itself).
pub fn chain_apps(
    plan: &Plan,
    dir: Direction,
    chain: &[Stage],
    loader: &mut Loader,
) -> Result<Vec<(String, PluginApp)>, PluginError> {
    chain
        .iter()
        .map(|s| {
            let f = loader.factory(s, &plan.limits)?;
            let name = format!("{}.{}", dir_name(dir), s.name);
            let app = PluginApp::new(
                &name,
                f,
                seed_for(plan.seed, dir, &s.name),
                plan.limits.hold_packets,
            )?;
            Ok((name, app))
        })
        .collect()
}

pub fn dir_name(dir: Direction) -> &'static str {
    match dir {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// The apps a direction added, for reports and reloads.
#[derive(Debug, Clone, Default)]
pub struct Wired {
    pub classifier: Option<AppId>,
    /// Plugin apps by name.
    pub plugins: Vec<(String, AppId)>,
}

/// Wire direction `dir` of `plan` between `source` (output 0) and `sink` (every chain
/// ends on one of its inputs).
pub fn wire(
    engine: &mut Engine,
    plan: &Plan,
    dir: Direction,
    source: AppId,
    sink: AppId,
    loader: &mut Loader,
) -> Result<Wired, PluginError> {
    let d = plan.direction(dir);
    // Build every app first, so an error leaves the engine untouched.
    let mut apps: HashMap<String, Box<dyn App>> = HashMap::new();
    for chain in d.flows.iter().map(|f| &f.chain[..]).chain([&d.default[..]]) {
        for (name, app) in chain_apps(plan, dir, chain, loader)? {
            apps.insert(name, Box::new(app));
        }
    }
    Ok(wire_apps(engine, plan, dir, source, sink, &mut apps))
}

/// The app names of direction `dir`'s chains, in order: one list per flow, then the
/// default chain.
pub fn chain_names(plan: &Plan, dir: Direction) -> Vec<Vec<String>> {
    let d = plan.direction(dir);
    d.flows
        .iter()
        .map(|f| &f.chain[..])
        .chain([&d.default[..]])
        .map(|c| {
            c.iter()
                .map(|s| format!("{}.{}", dir_name(dir), s.name))
                .collect()
        })
        .collect()
}

/// Wire direction `dir` of `plan` from apps already built, taken out of `apps` by name
/// (see [`chain_names`]); infallible, so a reload can build everything first. A name
/// missing from `apps` is a bug of the caller and panics.
pub fn wire_apps(
    engine: &mut Engine,
    plan: &Plan,
    dir: Direction,
    source: AppId,
    sink: AppId,
    apps: &mut HashMap<String, Box<dyn App>>,
) -> Wired {
    let d = plan.direction(dir);
    let mut wired = Wired::default();
    let head = if d.flows.is_empty() {
        source
    } else {
        let c = Classifier::new(dir, d.flows.iter().map(|f| f.matcher.clone()).collect());
        let id = engine.add(format!("{}.classifier", dir_name(dir)), Box::new(c));
        engine.connect(source, id);
        wired.classifier = Some(id);
        id
    };
    for chain in chain_names(plan, dir) {
        let mut prev = head;
        for name in chain {
            let app = apps
                .remove(&name)
                .unwrap_or_else(|| panic!("wire_apps: no app named {name}"));
            let id = engine.add(name.clone(), app);
            engine.connect(prev, id);
            wired.plugins.push((name, id));
            prev = id;
        }
        engine.connect(prev, sink);
    }
    wired
}

/// The fields flows match on, parsed from a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub addr: IpAddr,
    pub protocol: u8,
    /// Source port (ingress) or destination port (egress), for TCP and UDP.
    pub port: Option<u16>,
}

/// Parse the flow key of an Ethernet frame: the source side for ingress, the
/// destination side for egress. `None` for non-IP frames.
pub fn flow_key(frame: &[u8], dir: Direction) -> Option<FlowKey> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let l3 = eth.payload();
    let (addr, protocol, l4, first_fragment) = match eth.ethertype() {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).ok()?;
            let addr = if dir == Direction::Ingress {
                ip.src()
            } else {
                ip.dst()
            };
            let frag_off = u16::from_be_bytes([l3[6], l3[7]]) & 0x1FFF;
            (
                IpAddr::from(addr),
                ip.protocol(),
                &l3[ip.header_len()..],
                frag_off == 0,
            )
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).ok()?;
            let addr = if dir == Direction::Ingress {
                ip.src()
            } else {
                ip.dst()
            };
            (
                IpAddr::from(addr),
                ip.next_header(),
                &l3[Ipv6Packet::<&[u8]>::HEADER_LEN..],
                true,
            )
        }
        _ => return None,
    };
    let port = if first_fragment
        && (protocol == ipproto::TCP || protocol == ipproto::UDP)
        && l4.len() >= 4
    {
        let (s, d) = (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        );
        Some(if dir == Direction::Ingress { s } else { d })
    } else {
        None
    };
    Some(FlowKey {
        addr,
        protocol,
        port,
    })
}

impl FlowMatch {
    pub fn matches(&self, k: &FlowKey) -> bool {
        self.prefix.is_none_or(|p| p.contains(k.addr))
            && self.protocol.is_none_or(|p| p == k.protocol)
            && self
                .ports
                .is_none_or(|(lo, hi)| k.port.is_some_and(|p| lo <= p && p <= hi))
    }
}

/// Sends each packet to the output of the first flow it matches, else to the last
/// output (the default chain). Non-IP frames take the default chain.
pub struct Classifier {
    dir: Direction,
    flows: Vec<FlowMatch>,
    counters: Counters,
    per_output: Vec<u64>,
}

impl Classifier {
    pub fn new(dir: Direction, flows: Vec<FlowMatch>) -> Self {
        let n = flows.len() + 1;
        Classifier {
            dir,
            flows,
            counters: Counters::default(),
            per_output: vec![0; n],
        }
    }

    fn classify(&self, frame: &[u8]) -> usize {
        match flow_key(frame, self.dir) {
            Some(k) => self
                .flows
                .iter()
                .position(|f| f.matches(&k))
                .unwrap_or(self.flows.len()),
            None => self.flows.len(),
        }
    }
}

impl App for Classifier {
    fn breathe(&mut self, cx: &mut Ctx<'_>) {
        while let Some(p) = cx.receive(0) {
            self.counters.rx_packets += 1;
            self.counters.rx_bytes += p.len as u64;
            let out = self.classify(cx.pool.data(&p));
            self.per_output[out] += 1;
            cx.transmit(out, p, &mut self.counters);
        }
    }
    fn counters(&self) -> &Counters {
        &self.counters
    }
    fn extra_counters(&self) -> Vec<(String, u64)> {
        self.per_output
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    if i == self.flows.len() {
                        "default".into()
                    } else {
                        format!("flow{i}")
                    },
                    *n,
                )
            })
            .collect()
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Prefix;

    fn v6_udp(src: [u8; 16], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
        f[14] = 0x60;
        f[14 + 6] = 17;
        f[14 + 8..14 + 24].copy_from_slice(&src);
        f[54..56].copy_from_slice(&sport.to_be_bytes());
        f[56..58].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn ipv4_and_ipv6_keys_by_direction() {
        let v4 = crate::apps::udp_template(60); // 10.0.0.1:1234 → 10.0.0.2:5678
        let k = flow_key(&v4, Direction::Ingress).unwrap();
        assert_eq!(
            (k.addr, k.protocol, k.port),
            ("10.0.0.1".parse().unwrap(), 17, Some(1234))
        );
        let k = flow_key(&v4, Direction::Egress).unwrap();
        assert_eq!((k.addr, k.port), ("10.0.0.2".parse().unwrap(), Some(5678)));
        let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        let v6 = v6_udp(src.octets(), 53, 4000);
        let k = flow_key(&v6, Direction::Ingress).unwrap();
        assert_eq!((k.addr, k.port), (IpAddr::V6(src), Some(53)));
        assert_eq!(flow_key(&[0u8; 10], Direction::Ingress), None);
    }

    #[test]
    fn classifier_first_match_wins_else_default() {
        let c = Classifier::new(
            Direction::Ingress,
            vec![
                FlowMatch {
                    prefix: Some(Prefix {
                        addr: "2001:db8::".parse().unwrap(),
                        len: 32,
                    }),
                    protocol: None,
                    ports: None,
                },
                FlowMatch {
                    prefix: None,
                    protocol: Some(17),
                    ports: Some((1400, 2000)),
                },
                FlowMatch {
                    prefix: None,
                    protocol: Some(17),
                    ports: None,
                },
            ],
        );
        let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert_eq!(c.classify(&v6_udp(src.octets(), 1500, 1)), 0);
        let other: std::net::Ipv6Addr = "2001:db9::7".parse().unwrap();
        assert_eq!(c.classify(&v6_udp(other.octets(), 1500, 1)), 1);
        assert_eq!(c.classify(&crate::apps::udp_template(60)), 2); // sport 1234: not 1400-2000
        assert_eq!(c.classify(&[0u8; 60]), 3);
    }
}
