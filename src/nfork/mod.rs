//! The gonfork preset (docs/nfork.md): hypache as a drop-in `nforkd`. Each inbound listens on its own
//! address and copies every request to all of its outbounds, answering from the active one; a REST controller
//! (`/v1/nfork`, [`api`]) lists and changes the inbounds and reads their stats ([`stats`]).
//!
//! No Redis is involved. The outbound exchanges are the mirror's ([`crate::mirror::send_copy`] for the
//! shadows) over hypache's pooled backend connections ([`crate::upstream`]); the request flow is in
//! [`inbound`].

pub mod api;
pub mod inbound;
pub mod stats;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::flags::listen_address;
use crate::config::nfork::Inbound;
pub use crate::rt::StartError;
use crate::upstream::Upstream;
use inbound::{InboundState, NforkBody, SharedByName};

/// The inbounds being served, by name, and what their outbound connections are made with.
pub struct Controller {
    inbounds: Mutex<BTreeMap<String, InboundServer>>,
    tls: Arc<rustls::ClientConfig>,
}

/// One inbound's listener and its current configuration.
struct InboundServer {
    /// Swapped whole on every change; each request loads it once.
    state: Arc<ArcSwap<InboundState>>,
    /// The outbounds' stats and limits, kept across snapshots.
    shared: Arc<SharedByName>,
    upstream: Arc<Upstream>,
    /// Closing it stops the accept loop and ends the inbound's connections gracefully.
    close: watch::Sender<bool>,
}

impl Drop for InboundServer {
    fn drop(&mut self) {
        let _ = self.close.send(true);
    }
}

/// Serve `inbounds` and the controller on `controller_listen` until `shutdown` completes.
pub async fn run(
    inbounds: Vec<Inbound>,
    controller_listen: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let tls = crate::upstream::tls::backend_client_config(None).map_err(StartError)?;
    let controller = Arc::new(Controller {
        inbounds: Mutex::default(),
        tls,
    });
    let api_listener = bind(controller_listen)
        .await
        .map_err(|e| StartError(format!("nfork controller on {controller_listen}: {e}")))?;
    for inbound in inbounds {
        let name = inbound.name.clone();
        controller
            .add(inbound)
            .await
            .map_err(|e| StartError(format!("inbound '{name}': {e}")))?;
    }
    let addr = api_listener
        .local_addr()
        .map_err(|e| StartError(e.to_string()))?;
    eprintln!("Serving nfork API on {addr}...");
    let (_stop, stopped) = watch::channel(false);
    let api = controller.clone();
    let serve_api = serve(api_listener, stopped, move |req| {
        let api = api.clone();
        async move { api::handle(&api, req).await }
    });
    tokio::select! {
        _ = serve_api => {}
        _ = shutdown => {}
    }
    // Dropping the inbound servers closes their listeners.
    controller
        .inbounds
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    Ok(())
}

impl Controller {
    /// Start serving a new inbound (gonfork's `AddInbound`).
    pub async fn add(&self, inbound: Inbound) -> Result<(), String> {
        if self.lock().contains_key(&inbound.name) {
            return Err(format!("inbound '{}' already exists", inbound.name));
        }
        let upstream = Arc::new(
            Upstream::new(inbound::DIAL_TIMEOUT, self.tls.clone(), 1)
                .with_max_idle(inbound.idle_conn),
        );
        let shared = Arc::new(SharedByName::default());
        let state = InboundState::build(inbound.clone(), upstream.clone(), &shared)?;
        let listener = bind(&inbound.listen)
            .await
            .map_err(|e| format!("unable to add inbound '{}': {e}", inbound.name))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = Arc::new(ArcSwap::from_pointee(state));
        let (close, closed) = watch::channel(false);
        {
            let mut inbounds = self.lock();
            if inbounds.contains_key(&inbound.name) {
                return Err(format!("inbound '{}' already exists", inbound.name));
            }
            inbounds.insert(
                inbound.name.clone(),
                InboundServer {
                    state: state.clone(),
                    shared,
                    upstream,
                    close,
                },
            );
        }
        eprintln!("Listening on {addr}... (nfork inbound {:?})", inbound.name);
        tokio::spawn(serve(listener, closed, move |req: Request<Incoming>| {
            let current = state.load_full();
            async move { Ok::<_, Infallible>(current.handle(req).await) }
        }));
        Ok(())
    }

    /// Close an inbound's listener and forget it (gonfork's `RemoveInbound`).
    pub fn remove(&self, name: &str) -> Result<(), String> {
        match self.lock().remove(name) {
            Some(_) => Ok(()),
            None => Err(unknown_inbound(name)),
        }
    }

    /// Every inbound's configuration, by name.
    pub fn list(&self) -> Vec<Inbound> {
        self.lock()
            .values()
            .map(|server| server.state.load().config.clone())
            .collect()
    }

    /// One inbound's current snapshot.
    pub fn get(&self, name: &str) -> Result<Arc<InboundState>, String> {
        self.lock()
            .get(name)
            .map(|server| server.state.load_full())
            .ok_or_else(|| unknown_inbound(name))
    }

    /// The current snapshot of every inbound.
    pub fn all(&self) -> Vec<Arc<InboundState>> {
        self.lock()
            .values()
            .map(|server| server.state.load_full())
            .collect()
    }

    /// Change an inbound's configuration copy-on-write: requests in flight keep the snapshot they started with.
    pub fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut Inbound) -> Result<(), String>,
    ) -> Result<(), String> {
        let inbounds = self.lock();
        let server = inbounds.get(name).ok_or_else(|| unknown_inbound(name))?;
        let mut config = server.state.load().config.clone();
        change(&mut config)?;
        let state = InboundState::build(config, server.upstream.clone(), &server.shared)?;
        server.state.store(Arc::new(state));
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, InboundServer>> {
        self.inbounds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unknown_inbound(name: &str) -> String {
    format!("unknown inbound '{name}'")
}

async fn bind(listen: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen_address(listen)).await
}

/// Accept HTTP/1 connections on `listener` until `closed` turns true, then end the open ones gracefully.
async fn serve<F, Fut>(listener: TcpListener, mut closed: watch::Receiver<bool>, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<NforkBody>, Infallible>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = closed.wait_for(|closed| *closed) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, most likely: the open connections go on; try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle));
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = closed.wait_for(|closed| *closed) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
}
