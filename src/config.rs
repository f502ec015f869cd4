//! Configuration: every setting is a command-line flag with an environment variable behind it, the
//! flag winning. clap does the parsing, the defaults and `--help`; this module only adds the checks
//! that need more than a type (a thread count of 0 means "all cores"), the defaults that depend on
//! other settings (the cache directory sits next to the database), and error messages that name
//! the environment variable when that is where a bad value came from.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::admin::{Token, UploadLimits};
use crate::clients::TrustedProxies;
use crate::hits::Database;
use crate::http::route::Presets;
use crate::library::{self, Limits, Settings, WebpMode};
use crate::server::Timeouts;
use crate::signing::{Keys, Scope, Signing};
use crate::store;
use crate::variants;

/// Most event-loop threads keiko will start; far more than any host has cores.
const MAX_THREADS: usize = 1024;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "keiko",
    version,
    about = "Serves a random image from a directory as WebP and records every hit in SQLite or PostgreSQL.",
    long_about = "Serves a random image from a directory as WebP and records every hit in SQLite or \
                  PostgreSQL.\n\n\
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

    /// Directory of images to serve (JPEG, PNG, GIF and WebP files directly in it), followed live;
    /// or an S3-compatible bucket, s3://bucket/prefix (endpoint, region and credentials as AWS
    /// tools take them: AWS_* variables, then AWS_PROFILE in ~/.aws/credentials and ~/.aws/config)
    #[arg(long, env = "KEIKO_IMAGES", default_value = "assets/images")]
    pub images: PathBuf,

    /// With an s3:// library, milliseconds between two listings of the bucket (a change made
    /// through a node of a fleet sharing PostgreSQL is seen by the others at once)
    #[arg(long, env = "KEIKO_STORE_POLL_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub store_poll_ms: u64,

    /// With an s3:// library, also share renditions through the bucket (under .keiko/renditions/):
    /// a node looks there before rendering one and publishes what it renders
    #[arg(long, env = "KEIKO_STORE_RENDITIONS")]
    pub store_renditions: bool,

    /// Where hit counts are kept: a SQLite file (created if missing), or a postgres:// URL for
    /// several nodes sharing one table (what the URL leaves out comes from PGHOST, PGPORT,
    /// PGUSER, PGDATABASE, PGPASSWORD and ~/.pgpass)
    #[arg(long, env = "KEIKO_DB", default_value = "keiko.db", value_parser = Database::parse)]
    pub db: Database,

    /// Directory of encoded images kept across restarts [default: <db without .db>-cache next to
    /// a SQLite database, ./keiko-cache with PostgreSQL]
    #[arg(long, env = "KEIKO_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// WebP encoding: lossless (exact pixels), lossy:Q (quality 0-100), or auto (lossless for PNG,
    /// GIF, lossless WebP, TIFF and BMP sources, lossy:75 for JPEG, lossy WebP, JPEG XL, HEIC and
    /// AVIF)
    #[arg(long, env = "KEIKO_WEBP", default_value = "lossless")]
    pub webp: WebpMode,

    /// Downscale images whose longer side exceeds this many pixels while encoding; 0 = never
    #[arg(long, env = "KEIKO_MAX_SIDE", default_value_t = 0)]
    pub max_side: u32,

    /// Animated GIF and WebP are served animated up to this many frames; past it (or past
    /// --animation-megapixels) the first frame is served, with a warning
    #[arg(long, env = "KEIKO_ANIMATION_FRAMES", default_value_t = 500,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub animation_frames: u32,

    /// Megapixels an animation may hold over all its frames (frames x width x height), for the
    /// source and for each rendition of it
    #[arg(long, env = "KEIKO_ANIMATION_MEGAPIXELS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub animation_megapixels: u64,

    /// With a lossy or auto --webp, images whose WebP is lossy also get an AVIF encoding in the
    /// background (after every WebP), up to this many megapixels; 0 = no AVIF
    #[arg(long, env = "KEIKO_AVIF_MAX_MEGAPIXELS", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(0..=1_000))]
    pub avif_max_megapixels: u64,

    /// Skip images of more pixels than this (judged from the header, before decoding)
    #[arg(long, env = "KEIKO_MAX_PIXELS", default_value_t = 50_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_pixels: u64,

    /// Skip image files larger than this many bytes
    #[arg(long, env = "KEIKO_MAX_FILE_BYTES", default_value_t = 100 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_file_bytes: u64,

    /// Threads that encode images, at idle priority; 0 means one per usable core
    #[arg(long, env = "KEIKO_ENCODERS", default_value_t = 0)]
    pub encoders: usize,

    /// Seconds between full rescans of the image directory, the fallback for filesystems without
    /// inotify (changes are otherwise seen at once); 0 = never
    #[arg(long, env = "KEIKO_RESCAN_SECS", default_value_t = 60)]
    pub rescan_secs: u64,

    /// Longest time, in milliseconds, that a served hit waits before it is written to the database
    #[arg(long, env = "KEIKO_FLUSH_MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub flush_ms: u64,

    /// On a stopping signal, milliseconds to go on serving with /readyz answering 503 and every
    /// response closing its connection, so that a load balancer moves traffic away first
    #[arg(long, env = "KEIKO_DRAIN_MS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub drain_ms: u64,

    /// Milliseconds a client gets to send a complete request head; idle keep-alive connections
    /// are closed after the same time
    #[arg(long, env = "KEIKO_HEADER_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub header_timeout_ms: u64,

    /// Milliseconds a client may take no bytes of a response before its connection is reset.
    /// Counted from the last write that moved bytes, so a slow but steady reader is never cut off
    #[arg(long, env = "KEIKO_SEND_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub send_timeout_ms: u64,

    /// Open connections each event-loop thread serves at most; past it, new connections are
    /// closed at once so that the ones being served keep their share
    #[arg(long, env = "KEIKO_MAX_CONNS", default_value_t = 16_384,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_conns: u32,

    /// Seconds browsers and CDNs may keep a /images/<name> response (Cache-Control: public,
    /// max-age); the random routes are always no-store
    #[arg(long, env = "KEIKO_MAX_AGE", default_value_t = 86_400)]
    pub max_age: u32,

    /// Threads that render sizes, effects and ASCII art; 0 means one per usable core
    #[arg(long, env = "KEIKO_RENDERERS", default_value_t = 0)]
    pub renderers: usize,

    /// Renders that may wait for a render thread; past it, requests for new renditions get 503
    #[arg(long, env = "KEIKO_RENDER_QUEUE", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub render_queue: u32,

    /// Megapixels that renders in progress may hold at once, across all render threads (about
    /// 10 bytes each at the peak); a render past it waits, one larger than it runs alone
    #[arg(long, env = "KEIKO_RENDER_MEGAPIXELS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub render_megapixels: u64,

    /// Renders one client may start at once (cached renditions never count); see
    /// --client-renders-per-second
    #[arg(long, env = "KEIKO_CLIENT_RENDER_BURST", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub client_render_burst: u32,

    /// Renders per second a client's budget refills at; past its budget a client gets 429 with
    /// Retry-After. 0 turns the budgets off
    #[arg(long, env = "KEIKO_CLIENT_RENDERS_PER_SECOND", default_value_t = 10.0)]
    pub client_renders_per_second: f64,

    /// Balancers whose X-Forwarded-For names the client, as addresses or networks separated by
    /// commas (10.0.0.0/8, ::1); from any other peer the header is ignored
    #[arg(long, env = "KEIKO_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Memory for rendered images, in MiB
    #[arg(long, env = "KEIKO_VARIANT_MEMORY_MB", default_value_t = 256)]
    pub variant_memory_mb: u64,

    /// Disk for rendered images (in <cache dir>/variants), in MiB; 0 = keep them in memory only
    #[arg(long, env = "KEIKO_VARIANT_DISK_MB", default_value_t = 2048)]
    pub variant_disk_mb: u64,

    /// Bearer token that enables the write routes (DELETE /images/<name>); without it (or
    /// --admin-token-file) they do not exist. Never logged
    // A String, checked in `admin_token`: clap would quote a refused value in its error.
    #[arg(long, env = "KEIKO_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// File that holds the admin token (trailing newline ignored), so that it need not sit in the
    /// environment
    #[arg(long, env = "KEIKO_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,

    /// Keys for signed URLs (HMAC-SHA256), separated by commas or spaces, each at least 16
    /// printable characters; with any, the routes of --signing-scope need a signature (see
    /// `keiko sign`). The first key signs, all of them verify. Never logged
    #[arg(long, env = "KEIKO_SIGNING_KEYS", hide_env_values = true)]
    pub signing_keys: Option<String>,

    /// File that holds the signing keys, one a line
    #[arg(long, env = "KEIKO_SIGNING_KEYS_FILE", conflicts_with = "signing_keys")]
    pub signing_keys_file: Option<PathBuf>,

    /// Which routes need a signature when keys are configured: renditions (sizes, effects, ASCII
    /// art) or all (whole images and random picks too)
    #[arg(long, env = "KEIKO_SIGNING_SCOPE", value_enum, default_value = "renditions")]
    pub signing_scope: Scope,

    /// Named renditions, `name=/width/height` with effects as a query, separated by spaces:
    /// `thumb=/300/200 soft=/300/200?blur=2&grayscale art=/ascii?width=60`. Served as
    /// `?preset=<name>` on the image routes, and made for every image ahead of any request
    #[arg(long, env = "KEIKO_PRESETS", default_value = "")]
    pub presets: String,

    /// Serve only the presets: any other rendition (a size, an effect, ASCII art) gets 403
    #[arg(long, env = "KEIKO_PRESETS_ONLY")]
    pub presets_only: bool,

    #[command(subcommand)]
    pub command: Option<Command>,

    /// Largest image an upload may carry, in bytes (413 past it, decided before the body is read)
    #[arg(long, env = "KEIKO_MAX_UPLOAD_BYTES", default_value_t = 32 << 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_upload_bytes: u64,

    /// Milliseconds an upload's whole body may take to arrive (408 past it)
    #[arg(long, env = "KEIKO_BODY_TIMEOUT_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub body_timeout_ms: u64,

    /// `Access-Control-Allow-Origin` on the image and catalogue routes (and their `OPTIONS`
    /// preflights): `*`, one origin such as `https://example.com`, or `off`
    #[arg(long, env = "KEIKO_CORS_ORIGIN", default_value = "*")]
    pub cors_origin: String,
}

