//! `flowlogd run` (poll forever) and `flowlogd once` (one pass, then a JSON summary).
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::http::{ReadinessWindows, serve};
use crate::systemd::KeepAlive;

/// Exit code of a `flowlogd once` that ran to the end but left work for the next run
/// (a listing, read or commit failed and is retried then): cron jobs and scripts must be able
/// to tell it from success (0) and from a run that could not start or failed outright (1).
pub const EXIT_INCOMPLETE: u8 = 2;

/// `flowlogd once`: one full pass over every source, then one JSON line on stdout. Exits 0
/// when everything listed was read and delivered, [`EXIT_INCOMPLETE`] when errors were counted.
pub async fn once(config: Config) -> anyhow::Result<ExitCode> {
    let app = App::new(config)?;
    app.setup_sink().await?;
    let summary = app.run_once().await?;
    println!("{}", serde_json::to_string(&summary)?);
    if summary.errors > 0 {
        tracing::warn!(
            errors = summary.errors,
            exit_code = EXIT_INCOMPLETE,
            "once finished with errors (see above); what failed is retried by the next run"
        );
        return Ok(ExitCode::from(EXIT_INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}

/// `flowlogd run`: polls until SIGTERM/SIGINT, then drains, commits and exits 0.
pub async fn run(config: Config, config_path: &Path) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let listen = config.http.listen.clone();
    let windows = ReadinessWindows {
        list: config.daemon.interval * 3 + Duration::from_secs(60),
        bulk: Duration::from_secs(120).max(config.elasticsearch.request_timeout * 2),
    };
    let sd_notify = config.daemon.sd_notify;
    // Listen for signals before anything else, so a SIGTERM during startup is not lost.
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: stopping");
        if sd_notify {
            crate::systemd::notify("STOPPING=1");
        }
        signal_token.cancel();
    });
    let app = App::new(config)?;
    tracing::info!(config = %config_path.display(), version = env!("CARGO_PKG_VERSION"), "flowlogd starting");
    if !listen.is_empty() {
        let (addr, _) = serve(&listen, app.metrics(), windows, shutdown.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on http.listen {listen:?}: {e}"))?;
        tracing::info!(address = %addr, "serving /healthz, /readyz and /metrics");
    }
    // Until templates are in, documents would get dynamic mappings: retry instead of going on.
    let mut delay = Duration::from_secs(1);
    loop {
        let attempt = tokio::select! {
            r = app.setup_sink() => r,
            _ = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
        };
        match attempt {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_s = delay.as_secs(), "cannot set up Elasticsearch (index templates); retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
    if sd_notify
        && let (Some(period), Some(timeout)) = (
            crate::systemd::watchdog_period(),
            crate::systemd::watchdog_timeout(),
        )
    {
        let stop = shutdown.clone();
        let metrics = app.metrics();
        let sink = app.sink().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut keep_alive = KeepAlive::new(timeout, std::time::Instant::now());
            let mut withheld = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let mark = metrics.progress_mark().wrapping_add(sink.attempts());
                let idle = !metrics.polling.load(std::sync::atomic::Ordering::Relaxed);
                match keep_alive.check(std::time::Instant::now(), mark, idle) {
                    Ok(()) => {
                        withheld = false;
                        crate::systemd::notify("WATCHDOG=1");
                    }
                    Err(stalled) if !withheld => {
                        withheld = true;
                        tracing::error!(
                            stalled_s = stalled.as_secs(),
                            "the poll has moved nothing (no storage or bulk request, no chunk) for longer than the watchdog timeout; withholding the keep-alive so systemd restarts flowlogd (it resumes from its committed offsets)"
                        );
                    }
                    Err(_) => {}
                }
            }
        });
    }
    let summary = app
        .run(shutdown.clone(), || {
            if sd_notify && crate::systemd::notify("READY=1") {
                tracing::info!("told systemd we are ready");
            }
        })
        .await?;
    shutdown.cancel();
    tracing::info!(
        documents_indexed = summary.documents_indexed,
        documents_dead_lettered = summary.documents_dead_lettered,
        errors = summary.errors,
        "flowlogd stopped"
    );
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
