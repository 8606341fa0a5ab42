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
//!   needs `Authorization: Bearer TOKEN` (or `?access_token=TOKEN`, for `EventSource`,
//!   which cannot set headers).
//! - **Bounded bodies**: see [`super::MAX_BODY_BYTES`].
//!
//! [`errors_as_json`] makes every error — ours, and axum's own (405, 413, …) — a JSON
//! body `{"error", "status", "field"}` served as `application/json`.

use super::{error_response, Shared};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The host part of a `Host` header value (`[::1]:8080` → `::1`, `a.b:80` → `a.b`).
fn host_name(value: &str) -> &str {
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match value.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => value,
    }
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
    let Some(host) = header_str(h, header::HOST) else {
        return refuse(StatusCode::BAD_REQUEST, "a Host header is required");
    };
    if !host_allowed(host_name(host), &api.hosts) {
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
                    .any(|n| host_name(o).eq_ignore_ascii_case(n))
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
        let bearer = header_str(h, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "));
        let query = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")));
        let given = bearer.or(query);
        if !open && !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut r = refuse(
                StatusCode::UNAUTHORIZED,
                "this API needs a token: Authorization: Bearer TOKEN",
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
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("10.0.0.1"), "10.0.0.1");
        assert_eq!(host_name("example.com"), "example.com");
        assert!(host_allowed("127.0.0.1", &[]));
        assert!(host_allowed("::1", &[]));
        assert!(host_allowed("LocalHost", &[]));
        assert!(!host_allowed("evil.example", &[]));
        assert!(host_allowed("synthnet.lan", &["synthnet.lan".into()]));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
