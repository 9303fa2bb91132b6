//! Key choosers of the YCSB workloads: YCSB's Zipfian, scrambled Zipfian and skewed-latest
//! generators, ported from `site.ycsb.generator` (YCSB 0.17) so figures compare with YCSB's.

/// YCSB's default Zipfian constant (`zipfianconstant`).
pub const ZIPFIAN_CONSTANT: f64 = 0.99;

/// Item count of the Zipfian behind a scrambled Zipfian (YCSB's `ITEM_COUNT`).
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;

/// zeta(10^10, 0.99), precomputed by YCSB (`ScrambledZipfianGenerator.ZETAN`).
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

/// zeta(n, theta) = sum over i in 1..=n of 1 / i^theta.
pub fn zeta(n: u64, theta: f64) -> f64 {
    zeta_from(0, n, theta, 0.0)
}

/// zeta(n, theta) continued from zeta(start, theta) = `partial`.
fn zeta_from(start: u64, n: u64, theta: f64, partial: f64) -> f64 {
    let mut sum = partial;
    for i in start..n {
        sum += 1.0 / ((i + 1) as f64).powf(theta);
    }
    sum
}

/// YCSB's `ZipfianGenerator`: item 0 is the most popular, then 1, and so on; item i is
/// drawn with probability (1 / (i+1)^theta) / zeta(n, theta). The item count may grow
/// between draws (zeta is extended incrementally, as YCSB does).
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta2theta: f64,
    zetan: f64,
    eta: f64,
}

impl Zipfian {
    /// A Zipfian over `0..items` with constant `theta` (computes zeta(items), O(items)).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        Zipfian::with_zetan(items, theta, zeta(items, theta))
    }

    /// A Zipfian whose zeta(items, theta) is already known.
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        let items = items.max(1);
        let zeta2theta = zeta(2, theta);
        let mut z = Zipfian { items, theta, alpha: 1.0 / (1.0 - theta), zeta2theta, zetan, eta: 0.0 };
        z.eta = z.eta_for(items, zetan);
        z
    }

    fn eta_for(&self, items: u64, zetan: f64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2theta / zetan)
    }

    /// Grows (or shrinks) the item count, as YCSB's `nextLong(itemcount)` does.
    pub fn set_items(&mut self, items: u64) {
        let items = items.max(1);
        if items == self.items {
            return;
        }
        self.zetan = if items > self.items {
            zeta_from(self.items, items, self.theta, self.zetan)
        } else {
            zeta(items, self.theta)
        };
        self.items = items;
        self.eta = self.eta_for(items, self.zetan);
    }

    /// The next item, in `0..items`.
    pub fn next(&self, rng: &mut fastrand::Rng) -> u64 {
        let u = rng.f64();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let v = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.items - 1)
    }
}

/// 64-bit FNV-1a of the little-endian bytes of `v`, as a non-negative Java long (YCSB's
/// `Utils.fnvhash64`, which returns `Math.abs` of the hash).
pub fn fnv1a64(v: u64) -> u64 {
    const OFFSET: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET;
    let mut v = v;
    for _ in 0..8 {
        let octet = v & 0xff;
        v >>= 8;
        hash ^= octet;
        hash = hash.wrapping_mul(PRIME);
    }
    (hash as i64).unsigned_abs()
}

/// YCSB's `ScrambledZipfianGenerator`: a Zipfian (constant 0.99) over 10^10 items whose
/// draw is hashed (FNV-1a) onto `0..n`, so the popular keys are spread over the key space
/// instead of clustered at its start. The most popular key gets about 1/zeta(10^10, 0.99)
/// = 3.8% of the draws.
#[derive(Debug, Clone)]
pub struct ScrambledZipfian {
    zipfian: Zipfian,
}

impl Default for ScrambledZipfian {
    fn default() -> ScrambledZipfian {
        ScrambledZipfian::new()
    }
}

impl ScrambledZipfian {
    pub fn new() -> ScrambledZipfian {
        ScrambledZipfian { zipfian: Zipfian::with_zetan(SCRAMBLED_ITEMS, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN) }
    }

    /// The next key index in `0..n` (`n` may change between calls).
    pub fn next(&self, rng: &mut fastrand::Rng, n: u64) -> u64 {
        fnv1a64(self.zipfian.next(rng)) % n.max(1)
    }
}

/// YCSB's `SkewedLatestGenerator`: the most recently inserted key is the most popular,
/// then the one before it, with Zipfian (0.99) popularity by recency: returns
/// `latest - zipfian(latest + 1)`.
#[derive(Debug, Clone)]
pub struct Latest {
    zipfian: Zipfian,
}

impl Latest {
    /// A generator for a key space of `n` keys (indexes `0..n`) to start with.
    pub fn new(n: u64) -> Latest {
        Latest { zipfian: Zipfian::new(n.max(1), ZIPFIAN_CONSTANT) }
    }