/// What keiko can do besides serving.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Prints a path (with its query) signed with the first signing key, for example
    /// `keiko sign '/images/cat.jpg/300/200?blur=2' --expires-in 3600`
    Sign {
        /// The path and query to sign, as a client will send it (percent-encoded)
        target: String,
        /// Seconds until the URL expires (an `exp` parameter inside the signed part)
        #[arg(long)]
        expires_in: Option<u64>,
    },
}

impl Config {
    /// The number of event-loop threads to start: the configured count, or one per usable core.
    pub fn thread_count(&self) -> anyhow::Result<usize> {
        threads_or_cores(self.threads, "--threads/KEIKO_THREADS")
    }

    pub(crate) fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_ms)
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        Timeouts { header_ms: self.header_timeout_ms, send_ms: self.send_timeout_ms }
    }

    /// The cache directory: as configured, or `<db stem>-cache` next to a SQLite database, or
    /// `keiko-cache` in the working directory.
    pub(crate) fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| match self.db.sqlite_path() {
            Some(db) => {
                let stem = db.file_stem().map_or("keiko".into(), |s| s.to_string_lossy());
                db.with_file_name(format!("{stem}-cache"))
            }
            None => PathBuf::from("keiko-cache"),
        })
    }

    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }

    fn animation(&self) -> library::encode::Budget {
        library::encode::Budget {
            frames: self.animation_frames,
            pixels: self.animation_megapixels * 1_000_000,
        }
    }

    /// The object store the library is in, when `--images` is an s3:// URL.
    pub(crate) fn bucket(&self) -> anyhow::Result<Option<store::Location>> {
        let images = self.images.to_string_lossy();
        if !images.contains("://") {
            return Ok(None);
        }
        images.parse().map(Some).map_err(|e| anyhow::anyhow!("--images/KEIKO_IMAGES: {e}"))
    }

    /// The directory the library follows: the image directory, or for a bucket its mirror in the
    /// cache directory.
    pub(crate) fn image_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(match self.bucket()? {
            Some(_) => self.cache_dir().join("originals"),
            None => self.images.clone(),
        })
    }

    /// How the mirror of an s3:// library follows the bucket.
    pub(crate) fn mirror(&self) -> anyhow::Result<store::mirror::Options> {
        Ok(store::mirror::Options {
            dir: self.image_dir()?,
            poll: Duration::from_millis(self.store_poll_ms),
            max_file_bytes: self.max_file_bytes,
        })
    }

    pub fn library(&self) -> anyhow::Result<library::Options> {
        let encoders = threads_or_cores(self.encoders, "--encoders/KEIKO_ENCODERS")?;
        Ok(library::Options {
            images: self.image_dir()?,
            cache: self.cache_dir(),
            settings: Settings { mode: self.webp, max_side: self.max_side, animation: self.animation() },
            limits: Limits { max_pixels: self.max_pixels, max_file_bytes: self.max_file_bytes },
            encoders,
            rescan: (self.rescan_secs > 0).then(|| Duration::from_secs(self.rescan_secs)),
            max_age: self.max_age,
            avif_max_pixels: self.avif_max_megapixels * 1_000_000,
        })
    }

    /// The CORS origin to send, None when it is off. An origin is a scheme, host and port
    /// (`https://example.com:8443`), nothing a header line could be broken with.
    pub(crate) fn cors_origin(&self) -> anyhow::Result<Option<String>> {
        let origin = self.cors_origin.trim();
        if origin.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let valid = origin == "*"
            || (origin.starts_with("http://") || origin.starts_with("https://"))
                && origin.bytes().all(|b| b.is_ascii_graphic())
                && !origin.trim_start_matches("https://").trim_start_matches("http://").contains('/');
        anyhow::ensure!(
            valid,
            "--cors-origin/KEIKO_CORS_ORIGIN: '*', 'off' or an origin like https://example.com (no path), got {:?}",
            self.cors_origin
        );
        Ok(Some(origin.to_string()))
    }

    pub(crate) fn upload_limits(&self) -> UploadLimits {
        UploadLimits {
            max_bytes: self.max_upload_bytes,
            body_timeout: Duration::from_millis(self.body_timeout_ms),
            max_pixels: self.max_pixels,
            max_file_bytes: self.max_file_bytes,
        }
    }

    pub(crate) fn presets(&self) -> anyhow::Result<Presets> {
        let presets =
            Presets::parse(&self.presets).map_err(|e| anyhow::anyhow!("--presets/KEIKO_PRESETS: {e}"))?;
        anyhow::ensure!(
            !self.presets_only || !presets.is_empty(),
            "--presets-only/KEIKO_PRESETS_ONLY needs presets (--presets/KEIKO_PRESETS)"
        );
        Ok(presets)
    }

    pub(crate) fn trusted_proxies(&self) -> anyhow::Result<TrustedProxies> {
        TrustedProxies::parse(&self.trusted_proxies)
    }

    /// URL signing, when keys are configured.
    pub(crate) fn signing(&self) -> anyhow::Result<Option<Signing>> {
        let keys = match (&self.signing_keys, &self.signing_keys_file) {
            (Some(keys), _) => {
                Keys::parse(keys).map_err(|e| anyhow::anyhow!("--signing-keys/KEIKO_SIGNING_KEYS: {e}"))?
            }
            (None, Some(path)) => Keys::read(path)?,
            (None, None) => return Ok(None),
        };
        Ok(Some(Signing::new(keys, self.signing_scope)))
    }

    /// The admin token from the flag, the variable or the file, if one is configured.
    pub(crate) fn admin_token(&self) -> anyhow::Result<Option<Token>> {
        match (&self.admin_token, &self.admin_token_file) {
            (Some(token), _) => {
                token.parse().map(Some).map_err(|e| anyhow::anyhow!("--admin-token/KEIKO_ADMIN_TOKEN: {e}"))
            }
            (None, Some(path)) => Token::read(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    pub(crate) fn variants(&self) -> anyhow::Result<variants::Options> {
        let renderers = threads_or_cores(self.renderers, "--renderers/KEIKO_RENDERERS")?;
        let rate = self.client_renders_per_second;
        anyhow::ensure!(
            rate.is_finite() && rate >= 0.0,
            "--client-renders-per-second/KEIKO_CLIENT_RENDERS_PER_SECOND: 0 or more, got {rate}"
        );
        Ok(variants::Options {
            dir: (self.variant_disk_mb > 0).then(|| self.cache_dir().join("variants")),
            memory_bytes: self.variant_memory_mb << 20,
            disk_bytes: self.variant_disk_mb << 20,
            renderers,
            queue: self.render_queue as usize,
            settings: Settings { mode: self.webp, max_side: 0, animation: self.animation() },
            max_pixels: self.max_pixels,
            budget_pixels: self.render_megapixels * 1_000_000,
            avif_max_pixels: self.avif_max_megapixels * 1_000_000,
            client_burst: self.client_render_burst,
            client_per_second: self.client_renders_per_second,
            max_age: self.max_age,
        })
    }

    /// Parses the command line and environment, exiting with a message on a bad value. When the
    /// value came from an environment variable, the message says which one.
    pub fn from_args() -> Config {
        Config::try_parse().unwrap_or_else(|e| {
            let from_env = env_source(&e, std::env::args_os().map(|a| a.to_string_lossy().into_owned()));
            match from_env {
                Some(var) => {
                    let value = std::env::var(&var).unwrap_or_default();
                    let value = if var == "KEIKO_ADMIN_TOKEN" { "<redacted>".into() } else { value };
                    eprintln!("{}", e.render().to_string().trim_end());
                    eprintln!("  (the value '{value}' came from the environment variable {var})");
                    std::process::exit(2);
                }
                None => e.exit(),
            }
        })
    }
}

/// The environment variable behind the argument that `error` complains about, when the command
/// line `args` did not give that flag (so the bad value can only have come from the variable).
fn env_source(error: &clap::Error, args: impl Iterator<Item = String>) -> Option<String> {
    let clap::error::ContextValue::String(arg) = error.get(clap::error::ContextKind::InvalidArg)? else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let flag = format!("--{long}");
    if args.into_iter().any(|a| a == flag || a.starts_with(&format!("{flag}="))) {
        return None;
    }
    let command = Config::command();
    let env = command.get_arguments().find(|a| a.get_long() == Some(long))?.get_env()?;
    Some(env.to_string_lossy().into_owned())
}

/// A thread count as configured, where 0 means one per usable core; `what` names the setting.
fn threads_or_cores(n: usize, what: &str) -> anyhow::Result<usize> {
    match n {
        0 => Ok(available_cores()),
        n if n > MAX_THREADS => anyhow::bail!("{what} is {n}; the most keiko starts is {MAX_THREADS}"),
        n => Ok(n),
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
        assert_eq!(c.db, Database::Sqlite("keiko.db".into()));
        assert_eq!(c.drain_ms, 0);
        assert_eq!(c.flush_ms, 100);
        assert_eq!(c.header_timeout_ms, 10_000);
        assert_eq!(c.send_timeout_ms, 60_000);
        assert_eq!(c.cors_origin().unwrap().as_deref(), Some("*"));
        assert_eq!(c.max_conns, 16_384);
        assert_eq!(c.cache_dir(), PathBuf::from("keiko-cache"));
        assert_eq!(c.webp, WebpMode::Lossless);
        assert_eq!((c.max_side, c.max_pixels, c.rescan_secs), (0, 50_000_000, 60));
        assert_eq!(
            parse(&["--db", "/var/lib/k/hits.db"]).unwrap().cache_dir(),
            PathBuf::from("/var/lib/k/hits-cache")
        );
    }

    #[test]
    fn a_bad_value_from_the_environment_names_its_variable() {
        let err = parse(&["--threads", "banana"]).unwrap_err();
        assert_eq!(env_source(&err, ["keiko".into()].into_iter()).as_deref(), Some("KEIKO_THREADS"));
        let args = ["keiko", "--threads", "banana"].map(String::from);
        assert_eq!(env_source(&err, args.into_iter()), None, "the flag was on the command line");
        let err = parse(&["--webp", "lossy:200"]).unwrap_err();
        assert_eq!(env_source(&err, ["keiko".into()].into_iter()).as_deref(), Some("KEIKO_WEBP"));
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
            &["--webp", "lossy"],
            &["--max-pixels", "0"],
            &["--rescan-secs", "-5"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn cors_origins_are_star_off_or_a_bare_origin() {
        let origin = |value: &str| parse(&["--cors-origin", value]).unwrap().cors_origin();
        assert_eq!(origin("off").unwrap(), None);
        assert_eq!(origin("https://example.com:8443").unwrap().as_deref(), Some("https://example.com:8443"));
        for bad in ["example.com", "https://a.com/path", "https://a b", "https://a\r\nX: y", ""] {
            assert!(origin(bad).is_err(), "{bad:?}");
        }
    }
}
