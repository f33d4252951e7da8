//! Startup and shutdown: bind first (so `/health` answers 503 while the
//! model loads), load on a blocking thread, serve; on SIGINT/SIGTERM stop
//! accepting, let in-flight requests finish within the deadline, then
//! cancel what is left and return.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::routes::router;
use crate::state::{AppState, Loader, Phase};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Required as `Authorization: Bearer KEY` on `/v1/*` when set.
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// What the model is called while it loads.
    pub model_label: String,
    /// Print the listening and ready lines on stdout.
    pub announce: bool,
}

impl ServerConfig {
    pub fn new(host: impl Into<String>, port: u16, model_label: impl Into<String>) -> Self {
        ServerConfig {
            host: host.into(),
            port,
            api_key: None,
            max_body_bytes: 8 << 20,
            shutdown_timeout: Duration::from_secs(30),
            model_label: model_label.into(),
            announce: true,
        }
    }
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
    #[error("loading the model: {0}")]
    Load(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// A server running on the current tokio runtime.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    trigger: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Starts the graceful shutdown (as a signal would).
    pub fn shutdown(&self) {
        self.state.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.trigger.send(true);
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e.to_string()))),
        }
    }

    /// Waits for the model to load (or fail to).
    pub async fn ready(&self) -> Result<(), ServerError> {
        loop {
            match &*self.state.phase.read().map_err(|_| ServerError::Load("state lock poisoned".into()))? {
                Phase::Ready(_) => return Ok(()),
                Phase::Failed(e) => return Err(ServerError::Load(e.clone())),
                Phase::Loading => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Binds, starts loading the model and serves. Must run inside a tokio runtime.
pub async fn start(cfg: ServerConfig, loader: Loader) -> Result<RunningServer, ServerError> {
    let bind = format!("{}:{}", cfg.host, cfg.port);
    let listener = TcpListener::bind(&bind).await.map_err(|source| ServerError::Bind { addr: bind.clone(), source })?;
    let addr = listener.local_addr()?;
    let state = Arc::new(AppState::new(cfg.model_label.clone(), cfg.api_key.clone(), cfg.max_body_bytes));
    let (trigger, trig_rx) = watch::channel(false);
    if cfg.announce {
        println!("ferrum serve: listening on http://{addr} (loading {})", cfg.model_label);
        let _ = std::io::stdout().flush();
    }
    spawn_loader(state.clone(), loader, trigger.clone(), addr, cfg.announce);

    let app = router(state.clone());
    let mut stop_rx = trig_rx.clone();
    let graceful = async move {
        let _ = stop_rx.wait_for(|v| *v).await;
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(graceful);
    let st = state.clone();
    let timeout = cfg.shutdown_timeout;
    let task = tokio::spawn(async move {
        let srv = std::future::IntoFuture::into_future(server);
        tokio::pin!(srv);
        let mut rx = trig_rx;
        tokio::select! {
            r = &mut srv => return r.map_err(ServerError::from),
            _ = rx.wait_for(|v| *v) => {}
        }
        st.shutting_down.store(true, Ordering::SeqCst);
        let result = match tokio::time::timeout(timeout, &mut srv).await {
            Ok(r) => r.map_err(ServerError::from),
            Err(_) => {
                // Deadline: cancel what is still running; its streams end.
                if let Some(b) = st.bundle() {
                    b.engine.abort_all();
                }
                match tokio::time::timeout(Duration::from_secs(5), &mut srv).await {
                    Ok(r) => r.map_err(ServerError::from),
                    Err(_) => Ok(()),
                }
            }
        };
        let failed = match &*st.phase.read().map_err(|_| ServerError::Load("state lock poisoned".into()))? {
            Phase::Failed(e) => Some(e.clone()),
            _ => None,
        };
        match failed {
            Some(e) => Err(ServerError::Load(e)),
            None => result,
        }
    });
    Ok(RunningServer { addr, state, trigger, task })
}

fn spawn_loader(state: Arc<AppState>, loader: Loader, trigger: watch::Sender<bool>, addr: SocketAddr, announce: bool) {
    tokio::task::spawn_blocking(move || match loader() {
        Ok(bundle) => {
            if announce {
                let c = bundle.engine.config();
                println!(
                    "ferrum serve: ready on http://{addr}: model {}, KV capacity {} tokens ({} blocks), context {} tokens, load {:.1} s, warm-up {:.0} ms",
                    bundle.name(),
                    c.kv_tokens(),
                    c.n_blocks,
                    c.max_model_len,
                    bundle.load_time.as_secs_f64(),
                    bundle.engine.warmup_time().as_secs_f64() * 1e3,
                );
                let _ = std::io::stdout().flush();
            }
            state.set_phase(Phase::Ready(Arc::new(bundle)));
        }
        Err(e) => {
            eprintln!("ferrum serve: loading failed: {e}");
            state.set_phase(Phase::Failed(e));
            state.shutting_down.store(true, Ordering::SeqCst);
            let _ = trigger.send(true);
        }
    });
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn serve(cfg: ServerConfig, loader: Loader) -> Result<(), ServerError> {
    let announce = cfg.announce;
    let server = start(cfg, loader).await?;
    let state = server.state.clone();
    let mut stopped = server.trigger.subscribe();
    tokio::select! {
        _ = shutdown_signal() => {
            if announce {
                eprintln!("ferrum serve: shutting down (finishing in-flight requests)");
            }
            server.shutdown();
        }
        _ = stopped.wait_for(|v| *v) => {}
    }
    let r = server.wait().await;
    // The engine thread stops when the last handle to it goes.
    drop(state);
    r
}

/// Builds a multi-threaded runtime and serves on it (for the CLI).
pub fn run(cfg: ServerConfig, loader: Loader) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(ServerError::Runtime)?;
    rt.block_on(serve(cfg, loader))
}
