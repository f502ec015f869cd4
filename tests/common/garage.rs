//! A real S3-compatible store for a test: Garage (`cargo install garage --locked`, which
//! scripts/test.sh runs when it is missing), one node with `replication_factor = 1` in a
//! temporary directory, its S3 API on a free loopback port, one bucket and one key with fixed
//! test credentials. Stopped and resumed by PID on the same port and data; dropped, it is stopped
//! and its directory removed. [`Garage::put`], [`Garage::delete`] and [`Garage::keys`] change
//! and read the bucket as another program would, through object_store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};

pub const BUCKET: &str = "keiko";
pub const REGION: &str = "garage";
pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET: &str = "5ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7e75ec7";

pub struct Garage {
    bin: PathBuf,
    config: PathBuf,
    pub port: u16,
    child: Option<Child>,
    client: AmazonS3,
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Garage {
    /// Starts a node, lays out its one-node cluster, and makes the bucket and the key.
    pub fn start() -> Garage {
        let bin = bin();
        let dir = tempfile::tempdir().unwrap();
        let (rpc, port) = (free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let secret: String = (0..32).map(|_| format!("{:02x}", fastrand::u8(..))).collect();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{port}\"\n",
                meta = dir.path().join("meta").display(),
                data = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let client = AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_allow_http(true)
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .build()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut garage = Garage { bin, config, port, child: None, client, runtime, dir };
        garage.resume();
        let id = garage.until_ok(&["node", "id", "-q"]);
        let id = id.trim().split('@').next().unwrap().to_string();
        // `node id` reads the key on disk; the first command that needs the server waits for it.
        garage.until_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &id]);
        garage.cli(&["layout", "apply", "--version", "1"]);
        garage.until_ok(&["bucket", "create", BUCKET]);
        garage.cli(&["key", "import", "--yes", "-n", "keiko", KEY_ID, SECRET]);
        garage.cli(&["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "keiko"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while garage.runtime.block_on(garage.client.list_with_delimiter(None)).is_err() {
            assert!(Instant::now() < deadline, "Garage's S3 API did not answer:\n{}", garage.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        garage
    }

    /// Starts the server (again), on the same port and data.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the S3 API answers again after [`resume`](Self::resume).
    pub fn wait_answering(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.runtime.block_on(self.client.list_with_delimiter(None)).is_err() {
            assert!(Instant::now() < deadline, "Garage's S3 API did not answer again:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGTERM, by PID).
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let _ = child.wait();
    }

    /// The environment keiko takes the store's settings from, AWS tools' way, with HOME pointing
    /// at an empty directory so that no ~/.aws of the machine is read.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("HOME", self.dir.path().join("home").display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Puts an object, as another program would.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime.block_on(self.client.put(&Key::from(key), payload)).unwrap();
    }

    /// Puts an object under `key` exactly as given: a key another tool wrote, `%2F` and all.
    pub fn put_raw(&self, key: &str, bytes: &[u8]) {
        let payload = PutPayload::from(bytes.to_vec());
        self.runtime.block_on(self.client.put(&Key::parse(key).unwrap(), payload)).unwrap();
    }

    pub fn delete(&self, key: &str) {
        self.runtime.block_on(self.client.delete(&Key::from(key))).unwrap();
    }

    /// Every key under `prefix`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        use futures_util::StreamExt;
        let prefix = Key::from(prefix);
        let listed: Vec<_> = self.runtime.block_on(self.client.list(Some(&prefix)).collect());
        let mut keys: Vec<String> = listed.into_iter().map(|m| m.unwrap().location.to_string()).collect();
        keys.sort();
        keys
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let got = self.runtime.block_on(self.client.get(&Key::from(key))).ok()?;
        Some(self.runtime.block_on(got.bytes()).unwrap().to_vec())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("garage.log")
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin).arg("-c").arg(&self.config).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "garage {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command until it succeeds (the node takes a moment to take RPC after it starts).
    fn until_ok(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(&self.bin).arg("-c").arg(&self.config).args(args).output().unwrap();
            if out.status.success() {
                return String::from_utf8(out.stdout).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?} kept failing: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// `$GARAGE` (set by scripts/test.sh), `garage` on the PATH, or where `cargo install` puts it.
fn bin() -> PathBuf {
    if let Some(garage) = std::env::var_os("GARAGE").filter(|g| !g.is_empty()) {
        return garage.into();
    }
    let cargo_home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let candidates = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|dir| Path::new(dir).join("garage"))
        .chain([cargo_home.join("bin/garage")])
        .collect::<Vec<_>>();
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .expect("Garage is not installed: scripts/test.sh installs it (cargo install garage --locked)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
