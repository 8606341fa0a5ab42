//! What keeps the API to the people meant to use it.
//!
//! - **Host**: the `Host` header must name this API: an IP literal, `localhost`, or a
//!   name given with `--api-host`. A web page whose own DNS name was rebound to our
//!   address (DNS rebinding) sends its own name, and is refused.
//! - **Origin**: a browser request from another site carries that site's `Origin`; it
//!   must be our own (`http://` + the Host it sent) or a `--api-host` name.
//! - **Changes are JSON**: `POST`, `PUT`, `PATCH` and `DELETE` need
//!   `Content-Type: application/json` (or `application/merge-patch+json`); a plain HTML
//!   form cannot send that cross-site without a CORS preflight, which is never granted.
//!   Anything else is 415.
//! - **Token**: with `--api-token-file`, every route but `/healthz` and the page itself
//!   needs `Authorization: Bearer TOKEN` (the scheme in any case), or
//!   `?access_token=TOKEN` on a GET of a stream ([`STREAMS`]: `EventSource` cannot set
//!   headers) and nowhere else, so a token is never needed in the URL of a change.
//! - **One well-formed Host**: two `Host` headers, or one that is not `host[:port]`,
//!   get 400 (RFC 9112 §3.2).
//! - **Bounded bodies**: see [`super::MAX_BODY_BYTES`].
//!
//! [`errors_as_json`] makes every error — ours, and axum's own (405, 413, …) — a JSON
//! body `{"error", "status", "field"}` served as `application/json`.

use super::{error_response, Shared};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The host part of a `Host` header value (`[::1]:8080` → `::1`, `a.b:80` → `a.b`),
/// or `None` when the value is not `host[:port]` (RFC 9110 §7.2): a bracketed part
/// that is not an IPv6 address or has anything but a port after it, an unbracketed
/// colon, an empty host, a port that is not a number up to 65535, characters no host
/// name has.
fn host_name(value: &str) -> Option<&str> {
    let port_ok = |p: &str| {
        !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()) && {
            p.parse::<u32>().is_ok_and(|n| n <= 65535)
        }
    };
    if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some(inside),
            a => a.strip_prefix(':').filter(|p| port_ok(p)).map(|_| inside),
        };
    }
    let host = match value.split_once(':') {
        Some((h, p)) if port_ok(p) => h,
        Some(_) => return None,
        None => value,
    };
    let name_char = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_');
    (!host.is_empty() && host.bytes().all(name_char)).then_some(host)
}

fn host_allowed(name: &str, extra: &[String]) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || extra.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn refuse(status: StatusCode, msg: &str) -> Response {
    error_response(status, msg, None)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The checks, in order: Host, Origin, token, content type.
pub async fn guard(State(api): State<Shared>, req: Request, next: Next) -> Response {
    let h = req.headers();
    if h.get_all(header::HOST).iter().count() > 1 {
        return refuse(StatusCode::BAD_REQUEST, "more than one Host header");
    }
    let Some(host) = header_str(h, header::HOST) else {
        return refuse(StatusCode::BAD_REQUEST, "a Host header is required");
    };
    let Some(name) = host_name(host) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("the Host header {host:?} is not host[:port]"),
        );
    };
    // An absolute-form request target names the host too: it must be the same one.
    if let Some(auth) = req.uri().authority() {
        if !auth.as_str().eq_ignore_ascii_case(host) {
            return refuse(
                StatusCode::BAD_REQUEST,
                &format!("the request target names {auth}, the Host header {host:?}"),
            );
        }
    }
    if !host_allowed(name, &api.hosts) {
        return refuse(
            StatusCode::FORBIDDEN,
            &format!("Host {host:?} is not a name of this API (IP addresses and localhost are; add names with --api-host)"),
        );
    }
    if let Some(origin) = header_str(h, header::ORIGIN) {
        let ours = origin.strip_prefix("http://").is_some_and(|o| {
            o.eq_ignore_ascii_case(host)
                || api
                    .hosts
                    .iter()
                    .any(|n| host_name(o).is_some_and(|o| o.eq_ignore_ascii_case(n)))
        });
        if !ours {
            return refuse(
                StatusCode::FORBIDDEN,
                &format!("requests from other sites are refused (Origin {origin:?})"),
            );
        }
    }
    let path = req.uri().path();
    if let Some(token) = &api.token {
        let open = path == "/healthz" || path == "/";
        let bearer = header_str(h, header::AUTHORIZATION).and_then(bearer_token);
        // Only where a browser cannot set a header (EventSource) and nothing changes:
        // a token in a URL ends up in proxy logs and shell history.
        let streaming = req.method() == Method::GET && STREAMS.contains(&path);
        let query = req
            .uri()
            .query()
            .filter(|_| streaming)
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")));
        let given = bearer.or(query);
        if !open && !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut r = refuse(
                StatusCode::UNAUTHORIZED,
                if streaming {
                    "this API needs a token: Authorization: Bearer TOKEN (or ?access_token=TOKEN on this stream)"
                } else {
                    "this API needs a token: Authorization: Bearer TOKEN (a token in the URL is taken only for streams)"
                },
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return r;
        }
    }
    let changes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if changes {
        let ct = header_str(h, header::CONTENT_TYPE).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !(mime.eq_ignore_ascii_case("application/json")
            || mime.eq_ignore_ascii_case("application/merge-patch+json"))
        {
            return refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("changes must be sent as Content-Type: application/json (got {ct:?})"),
            );
        }
    }
    next.run(req).await
}

/// The routes that may take their token as `?access_token=` (GET only): streams a
/// browser opens with `EventSource`, which cannot set headers.
const STREAMS: &[&str] = &["/api/v1/stats/stream"];

/// The token of an `Authorization: Bearer TOKEN` value; the scheme is matched without
/// regard to case (RFC 9110 §11.1), and one or more spaces may follow it.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    let token = rest.trim_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compare without leaking where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Every error response as JSON: axum's own rejections (405, 413, …) come as text.
pub async fn errors_as_json(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = header_str(resp.headers(), header::CONTENT_TYPE)
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method".to_string(),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the body is larger than {} bytes", super::MAX_BODY_BYTES)
        }
        s => s.canonical_reason().unwrap_or("error").to_string(),
    };
    let allow = resp.headers().get(header::ALLOW).cloned();
    let mut r = error_response(status, &message, None).into_response();
    if let Some(a) = allow {
        r.headers_mut().insert(header::ALLOW, a);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_split_from_ports() {
        assert_eq!(host_name("localhost:8080"), Some("localhost"));
        assert_eq!(host_name("[::1]:8080"), Some("::1"));
        assert_eq!(host_name("[::1]"), Some("::1"));
        assert_eq!(host_name("10.0.0.1"), Some("10.0.0.1"));
        assert_eq!(host_name("example.com"), Some("example.com"));
        for bad in [
            "[::1]evil",
            "[::1]evil.example",
            "[::1",
            "[evil]",
            "[::1]:",
            "[::1]:99999",
            "::1",
            "",
            ":80",
            "a:b",
            "127.0.0.1:80:80",
            "user@127.0.0.1",
            "a b",
            "127.0.0.1:+80",
        ] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
        assert!(host_allowed("127.0.0.1", &[]));
        assert!(host_allowed("::1", &[]));
        assert!(host_allowed("LocalHost", &[]));
        assert!(!host_allowed("evil.example", &[]));
        assert!(host_allowed("synthnet.lan", &["synthnet.lan".into()]));
    }

    #[test]
    fn the_bearer_scheme_is_matched_without_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc"), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
