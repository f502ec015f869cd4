//! The catalogue: an immutable snapshot of the images that are ready to serve, each with its
//! whole response head built next to its body.
//!
//! The library (see `library`) owns the directory and builds a new snapshot whenever an image
//! becomes ready, changes or goes away, and hands it over through [`Published`]. Each event loop
//! takes a clone of its own of the newest one on its tick (and when it accepts a connection) and
//! serves from it until the next: a request never locks and never touches a reference count shared
//! with another thread. A snapshot only holds `Arc`s to images that snapshots share, so a clone
//! costs a pointer per image, and a response that is still being written keeps its loop's clone
//! (and with it its body) alive after a newer one is taken.
//! Lookups by name only ever consult the snapshot: no request path reaches the filesystem.

mod body;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use percent_encoding::percent_decode;

pub(crate) use body::{digest, Body};

use crate::hits::Tally;
use crate::http::response::ImageHeads;
use crate::library::decode::Format;
use crate::variants::spec::Codec;

/// Longest file name a lookup decodes (Linux allows 255 bytes).
const MAX_NAME: usize = 255;

/// One servable image: its name and hit identity, and its encodings: always WebP, and AVIF once
/// the library's backfill has made it.
pub(crate) struct Image {
    pub(crate) tally: Arc<Tally>,
    pub(crate) webp: Encoded,
    pub(crate) avif: Option<Encoded>,
    /// The format of the file it was encoded from, for `/info`.
    pub(crate) source: Format,
}

/// One encoding of an image: the heads of its 200 responses (without Date/Connection and the
/// blank line) and its body.
pub(crate) struct Encoded {
    pub(crate) heads: ImageHeads,
    pub(crate) body: Arc<Body>,
}

impl Encoded {
    /// `max_age`: how long caches may keep `/images/<name>` responses, in seconds.
    fn new(name: &str, codec: Codec, body: Arc<Body>, max_age: u32) -> Encoded {
        let heads = ImageHeads::new(name, codec.content_type(), body.len(), body.digest(), max_age, "");
        Encoded { heads, body }
    }
}

impl Image {
    /// `webp`: its WebP encoding; `max_age`: how long caches may keep `/images/<name>` responses.
    pub(crate) fn new(tally: Arc<Tally>, webp: Arc<Body>, source: Format, max_age: u32) -> Image {
        let webp = Encoded::new(&tally.name, Codec::Webp, webp, max_age);
        Image { tally, webp, avif: None, source }
    }

    /// The same image under another name (`tally`), with the same encodings.
    pub(crate) fn renamed(&self, tally: Arc<Tally>, max_age: u32) -> Image {
        let mut image = Image::new(tally, self.webp.body.clone(), self.source, max_age);
        image.avif =
            self.avif.as_ref().map(|a| Encoded::new(image.name(), Codec::Avif, a.body.clone(), max_age));
        image
    }

    /// This image with its AVIF encoding `avif`.
    pub(crate) fn with_avif(&self, avif: Arc<Body>, max_age: u32) -> Image {
        let webp = Encoded { heads: self.webp.heads.clone(), body: self.webp.body.clone() };
        let avif = Some(Encoded::new(self.name(), Codec::Avif, avif, max_age));
        Image { tally: self.tally.clone(), webp, avif, source: self.source }
    }

    /// Its encoding in `codec`, if it has one (JPEG is always made on request, as a rendition).
    pub(crate) fn encoded(&self, codec: Codec) -> Option<&Encoded> {
        match codec {
            Codec::Webp => Some(&self.webp),
            Codec::Avif => self.avif.as_ref(),
            Codec::Jpeg => None,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.tally.name
    }
}

#[derive(Default, Clone)]
pub(crate) struct Catalog {
    images: Vec<Arc<Image>>,
    by_name: HashMap<Arc<str>, usize>,
    /// The first scan of the directory has been encoded (or has failed) file by file.
    scanned: bool,
    /// One more than the largest hit identity in the snapshot.
    id_bound: usize,
}

impl Catalog {
    /// A snapshot of `images` (sorted here by name, so the order is stable).
    pub(crate) fn new(mut images: Vec<Arc<Image>>, scanned: bool) -> Catalog {
        images.sort_by(|a, b| a.name().cmp(b.name()));
        let by_name = images.iter().enumerate().map(|(i, image)| (image.tally.name.clone(), i)).collect();
        let id_bound = images.iter().map(|i| i.tally.id as usize + 1).max().unwrap_or(0);
        Catalog { images, by_name, scanned, id_bound }
    }

    pub(crate) fn len(&self) -> usize {
        self.images.len()
    }

    /// Ready for traffic (`/readyz`): the first scan is done and there is an image to serve.
    pub(crate) fn is_ready(&self) -> bool {
        self.scanned && !self.images.is_empty()
    }

    pub(crate) fn image(&self, index: usize) -> &Image {
        &self.images[index]
    }

    /// Image `index` as the snapshots share it, for work that outlives a request (a render).
    pub(crate) fn shared_image(&self, index: usize) -> &Arc<Image> {
        &self.images[index]
    }

    pub(crate) fn images(&self) -> impl Iterator<Item = &Image> {
        self.images.iter().map(|i| &**i)
    }

