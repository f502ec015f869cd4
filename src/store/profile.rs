//! Where the endpoint, region and credentials of an object store come from: the way AWS tools take
//! them, so that a host already set up for the `aws` command needs nothing more for keiko.
//!
//! Each setting comes from the first of: the environment (`AWS_REGION` or `AWS_DEFAULT_REGION`,
//! `AWS_ENDPOINT_URL`), then the profile named by `AWS_PROFILE` (else `default`) in the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) and the shared
//! config file (`AWS_CONFIG_FILE`, else `~/.aws/config`, where a profile's section is
//! `[profile NAME]`, or `[default]`). The credentials come as one set, as AWS tools take them:
//! `AWS_ACCESS_KEY_ID` with `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`) when both are set,
//! else the profile's keys; with none, object_store asks the container or instance metadata
//! service. Profiles that delegate (`role_arn`, `sso_*`, `credential_process`) are not followed.
//! Nothing here is ever logged: the secret's Debug form is redacted.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

/// What was found, each part from the first place that had it.
#[derive(Default, Clone, PartialEq, Eq)]
pub(crate) struct Profile {
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) session_token: Option<String>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Profile {
    /// The settings of this process's environment and shared files.
    pub(crate) fn resolve() -> anyhow::Result<Profile> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let home = env("HOME").map(PathBuf::from);
        let file =
            |var: &str, default: &str| env(var).map(PathBuf::from).or(home.as_ref().map(|h| h.join(default)));
        let name = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let credentials =
            read_section(file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"), &name, false)?;
        let config = read_section(file("AWS_CONFIG_FILE", ".aws/config"), &name, true)?;
        Ok(Profile::merge(env, &credentials, &config))
    }

    /// The environment first, then the credentials file, then the config file.
    fn merge(
        env: impl Fn(&str) -> Option<String>,
        credentials: &HashMap<String, String>,
        config: &HashMap<String, String>,
    ) -> Profile {
        let files = |key: &str| credentials.get(key).or(config.get(key)).cloned();
        let (access_key_id, secret_access_key, session_token) =
            match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => (Some(id), Some(secret), env("AWS_SESSION_TOKEN")),
                _ => (files("aws_access_key_id"), files("aws_secret_access_key"), files("aws_session_token")),
            };
        Profile {
            region: env("AWS_REGION").or(env("AWS_DEFAULT_REGION")).or(files("region")),
            endpoint: env("AWS_ENDPOINT_URL").or(files("endpoint_url")),
            access_key_id,
            secret_access_key,
            session_token,
        }
    }

    /// `builder` with the credentials found, and every other `AWS_*` variable object_store knows
    /// (the metadata services' and web identity's, `AWS_ALLOW_HTTP`, ...), as its `from_env` would
    /// set them, but none of the ones settled here: a stray session token must not join a
    /// profile's keys.
    pub(crate) fn apply(&self, mut builder: AmazonS3Builder) -> AmazonS3Builder {
        const SETTLED: [&str; 6] = [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT_URL",
        ];
        for (key, value) in std::env::vars() {
            if key.starts_with("AWS_") && !SETTLED.contains(&key.as_str()) {
                if let Ok(config_key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(config_key, value);
                }
            }
        }
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = &self.session_token {
                builder = builder.with_token(token);
            }
        }
        builder
    }
}

/// The keys of profile `name` in an INI file; none when there is no such file. In the config
/// file a profile other than `default` is `[profile NAME]`.
fn read_section(path: Option<PathBuf>, name: &str, config: bool) -> anyhow::Result<HashMap<String, String>> {
    let Some(path) = path else { return Ok(HashMap::new()) };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(section(&text, name, config)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn section(text: &str, name: &str, config: bool) -> HashMap<String, String> {
    let wanted = |header: &str| {
        let header = header.trim();
        match config && name != "default" {
            true => header.strip_prefix("profile").is_some_and(|rest| rest.trim() == name),
            false => header == name,
        }
    };
    let mut keys = HashMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = wanted(header);
            continue;
        }
        if let (true, Some((key, value))) = (inside, line.split_once('=')) {
            keys.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = sdefault\n\n\
                               [garage]\n# a comment\naws_access_key_id=GKgarage\naws_secret_access_key = sgarage\n";
    const CONFIG: &str = "[default]\nregion = us-east-1\n[profile garage]\nregion = garage\n\
                          endpoint_url = http://127.0.0.1:3900\n[garage]\nregion = wrong\n";

    #[test]
    fn a_profile_is_read_from_both_files_as_aws_tools_read_it() {
        let credentials = section(CREDENTIALS, "garage", false);
        let config = section(CONFIG, "garage", true);
        let profile = Profile::merge(|_| None, &credentials, &config);
        assert_eq!(profile.access_key_id.as_deref(), Some("GKgarage"));
        assert_eq!(profile.secret_access_key.as_deref(), Some("sgarage"));
        assert_eq!(profile.region.as_deref(), Some("garage"), "[profile garage], not [garage]");
        assert_eq!(profile.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        let default = Profile::merge(
            |_| None,
            &section(CREDENTIALS, "default", false),
            &section(CONFIG, "default", true),
        );
        assert_eq!(default.region.as_deref(), Some("us-east-1"));
        assert_eq!(default.access_key_id.as_deref(), Some("AKDEFAULT"));
    }

    #[test]
    fn the_environment_wins_with_whole_credentials_and_secrets_never_show() {
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("AKenv".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("from-env-secret".to_string()),
            "AWS_DEFAULT_REGION" => Some("eu-west-1".to_string()),
            _ => None,
        };
        let (credentials, config) = (section(CREDENTIALS, "garage", false), section(CONFIG, "garage", true));
        let profile = Profile::merge(env, &credentials, &config);
        assert_eq!(profile.access_key_id.as_deref(), Some("AKenv"));
        assert_eq!(profile.secret_access_key.as_deref(), Some("from-env-secret"));
        assert_eq!(profile.region.as_deref(), Some("eu-west-1"));
        let shown = format!("{profile:?}");
        assert!(!shown.contains("from-env-secret") && shown.contains("<redacted>"), "{shown}");
        // Half a set in the environment (a stray token, a secret alone) is not mixed with a profile's.
        let stray = |name: &str| match name {
            "AWS_SECRET_ACCESS_KEY" | "AWS_SESSION_TOKEN" => Some("stray".to_string()),
            _ => None,
        };
        let profile = Profile::merge(stray, &credentials, &config);
        assert_eq!(profile.access_key_id.as_deref(), Some("GKgarage"));
        assert_eq!(profile.secret_access_key.as_deref(), Some("sgarage"));
        assert_eq!(profile.session_token, None);
    }

    #[test]
    fn missing_files_are_no_profile() {
        let none = read_section(Some(PathBuf::from("/nonexistent/credentials")), "default", false).unwrap();
        assert!(none.is_empty());
    }
}
