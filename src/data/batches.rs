//! Epoch iteration: shuffling, mini-batches, augmentation, and a producer thread that prepares
//! the next batch while the model computes on the current one.
//!
//! Determinism: every random number of the epoch (the permutation, then each example's crop
//! offsets and flip, in batch order) is drawn from the caller's [`Rng`] before the producer thread
//! starts, and the thread only copies pixels. The batches therefore depend on the Rng state
//! alone, never on thread timing, and the caller's Rng already holds the post-epoch state that a
//! checkpoint should save.

use super::Dataset;
use crate::error::{Error, Result};
use crate::rng::Rng;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Batches prepared ahead of the consumer: one being used, up to two waiting. More would only
/// hold memory; fewer would let a slow batch stall the model.
const PREFETCH: usize = 2;

/// Augmentation: random crop with zero padding `crop_pad` (0 = off) and horizontal flip.
/// Zero padding means zero in the dataset's units: after [`super::Normalization`] that is the
/// channel mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augment {
    pub crop_pad: usize,
    pub hflip: bool,
}

impl Augment {
    /// The usual CIFAR recipe: a 32×32 crop of the image padded by 4, and a coin-flip mirror.
    pub const STANDARD: Augment = Augment {
        crop_pad: 4,
        hflip: true,
    };

    /// This example's random choices; a disabled part draws nothing.
    fn draw(self, rng: &mut Rng) -> Draw {
        let window = 2 * self.crop_pad + 1;
        let (dy, dx) = if self.crop_pad > 0 {
            (rng.below(window), rng.below(window))
        } else {
            (0, 0)
        };
        let flip = self.hflip && rng.uniform() < 0.5;
        Draw { dy, dx, flip }
    }
}

/// One example's augmentation: the crop window's corner in the padded image, and the mirror.
#[derive(Clone, Copy, Debug)]
struct Draw {
    dy: usize,
    dx: usize,
    flip: bool,
}

/// One mini-batch as flat buffers; `images` is batch×channels×height×width.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<usize>,
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

/// The batches of one epoch, prepared on a background thread. Dropping it early stops the thread.
pub struct Batches {
    rx: Option<Receiver<Batch>>,
    worker: Option<JoinHandle<()>>,
    remaining: usize,
}

/// Starts an epoch over `ds`: shuffles the indices with `rng` if `shuffle`, cuts them into
/// batches of `batch_size` (the last, partial one kept unless `drop_last`) and draws each
/// example's augmentation. `rng` is advanced by exactly those draws before this returns.
pub fn batches(
    ds: Arc<Dataset>,
    batch_size: usize,
    shuffle: bool,
    augment: Option<Augment>,
    rng: &mut Rng,
    drop_last: bool,
) -> Result<Batches> {
    if batch_size == 0 {
        return Err(Error::invalid("batch size", "must be at least 1, found 0"));
    }
    if ds.images.len() != ds.len() * ds.image_len() {
        return Err(Error::Shape {
            what: format!("dataset {} images", ds.name),
            expected: format!("{} values", ds.len() * ds.image_len()),
            found: format!("{} values", ds.images.len()),
        });
    }
    let mut order: Vec<usize> = (0..ds.len()).collect();
    if shuffle {
        rng.shuffle(&mut order);
    }
    if drop_last {
        order.truncate(ds.len() / batch_size * batch_size);
    }
    let remaining = order.len().div_ceil(batch_size);
    let plan = Plan {
        draws: augment.map(|a| (a, order.iter().map(|_| a.draw(rng)).collect())),
        order,
        batch_size,
    };
    let (tx, rx) = sync_channel(PREFETCH);
    let worker = std::thread::Builder::new()
        .name("batches".into())
        .spawn(move || plan.produce(&ds, &tx))
        .map_err(|e| Error::invalid("batch loader", format!("cannot start its thread: {e}")))?;
    Ok(Batches {
        rx: Some(rx),
        worker: Some(worker),
        remaining,
    })
}

/// Everything random about an epoch, fixed before the producer starts.
struct Plan {
    order: Vec<usize>,
    draws: Option<(Augment, Vec<Draw>)>,
    batch_size: usize,
}