    /// One more than the largest hit identity of any image here.
    pub(crate) fn id_bound(&self) -> usize {
        self.id_bound
    }

    /// A uniformly random image index (thread-local generator: no lock, no allocation), if any.
    pub(crate) fn random(&self) -> Option<usize> {
        (!self.images.is_empty()).then(|| fastrand::usize(..self.images.len()))
    }

    /// The image index `seed` picks: the same while the snapshot's names are the same, and
    /// different seeds spread evenly (64 bits of BLAKE3, scaled by a multiply, not a biased modulo).
    pub(crate) fn seeded(&self, seed: &[u8]) -> Option<usize> {
        if self.images.is_empty() {
            return None;
        }
        let hash = blake3::hash(seed);
        let h = u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("BLAKE3 hashes are 32 bytes"));
        Some(((u128::from(h) * self.images.len() as u128) >> 64) as usize)
    }

    /// The image whose name is `encoded` after percent-decoding, if there is one.
    pub(crate) fn find(&self, encoded: &[u8]) -> Option<usize> {
        let mut name = [0u8; MAX_NAME];
        let mut len = 0;
        for b in percent_decode(encoded) {
            *name.get_mut(len)? = b;
            len += 1;
        }
        self.by_name.get(std::str::from_utf8(&name[..len]).ok()?).copied()
    }

    /// Bytes of every WebP body in the snapshot.
    pub(crate) fn body_bytes(&self) -> usize {
        self.images.iter().map(|i| i.webp.body.len()).sum()
    }

    /// Images with an AVIF encoding.
    pub(crate) fn with_avif(&self) -> usize {
        self.images.iter().filter(|i| i.avif.is_some()).count()
    }
}

/// Where the library leaves the newest snapshot for the event loops. A loop compares the
/// generation (one atomic load) on its tick and takes the lock only when there is a new one.
pub(crate) struct Published {
    generation: AtomicU64,
    current: Mutex<Arc<Catalog>>,
}

impl Published {
    pub(crate) fn new(catalog: Catalog) -> Published {
        Published { generation: AtomicU64::new(0), current: Mutex::new(Arc::new(catalog)) }
    }

    pub(crate) fn publish(&self, catalog: Catalog) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(catalog);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The newest snapshot.
    pub(crate) fn load(&self) -> Arc<Catalog> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hits::Registry;

    fn catalog(names: &[&str]) -> Catalog {
        let registry = Registry::new(HashMap::new());
        let webp = body::tests::tiny_webp();
        let images = names
            .iter()
            .map(|n| {
                Arc::new(Image::new(
                    registry.intern(n),
                    Arc::new(Body::in_memory(&webp).unwrap()),
                    Format::Png,
                    60,
                ))
            })
            .collect();
        Catalog::new(images, true)
    }

    #[test]
    fn find_decodes_percent_escapes_and_nothing_else_matches() {
        let c = catalog(&["two words.jpg", "a.png", "café.gif"]);
        assert_eq!(c.image(0).name(), "a.png", "sorted by name");
        assert_eq!(c.find(b"a.png"), Some(0));
        assert_eq!(c.find(b"two%20words.jpg"), Some(2));
        assert_eq!(c.find(b"two words.jpg"), Some(2));
        assert_eq!(c.find(b"caf%C3%A9.gif"), Some(1));
        for miss in [&b""[..], b"A.PNG", b"../a.png", b"%2e%2e/a.png", b"/a.png", b"a.png%00", b"%FF"] {
            assert_eq!(c.find(miss), None, "{:?}", String::from_utf8_lossy(miss));
        }
        assert_eq!(c.find(&[b'a'; 300]), None, "names longer than any file name are not found");
    }

    #[test]
    fn random_stays_in_range_and_reaches_every_image() {
        let c = catalog(&["a", "b", "c"]);
        let mut seen = [false; 3];
        for _ in 0..1000 {
            seen[c.random().unwrap()] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert_eq!(Catalog::default().random(), None);
    }

    #[test]
    fn seeds_pick_the_same_image_and_spread_evenly() {
        let names: Vec<String> = (0..10).map(|i| format!("{i}.png")).collect();
        let c = catalog(&names.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(c.seeded(b"hello"), c.seeded(b"hello"));
        let mut counts = [0u32; 10];
        for seed in 0..10_000 {
            counts[c.seeded(format!("seed-{seed}").as_bytes()).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&n| (850..1150).contains(&n)), "{counts:?}");
        assert_eq!(Catalog::default().seeded(b"x"), None);
    }

    #[test]
    fn ready_needs_the_first_scan_and_an_image() {
        assert!(!Catalog::default().is_ready());
        assert!(catalog(&["a"]).is_ready());
        assert!(!Catalog::new(Vec::new(), true).is_ready());
        let c = catalog(&["a", "b"]);
        assert_eq!(c.id_bound(), 2);
    }

    #[test]
    fn a_published_snapshot_replaces_the_last_and_bumps_the_generation() {
        let published = Published::new(Catalog::default());
        let old = published.load();
        published.publish(catalog(&["a"]));
        assert_eq!(published.generation(), 1);
        assert_eq!(published.load().len(), 1);
        assert_eq!(old.len(), 0, "a snapshot taken before keeps what it had");
    }
}
