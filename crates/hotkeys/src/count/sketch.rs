//! The two hashed sketches Space-Saving counting keeps beside its counters.
//!
//! - [`Frequency`] (TinyLFU, Einziger, Friedman & Manes 2015): one per window, fed every
//!   event. 4-bit counters in a count-min layout (a key's four in one cache line), all
//!   halved every `32 × capacity` events. It estimates how often a key was seen *lately*;
//!   one-off keys stay near one whatever their number, which is what admission needs. Its
//!   estimates are not bounds (halving forgets). 100 bytes per counter of capacity, at most
//!   1 MiB.
//! - [`Bound`]: one per full bucket, a count-min sketch with conservative update and 16-bit
//!   cells over the occurrences no counter holds (refused keys, evicted counts). Cells only
//!   grow, so the minimum of a key's cells bounds from above how often that key was seen
//!   while unmonitored; it is where an admitted key's `error` comes from. A saturated cell
//!   means "unknown" and callers fall back to the bucket's total. 32 bytes per counter of
//!   capacity (what the Filtered Space-Saving filter it replaced took), and at least 64 KiB:
//!   below capacity 2,048 a crawl would otherwise fill the few cells to where an admitted
//!   key's inherited error is several percent of its count (3.4% at capacity 1,000 under a
//!   crawl of 10x the traffic; 0.6% with the floor).
//!
//! Both hash with the caller's seeded 64-bit hash (no per-process randomness), so a replay
//! builds the same sketches, and both serialize to bytes for checkpoints.

/// Rows of both sketches.
const ROWS: usize = 4;
/// [`Frequency`] bytes per monitored counter, and at most.
const FREQUENCY_BYTES_PER_CAPACITY: usize = 100;
const FREQUENCY_MAX_BYTES: usize = 1 << 20;
/// Events between two halvings, per monitored counter: a key must be seen a few times in
/// that many events to stand out from one-off keys.
const SAMPLE_PER_CAPACITY: usize = 32;
/// [`Bound`] cells per monitored counter, and at least (module docs).
const BOUND_PER_CAPACITY: usize = 16;
const BOUND_MIN_CELLS: usize = 1 << 15;

/// Cell `row` of a key among `width`: double hashing of the hash's halves, then a
/// multiply-shift into the range (no modulo on the hot path).
#[inline]
fn cell(hash: u64, row: usize, width: usize) -> usize {
    let (h1, h2) = (hash as u32, (hash >> 32) as u32 | 1);
    let g = h1.wrapping_add((row as u32).wrapping_mul(h2));
    ((u64::from(g) * width as u64) >> 32) as usize
}

/// Recent frequency of keys, for admission (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frequency {
    /// Sixteen 4-bit counters per word, eight words (one cache line) per block.
    table: Vec<u64>,
    /// Events since the last halving.
    samples: u32,
    period: u32,
}

impl Frequency {
    pub fn new(capacity: usize) -> Frequency {
        let bytes = (capacity * FREQUENCY_BYTES_PER_CAPACITY).clamp(64, FREQUENCY_MAX_BYTES);
        Frequency {
            table: vec![0; bytes / 64 * 8],
            samples: 0,
            period: (capacity * SAMPLE_PER_CAPACITY).min(u32::MAX as usize) as u32,
        }
    }

    /// The rows' counters of a key, as `(word, shift)`, all in one block. The block comes
    /// from the hash's low half and the counters from its high half; [`Bound`] mixes both
    /// halves, so the two collide on different keys.
    #[inline]
    fn counters(&self, hash: u64) -> [(usize, u32); ROWS] {
        let blocks = self.table.len() / 8;
        let block = ((u64::from(hash as u32) * blocks as u64) >> 32) as usize * 8;
        let high = (hash >> 32) as u32;
        std::array::from_fn(|row| {
            let bits = high >> (8 * row);
            (block + (bits & 7) as usize, ((bits >> 3) & 15) * 4)
        })
    }

    /// Counts one sighting of the key; halves every counter once a period is reached.
    #[inline]
    pub fn increment(&mut self, hash: u64) {
        for (word, shift) in self.counters(hash) {
            if (self.table[word] >> shift) & 0xF < 0xF {
                self.table[word] += 1 << shift;
            }
        }
        self.samples += 1;
        if self.samples >= self.period {
            self.halve();
        }
    }

    /// How often the key was seen lately, 0..=15.
    #[inline]
    pub fn estimate(&self, hash: u64) -> u8 {
        self.counters(hash)
            .iter()
            .map(|&(word, shift)| ((self.table[word] >> shift) & 0xF) as u8)
            .min()
            .unwrap_or(0)
    }

    fn halve(&mut self) {
        for word in &mut self.table {
            *word = (*word >> 1) & 0x7777_7777_7777_7777;
        }
        self.samples = 0;
    }

    /// Little-endian: the words, then the samples.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.table.len() * 8 + 4);
        for word in &self.table {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&self.samples.to_le_bytes());
        out
    }

    /// The inverse of [`to_bytes`](Self::to_bytes) for a sketch of `capacity`; `None` when
    /// the bytes are of another size.
    pub fn from_bytes(capacity: usize, bytes: &[u8]) -> Option<Frequency> {
        let mut f = Frequency::new(capacity);
        let (table, samples) = bytes.split_at_checked(f.table.len() * 8)?;
        f.samples = u32::from_le_bytes(samples.try_into().ok()?);
        for (word, b) in f.table.iter_mut().zip(table.chunks_exact(8)) {
            *word = u64::from_le_bytes(b.try_into().ok()?);
        }
        Some(f)
    }
}

/// Upper bounds of unmonitored keys' counts (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// `ROWS` rows of `width` cells; `u16::MAX` is "unknown".
    cells: Vec<u16>,
    width: usize,
}

