//! A deliberately small HTTP/1.1 server for `GET /metrics` and `GET /healthz`: one request per
//! connection, bounded in size and time, so a scraper or a stray client can never hold much.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::Health;

const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 16;

pub async fn serve(listener: TcpListener, health: Health, stop: CancellationToken) {
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("health endpoint accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let health = health.clone();
        tokio::spawn(async move {
            let served = tokio::time::timeout(REQUEST_TIMEOUT, handle(stream, &health)).await;
            if let Ok(Err(e)) = served {
                tracing::debug!("health endpoint: client {peer}: {e}");
            }
            drop(permit);
        });
    }
}

async fn handle(mut stream: TcpStream, health: &Health) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() >= MAX_REQUEST {
            return respond(&mut stream, 431, "text/plain", "request too large\n").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET\n").await;
    }
    match path {
        "/metrics" => {
            let body = health.metrics().await;
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        "/healthz" => {
            let problems = health.problems().await;
            if problems.is_empty() {
                respond(&mut stream, 200, "text/plain", "ok\n").await
            } else {
                let body = format!("degraded\n{}\n", problems.join("\n"));
                respond(&mut stream, 503, "text/plain", &body).await
            }
        }
        _ => respond(&mut stream, 404, "text/plain", "try /metrics or /healthz\n").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
