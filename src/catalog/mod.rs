//! The image catalogue: every image of the directory, decoded and encoded to lossless WebP once at
//! startup, with its whole HTTP response head built next to it.
//!
//! Building is the only slow thing keiko does, so it runs on every core at once. The result never
//! changes afterwards: the server leaks it to a `&'static Catalog` that all event-loop threads
//! read without locks or reference counts, and that no thread copies (memory does not grow with
//! the thread count; the bodies live once, in [`bodies`]). Lookups by name only ever consult this
//! table: no request path reaches the filesystem.

mod bodies;
mod decode;
mod encode;

use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use percent_encoding::percent_decode;

use crate::http::response::image_head;

use bodies::Bodies;
use decode::decode;
use encode::encode_lossless;

/// File name extensions that are loaded (case-insensitive); every other file is ignored.
const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "gif", "webp"];

/// Longest file name a lookup decodes (Linux allows 255 bytes).
const MAX_NAME: usize = 255;

/// One image file, decoded and encoded: what [`load_image`] returns.
pub struct Image {
    /// The source file's name (UTF-8), as recorded in the database.
    pub name: String,
    /// Status line and headers of the 200 response, without Date/Connection and the blank line.
    pub head: Box<[u8]>,
    /// The lossless WebP encoding.
    pub body: Vec<u8>,
}

/// An image in the catalogue; its body is in the catalogue's body store.
pub struct Entry {
    pub name: String,
    pub head: Box<[u8]>,
    body: Range<usize>,
}

pub struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<Box<[u8]>, usize>,
    bodies: Bodies,
}

impl Catalog {
    /// Loads every image of `dir` using up to `workers` threads. Files that fail are skipped with a
    /// warning naming them; no usable image at all is an error naming the directory.
    pub fn load(dir: &Path, workers: usize) -> anyhow::Result<Catalog> {
        let files = list_images(dir)?;
        let loaded = load_parallel(&files, workers.max(1));
        let catalog = Catalog::from_images(loaded.into_iter().flatten().collect())?;
        if catalog.is_empty() {
            anyhow::bail!(
                "no usable image in {} (looked for {} files)",
                dir.display(),
                EXTENSIONS.join(", ")
            );
        }
        Ok(catalog)
    }

    fn from_images(images: Vec<Image>) -> anyhow::Result<Catalog> {
        let (bodies, ranges) = Bodies::new(images.iter().map(|i| &i.body[..]))?;
        let entries: Vec<Entry> = images
            .into_iter()
            .zip(ranges)
            .map(|(image, body)| Entry { name: image.name, head: image.head, body })
            .collect();
        let by_name = entries.iter().enumerate().map(|(i, e)| (e.name.as_bytes().into(), i)).collect();
        Ok(Catalog { entries, by_name, bodies })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entry(&self, index: usize) -> &Entry {
        &self.entries[index]
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The WebP body of image `index`.
    pub fn body(&self, index: usize) -> &[u8] {
        self.bodies.get(self.entries[index].body.clone())
    }

    /// Where the body of image `index` is in the body store's file, for sendfile(2).
    pub fn body_file(&self, index: usize) -> (RawFd, u64) {
        (self.bodies.fd(), self.entries[index].body.start as u64)
    }

    /// A uniformly random image index (thread-local generator: no lock, no allocation).
    pub fn random(&self) -> usize {
        fastrand::usize(..self.entries.len())
    }

    /// The image whose name is `encoded` after percent-decoding, if there is one.
    pub fn find(&self, encoded: &[u8]) -> Option<usize> {
        let mut name = [0u8; MAX_NAME];
        let mut len = 0;
        for b in percent_decode(encoded) {
            *name.get_mut(len)? = b;
            len += 1;
        }
        self.by_name.get(&name[..len]).copied()
    }

    /// Bytes held by the cache: every response head and WebP body.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.head.len() + e.body.len()).sum()
    }
}

/// One image file: read, decode, encode, response head.
pub fn load_image(path: &Path, name: String) -> anyhow::Result<Image> {
    let bytes = std::fs::read(path).context("cannot read it")?;
    let pixels = decode(&bytes).context("cannot decode it")?;
    let body = encode_lossless(&pixels)?;
    let head = image_head(&name, body.len()).into_boxed_slice();
    Ok(Image { name, head, body })
}

/// The image files of `dir` with their names, sorted by name so indexes are stable across runs.
pub fn list_images(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let read =
        std::fs::read_dir(dir).with_context(|| format!("cannot read image directory {}", dir.display()))?;
    let mut files = Vec::new();
    for entry in read {
        let entry = entry.with_context(|| format!("cannot read image directory {}", dir.display()))?;
        let path = entry.path();
        let is_image = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)));
        if !is_image || !path.is_file() {
            continue;
        }
        match entry.file_name().into_string() {
            Ok(name) => files.push((path, name)),
            Err(raw) => tracing::warn!("skipping {}: the file name is not UTF-8", Path::new(&raw).display()),
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(files)
}

