//! The encoder's per-hour cache of index names: each tuple's index is formatted from the
//! configured [`IndexPattern`] (parsed and validated at startup, in the leaf
//! `crate::index_pattern`) at most once per UTC hour on the hot path.

use crate::index_pattern::{IndexPattern, MILLIS_PER_HOUR};

/// Formats each index name at most once per hour: every supported field is an hour or
/// coarser, so all tuples of the same UTC hour share a name. Two slots, because tuples near
/// an hour boundary alternate between the two hours.
#[derive(Debug, Clone)]
pub struct IndexNameCache {
    pattern: IndexPattern,
    slots: [(Option<i64>, String); 2],
    newest: usize,
}

impl IndexNameCache {
    pub fn new(pattern: IndexPattern) -> IndexNameCache {
        IndexNameCache {
            pattern,
            slots: [(None, String::new()), (None, String::new())],
            newest: 0,
        }
    }

    pub fn pattern(&self) -> &IndexPattern {
        &self.pattern
    }

    /// The index name for a tuple at `epoch_millis` (UTC).
    pub fn get(&mut self, epoch_millis: i64) -> &str {
        let hour = if self.pattern.is_dated() {
            epoch_millis.div_euclid(MILLIS_PER_HOUR)
        } else {
            0
        };
        let slot = match self.slots.iter().position(|(h, _)| *h == Some(hour)) {
            Some(i) => i,
            None => {
                let i = 1 - self.newest;
                let (h, name) = &mut self.slots[i];
                name.clear();
                self.pattern.format_hour_into(hour, name);
                *h = Some(hour);
                i
            }
        };
        self.newest = slot;
        &self.slots[slot].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index_pattern::tests::ms;

    #[test]
    fn cache_is_total_at_extremes() {
        for t in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
            let mut cache = IndexNameCache::new(IndexPattern::parse("x-%{+yyyy.ww}").expect("ok"));
            let _ = cache.get(t);
        }
    }

    #[test]
    fn cache_serves_repeats_and_alternation() {
        let pattern = IndexPattern::parse("v-%{+yyyy.MM.dd.HH}").expect("ok");
        let mut cache = IndexNameCache::new(pattern.clone());
        let a = ms(2025, 3, 1, 10) + 59 * 60_000;
        let b = ms(2025, 3, 1, 11) + 1_000;
        for _ in 0..3 {
            assert_eq!(cache.get(a), "v-2025.03.01.10");
            assert_eq!(cache.get(b), "v-2025.03.01.11");
        }
        assert_eq!(cache.get(ms(2025, 3, 1, 12)), "v-2025.03.01.12");
        assert_eq!(cache.get(b), "v-2025.03.01.11");
        assert_eq!(cache.get(a), "v-2025.03.01.10");
        assert_eq!(cache.pattern(), &pattern);

        let mut plain = IndexNameCache::new(IndexPattern::parse("flows").expect("ok"));
        assert_eq!(plain.get(i64::MIN), "flows");
        assert_eq!(plain.get(0), "flows");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn cached_equals_uncached(
                pattern in prop_oneof![
                    Just("vnet-flow-logs-%{+xxxx.ww}"),
                    Just("nsg-%{+YYYY.MM.dd}"),
                    Just("f-%{+yyyy.MM.dd.HH}"),
                    Just("plain"),
                ],
                base in any::<i64>(),
                offsets in proptest::collection::vec(-3 * MILLIS_PER_HOUR..3 * MILLIS_PER_HOUR, 1..40),
            ) {
                let p = IndexPattern::parse(pattern).expect("valid");
                let mut cache = IndexNameCache::new(p.clone());
                for off in offsets {
                    let t = base.saturating_add(off);
                    prop_assert_eq!(cache.get(t).to_owned(), p.format(t));
                }
            }
        }
    }
}
