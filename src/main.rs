//! The `hypache` binary: flags in, crypto provider and logging installed, [`hypache::run`] until SIGTERM or
//! SIGINT.

#![forbid(unsafe_code)]

use clap::Parser;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tokio::signal::unix::{signal, SignalKind};

fn main() {
    // gonfork's binary name: a symlink called `nforkd` takes nforkd's command line.
    if invoked_as("nforkd") {
        let cli = hypache::config::flags::NforkdCli::parse_go_style(std::env::args_os());
        run_nfork(&cli.config, &cli.listen);
    }
    let cli = hypache::config::flags::Cli::parse();
    if let Some(path) = &cli.nfork_config {
        run_nfork(path, &cli.nfork_listen);
    }
    let fasthttp = cli.engine == "fasthttp";
    let dry = cli.dry;
    let flavor = std::env::var("SETTINGS_FLAVOR").ok();
    let hipache_file = hypache::config::hipache::config_path(cli.config.clone(), flavor.as_deref());
    let resolved = match &hipache_file {
        // The Hipache preset: everything comes from the file.
        Some(path) => hypache::config::hipache::load(path)
            .map(|loaded| (loaded.config, loaded.warnings))
            .map_err(|e| e.to_string()),
        None => cli
            .into_config()
            .map(|config| (config, Vec::new()))
            .map_err(|e| e.to_string()),
    };
    let (config, warnings) = match resolved {
        Ok(resolved) => resolved,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    // A routes file that does not parse is a bad argument, like a bad flag: exit 2 naming its line.
    if let Some(path) = &config.routes_file {
        if let Err(e) = hypache::config::routes::load(path) {
            eprintln!("error: --routes {e}");
            std::process::exit(2);
        }
    }
    if dry {
        println!("{}", config.describe());
        std::process::exit(0);
    }
    if fasthttp {
        eprintln!("--engine fasthttp is served by hypache's native engine");
    }
    // One crypto provider for every TLS use in the process, chosen here rather than by feature unification.
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("install the ring crypto provider");
    if let Err(e) = hypache::observe::event_log::init(&config.event_log) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    // The control runtime: start-up, accepting, signals, metrics, health checks. Connections are served on
    // the worker threads that `run` starts (see `hypache::workers`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let result = runtime.block_on(async {
        // Installed before the listener is announced, so a SIGTERM right after `Listening on` is graceful.
        let shutdown = shutdown_signal();
        hypache::run(config, shutdown).await
    });
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

/// Whether the program was started under `name` (the basename of argv[0]).
fn invoked_as(name: &str) -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|path| path.file_name().map(|n| n == name))
        .unwrap_or(false)
}

/// The gonfork preset: read the inbounds (a bad file exits 2 naming the problem), serve them and the REST
/// controller until SIGTERM or SIGINT. No Redis is contacted.
fn run_nfork(path: &std::path::Path, listen: &str) -> ! {
    let inbounds = match hypache::config::nfork::load(path) {
        Ok(inbounds) => inbounds,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    rustls::crypto::ring::default_provider()
        .install_default()
        .expect("install the ring crypto provider");
    // Every inbound shares one multi-threaded runtime: the preset has no per-worker state to keep apart.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build the tokio runtime");
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal();
        hypache::nfork::run(inbounds, listen, shutdown).await
    });
    // Shadow copies still in flight are not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// SIGTERM or SIGINT: stop accepting and drain. The handlers are installed when this is called, not when the
/// returned future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
