//! A real PostgreSQL server for a test: Debian's `postgresql` binaries, a fresh cluster made by
//! initdb in a temporary directory, run as the unprivileged `postgres` user when the test runs as
//! root, listening on a free loopback port with password authentication. Stopped and restarted
//! by PID; dropped, it is stopped and its directory removed.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "keiko";
pub const PASSWORD: &str = "s3cret-Pw";
pub const DATABASE: &str = "hits";

pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// initdb, start, and create the `hits` database owned by [`USER`].
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        // The server runs as `postgres` and must reach its data directory inside ours.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        let owner = as_root().then(postgres_ids);
        if let Some((uid, gid)) = owner {
            for path in [&data, &pwfile] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", USER, "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"]);
        initdb.arg(format!("--pwfile={}", pwfile.display()));
        let out = as_owner(&mut initdb, owner).output().unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let mut pg = Postgres { bin, data, port, owner, child: None, _dir: dir };
        pg.resume();
        pg.client("postgres").batch_execute(&format!("CREATE DATABASE {DATABASE}")).unwrap();
        pg
    }

    /// The URL keiko gets, without the password (it comes from PGPASSWORD or a password file).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Starts the server again on the same port and data, and waits until it takes connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D").arg(&self.data).arg("-p").arg(self.port.to_string()).arg("-k").arg(&self.data);
        cmd.args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"]);
        let child =
            as_owner(&mut cmd, self.owner).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_client("postgres").is_none() {
            assert!(Instant::now() < deadline, "PostgreSQL did not start on port {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (SIGINT): every client connection is cut, as in a restart or failover.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = child.wait();
    }

    /// The sum of every count in `hits`.
    pub fn sum(&self) -> u64 {
        let row =
            self.client(DATABASE).query_one("SELECT coalesce(sum(count), 0)::bigint FROM hits", &[]).unwrap();
        row.get::<_, i64>(0) as u64
    }

    /// Runs SQL in the `hits` database.
    pub fn execute(&self, sql: &str) {
        self.client(DATABASE).batch_execute(sql).unwrap();
    }

    pub fn counts(&self) -> HashMap<String, u64> {
        let rows = self.client(DATABASE).query("SELECT name, count FROM hits", &[]).unwrap();
        rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1) as u64)).collect()
    }

    fn client(&self, db: &str) -> postgres::Client {
        self.try_client(db).expect("PostgreSQL is up")
    }

    fn try_client(&self, db: &str) -> Option<postgres::Client> {
        let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{db}", self.port);
        postgres::Client::connect(&url, postgres::NoTls).ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// Debian's server binaries, newest version first.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.filter_map(|d| Some(d.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    found.retain(|bin| bin.join("postgres").exists());
    found.sort();
    found.pop().expect(
        "PostgreSQL's server is not installed (/usr/lib/postgresql/*/bin/postgres): \
         scripts/test.sh installs Debian's postgresql package",
    )
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `postgres` user's uid and gid, which Debian's package creates.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
        assert!(out.status.success(), "no postgres user: install Debian's postgresql package");
        String::from_utf8(out.stdout).unwrap().trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    cmd
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A password file readable by this user only, as libpq requires.
pub fn password_file(dir: &Path, line: &str) -> PathBuf {
    let path = dir.join("pgpass");
    std::fs::write(&path, format!("{line}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}
