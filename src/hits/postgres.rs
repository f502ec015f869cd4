//! The PostgreSQL hit store, for a fleet of keiko nodes adding to the same rows.
//!
//! Each flush is one statement: the batch goes as two arrays through `unnest` into an upsert
//! that adds to the counts and returns the new totals. A flush whose reply is lost (the server
//! went away just after committing) cannot be told from one that never ran, so the statement
//! also advances this node's flush number in `keiko_flushes`, and adds the hits only if it did:
//! retrying the same batch with the same number after a lost reply adds nothing twice. The
//! batch's rows are sorted by name so that nodes flushing together lock rows in one order and
//! never deadlock.
//!
//! The connection is made at start, so that a wrong password, database or table shape stops keiko
//! there (a server that does not answer at all does not: keiko serves and holds the hits, as it
//! does when the server goes away later), and again whenever a flush finds it broken, the tables
//! checked on each new connection; the writer's retries with backoff pace the attempts.

use std::collections::HashMap;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};

use super::libpq;

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS hits (name TEXT PRIMARY KEY, count BIGINT NOT NULL DEFAULT 0);
     CREATE TABLE IF NOT EXISTS keiko_flushes (
         node TEXT PRIMARY KEY, seq BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())";
/// Flush numbers of nodes that have not flushed for a week are of no more use.
const PRUNE: &str = "DELETE FROM keiko_flushes WHERE at < now() - interval '7 days'";
const FLUSH: &str = "WITH fresh AS (
         INSERT INTO keiko_flushes (node, seq) VALUES ($3, $4)
         ON CONFLICT (node) DO UPDATE SET seq = EXCLUDED.seq, at = now()
             WHERE keiko_flushes.seq < EXCLUDED.seq
         RETURNING 1)
     INSERT INTO hits (name, count)
     SELECT * FROM unnest($1::text[], $2::bigint[]) WHERE EXISTS (SELECT 1 FROM fresh)
     ON CONFLICT (name) DO UPDATE SET count = hits.count + EXCLUDED.count
     RETURNING name, count";
/// Server-side limit on one statement, so a flush stuck behind a lock gives up and is retried.
const STATEMENT_TIMEOUT_MS: u32 = 10_000;

pub(crate) struct Postgres {
    config: Config,
    client: Option<Client>,
    /// This process's name in `keiko_flushes`: unique per start, so a restarted node never
    /// collides with the flush numbers of its previous life.
    node: String,
    /// Where the database is, without the password.
    pub(crate) describe: String,
    /// Whether old rows of `keiko_flushes` were removed yet (once per process).
    pruned: bool,
}

/// What one flush did.
pub(crate) enum Applied {
    /// The new totals, by name.
    Totals(HashMap<String, u64>),
    /// An earlier attempt at this very batch had committed; nothing was added again.
    AlreadyApplied,
}

impl Postgres {
    pub(crate) fn open(url: &str) -> anyhow::Result<Postgres> {
        let mut config = libpq::config(url)?;
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(2))
            .keepalives_retries(3)
            .options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
        let describe = libpq::describe(&config);
        let node = format!("{}-{}-{:016x}", hostname(), std::process::id(), fastrand::u64(..));
        let mut store = Postgres { config, client: None, node, describe, pruned: false };
        match store.client() {
            Ok(_) => {}
            // No answer at all (refused, unreachable, timed out): serve anyway, holding the hits
            // until it answers, as when it goes away later. An answer that refuses (login,
            // database, schema) is a configuration the operator must fix: stop here.
            Err(e) if e.as_db_error().is_none() => tracing::warn!(
                "PostgreSQL at {} does not answer ({e}); serving anyway, hits wait in memory until it does",
                store.describe
            ),
            Err(e) => {
                let wrong_table = [
                    SqlState::INVALID_COLUMN_REFERENCE,
                    SqlState::UNDEFINED_COLUMN,
                    SqlState::DATATYPE_MISMATCH,
                ];
                let hint = match e.code() {
                    Some(code) if wrong_table.contains(code) => {
                        " (its hits table does not have the expected schema: name TEXT PRIMARY KEY, count BIGINT)"
                    }
                    _ => "",
                };
                let context = format!("cannot use PostgreSQL at {}{hint}", store.describe);
                return Err(anyhow::Error::new(e).context(context));
            }
        }
        Ok(store)
    }

    /// Every image's count in the database, by name.
    pub(crate) fn counts(&mut self) -> anyhow::Result<HashMap<String, u64>> {
        let rows = self.with_client(|c| c.query("SELECT name, count FROM hits", &[]))?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64)).collect())
    }

    /// Adds `counts[i]` hits to `names[i]` as flush number `seq` of this node, in one statement.
    /// After an error, call again with the same batch and number: it is added exactly once.
    pub(crate) fn add(&mut self, names: &[&str], counts: &[i64], seq: u64) -> anyhow::Result<Applied> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let node = self.node.clone();
        let rows = self.with_client(|c| c.query(FLUSH, &[&names, &counts, &node, &seq]))?;
        if rows.is_empty() && !names.is_empty() {
            return Ok(Applied::AlreadyApplied);
        }
        Ok(Applied::Totals(rows.iter().map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64)).collect()))
    }

    /// The connection, made (and the tables checked) if there is none.
    fn client(&mut self) -> Result<&mut Client, postgres::Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let mut client = self.config.connect(NoTls)?;
            // Nodes starting together may race to create the tables; the loser's retry sees them.
            client.batch_execute(SCHEMA).or_else(|_| client.batch_execute(SCHEMA))?;
            if !self.pruned {
                client.batch_execute(PRUNE)?;
                self.pruned = true;
            }
            // Planned, not run: fails when `hits` has another shape than the upsert needs (a
            // missing unique index on `name` shows only when the statement is planned).
            let (names, counts): (&[&str], &[i64]) = (&[], &[]);
            client.query(&format!("EXPLAIN {FLUSH}"), &[&names, &counts, &self.node, &0i64])?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected just above"))
    }

    /// Runs `query` on the connection, connecting first if need be; an error drops the
    /// connection, so the next call starts on a fresh one.
    fn with_client<T>(
        &mut self,
        query: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> anyhow::Result<T> {
        let result = self.client().and_then(query);
        if result.is_err() {
            self.client = None;
        }
        Ok(result?)
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "keiko".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
