//! Signed URLs: an operator who puts keiko on the internet can make every rendition (or every
//! image route) need a signature that only holders of a key can make, so that no one else can
//! choose the work keiko does (imgproxy's reason for signing: "an attacker won't be able to
//! perform a denial-of-service attack by requesting multiple different image resizes").
//!
//! The scheme is meant to be written in a few lines of any language:
//!
//! ```text
//! target    = path and query as sent, e.g. /images/cat.jpg/300/200?blur=2&exp=1767225600
//! signature = base64url, without padding, of HMAC-SHA256(key, target)
//! signed    = target + ("&" if target has a "?" else "?") + "sig=" + signature
//! ```
//!
//! `sig` must be the last parameter; everything before it is signed, including an optional
//! `exp` (Unix seconds) after which the URL is refused. Several keys may be configured at once:
//! a signature by any of them is accepted (rotation without downtime), `keiko sign` signs with
//! the first. The check runs before any other work and compares in constant time. Keys are never
//! logged: their Debug form is redacted.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http::route::Endpoint;

/// The shortest key accepted, in bytes: shorter ones can be guessed.
const MIN_KEY_BYTES: usize = 16;

/// The signing keys, the first of which signs. Debug never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys(Vec<Box<[u8]>>);

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys(<{} redacted>)", self.0.len())
    }
}

impl Keys {
    /// Keys separated by commas, spaces or newlines (the variable, or a file's lines).
    pub fn parse(text: &str) -> anyhow::Result<Keys> {
        let keys: Vec<Box<[u8]>> = text
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().into())
            .collect();
        anyhow::ensure!(!keys.is_empty(), "no signing key given");
        for (n, key) in keys.iter().enumerate() {
            anyhow::ensure!(
                key.len() >= MIN_KEY_BYTES && key.iter().all(u8::is_ascii_graphic),
                "signing key {} of {}: at least {MIN_KEY_BYTES} printable ASCII characters (its value is not shown)",
                n + 1,
                keys.len()
            );
        }
        Ok(Keys(keys))
    }

    /// The keys in a file, for `KEIKO_SIGNING_KEYS_FILE`.
    pub(crate) fn read(path: &Path) -> anyhow::Result<Keys> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the signing keys file {}: {e}", path.display()))?;
        Keys::parse(&text).map_err(|e| anyhow::anyhow!("{e} (in {})", path.display()))
    }
}

/// Which routes need a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// Renditions only (sizes, effects, ASCII art): the routes whose work a client chooses.
    Renditions,
    /// Every image and catalogue route, whole images and random picks included.
    All,
}

/// Why a request's signature was refused (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Wrong,
    Expired,
    BadExpiry,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "signature: this URL needs a signature (a last parameter sig=...)",
            Refusal::Wrong => "signature: does not match this URL",
            Refusal::Expired => "signature: this URL has expired (exp)",
            Refusal::BadExpiry => "signature: exp must be Unix seconds, given once",
        }
    }
}

#[derive(Debug)]
pub struct Signing {
    keys: Keys,
    scope: Scope,
}

impl Signing {
    pub fn new(keys: Keys, scope: Scope) -> Signing {
        Signing { keys, scope }
    }

    /// Whether `endpoint` needs a signature.
    pub fn needs(&self, endpoint: &Endpoint) -> bool {
        match (self.scope, endpoint) {
            (_, Endpoint::Image { variant: Some(_), .. }) => true,
            // A preset is work the operator chose, and is rendered ahead of any request.
            (Scope::Renditions, Endpoint::Preset { .. }) => false,
            (Scope::All, Endpoint::Preflight { .. }) => false,
            (Scope::All, endpoint) => endpoint.route().is_public(),
            (Scope::Renditions, _) => false,
        }
    }

