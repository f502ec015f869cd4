//! The write routes' rules, apart from any socket: who may use them (a bearer token, compared in
//! constant time and never logged), which names they accept, and the filesystem work itself,
//! which is blocking and so runs on an event loop's blocking pool (see `server/writes.rs`).
//!
//! The routes exist only when an operator configured a token (`KEIKO_ADMIN_TOKEN` or
//! `KEIKO_ADMIN_TOKEN_FILE`); without one keiko answers them as it always did.

pub(crate) mod index;

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;

use crate::library::decode::{decode, probe, Format};
use crate::library::scan::{self, is_candidate};
use crate::library::{Rescanner, Trigger};
use crate::store::mirror::Nudger;
use crate::store::{Bucket, Failure};
use index::{sha256, to_hex, ContentIndex, Sha256Digest};

/// The admin token. Its Debug form is redacted, so no log line or panic message can show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(Box<[u8]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl FromStr for Token {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Token> {
        let s = s.trim_end_matches(['\r', '\n']);
        anyhow::ensure!(!s.is_empty(), "the admin token is empty");
        anyhow::ensure!(
            s.bytes().all(|b| b.is_ascii_graphic()),
            "the admin token may hold only printable ASCII without spaces"
        );
        Ok(Token(s.as_bytes().into()))
    }
}

impl Token {
    /// The token in a file (its trailing newline ignored), for `KEIKO_ADMIN_TOKEN_FILE`.
    pub(crate) fn read(path: &Path) -> anyhow::Result<Token> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read the admin token file {}: {e}", path.display()))?;
        text.parse().map_err(|e| anyhow::anyhow!("{e} (in {})", path.display()))
    }
}

/// What an upload may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadLimits {
    pub(crate) max_bytes: u64,
    /// Longest time a whole body may take to arrive.
    pub(crate) body_timeout: Duration,
    pub(crate) max_pixels: u64,
    /// The library's file size limit, past which the content index does not read a file.
    pub(crate) max_file_bytes: u64,
}

pub(crate) struct Admin {
    token: Token,
    images: PathBuf,
    rescanner: Rescanner,
    remote: Option<Remote>,
    pub(crate) limits: UploadLimits,
    next_temp: AtomicU64,
    index: ContentIndex,
}

/// With an object-store library, where writes go: the bucket (durable there before the answer),
/// and the mirror, which copies the change into the image directory this node serves from.
pub(crate) struct Remote {
    pub(crate) bucket: Arc<Bucket>,
    pub(crate) mirror: Nudger,
}

impl Remote {
    /// Refuses at once while the store is known not to answer (the mirror retries it every few
    /// seconds): a write must not hold a blocking thread for a store that hangs.
    fn answering(&self) -> Result<(), Refused> {
        match self.bucket.stats.down_for() {
            Some(seconds) => Err(Refused::Unavailable(format!("not answering for {seconds} s"))),
            None => Ok(()),
        }
    }
}

/// An upload that was stored.
pub(crate) struct Stored {
    pub(crate) name: String,
    /// No file of that name was there before.
    pub(crate) created: bool,
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// The upload's size.
    pub(crate) bytes: usize,
    pub(crate) sha256: String,
    /// The file it was hard-linked to, when that file already held the same bytes.
    pub(crate) linked_to: Option<String>,
}