impl Bound {
    /// A sketch of `capacity`'s size with every cell at `floor`: the bound of every key when
    /// nothing finer is known.
    pub fn filled(capacity: usize, floor: u64) -> Bound {
        let width = (capacity.max(1) * BOUND_PER_CAPACITY).max(BOUND_MIN_CELLS) / ROWS;
        Bound {
            cells: vec![floor.min(u64::from(u16::MAX)) as u16; ROWS * width],
            width,
        }
    }

    #[inline]
    fn cells(&self, hash: u64) -> [usize; ROWS] {
        std::array::from_fn(|row| row * self.width + cell(hash, row, self.width))
    }

    /// The most the key may have been seen unmonitored; `None` when a cell saturated.
    #[inline]
    pub fn estimate(&self, hash: u64) -> Option<u64> {
        let min = self.cells(hash).iter().map(|&c| self.cells[c]).min()?;
        (min < u16::MAX).then_some(u64::from(min))
    }

    /// Records `n` unmonitored sightings: only cells below the key's new bound grow
    /// (conservative update), which keeps every other key's bound and adds the least noise.
    #[inline]
    pub fn add(&mut self, hash: u64, n: u64) {
        let at = self.cells(hash);
        let min = at.iter().map(|&c| self.cells[c]).min().unwrap_or(0);
        self.raise_cells(at, u64::from(min) + n);
    }

    /// Records that the key may have been seen up to `count` times (an evicted counter).
    #[inline]
    pub fn raise(&mut self, hash: u64, count: u64) {
        self.raise_cells(self.cells(hash), count);
    }

    #[inline]
    fn raise_cells(&mut self, at: [usize; ROWS], count: u64) {
        let count = count.min(u64::from(u16::MAX)) as u16;
        for c in at {
            self.cells[c] = self.cells[c].max(count);
        }
    }

    /// A bound for every key at once: no key's cells can all exceed their row's maximum, so
    /// the smallest row maximum bounds them all. `None` when that is unknown.
    pub fn max(&self) -> Option<u64> {
        let max = self
            .cells
            .chunks(self.width)
            .map(|row| row.iter().copied().max().unwrap_or(0))
            .min()
            .unwrap_or(0);
        (max < u16::MAX).then_some(u64::from(max))
    }
}

impl Bound {
    /// Little-endian cells.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.cells.iter().flat_map(|c| c.to_le_bytes()).collect()
    }

    /// The inverse of [`to_bytes`](Self::to_bytes) for a sketch of `capacity`; `None` when
    /// the bytes are of another size.
    pub fn from_bytes(capacity: usize, bytes: &[u8]) -> Option<Bound> {
        let mut b = Bound::filled(capacity, 0);
        if bytes.len() != b.cells.len() * 2 {
            return None;
        }
        for (cell, pair) in b.cells.iter_mut().zip(bytes.chunks_exact(2)) {
            *cell = u16::from_le_bytes([pair[0], pair[1]]);
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash(key: u64) -> u64 {
        foldhash::fast::FixedState::default().hash_one(key)
    }

    #[test]
    fn one_off_keys_stay_rare_in_the_frequency_sketch_while_repeated_ones_stand_out() {
        let mut f = Frequency::new(1000);
        for round in 0..5u64 {
            for key in 0..20_000u64 {
                f.increment(hash(1_000_000 + round * 20_000 + key));
                if key % 100 == 0 {
                    f.increment(hash(7));
                }
            }
        }
        let one_offs = (0..1000u64)
            .filter(|&k| f.estimate(hash(10_000_000 + k)) >= 3)
            .count();
        assert!(one_offs < 20, "{one_offs} unseen keys look frequent");
        assert!(f.estimate(hash(7)) >= 3);
    }

    #[test]
    fn bound_never_underestimates_and_keeps_raised_counts() {
        let mut b = Bound::filled(100, 0);
        let mut truth = std::collections::HashMap::new();
        for i in 0..50_000u64 {
            let key = i * 7919 % 3000;
            b.add(hash(key), 1);
            *truth.entry(key).or_insert(0u64) += 1;
        }
        b.raise(hash(5), 400);
        for (key, t) in truth {
            let want = if key == 5 { t.max(400) } else { t };
            assert!(b.estimate(hash(key)).unwrap() >= want, "{key}");
        }
        assert!(b.max().unwrap() >= 400);
    }

    #[test]
    fn a_saturated_bound_is_unknown() {
        let mut b = Bound::filled(10, 0);
        b.raise(hash(1), u64::MAX);
        assert_eq!(b.estimate(hash(1)), None);
        assert_eq!(b.max(), None);
    }

    #[test]
    fn sketches_round_trip_through_bytes() {
        let mut f = Frequency::new(50);
        let mut b = Bound::filled(50, 3);
        for k in 0..1000 {
            f.increment(hash(k));
            b.add(hash(k), 2);
        }
        assert_eq!(Frequency::from_bytes(50, &f.to_bytes()).unwrap(), f);
        assert_eq!(Bound::from_bytes(50, &b.to_bytes()).unwrap(), b);
        assert!(Frequency::from_bytes(5000, &f.to_bytes()).is_none());
        assert!(Bound::from_bytes(5000, &b.to_bytes()).is_none());
    }

    #[test]
    fn small_capacities_get_at_least_the_floor_of_bound_cells() {
        assert_eq!(Bound::filled(10, 0).to_bytes().len(), 2 * BOUND_MIN_CELLS);
        assert_eq!(Bound::filled(1000, 0).to_bytes().len(), 2 * BOUND_MIN_CELLS);
        assert_eq!(Bound::filled(10_000, 0).to_bytes().len(), 2 * 16 * 10_000);
    }
}