    /// Checks the signature of a request for `path` with `query`, at `now`.
    pub fn check(&self, path: &[u8], query: &[u8], now: SystemTime) -> Result<(), Refusal> {
        let (signed_query, sig) = split_signature(query).ok_or(Refusal::Missing)?;
        let given = URL_SAFE_NO_PAD.decode(sig).map_err(|_| Refusal::Wrong)?;
        let verified = self.keys.0.iter().any(|key| {
            let mut mac = mac(key);
            mac.update(path);
            if let Some(signed_query) = signed_query {
                mac.update(b"?");
                mac.update(signed_query);
            }
            mac.verify_slice(&given).is_ok()
        });
        if !verified {
            return Err(Refusal::Wrong);
        }
        match expiry(signed_query.unwrap_or_default())? {
            Some(exp) if now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) >= exp => {
                Err(Refusal::Expired)
            }
            _ => Ok(()),
        }
    }

    /// `target` (a path with its query) signed with the first key.
    pub fn sign(&self, target: &str) -> String {
        let mut mac = mac(&self.keys.0[0]);
        mac.update(target.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let joiner = if target.contains('?') { '&' } else { '?' };
        format!("{target}{joiner}sig={sig}")
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length")
}

/// The signed part of a query with a last `sig=` parameter (None when the target signed had no
/// `?` at all, `Some("")` for one that ended in `?`), and the signature; None without a `sig`, or
/// when another parameter follows it.
fn split_signature(query: &[u8]) -> Option<(Option<&[u8]>, &[u8])> {
    let (signed, sig) = match query.windows(5).rposition(|w| w == b"&sig=") {
        Some(at) => (Some(&query[..at]), &query[at + 5..]),
        None => (None, query.strip_prefix(b"sig=")?),
    };
    (!sig.contains(&b'&')).then_some((signed, sig))
}

/// The `exp` parameter of the signed query, if there is one.
fn expiry(signed_query: &[u8]) -> Result<Option<u64>, Refusal> {
    let mut found = None;
    for pair in signed_query.split(|&b| b == b'&') {
        let Some(value) = pair.strip_prefix(b"exp=") else { continue };
        let digits = std::str::from_utf8(value).ok().filter(|v| (1..=12).contains(&v.len()));
        let exp = digits.and_then(|v| v.parse::<u64>().ok()).ok_or(Refusal::BadExpiry)?;
        if found.replace(exp).is_some() {
            return Err(Refusal::BadExpiry);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn signing(keys: &str, scope: Scope) -> Signing {
        Signing::new(Keys::parse(keys).unwrap(), scope)
    }

    /// Splits a signed target as a request would arrive.
    fn parts(target: &str) -> (&[u8], &[u8]) {
        match target.split_once('?') {
            Some((path, query)) => (path.as_bytes(), query.as_bytes()),
            None => (target.as_bytes(), b""),
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_signed_url_passes_and_any_change_to_it_fails() {
        let s = signing("first-key-0123456789", Scope::Renditions);
        for target in
            ["/images/cat.jpg/300/200", "/300/200?blur=2&grayscale", "/images/a%20b.png/ascii?width=40"]
        {
            let signed = s.sign(target);
            let (path, query) = parts(&signed);
            assert_eq!(s.check(path, query, at(0)), Ok(()), "{signed}");
        }
        let signed = s.sign("/images/cat.jpg/300/200");
        let (path, query) = parts(&signed);
        assert_eq!(s.check(b"/images/cat.jpg/301/200", query, at(0)), Err(Refusal::Wrong), "another size");
        assert_eq!(s.check(path, b"blur=2", at(0)), Err(Refusal::Missing));
        let extended = [query, b"&blur=3"].concat();
        assert_eq!(s.check(path, &extended, at(0)), Err(Refusal::Missing), "sig must come last");
        let spliced = [&b"blur=3&"[..], query].concat();
        assert_eq!(s.check(path, &spliced, at(0)), Err(Refusal::Wrong), "an added parameter");
        assert_eq!(s.check(path, b"sig=%%%", at(0)), Err(Refusal::Wrong));
    }

    #[test]
    fn it_matches_the_documented_recipe() {
        // python3 -c 'import hmac,hashlib,base64; print(base64.urlsafe_b64encode(hmac.new(
        //   b"first-key-0123456789", b"/300/200?blur=2", hashlib.sha256).digest()).rstrip(b"=").decode())'
        let mut mac = mac(b"first-key-0123456789");
        mac.update(b"/300/200?blur=2");
        let expected = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let signed = signing("first-key-0123456789", Scope::All).sign("/300/200?blur=2");
        assert_eq!(signed, format!("/300/200?blur=2&sig={expected}"));
        assert_eq!(expected.len(), 43);
    }

    #[test]
    fn several_keys_verify_and_the_first_signs() {
        let old = signing("old-key-0123456789ab", Scope::Renditions);
        let both = signing("new-key-0123456789ab, old-key-0123456789ab", Scope::Renditions);
        let signed = old.sign("/images/a.png/10/10");
        let (path, query) = parts(&signed);
        assert_eq!(both.check(path, query, at(0)), Ok(()), "an old signature during rotation");
        let new = both.sign("/images/a.png/10/10");
        let (path, query) = parts(&new);
        assert_eq!(old.check(path, query, at(0)), Err(Refusal::Wrong), "signed with the new key");
    }

    #[test]
    fn an_expiry_inside_the_signed_part_is_enforced() {
        let s = signing("first-key-0123456789", Scope::Renditions);
        let signed = s.sign("/images/a.png/10/10?exp=1000");
        let (path, query) = parts(&signed);
        assert_eq!(s.check(path, query, at(999)), Ok(()));
        assert_eq!(s.check(path, query, at(1000)), Err(Refusal::Expired));
        let question = s.sign("/images/a.png?");
        assert!(question.ends_with(&format!("?&sig={}", question.rsplit('=').next().unwrap())));
        let (path, query) = parts(&question);
        assert_eq!(s.check(path, query, at(0)), Ok(()), "a target ending in '?' (found by the fuzzer)");
        assert_eq!(s.check(path, query.strip_prefix(b"&").unwrap(), at(0)), Err(Refusal::Wrong));
        let twice = s.sign("/10/10?exp=5&exp=9999999");
        let (path, query) = parts(&twice);
        assert_eq!(s.check(path, query, at(0)), Err(Refusal::BadExpiry));
    }

    #[test]
    fn keys_are_checked_and_never_shown() {
        assert!(Keys::parse("short").is_err());
        assert!(Keys::parse("  ,\n").is_err());
        let err = Keys::parse("good-key-0123456789, bad").unwrap_err().to_string();
        assert!(err.contains("key 2 of 2") && !err.contains("good-key") && !err.contains("bad"), "{err}");
        let keys = Keys::parse("good-key-0123456789").unwrap();
        assert_eq!(format!("{keys:?}"), "Keys(<1 redacted>)");
    }
}
