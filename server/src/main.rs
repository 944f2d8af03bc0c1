//! The `marquee` command: parses options and runs the server until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use marquee::Server;
use marquee::config::{Cli, Command};
use std::io::Write as _;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `marquee admin` is a short command whose output a person reads: only
    // warnings on stderr unless RUST_LOG asks for more.
    let default_level = match cli.command {
        Some(Command::Admin(_) | Command::DeviceSim(_)) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();

    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Admin(args)) => {
            let mut input = std::io::stdin().lock();
            let mut output = std::io::stdout().lock();
            return Ok(marquee::admin::run(args, &mut input, &mut output).await?);
        }
        Some(Command::DeviceSim(args)) => {
            let mut output = std::io::stdout();
            return Ok(marquee::device_sim::run(args, &mut output).await?);
        }
        None => cli.serve,
    };
    let config = args.resolve().context("invalid configuration")?;
    let server = Server::start(config)
        .await
        .context("cannot start marquee")?;
    // The one line on stdout: scripts and tests read the address from it.
    // A closed stdout (a script that read the line and left) is not an error.
    let _ = writeln!(
        std::io::stdout(),
        "Marquee is listening on http://{} (MQTT on mqtt://{}, and ws://{}/mqtt)",
        server.http_addr(),
        server.mqtt_addr(),
        server.http_addr()
    );
    if let Some(link) = server.setup_link() {
        let _ = writeln!(
            std::io::stdout(),
            "No admin account yet. Open {link} to create one (the link works once, for 30 minutes)."
        );
    }

    // A storage failure ends the process non-zero: after a failed fsync
    // nothing more may be acknowledged, and the next start's recovery
    // decides what the disk holds.
    let failure = tokio::select! {
        () = wait_for_signal() => None,
        reason = server.failed() => Some(reason),
    };
    tracing::info!("shutting down");
    server.shutdown().await;
    match failure {
        None => Ok(()),
        Some(reason) => Err(anyhow::anyhow!("stopped after a storage failure: {reason}")),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
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
