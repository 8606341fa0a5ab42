//! Plain HTTP/1.1 requests written byte by byte, for the API tests: every header is the
//! test's own choice (a foreign `Host`, a missing `Content-Type`, synthetic-network's
//! client's exact headers), and the answer comes back whole. Requests run on a thread
//! inside the namespace where the API listens.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;
use synthnet_testkit::traffic::in_ns;

/// An answer: status, headers (names lower-cased), body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): HTTP {} {}", self.status, self.text()))
    }
}

/// Send `method path` to `addr` (host:port) from inside namespace `ns`, with `headers`
/// (a `Host` is added unless given) and `body`. Panics if there is no answer.
pub fn request(
    ns: &str,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    try_request(
        Some(ns),
        addr,
        method,
        path,
        headers,
        body,
        Duration::from_secs(150),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// [`request`], from namespace `ns` or (`None`) from this process's own, with a read
/// timeout; an error says which request failed and how. The answer is read up to the
/// length its head announces (or its last chunk), not to the end of the connection:
/// some servers (chromedriver) keep the socket open after `Connection: close`.
pub fn try_request(
    ns: Option<&str>,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, String> {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let target = addr.to_string();
    let exchange = move || -> anyhow::Result<Vec<u8>> {
        let sock = target
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("no address"))?;
        let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(10))?;
        s.set_read_timeout(Some(timeout))?;
        // Write while reading: a server that refuses a large body answers (and closes)
        // before all of it is written.
        let mut w = s.try_clone()?;
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&bytes);
        });
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        while !is_whole(&out) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                // A reset after the answer arrived (the unread body): keep the answer.
                Err(_) if !out.is_empty() => break,
                Err(e) => return Err(e.into()),
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = writer.join();
        Ok(out)
    };
    let raw = match ns {
        Some(ns) => in_ns(ns, exchange)
            .join()
            .map_err(|_| format!("{method} {path}: the HTTP thread panicked"))?,
        None => exchange(),
    }
    .map_err(|e| format!("{method} {path} to {addr}: {e:#}"))?;
    parse(&raw).ok_or_else(|| {
        format!(
            "{method} {path} to {addr}: not an HTTP answer: {:?}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// Whether `raw` holds a whole answer: a head and the body it announces.
fn is_whole(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let body = &raw[end + 4..];
    if head.contains("transfer-encoding: chunked") {
        return dechunk(body).is_some();
    }
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|n| body.len() >= n)
}

/// The bridge's API in the middle namespace of the namespace tests.
pub const API: &str = "127.0.0.1:8080";

/// `POST /api/v1/stages/{stage}/command` with `body` (JSON) to the API at [`API`] in
/// namespace `ns`; `stage` is `DIRECTION/FLOW/NAME`.
pub fn stage_command(ns: &str, stage: &str, body: &str) -> Answer {
    request(
        ns,
        API,
        "POST",
        &format!("/api/v1/stages/{stage}/command"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// The plugin counters of `stage` from `GET /api/v1/stats`, once a publication that
/// follows the last traffic is out (the engine publishes once a second).
pub fn published_counters(ns: &str, stage: &str) -> serde_json::Value {
    std::thread::sleep(Duration::from_millis(2200));
    let a = request(ns, API, "GET", "/api/v1/stats", &[], b"");
    assert_eq!(a.status, 200, "{}", a.text());
    let stats = a.json();
    let found = stats["directions"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|d| d["stages"].as_array().into_iter().flatten())
        .find(|s| s["id"] == stage)
        .map(|s| s["plugin_counters"].clone());
    found.unwrap_or_else(|| panic!("no stage {stage} in {stats}"))
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(n) = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(n);
    }
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// A chunked body decoded, or `None` until its last chunk has arrived.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}
