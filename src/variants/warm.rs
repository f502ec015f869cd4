//! Presets made ahead of any request: when the library publishes a new catalogue, one thread at
//! the lowest priority makes every preset of every image it has not made yet, through the same
//! flights and budget as the render pool (a request for a preset being made joins that render).
//! So an allowed rendition is never a cold render on a request: it is in memory, or on disk.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::spec::{Codec, Form, Variant};
use super::{Flight, Job, Key, Variants};
use crate::catalog::{Image, Published};

/// How often the thread looks for a new catalogue.
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl Variants {
    /// Starts the thread that makes `presets` for every image `published` holds.
    pub(crate) fn warm(
        &'static self,
        presets: Vec<Variant>,
        published: &'static Published,
    ) -> anyhow::Result<()> {
        if presets.is_empty() {
            return Ok(());
        }
        std::thread::Builder::new().name("keiko-presets".into()).spawn(move || {
            crate::library::lower_priority("preset renderers", crate::library::Priority::Idle);
            let mut generation = u64::MAX;
            let mut made: HashSet<Key> = HashSet::new();
            loop {
                std::thread::sleep(LOOK_EVERY);
                if published.generation() == generation {
                    continue;
                }
                generation = published.generation();
                let catalog = published.load();
                let mut wanted = HashSet::with_capacity(catalog.len() * presets.len());
                for index in 0..catalog.len() {
                    let image = catalog.shared_image(index);
                    for variant in presets.iter().flat_map(|&preset| as_served(preset, image)) {
                        let key = Key { source: image.webp.body.digest(), image: image.tally.id, variant };
                        wanted.insert(key);
                        if !made.contains(&key) && self.make_ahead(key, image) {
                            made.insert(key);
                        }
                    }
                }
                // Forget images that left, so that the set stays the size of the library.
                made.retain(|key| wanted.contains(key));
            }
        })?;
        Ok(())
    }

    /// Makes one preset unless it is in memory or being made; true when it is there now.
    fn make_ahead(&self, key: Key, image: &Arc<Image>) -> bool {
        if self.memory.get(&key).is_some() {
            return true;
        }
        let flight = Flight::new(OnceLock::new());
        // Held while the render runs, so that it is never given up for want of a waiter.
        let Some(_waiter) = flight.join() else { return false };
        {
            let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
            if flights.contains_key(&key) {
                return false;
            }
            flights.insert(key, flight.clone());
        }
        let job = Job { key, image: image.clone(), flight };
        self.run(&job);
        self.stats.warmed();
        matches!(job.flight.result.get(), Some(Ok(_)))
    }
}

/// The renditions requests for `preset` of `image` can be given: its own format if it fixes one,
/// else WebP, and AVIF too once the image has an AVIF encoding (what `Accept` may choose).
fn as_served(preset: Variant, image: &Image) -> Vec<Variant> {
    match (preset.form, preset.codec) {
        (Form::Picture(_), None) => {
            let mut codecs = vec![Codec::Webp];
            if image.avif.is_some() {
                codecs.push(Codec::Avif);
            }
            codecs.into_iter().map(|codec| Variant { codec: Some(codec), ..preset }).collect()
        }
        _ => vec![preset],
    }
}