/// Loads the files on `workers` threads; the result keeps the files' order, `None` for failures.
fn load_parallel(files: &[(PathBuf, String)], workers: usize) -> Vec<Option<Image>> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new((0..files.len()).map(|_| None).collect::<Vec<_>>());
    std::thread::scope(|s| {
        for _ in 0..workers.min(files.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((path, name)) = files.get(i) else { break };
                match load_image(path, name.clone()) {
                    Ok(image) => results.lock().unwrap()[i] = Some(image),
                    Err(e) => tracing::warn!("skipping {}: {e:#}", path.display()),
                }
            });
        }
    });
    results.into_inner().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str) -> Image {
        Image { name: name.into(), head: Box::new([]), body: name.as_bytes().to_vec() }
    }

    #[test]
    fn find_decodes_percent_escapes_and_nothing_else_matches() {
        let c =
            Catalog::from_images(vec![image("a.png"), image("two words.jpg"), image("café.gif")]).unwrap();
        assert_eq!(c.body(1), b"two words.jpg");
        assert_eq!(c.body_file(1).1, 5);
        assert_eq!(c.find(b"a.png"), Some(0));
        assert_eq!(c.find(b"two%20words.jpg"), Some(1));
        assert_eq!(c.find(b"two words.jpg"), Some(1));
        assert_eq!(c.find(b"caf%C3%A9.gif"), Some(2));
        for miss in [&b""[..], b"A.PNG", b"../a.png", b"%2e%2e/a.png", b"/a.png", b"a.png%00", b"a\\a.png"] {
            assert_eq!(c.find(miss), None, "{:?}", String::from_utf8_lossy(miss));
        }
        assert_eq!(c.find(&[b'a'; 300]), None, "names longer than any file name are not found");
    }

    #[test]
    fn random_stays_in_range_and_reaches_every_image() {
        let c = Catalog::from_images(vec![image("a"), image("b"), image("c")]).unwrap();
        let mut seen = [false; 3];
        for _ in 0..1000 {
            seen[c.random()] = true;
        }
        assert_eq!(seen, [true; 3]);
    }

    #[test]
    fn load_keeps_good_images_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let px: Vec<u8> = (0..48u8).collect();
        let png = zune_image::image::Image::from_u8(&px, 4, 4, zune_core::colorspace::ColorSpace::RGB)
            .write_to_vec(zune_image::codecs::ImageFormat::PNG)
            .unwrap();
        std::fs::write(dir.path().join("b.png"), &png).unwrap();
        std::fs::write(dir.path().join("a.PNG"), &png).unwrap();
        std::fs::write(dir.path().join("broken.jpg"), b"not a jpeg").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
        std::fs::create_dir(dir.path().join("sub.png")).unwrap();

        let c = Catalog::load(dir.path(), 2).unwrap();
        let names: Vec<_> = c.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.PNG", "b.png"]);
        let back = webp::Decoder::new(c.body(1)).decode().unwrap();
        assert_eq!(&*back, &px[..]);
        assert!(c.bytes() > 2 * c.body(0).len());
    }

    #[test]
    fn a_directory_without_images_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("readme.md"), b"no images here").unwrap();
        let err = format!("{:#}", Catalog::load(dir.path(), 1).err().unwrap());
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        let missing = dir.path().join("missing");
        let err = format!("{:#}", Catalog::load(&missing, 1).err().unwrap());
        assert!(err.contains("missing"), "{err}");
    }
}