impl Plan {
    /// Sends the epoch's batches in order; stops early if the consumer is gone.
    fn produce(&self, ds: &Dataset, tx: &SyncSender<Batch>) {
        for (k, indices) in self.order.chunks(self.batch_size).enumerate() {
            let start = k * self.batch_size;
            if tx.send(self.assemble(ds, indices, start)).is_err() {
                return;
            }
        }
    }

    /// The batch of examples `indices`, which sit at `start..` in the epoch order.
    fn assemble(&self, ds: &Dataset, indices: &[usize], start: usize) -> Batch {
        let mut images = Vec::with_capacity(indices.len() * ds.image_len());
        for (j, &i) in indices.iter().enumerate() {
            match &self.draws {
                Some((aug, draws)) => {
                    augment_into(ds, i, aug.crop_pad, draws[start + j], &mut images)
                }
                None => images.extend_from_slice(ds.image(i)),
            }
        }
        Batch {
            images,
            labels: indices.iter().map(|&i| ds.labels[i]).collect(),
            batch: indices.len(),
            channels: ds.channels,
            height: ds.height,
            width: ds.width,
        }
    }
}

/// Appends example `i` cropped and maybe mirrored: output pixel (y, x) is the source pixel
/// (y + dy − pad, x' + dx − pad) with x' = W−1−x when flipped, or 0 where that lies outside.
fn augment_into(ds: &Dataset, i: usize, pad: usize, d: Draw, out: &mut Vec<f32>) {
    let (h, w) = (ds.height, ds.width);
    let shifted =
        |v: usize, offset: usize, len: usize| (v + offset).checked_sub(pad).filter(|&s| s < len);
    for plane in ds.image(i).chunks_exact(h * w) {
        for y in 0..h {
            let Some(sy) = shifted(y, d.dy, h) else {
                out.extend(std::iter::repeat_n(0.0, w));
                continue;
            };
            let row = &plane[sy * w..(sy + 1) * w];
            out.extend((0..w).map(|x| {
                let xx = if d.flip { w - 1 - x } else { x };
                shifted(xx, d.dx, w).map_or(0.0, |sx| row[sx])
            }));
        }
    }
}

impl Batches {
    /// Joins the finished producer, re-raising its panic if it had one (a bug, not bad data).
    fn finish(&mut self) {
        self.rx = None;
        if let Some(Err(panic)) = self.worker.take().map(JoinHandle::join) {
            std::panic::resume_unwind(panic);
        }
    }
}

