//! A bridge with its API in a test topology, for the namespace tests of the control
//! plane: its spec file in a directory of its own, requests from inside its namespace.

use super::bridge::BridgeProc;
use super::files::SpecFile;
use super::http::{request, Answer};
use serde_json::Value;
use synthnet_testkit::netns::{self, Middle, Topology};

pub use super::http::API;

pub struct Rig {
    /// Declared first: stopped before its namespaces go.
    pub bridge: BridgeProc,
    pub topo: Topology,
    /// Its spec file, in a directory of its own (removed on drop).
    pub spec_file: SpecFile,
}

impl Rig {
    /// Namespaces with pinned neighbours and a bridge running `spec` (with `extra`
    /// arguments), its API on 127.0.0.1:8080 in the middle namespace.
    pub fn start(tag: &str, spec: &str, extra: &[&str]) -> Rig {
        assert!(
            netns::is_root(),
            "this test needs root (network namespaces and raw sockets)"
        );
        let topo = Topology::create(tag, Middle::Synthnet).expect("build the test topology");
        topo.pin_neighbours().expect("static neighbours");
        let spec = SpecFile::new(tag, spec);
        let mut args = vec!["--stats", "0"];
        args.extend_from_slice(extra);
        let bridge = BridgeProc::start(&topo, &spec.path, &args);
        Rig {
            bridge,
            topo,
            spec_file: spec,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: &str) -> Answer {
        let json = [("Content-Type", "application/json")];
        let headers: &[(&str, &str)] = if method == "GET" { &[] } else { &json };
        request(
            &self.topo.middle().name,
            API,
            method,
            path,
            headers,
            body.as_bytes(),
        )
    }

    /// PUT a spec; it must apply. The report.
    pub fn put(&self, spec: &Value) -> Value {
        let a = self.call("PUT", "/api/v1/spec", &spec.to_string());
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()
    }

    /// `GET /api/v1/spec`.
    pub fn spec(&self) -> Value {
        self.call("GET", "/api/v1/spec", "").json()
    }
}
