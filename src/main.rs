//! The keiko binary: parse the configuration, start logging, start keiko, and own the signals:
//! SIGHUP rescans the directory (as nginx's reload re-reads its configuration), the stopping
//! signals drain and stop keiko so that every hit handed over is written, and the other catchable
//! signals that would end the process are logged and ignored, so none of them can lose a hit.
//! Everything else lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use signal_hook::consts::signal::*;
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Signals that stop keiko gracefully.
const STOP: [i32; 4] = [SIGINT, SIGTERM, SIGQUIT, SIGXCPU];
/// Signals whose default action would end the process without a flush: logged and ignored.
const IGNORED: [i32; 8] =
    [SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGIO, libc::SIGPWR, libc::SIGSTKFLT, SIGXFSZ];

fn main() -> ExitCode {
    let config = keiko::config::Config::from_args();
    if let Some(keiko::config::Command::Sign { target, expires_in }) = &config.command {
        return match keiko::sign(&config, target, *expires_in) {
            Ok(signed) => {
                println!("{signed}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keiko sign: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("KEIKO_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs keiko until a stopping signal; an error means it could not start or lost hits.
fn serve(config: keiko::config::Config) -> anyhow::Result<()> {
    let drain = config.drain();
    // Installed before anything starts, so that a signal during startup is not lost.
    let realtime = libc::SIGRTMIN()..=libc::SIGRTMAX();
    let mut signals = Signals::new(STOP.iter().chain(&[SIGHUP]).chain(&IGNORED).copied().chain(realtime))
        .context("cannot install signal handlers")?;
    let running = keiko::start(config)?;
    let signal = signals
        .forever()
        .find(|&signal| match signal {
            SIGHUP => {
                running.rescan();
                false
            }
            s if STOP.contains(&s) => true,
            s => {
                tracing::info!("ignoring {} (SIGINT or SIGTERM stops keiko)", signal_name(s));
                false
            }
        })
        .unwrap_or(SIGTERM);
    if drain.is_zero() {
        tracing::info!("received {}, shutting down", signal_name(signal));
    } else {
        tracing::info!(
            "received {}: draining for {} ms (/readyz answers 503), then shutting down",
            signal_name(signal),
            drain.as_millis()
        );
        running.drain();
        std::thread::sleep(drain);
    }
    running.stop()
}

fn signal_name(signal: i32) -> String {
    signal_hook::low_level::signal_name(signal).map_or_else(|| format!("signal {signal}"), str::to_string)
}
