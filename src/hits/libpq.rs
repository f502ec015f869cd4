//! The connection defaults every PostgreSQL tool takes from libpq, for a client (rust-postgres)
//! that only parses the URL: what the URL leaves out comes from `PGHOST`, `PGPORT`, `PGUSER`,
//! `PGDATABASE` and `PGPASSWORD`, then the password file (`PGPASSFILE`, else `~/.pgpass`), so
//! that operators keep the password out of `KEIKO_DB`, the unit file and the process list.
//!
//! Only the pieces keiko uses are here: one host, the password file's escapes and wildcards, and
//! libpq's refusal of a password file that others may read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use postgres::config::Host;
use postgres::Config;

const DEFAULT_PORT: u16 = 5432;
/// How long one connection attempt may take, unless the URL says otherwise.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The client configuration for `url`, completed from the environment and the password file.
pub(crate) fn config(url: &str) -> anyhow::Result<Config> {
    let mut config =
        Config::from_str(url).map_err(|e| anyhow::anyhow!("KEIKO_DB is not a usable URL: {e}"))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if config.get_hosts().is_empty() {
        match env("PGHOST") {
            Some(host) if host.starts_with('/') => config.host_path(host),
            Some(host) => config.host(&host),
            None => config.host("localhost"),
        };
    }
    if config.get_ports().is_empty() {
        let port = match env("PGPORT") {
            Some(port) => port.parse().map_err(|_| anyhow::anyhow!("PGPORT is not a port number: {port}"))?,
            None => DEFAULT_PORT,
        };
        config.port(port);
    }
    if config.get_user().is_none() {
        let user = env("PGUSER").or_else(|| env("USER")).or_else(login_name);
        let user =
            user.ok_or_else(|| anyhow::anyhow!("no PostgreSQL user: put one in KEIKO_DB or PGUSER"))?;
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        if let Some(dbname) = env("PGDATABASE") {
            config.dbname(&dbname);
        }
    }
    if config.get_password().is_none() {
        if let Some(password) = env("PGPASSWORD") {
            config.password(password);
        } else if let Some(password) = password_file().and_then(|file| lookup(&file, &config)) {
            config.password(password);
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("keiko");
    }
    Ok(config)
}

/// Where the database is, for logs and errors: host, port, database and user, never the password.
pub(crate) fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(DEFAULT_PORT);
    let user = config.get_user().unwrap_or("?");
    let dbname = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{dbname}")
}

fn password_file() -> Option<PathBuf> {
    match std::env::var_os("PGPASSFILE") {
        Some(path) if !path.is_empty() => Some(path.into()),
        _ => std::env::var_os("HOME").map(|home| Path::new(&home).join(".pgpass")),
    }
}

/// The password of the first line of `file` that matches `config`, as libpq picks it.
fn lookup(file: &Path, config: &Config) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(file).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "ignoring password file {}: it has group or world access; it should be u=rw (0600) or less",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        // libpq matches a Unix-domain socket as "localhost".
        _ => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(DEFAULT_PORT).to_string();
    let user = config.get_user().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(user);
    let wanted = [host.as_str(), port.as_str(), dbname, user];
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let fields = split_fields(line);
        let [h, p, d, u, password] = fields.as_slice() else { return None };
        let matches = [h, p, d, u].iter().zip(wanted).all(|(field, want)| *field == "*" || *field == want);
        matches.then(|| password.as_bytes().to_vec())
    })
}

/// A password-file line's five fields: `:` separates them, `\` escapes `:` and `\`.
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// The login name of this process's user, as libpq defaults to it.
fn login_name() -> Option<String> {
    // SAFETY: getpwuid returns a pointer to static storage or null; read at once, on this thread.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if pw.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr((*pw).pw_name).to_str().ok().map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_lines_match_like_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:keiko:wrong\n127.0.0.1:5433:hits:keiko:p\\:a\\\\ss:word\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = |url: &str| Config::from_str(url).unwrap();
        let got = lookup(&file, &config("postgres://keiko@127.0.0.1:5433/hits"));
        assert_eq!(got.as_deref(), Some(&b"p:a\\ss:word"[..]), "escapes and a ':' in the last field");
        let got = lookup(&file, &config("postgres://keiko@127.0.0.1:5432/hits"));
        assert_eq!(got.as_deref(), Some(&b"fallback"[..]), "another port falls through to the wildcard");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&file, &config("postgres://keiko@127.0.0.1:5433/hits")), None, "world-readable");
    }

    #[test]
    fn descriptions_never_show_the_password() {
        let config = config("postgres://keiko:s3cret@db.example:6432/hits").unwrap();
        assert_eq!(describe(&config), "postgres://keiko@db.example:6432/hits");
        assert!(!format!("{config:?}").contains("s3cret"), "rust-postgres redacts it in Debug too");
    }
}