/// Why an upload was not stored.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Not an image keiko serves, damaged, or over the pixel limit: 415.
    Unsupported(String),
    /// The name cannot be used: 400.
    BadName(&'static str),
    /// The body is not what its Content-Type says: 400.
    BadBody(&'static str),
    /// The filesystem refused: 500.
    Io(io::Error),
    /// The object store does not answer: 503, try again later.
    Unavailable(String),
}

impl From<Failure> for Refused {
    fn from(failure: Failure) -> Refused {
        match failure {
            Failure::Unreachable(why) => Refused::Unavailable(why),
            Failure::Refused(why) => Refused::Io(io::Error::other(why)),
        }
    }
}

impl Admin {
    pub(crate) fn new(
        token: Token,
        images: PathBuf,
        rescanner: Rescanner,
        remote: Option<Remote>,
        limits: UploadLimits,
    ) -> Admin {
        Admin {
            token,
            images,
            rescanner,
            remote,
            limits,
            next_temp: AtomicU64::new(0),
            index: ContentIndex::new(limits.max_file_bytes),
        }
    }

    /// The image whose file holds content with this SHA-256, if any. Blocking.
    pub(crate) fn lookup(&self, digest: &Sha256Digest) -> io::Result<Option<String>> {
        self.index.find(&self.images, digest)
    }

    /// Checks `bytes` (format, pixel limit, a full decode) and stores them as image `name` (with the
    /// format's extension added when it has none), or when no name is given as
    /// `<first 16 hex digits of their SHA-256>.<format's extension>`:
    /// through a temporary dot-file in the image directory (which the library ignores), synced,
    /// renamed over the name, and the directory synced, so that the file is whole and durable
    /// before the answer goes out and a concurrent upload to the same name leaves one of the two,
    /// never a mix. Content that another file of the directory already holds becomes a hard link
    /// to it: stored once. With an object-store library the image is put in the bucket instead
    /// (whole, and durable there, before this returns), and the mirror copies it here.
    /// Blocking, and CPU-heavy for big images: run it on the blocking pool.
    pub(crate) fn store(&self, name: Option<&str>, bytes: &[u8]) -> Result<Stored, Refused> {
        let max_pixels = self.limits.max_pixels;
        let (format, _, _) = probe(bytes, max_pixels).map_err(|e| Refused::Unsupported(format!("{e:#}")))?;
        let decoded =
            decode(bytes, format, max_pixels).map_err(|e| Refused::Unsupported(format!("{e:#}")))?;
        // The upright size, as the library will serve it.
        let (width, height) = (decoded.pixels.width, decoded.pixels.height);
        drop(decoded);
        let digest = sha256(bytes);
        let name = match name {
            Some(name) if name.contains('.') => name.to_string(),
            Some(stem) if stem.len() + 5 <= 255 => format!("{stem}.{}", extension(format)),
            Some(_) => return Err(Refused::BadName("name: 1 to 255 bytes with the extension added")),
            None => format!("{}.{}", &to_hex(&digest)[..16], extension(format)),
        };
        if let Some(remote) = &self.remote {
            remote.answering()?;
            let created = !remote.bucket.contains(&name)?;
            remote.bucket.put_original(&name, bytes.to_vec())?;
            remote.mirror.wrote();
            let sha256 = to_hex(&digest);
            return Ok(Stored { name, created, width, height, bytes: bytes.len(), sha256, linked_to: None });
        }
        let path = self.images.join(&name);
        let created = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => return Err(Refused::BadName("name: is a directory")),
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => true,
            Err(e) => return Err(Refused::Io(e)),
        };
        let same = self.index.find_regular(&self.images, &digest).map_err(Refused::Io)?;
        let (temp, linked_to) = self.prepare(&name, same, bytes).map_err(Refused::Io)?;
        let written = std::fs::rename(&temp, &path).and_then(|()| File::open(&self.images)?.sync_all());
        // A rename between two links of one file does nothing and leaves the temporary name behind.
        let _ = std::fs::remove_file(&temp);
        written.map_err(Refused::Io)?;
        self.rescanner.rescan(Trigger::Write);
        Ok(Stored { name, created, width, height, bytes: bytes.len(), sha256: to_hex(&digest), linked_to })
    }

    /// The temporary file that will be renamed over `name`: a new hard link to `same` (another
    /// regular file of the directory with the same bytes) when there is one, else a new file
    /// holding `bytes`, synced. Created exclusively and without following symlinks, under a name
    /// no one can guess, so that nothing planted in the directory can redirect the write.
    fn prepare(
        &self,
        name: &str,
        same: Option<String>,
        bytes: &[u8],
    ) -> io::Result<(PathBuf, Option<String>)> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp = self.images.join(format!(
            "{}{}-{n}-{:016x}",
            scan::UPLOAD_TEMP_PREFIX,
            std::process::id(),
            fastrand::u64(..)
        ));
        if let Some(existing) = same.filter(|existing| existing != name) {
            // link(2) does not follow a symlink: check that what was linked is the regular file.
            let linked = std::fs::hard_link(self.images.join(&existing), &temp)
                .and_then(|()| std::fs::symlink_metadata(&temp));
            match linked {
                Ok(meta) if meta.is_file() => return Ok((temp, Some(existing))),
                Ok(_) => std::fs::remove_file(&temp)?,
                Err(_) => {}
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temp)?;
        if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
        Ok((temp, None))
    }

    /// Whether an `Authorization` value carries the token (`Bearer <token>`, the scheme in any
    /// case). The comparison takes the same time wherever the bytes differ.
    pub(crate) fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else { return false };
        let Some((scheme, credentials)) = value.split_at_checked(7) else { return false };
        scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(credentials.trim_ascii().ct_eq(&self.token.0))
    }

    /// Removes image `name` from the directory, durably (the directory is synced after the unlink)
    /// and asks the library to look again; with an object-store library, from the bucket, and the
    /// mirror removes it here. Ok(false) when there is no such image. Blocking.
    pub(crate) fn remove(&self, name: &str) -> Result<bool, Refused> {
        if let Some(remote) = &self.remote {
            remote.answering()?;
            if !remote.bucket.contains(name)? {
                return Ok(false);
            }
            remote.bucket.delete_original(name)?;
            remote.mirror.wrote();
            return Ok(true);
        }
        self.remove_file(name).map_err(Refused::Io)
    }

    fn remove_file(&self, name: &str) -> io::Result<bool> {
        let path = self.images.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => return Ok(false),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        File::open(&self.images)?.sync_all()?;
        self.rescanner.rescan(Trigger::Write);
        Ok(true)
    }
}