    /// The next key index in `0..n`, where `n - 1` is the latest inserted key.
    pub fn next(&mut self, rng: &mut fastrand::Rng, n: u64) -> u64 {
        let n = n.max(1);
        self.zipfian.set_items(n);
        n - 1 - self.zipfian.next(rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWS: usize = 400_000;

    #[test]
    fn zeta_matches_ycsb_precomputed_constant() {
        assert_eq!(zeta(1, 0.99), 1.0);
        assert!((zeta(100, 0.99) - 5.294_568_8).abs() < 1e-6);
        // zeta(n, s) for s < 1 is about n^(1-s) / (1-s) + Riemann zeta(s) (Euler-Maclaurin),
        // and Riemann zeta(0.99) = 1/(s-1) + gamma - gamma_1 (s-1) = -99.4235: this gives
        // YCSB's constant zeta(10^10, 0.99) = 26.46902820178302 without summing 10^10 terms.
        let s = 0.99f64;
        let riemann = 1.0 / (s - 1.0) + 0.577_215_664_9 - (-0.072_815_845_5) * (s - 1.0);
        let approx = 1e10f64.powf(1.0 - s) / (1.0 - s) + riemann;
        assert!((approx - SCRAMBLED_ZETAN).abs() < 1e-3, "{approx}");
        // Growing a Zipfian extends zeta incrementally to the same value.
        let z = Zipfian::new(100, 0.99);
        let mut grown = Zipfian::new(10, 0.99);
        grown.set_items(100);
        assert!((grown.zetan - z.zetan).abs() < 1e-9);
        assert!((grown.eta - z.eta).abs() < 1e-9);
    }

    #[test]
    fn zipfian_head_frequency() {
        // Item 0 should get 1/zeta(n) of the draws, item 1 half of that (theta ~ 1).
        let n = 1000;
        let z = Zipfian::new(n, ZIPFIAN_CONSTANT);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..DRAWS {
            counts[z.next(&mut rng) as usize] += 1;
        }
        let p0 = counts[0] as f64 / DRAWS as f64;
        let expect0 = 1.0 / zeta(n, ZIPFIAN_CONSTANT);
        assert!((p0 - expect0).abs() < 0.1 * expect0, "p(item 0) = {p0}, expected {expect0}");
        let p1 = counts[1] as f64 / DRAWS as f64;
        let expect1 = expect0 / 2f64.powf(ZIPFIAN_CONSTANT);
        assert!((p1 - expect1).abs() < 0.1 * expect1, "p(item 1) = {p1}, expected {expect1}");
        // The 10% most popular items take roughly 70% of the draws.
        let head: u64 = counts[..100].iter().sum();
        let share = head as f64 / DRAWS as f64;
        let expect = zeta(100, ZIPFIAN_CONSTANT) / zeta(n, ZIPFIAN_CONSTANT);
        assert!((share - expect).abs() < 0.05, "top-10% share {share}, expected {expect}");
        assert!(counts.iter().all(|&c| c < counts[0] + 1));
    }

    #[test]
    fn scrambled_zipfian_spreads_a_skewed_head() {
        let n = 100_000;
        let z = ScrambledZipfian::new();
        let mut rng = fastrand::Rng::with_seed(11);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..DRAWS {
            let k = z.next(&mut rng, n);
            assert!(k < n);
            counts[k as usize] += 1;
        }
        let mut sorted = counts.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        // The hottest key gets about 1 / zeta(10^10, 0.99) = 3.78% of the draws.
        let p0 = sorted[0] as f64 / DRAWS as f64;
        assert!((p0 - 1.0 / SCRAMBLED_ZETAN).abs() < 0.006, "hottest key share {p0}");
        // The hottest 1% of keys take at least the 1000 most popular ranks' share,
        // zeta(1000) / zeta(10^10) = 28% (uniform would give them 1%).
        let head: u64 = sorted[..(n / 100) as usize].iter().sum();
        let share = head as f64 / DRAWS as f64;
        let expect = zeta(n / 100, ZIPFIAN_CONSTANT) / SCRAMBLED_ZETAN;
        assert!(share > expect - 0.01 && share < expect + 0.05, "top-1% share {share}, expected {expect}");
        // ... and the hottest key is not at the start of the key space (scrambled).
        let hottest = counts.iter().position(|&c| c == sorted[0]).expect("a maximum");
        assert_eq!(hottest as u64, fnv1a64(0) % n);
    }

    #[test]
    fn latest_prefers_recent_keys() {
        let n = 10_000;
        let mut g = Latest::new(n);
        let mut rng = fastrand::Rng::with_seed(3);
        let (mut newest, mut recent) = (0u64, 0u64);
        for _ in 0..DRAWS {
            let k = g.next(&mut rng, n);
            assert!(k < n);
            newest += u64::from(k == n - 1);
            recent += u64::from(k >= n - n / 100);
        }
        let p_newest = newest as f64 / DRAWS as f64;
        let expect = 1.0 / zeta(n, ZIPFIAN_CONSTANT);
        assert!((p_newest - expect).abs() < 0.1 * expect, "p(latest) = {p_newest}, expected {expect}");
        let share = recent as f64 / DRAWS as f64;
        let expect = zeta(n / 100, ZIPFIAN_CONSTANT) / zeta(n, ZIPFIAN_CONSTANT);
        assert!((share - expect).abs() < 0.03, "newest-1% share {share}, expected {expect}");
        // Growing the key space moves the head to the new latest key.
        let mut newest = 0;
        for _ in 0..DRAWS / 4 {
            newest += u64::from(g.next(&mut rng, n + 500) == n + 499);
        }
        let p = newest as f64 / (DRAWS / 4) as f64;
        let expect = 1.0 / zeta(n + 500, ZIPFIAN_CONSTANT);
        assert!((p - expect).abs() < 0.1 * expect, "p(new latest) = {p}, expected {expect}");
    }

    #[test]
    fn fnv_matches_ycsb() {
        // YCSB: Utils.fnvhash64(0) = FNV offset basis after eight zero octets.
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for _ in 0..8 {
            h = h.wrapping_mul(1_099_511_628_211);
        }
        assert_eq!(fnv1a64(0), (h as i64).unsigned_abs());
        assert_ne!(fnv1a64(1), fnv1a64(2));
    }
}
