//! Where hits are kept: the embedded SQLite file (the default, one host) or PostgreSQL (a fleet
//! sharing one table). `KEIKO_DB` picks it; the writer thread sees only this one interface.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::postgres::{Applied, Postgres};
use super::sqlite::Sqlite;

/// The configured database: a `postgres://` or `postgresql://` URL, or else a SQLite file path.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// The URL as given; it may hold a password, so it is never printed.
    Postgres(String),
}

impl Database {
    /// Reads the `--db` value (clap's parser for it).
    pub(crate) fn parse(value: &str) -> anyhow::Result<Database> {
        if value.is_empty() {
            anyhow::bail!("empty: give a SQLite file or a postgres:// URL");
        }
        let lower = value.get(..13).unwrap_or(value).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Database::Postgres(value.to_string()))
        } else {
            Ok(Database::Sqlite(value.into()))
        }
    }

    /// The SQLite file, if that is the database.
    pub(crate) fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }

    /// The URL of a fleet's shared PostgreSQL database, None for SQLite.
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        match self {
            Database::Sqlite(_) => None,
            Database::Postgres(url) => Some(url),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "Sqlite({path:?})"),
            Database::Postgres(_) => f.write_str("Postgres(<url redacted>)"),
        }
    }
}

/// The open database the writer commits to.
pub struct Store(Backend);

enum Backend {
    Sqlite(Sqlite),
    Postgres(Box<Postgres>),
}

impl Store {
    pub fn open(db: &Database) -> anyhow::Result<Store> {
        Ok(match db {
            Database::Sqlite(path) => Store(Backend::Sqlite(Sqlite::open(path)?)),
            Database::Postgres(url) => Store(Backend::Postgres(Box::new(Postgres::open(url)?))),
        })
    }

    /// Where the hits go, for logs: never a password.
    pub(crate) fn describe(&self) -> String {
        match &self.0 {
            Backend::Sqlite(db) => db.path.display().to_string(),
            Backend::Postgres(pg) => pg.describe.clone(),
        }
    }

    /// The counts to start from: those in the database, or none when PostgreSQL does not answer
    /// yet (the writer's read-back fills them in once it does).
    pub(crate) fn starting_counts(&mut self) -> anyhow::Result<HashMap<String, u64>> {
        match &mut self.0 {
            Backend::Sqlite(db) => db.counts(),
            Backend::Postgres(pg) => Ok(pg.counts().unwrap_or_default()),
        }
    }

    /// Every image's count in the database, by name.
    pub(crate) fn counts(&mut self) -> anyhow::Result<HashMap<String, u64>> {
        match &mut self.0 {
            Backend::Sqlite(db) => db.counts(),
            Backend::Postgres(pg) => pg.counts(),
        }
    }

    /// Adds `counts[i]` hits to `names[i]` atomically, as flush number `seq`; after a failure,
    /// retry with the same batch and number. Returns the new totals of the names it added to
    /// (none when an earlier attempt of this batch had already committed).
    pub fn add(&mut self, names: &[&str], counts: &[i64], seq: u64) -> anyhow::Result<HashMap<String, u64>> {
        match &mut self.0 {
            Backend::Sqlite(db) => {
                let totals = db.add(names, counts)?;
                Ok(names.iter().map(|n| n.to_string()).zip(totals).collect())
            }
            Backend::Postgres(pg) => match pg.add(names, counts, seq)? {
                Applied::Totals(totals) => Ok(totals),
                Applied::AlreadyApplied => {
                    tracing::info!(
                        "flush {seq} had committed before its reply was lost; not adding it again"
                    );
                    Ok(HashMap::new())
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_postgres_and_anything_else_is_a_sqlite_file() {
        let pg = Database::parse("postgresql://keiko:pw@db/hits").unwrap();
        assert!(matches!(pg, Database::Postgres(_)));
        assert!(!format!("{pg:?}").contains("pw"), "the URL is never printed");
        assert!(matches!(Database::parse("POSTGRES://db/hits").unwrap(), Database::Postgres(_)));
        assert_eq!(Database::parse("keiko.db").unwrap(), Database::Sqlite("keiko.db".into()));
        assert_eq!(Database::parse("postgres.db").unwrap(), Database::Sqlite("postgres.db".into()));
        assert!(Database::parse("").is_err());
    }
}