/// The usual file name extension of a format.
fn extension(format: Format) -> &'static str {
    match format {
        Format::Jpeg => "jpg",
        Format::Png => "png",
        Format::Gif => "gif",
        Format::WebpLossless | Format::WebpLossy => "webp",
        Format::Tiff => "tif",
        Format::Bmp => "bmp",
        Format::Jxl => "jxl",
        Format::Heic => "heic",
        Format::Avif => "avif",
    }
}

/// The part named `image` of a `multipart/form-data` body (as curl's `-F image=@photo.jpg`
/// sends it) and its file name, if it has one.
pub(crate) fn image_part(
    body: Vec<u8>,
    content_type: &str,
) -> Result<(Vec<u8>, Option<String>), &'static str> {
    use futures_util::FutureExt;
    let boundary =
        multer::parse_boundary(content_type).map_err(|_| "Content-Type: multipart without a boundary")?;
    let stream =
        futures_util::stream::once(
            async move { Ok::<_, std::convert::Infallible>(bytes::Bytes::from(body)) },
        );
    let mut multipart = multer::Multipart::new(stream, boundary);
    // The whole body is already in memory, so every future here is ready at once.
    let parse = async {
        while let Some(field) = multipart.next_field().await.map_err(|_| "body: malformed multipart")? {
            if field.name() == Some("image") {
                let filename = field.file_name().map(str::to_string);
                let bytes = field.bytes().await.map_err(|_| "body: malformed multipart")?;
                return Ok((bytes.to_vec(), filename));
            }
        }
        Err("body: no part named 'image'")
    };
    parse.now_or_never().unwrap_or(Err("body: malformed multipart"))
}

/// Checks a (percent-decoded) name for the write routes: one path segment of UTF-8, at most 255
/// bytes, no leading dot, no `/`, `\` or NUL, and an extension the library serves or none at all.
pub(crate) fn check_name(name: &[u8]) -> Result<&str, &'static str> {
    let name = std::str::from_utf8(name).map_err(|_| "name: not UTF-8")?;
    if name.is_empty() || name.len() > 255 {
        return Err("name: 1 to 255 bytes");
    }
    if name.contains(['/', '\\', '\0']) {
        return Err("name: may not hold '/', '\\' or NUL");
    }
    if name.starts_with('.') {
        return Err("name: may not start with '.'");
    }
    // A name without any extension gets the one of its content (see `Admin::store`).
    if name.contains('.') && !is_candidate(name) {
        return Err(
            "name: must end in an image extension the library serves (.jpg, .jpeg, .png, .gif, .webp, \
                    .tif, .tiff, .bmp, .jxl, .heic, .heif, .avif), or have no extension",
        );
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(dir: &Path) -> Admin {
        let limits = UploadLimits {
            max_bytes: 1 << 20,
            body_timeout: Duration::from_secs(1),
            max_pixels: 1 << 20,
            max_file_bytes: 1 << 20,
        };
        Admin::new("s3cret".parse().unwrap(), dir.to_path_buf(), Rescanner::detached(), None, limits)
    }

    #[test]
    fn only_the_bearer_token_is_authorized() {
        let dir = tempfile::tempdir().unwrap();
        let a = admin(dir.path());
        assert!(a.authorized(Some(b"Bearer s3cret")));
        assert!(a.authorized(Some(b"bearer s3cret")));
        for wrong in [&b"Bearer s3cre"[..], b"Bearer s3cret2", b"Basic s3cret", b"s3cret", b"Bearer", b""] {
            assert!(!a.authorized(Some(wrong)), "{:?}", String::from_utf8_lossy(wrong));
        }
        assert!(!a.authorized(None));
        assert_eq!(format!("{:?}", a.token), "Token(<redacted>)");
        assert!("".parse::<Token>().is_err() && "a b".parse::<Token>().is_err());
        assert_eq!("tok\n".parse::<Token>().unwrap(), "tok".parse::<Token>().unwrap());
    }

    #[test]
    fn names_are_one_plain_segment_with_an_image_extension() {
        assert_eq!(check_name(b"cat.png"), Ok("cat.png"));
        assert_eq!(check_name("café.JPG".as_bytes()), Ok("café.JPG"));
        assert_eq!(check_name(b"noext"), Ok("noext"), "its content's extension is added");
        for bad in [
            &b""[..],
            b"..",
            b"../a.png",
            b"a/b.png",
            b"a\\b.png",
            b"a\0.png",
            b".hidden.png",
            b"a.txt",
            b"\xff.png",
        ] {
            assert!(check_name(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert!(check_name(format!("{}.png", "n".repeat(252)).as_bytes()).is_err());
    }

    #[test]
    fn remove_deletes_files_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("d.png")).unwrap();
        let a = admin(dir.path());
        assert!(a.remove("a.png").unwrap());
        assert!(a.lookup(&sha256(b"x")).unwrap().is_none(), "looked up after the removal");
        assert!(!dir.path().join("a.png").exists());
        assert!(!a.remove("a.png").unwrap(), "already gone");
        assert!(!a.remove("d.png").unwrap(), "a directory is not an image");
        assert!(dir.path().join("d.png").exists());
    }
}
