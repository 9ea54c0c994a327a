//! MQTT over WebSocket (MQTT 3.1.1 section 6) for browser dashboards: the HTTP upgrade is
//! accepted only with the `mqtt` subprotocol, then binary frames carry the MQTT byte stream.
//! Frame and packet boundaries are independent: a packet may span frames and a frame may hold
//! several packets, so the broker reads the frames as one byte stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// The subprotocol MQTT 3.1.1 and 5.0 register for WebSocket.
const SUBPROTOCOL: &str = "mqtt";

/// Whether the client's `Sec-WebSocket-Protocol` list (in any of its headers) names `mqtt`.
fn offers_mqtt(req: &Request) -> bool {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL)
}

// The signature is tungstenite's handshake callback.
#[allow(clippy::result_large_err)]
fn choose_subprotocol(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    if offers_mqtt(req) {
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
        return Ok(resp);
    }
    let mut refusal = ErrorResponse::new(Some(
        "this is an MQTT endpoint: offer the WebSocket subprotocol `mqtt`\n".into(),
    ));
    *refusal.status_mut() = StatusCode::BAD_REQUEST;
    Err(refusal)
}

/// Performs the server side of the upgrade. Frames and messages are bounded by the broker's
/// packet size limit (plus room for a few small packets sharing a frame).
pub(crate) async fn accept<S>(stream: S, max_packet_size: usize) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limit = max_packet_size.saturating_add(64 << 10);
    let config = WebSocketConfig::default()
        // The tungstenite defaults (128 KiB each) would dominate an idle connection's memory.
        .read_buffer_size(4 << 10)
        // The I/O loop already gathers its output into one write per burst.
        .write_buffer_size(0)
        .max_write_buffer_size(limit.saturating_mul(2))
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, choose_subprotocol, Some(config))
            .await
            .map_err(|e| io::Error::other(format!("WebSocket handshake failed: {e}")))?;
    Ok(WsStream {
        ws,
        pending: Bytes::new(),
    })
}

/// A WebSocket connection as a byte stream: reads yield the payloads of binary messages, each
/// write goes out as one binary message. Pings are answered by tungstenite; a close ends the
/// stream; a text message is an error (MQTT 3.1.1 [MQTT-6.0.0-1]).
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// What is left of the last binary message.
    pending: Bytes,
}

fn io_error(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                // End of stream: after the closing handshake or a dropped connection.
                None => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket message: MQTT travels in binary messages",
                    )))
                }
                // Ping, pong, close (the reply is queued by tungstenite; the stream ends next).
                Some(Ok(_)) => {}
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut ws = Pin::new(&mut this.ws);
        ready!(ws.as_mut().poll_ready(cx)).map_err(io_error)?;
        ws.start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}
