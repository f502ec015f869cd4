//! Configuration: every setting is a command-line flag with an environment variable behind it, the
//! flag winning. clap does the parsing, the defaults and `--help`; this module only adds the checks
//! that need more than a type (a thread count of 0 means "all cores").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Most event-loop threads keiko will start; far more than any host has cores.
const MAX_THREADS: usize = 1024;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "keiko",
    version,
    about = "Serves a random image from a directory as WebP and records every hit in SQLite.",
    long_about = "Serves a random image from a directory as WebP and records every hit in SQLite.\n\n\
                  Every option can also be set with the environment variable shown next to it; \
                  a flag given on the command line wins over the variable."
)]
pub struct Config {
    /// Address to listen on, as IP:port (port 0 picks a free port, logged when ready)
    #[arg(long, env = "KEIKO_ADDR", default_value = "127.0.0.1:8099")]
    pub addr: SocketAddr,

    /// Event-loop threads, one per core; 0 means one for every core this process may use
    #[arg(long, env = "KEIKO_THREADS", default_value_t = 0)]
    pub threads: usize,

    /// Directory of images to serve (JPEG, PNG, GIF and WebP; other files are ignored)
    #[arg(long, env = "KEIKO_IMAGES", default_value = "assets/images")]
    pub images: PathBuf,

    /// SQLite database that holds the hit counts (created if missing)
    #[arg(long, env = "KEIKO_DB", default_value = "keiko.db")]
    pub db: PathBuf,

    /// Longest time, in milliseconds, that a served hit waits before it is written to the database
    #[arg(long, env = "KEIKO_FLUSH_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub flush_ms: u64,

    /// Milliseconds a client gets to send a complete request head; idle keep-alive connections
    /// are closed after the same time
    #[arg(long, env = "KEIKO_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub header_timeout_ms: u64,

    /// Open connections each event-loop thread serves at most; past it, new connections are
    /// closed at once so that the ones being served keep their share
    #[arg(long, env = "KEIKO_MAX_CONNS", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_conns: u32,
}

impl Config {
    /// The number of event-loop threads to start: the configured count, or one per usable core.
    pub fn thread_count(&self) -> anyhow::Result<usize> {
        match self.threads {
            0 => Ok(available_cores()),
            n if n > MAX_THREADS => {
                anyhow::bail!("--threads/KEIKO_THREADS is {n}; the most keiko starts is {MAX_THREADS}")
            }
            n => Ok(n),
        }
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_ms)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
}

/// Cores this process may run on (its CPU affinity and cgroup quota, not just the machine's count).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("keiko").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_documented_interface() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:8099".parse().unwrap());
        assert_eq!(c.threads, 0);
        assert_eq!(c.images, PathBuf::from("assets/images"));
        assert_eq!(c.db, PathBuf::from("keiko.db"));
        assert_eq!(c.flush_ms, 100);
        assert_eq!(c.header_timeout_ms, 10_000);
        assert_eq!(c.max_conns, 16_384);
    }

    #[test]
    fn zero_threads_means_every_core() {
        let c = parse(&["--threads", "0"]).unwrap();
        assert_eq!(c.thread_count().unwrap(), available_cores());
        assert_eq!(parse(&["--threads", "3"]).unwrap().thread_count().unwrap(), 3);
    }

    #[test]
    fn absurd_thread_counts_are_refused() {
        assert!(parse(&["--threads", "5000"]).unwrap().thread_count().is_err());
    }

    #[test]
    fn bad_values_are_rejected_by_the_parser() {
        for bad in [
            &["--addr", "localhost"][..],
            &["--threads", "-1"],
            &["--flush-ms", "0"],
            &["--flush-ms", "soon"],
            &["--header-timeout-ms", "5"],
            &["--max-conns", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
