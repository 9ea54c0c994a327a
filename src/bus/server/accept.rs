//! The accept loop and each accepted socket's way into its connection task: transport
//! handshake (TLS, WebSocket), then the MQTT I/O loop in `server`.

use super::*;

static TOO_MANY_SOCKETS: Burst = Burst::new();

/// Runs the accept loop and every connection task on a current-thread runtime in a thread of
/// its own until `shutdown`, and cancels `closed` once they have all ended. One thread runs
/// connections in the order they were woken, which the yield before routing
/// (`Connection::process_input`) relies on; on the gateway's multi-thread runtime the task woken
/// last ran first (the LIFO slot) while the other worker ran the earlier one in parallel. The
/// rest of the gateway reaches the router from its own runtime: a lock, channels and `Notify`
/// work across runtimes.
pub(crate) fn start(
    listeners: Vec<Listener>,
    router: Arc<Router>,
    limits: Limits,
    shutdown: CancellationToken,
    closed: CancellationToken,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Bound on the caller's runtime; registered again with this one, whose driver serves them.
    let listeners = {
        let _in_rt = rt.enter();
        listeners
            .into_iter()
            .map(|l| {
                let tcp = tokio::net::TcpListener::from_std(l.tcp.into_std()?)?;
                Ok(Listener {
                    tcp,
                    transport: l.transport,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?
    };
    std::thread::Builder::new()
        .name("edgegate-broker".into())
        .spawn(move || {
            rt.block_on(accept_loop(
                Listeners::new(listeners),
                router,
                limits,
                shutdown,
                closed,
            ))
        })?;
    Ok(())
}

/// Accepts until `shutdown`, then waits for every connection task and cancels `closed`.
async fn accept_loop(
    mut listeners: Listeners,
    router: Arc<Router>,
    limits: Limits,
    shutdown: CancellationToken,
    closed: CancellationToken,
) {
    // Sockets that have not sent CONNECT yet count too, so cap the total with some headroom
    // beyond max_connections (the extra ones get CONNACK 0x03 from the router).
    let max_sockets = limits.max_connections.saturating_mul(2).saturating_add(16);
    // A tracker rather than a JoinSet: it costs a connection no allocation of its own.
    let tasks = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = std::future::poll_fn(|cx| listeners.poll_accept(cx)) => match accepted {
                Ok((stream, peer, transport)) => {
                    if tasks.len() >= max_sockets {
                        Stats::add(&router.stats.refused, 1);
                        if let Some(more) = TOO_MANY_SOCKETS.check() {
                            tracing::warn!(%peer, "too many open connections; closing new one ({more} more since the last warning)");
                        }
                        continue;
                    }
                    tasks.spawn(open(Box::new(Accepted {
                        stream,
                        peer,
                        transport,
                        router: router.clone(),
                        limits,
                        shutdown: shutdown.clone(),
                    })));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!("local broker accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listeners);
    // Attached connections wait on their takeover token only (see `Connection::serve`).
    router.kick_all();
    tasks.close();
    tasks.wait().await;
    router.close_inproc();
    tracing::debug!("local broker stopped");
    closed.cancel();
}

/// A socket just accepted, boxed on its way into the connection task: an async fn keeps its
/// arguments for the task's whole life, a box is 8 bytes of that.
struct Accepted {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    transport: listener::Transport,
    router: Arc<Router>,
    limits: Limits,
    shutdown: CancellationToken,
}

/// Runs the transport's handshake, then the MQTT connection.
async fn open(accepted: Box<Accepted>) {
    // The handshake boxed: its state is large (TLS) and only needed until it is done, while the
    // task keeps its own size for the connection's whole life.
    let Some(mut conn) = Box::pin(handshake(accepted)).await else {
        return;
    };
    conn.run().await
}

/// The transport's handshake, bounded by [`CONNECT_TIMEOUT`]: the connection to serve, if any.
async fn handshake(accepted: Box<Accepted>) -> Option<Connection> {
    let Accepted {
        stream,
        peer,
        transport,
        router,
        limits,
        shutdown,
    } = *accepted;
    let handshake = std::pin::pin!(tokio::time::timeout(
        CONNECT_TIMEOUT,
        transport.open(stream, limits.max_packet_size),
    ));
    let opened = tokio::select! {
        o = handshake => o,
        _ = shutdown.cancelled() => return None,
    };
    match opened {
        Ok(Ok((io, cert_user))) => {
            let mut conn = Connection::new(io, peer, router, limits, shutdown);
            // The certificate's name is the verified user; CONNECT's credentials are not asked.
            conn.cert_identity = cert_user.is_some();
            conn.verified_user = cert_user;
            Some(conn)
        }
        Ok(Err(e)) => {
            Stats::add(&router.stats.refused, 1);
            tracing::debug!(%peer, "{} connection refused: {e}", transport.name());
            None
        }
        Err(_) => {
            Stats::add(&router.stats.refused, 1);
            tracing::debug!(%peer, "{} handshake timed out", transport.name());
            None
        }
    }
}
