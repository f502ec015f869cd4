//! The SQLite hit store, the embedded default: the original server's schema, WAL journal with
//! synchronous=NORMAL (a commit is a WAL append, not an fsync), and one prepared upsert run once
//! per image inside each flush transaction, returning the image's new total.
//!
//! `open` does everything that can fail for a reason the operator must fix (unwritable folder, a
//! file that is not SQLite, an incompatible `hits` table) so that keiko refuses to start instead
//! of discovering it on the first flush.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{params, Connection};

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, name TEXT UNIQUE, count INTEGER)";
const UPSERT: &str = "INSERT INTO hits (name, count) VALUES (?1, ?2) \
                      ON CONFLICT (name) DO UPDATE SET count = count + excluded.count RETURNING count";

/// How long opening waits for another process's lock before giving up.
const OPEN_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one flush waits for a lock; short, because the writer retries with backoff and must
/// get back to draining the channel.
const FLUSH_BUSY_TIMEOUT: Duration = Duration::from_millis(50);

pub(crate) struct Sqlite {
    conn: Connection,
    pub(crate) path: PathBuf,
}

impl Sqlite {
    pub(crate) fn open(path: &Path) -> anyhow::Result<Sqlite> {
        let context = || format!("cannot use database {}", path.display());
        if let Some(problem) = path_problem(path) {
            anyhow::bail!("{}: {problem}", context());
        }
        let conn = Connection::open(path).with_context(context)?;
        conn.busy_timeout(OPEN_BUSY_TIMEOUT).with_context(context)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .with_context(context)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                "{}: journal mode is {mode}, not WAL (is it on a network filesystem?)",
                path.display()
            );
        }
        conn.pragma_update(None, "synchronous", "NORMAL").with_context(context)?;
        conn.execute(SCHEMA, []).with_context(context)?;
        conn.prepare_cached(UPSERT).with_context(|| {
            format!("{}: its hits table does not have the expected schema ({SCHEMA})", context())
        })?;
        conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
            .with_context(|| format!("{}: cannot write to it", context()))?;
        conn.busy_timeout(FLUSH_BUSY_TIMEOUT).with_context(context)?;
        Ok(Sqlite { conn, path: path.to_path_buf() })
    }

    /// The counts already recorded, by image name.
    pub(crate) fn counts(&self) -> anyhow::Result<HashMap<String, u64>> {
        self.read_counts().with_context(|| format!("cannot read hits from {}", self.path.display()))
    }

    fn read_counts(&self) -> rusqlite::Result<HashMap<String, u64>> {
        let mut stmt = self.conn.prepare("SELECT name, count FROM hits WHERE name IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)))?;
        let mut counts = HashMap::new();
        for row in rows {
            let (name, count) = row?;
            counts.insert(name, count.unwrap_or(0).max(0) as u64);
        }
        Ok(counts)
    }

    /// Adds `counts[i]` hits to `names[i]`, all in one transaction (either all land or none), and
    /// returns each image's new total.
    pub(crate) fn add(&mut self, names: &[&str], counts: &[i64]) -> rusqlite::Result<Vec<u64>> {
        let tx = self.conn.transaction()?;
        let mut totals = Vec::with_capacity(names.len());
        {
            let mut upsert = tx.prepare_cached(UPSERT)?;
            for (name, count) in names.iter().zip(counts) {
                let total: i64 = upsert.query_row(params![name, count], |r| r.get(0))?;
                totals.push(total.max(0) as u64);
            }
        }
        tx.commit()?;
        Ok(totals)
    }
}

/// Why the database file at `path` cannot be opened for writing, in words SQLite does not give
/// ("unable to open database file" says nothing of the cause).
fn path_problem(path: &Path) -> Option<String> {
    if path.is_dir() {
        return Some("it is a directory, not a file".into());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Some(format!("the folder {} does not exist", parent.display()));
    }
    let writable = |p: &Path| {
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else { return true };
        // SAFETY: access(2) reads a NUL-terminated path.
        unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
    };
    if path.exists() && !writable(path) {
        return Some("permission denied: the file is not writable by this user".into());
    }
    if !writable(parent) {
        // SQLite writes its -wal and -shm files next to the database.
        return Some(format!("permission denied: cannot create files in {}", parent.display()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_across_flushes_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        let mut store = Sqlite::open(&path).unwrap();
        assert_eq!(store.add(&["a.png", "b.png"], &[2, 1]).unwrap(), [2, 1]);
        assert_eq!(store.add(&["a.png"], &[3]).unwrap(), [5], "the new total comes back");
        drop(store);
        let store = Sqlite::open(&path).unwrap();
        let counts = store.counts().unwrap();
        assert_eq!(counts.get("a.png"), Some(&5));
        assert_eq!(counts.get("b.png"), Some(&1));
        let journal: String = store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(journal, "wal");
    }

    #[test]
    fn an_existing_original_database_keeps_working() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE hits (id INTEGER PRIMARY KEY, name TEXT UNIQUE, count INTEGER);
             INSERT INTO hits (name, count) VALUES ('a.png', 41);",
        )
        .unwrap();
        drop(old);
        let mut store = Sqlite::open(&path).unwrap();
        store.add(&["a.png"], &[1]).unwrap();
        assert_eq!(store.counts().unwrap().get("a.png"), Some(&42));
    }

    #[test]
    fn unusable_databases_are_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
        let err = format!("{:#}", Sqlite::open(&junk).err().unwrap());
        assert!(err.contains("junk.db") && err.contains("not a database"), "{err}");

        let missing_dir = dir.path().join("no/such/dir/k.db");
        let err = format!("{:#}", Sqlite::open(&missing_dir).err().unwrap());
        assert!(err.contains("k.db") && err.contains("/no/such/dir does not exist"), "{err}");
        let err = format!("{:#}", Sqlite::open(dir.path()).err().unwrap());
        assert!(err.contains("is a directory"), "{err}");
        assert!(!err.contains("unable to open database file"), "{err}");

        let wrong = dir.path().join("wrong.db");
        Connection::open(&wrong)
            .unwrap()
            .execute_batch("CREATE TABLE hits (name TEXT, count INTEGER)")
            .unwrap();
        let err = format!("{:#}", Sqlite::open(&wrong).err().unwrap());
        assert!(err.contains("expected schema"), "{err}");
    }
}