impl Iterator for Batches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let received = self.rx.as_ref()?.recv();
        match received {
            Ok(batch) => {
                self.remaining -= 1;
                Some(batch)
            }
            Err(_) => {
                self.finish();
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Batches {}

impl Drop for Batches {
    /// Closes the channel first so a producer blocked on a full channel wakes up and exits.
    fn drop(&mut self) {
        self.rx = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PER: usize = 24;

    /// `n` examples of 2×3×4; pixel k of example i is 100·i + k + 1, so any pixel names its
    /// example and no pixel is 0 like the crop's fill.
    fn numbered(n: usize) -> Arc<Dataset> {
        Arc::new(Dataset {
            images: (0..n)
                .flat_map(|i| (0..PER).map(move |k| (100 * i + k + 1) as f32))
                .collect(),
            labels: (0..n).map(|i| i % 3).collect(),
            channels: 2,
            height: 3,
            width: 4,
            classes: 3,
            name: "numbered".into(),
        })
    }

    /// The example an (augmented) image came from.
    fn source(im: &[f32]) -> usize {
        let v = im
            .iter()
            .find(|&&v| v > 0.0)
            .expect("some pixel survives a 1-pixel crop");
        (*v as usize - 1) / 100
    }

    fn epoch(ds: &Arc<Dataset>, bs: usize, aug: Option<Augment>, rng: &mut Rng) -> Vec<Batch> {
        batches(ds.clone(), bs, true, aug, rng, false)
            .unwrap()
            .collect()
    }

    fn sources(batches: &[Batch]) -> Vec<usize> {
        let images = batches.iter().flat_map(|b| b.images.chunks(PER));
        images.map(source).collect()
    }

    #[test]
    fn same_seed_same_batches_and_rng_state() {
        let ds = numbered(50);
        let aug = Some(Augment::STANDARD);
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        let first = epoch(&ds, 8, aug, &mut a);
        assert_eq!(first, epoch(&ds, 8, aug, &mut b));
        assert_eq!(a, b);
        assert_ne!(a, Rng::new(9));
        assert_ne!(first, epoch(&ds, 8, aug, &mut a), "the next epoch differs");
    }

    #[test]
    fn every_index_once_per_epoch() {
        let ds = numbered(30);
        let mut rng = Rng::new(1);
        let all = epoch(&ds, 7, None, &mut rng);
        let sizes: Vec<usize> = all.iter().map(|b| b.batch).collect();
        assert_eq!(sizes, [7, 7, 7, 7, 2]);
        let mut seen = sources(&all);
        assert_ne!(seen, (0..30).collect::<Vec<_>>(), "shuffled");
        seen.sort_unstable();
        assert_eq!(seen, (0..30).collect::<Vec<_>>());
        for b in &all {
            let ids = sources(std::slice::from_ref(b));
            assert_eq!(b.labels, ids.iter().map(|i| i % 3).collect::<Vec<_>>());
        }

        let dropped = batches(ds.clone(), 7, false, None, &mut rng, true).unwrap();
        assert_eq!(dropped.len(), 4);
        let kept = sources(&dropped.collect::<Vec<_>>());
        assert_eq!(kept, (0..28).collect::<Vec<_>>());
        assert!(batches(ds, 0, true, None, &mut rng, false).is_err());
    }

    #[test]
    fn flip_mirrors_rows_and_keeps_the_shape() {
        let ds = numbered(40);
        let flip = Augment {
            crop_pad: 0,
            hflip: true,
        };
        let (mut flipped, mut kept) = (0, 0);
        for b in epoch(&ds, 16, Some(flip), &mut Rng::new(2)) {
            assert_eq!(
                (b.images.len(), b.channels, b.height, b.width),
                (b.batch * PER, 2, 3, 4)
            );
            for im in b.images.chunks(PER) {
                let src = ds.image(source(im));
                if im == src {
                    kept += 1;
                } else {
                    let mirrored: Vec<f32> = src
                        .chunks(4)
                        .flat_map(|r| r.iter().rev().copied())
                        .collect();
                    assert_eq!(im, mirrored.as_slice());
                    flipped += 1;
                }
            }
        }
        assert!(flipped > 5 && kept > 5, "{flipped} flipped, {kept} kept");
    }

    #[test]
    fn crop_shifts_with_zero_fill_and_keeps_the_shape() {
        let ds = numbered(60);
        let crop = Augment {
            crop_pad: 1,
            hflip: false,
        };
        let mut offsets = std::collections::HashSet::new();
        for b in epoch(&ds, 16, Some(crop), &mut Rng::new(4)) {
            assert_eq!(b.images.len(), b.batch * PER);
            for im in b.images.chunks(PER) {
                let src = ds.image(source(im));
                let all = (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dy, dx)));
                let mut matching = all.filter(|&(dy, dx)| im == shifted(src, dy, dx).as_slice());
                offsets.insert(matching.next().expect("a shifted copy of its source"));
            }
        }
        assert_eq!(offsets.len(), 9, "every offset occurs");
    }

    /// Reference crop: pixel (y, x) of each 3×4 plane is source pixel (y + dy, x + dx), or 0.
    fn shifted(src: &[f32], dy: i32, dx: i32) -> Vec<f32> {
        let mut out = Vec::new();
        for plane in src.chunks(12) {
            for y in 0..3i32 {
                for x in 0..4i32 {
                    let (sy, sx) = (y + dy, x + dx);
                    let inside = (0..3).contains(&sy) && (0..4).contains(&sx);
                    out.push(if inside {
                        plane[(sy * 4 + sx) as usize]
                    } else {
                        0.0
                    });
                }
            }
        }
        out
    }

    #[test]
    fn dropping_early_stops_the_producer() {
        let mut it = batches(numbered(500), 1, true, None, &mut Rng::new(3), false).unwrap();
        assert_eq!(it.next().map(|b| b.batch), Some(1));
        assert_eq!(it.len(), 499);
    }
}
