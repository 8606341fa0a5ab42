//! How the API holds its connections, so that no client can take what the data path
//! needs (file descriptors above all).
//!
//! - **A cap**, computed from the open-file limit ([`connection_cap`]): the engine
//!   keeps [`ENGINE_FDS`] descriptors for ring reopens, reloads and plugin files, and
//!   the API may hold at most half of the rest. A connection past the cap is answered
//!   `503` (the usual JSON error, with `Retry-After`) and closed at once.
//! - **A header-read timeout** ([`HEADER_TIMEOUT`], hyper's own): a request whose
//!   headers do not arrive in time closes its connection. hyper runs the same timer
//!   whenever it waits for the next request on a kept-alive connection, so it is also
//!   the idle timeout. A response being streamed (the SSE stats stream) is not waiting
//!   for a request, so it is never timed out.
//!
//! Connections are served by hyper's HTTP/1 connection with the axum router as its
//! service (what `axum::serve` does, plus the timer and the cap).

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Descriptors kept for the engine whatever the API does: two ring sockets per
/// interface on reopen, the spec and plugin files a reload reads, the save path's
/// temporary file and directory, the probes, with room to spare.
pub const ENGINE_FDS: u64 = 256;
/// The most connections the API holds, however high the limit.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers, and how long a kept-alive
/// connection may wait for its next request.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections past the cap that may be draining after their 503 at once (each for at
/// most [`REFUSAL_LINGER`]); beyond that they are closed without waiting.
const REFUSING: usize = 64;
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// How many connections the API may hold under an open-file limit of `nofile`: half
/// of what is left after [`ENGINE_FDS`], between 4 and [`MAX_CONNECTIONS`]. Under the
/// common soft limit of 1,024 that is 384.
pub fn connection_cap(nofile: u64) -> usize {
    let spare = nofile.saturating_sub(ENGINE_FDS) / 2;
    usize::try_from(spare)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(4, MAX_CONNECTIONS)
}

/// Accept and serve connections on `listener` until the process ends, at most `cap`
/// at once.
pub async fn serve(listener: TcpListener, router: Router, cap: usize) {
    let slots = Arc::new(Semaphore::new(cap));
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let busy: Arc<[u8]> = busy_answer(cap).into();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or the like: the connection waits
                // in the backlog; try again shortly rather than spin.
                crate::warn_throttled!(1, "API: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::warn_throttled!(
                1,
                "API: {cap} connections open, the most it holds; answering 503 to more"
            );
            refuse(stream, busy.clone(), &refusing);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        tokio::spawn(async move {
            // Errors here are the client's (gone, too slow, not HTTP): nothing to log.
            if let Err(e) = conn.await {
                log::debug!("API connection: {e}");
            }
            drop(slot);
        });
    }
}

/// The whole 503 answer for a connection past the cap.
fn busy_answer(cap: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": format!("the API holds at most {cap} connections and all are in use; try again"),
        "status": 503,
        "field": null,
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answer 503 and close. The answer fits the socket's empty send buffer, so it is
/// written without waiting; the request is then read and discarded for a moment, so
/// the close does not turn into a reset that loses the answer.
fn refuse(stream: TcpStream, busy: Arc<[u8]>, refusing: &Arc<Semaphore>) {
    let _ = stream.try_write(&busy);
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        // No room to linger: take what the client has sent already, so that closing
        // ends the connection (FIN) rather than resetting it before the answer is read.
        let mut buf = [0u8; 4096];
        for _ in 0..4 {
            match stream.try_read(&mut buf) {
                Ok(n) if n > 0 => continue,
                _ => break,
            }
        }
        return;
    };
    tokio::spawn(async move {
        let mut s = stream;
        let _ = s.shutdown().await;
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_engine_its_descriptors() {
        assert_eq!(connection_cap(1024), 384);
        assert_eq!(connection_cap(1 << 20), MAX_CONNECTIONS);
        assert_eq!(connection_cap(0), 4);
        for nofile in [512, 1024, 4096, 65536] {
            let cap = connection_cap(nofile) as u64;
            assert!(
                cap + REFUSING as u64 + ENGINE_FDS <= nofile,
                "{nofile}: {cap}"
            );
        }
    }
}
