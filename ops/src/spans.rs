//! Sets of time as sorted, disjoint half-open spans `[start, end)`: the arithmetic that
//! maintenance coverage and service availability are made of (union, intersection,
//! difference, length), kept in one place so that every figure merges overlaps the same way.
//!
//! Every function that returns spans returns them *normalised*: sorted, non-empty, and neither
//! overlapping nor touching. Functions that take two sets expect normalised input (what
//! [`normalise`] and the others return).

use crate::model::Millis;

/// A half-open span of time `[start, end)`; empty when `end <= start`.
pub(crate) type Span = (Millis, Millis);

/// Sorts `spans`, drops the empty ones and merges those that overlap or touch, so that time
/// covered twice is counted once.
pub(crate) fn normalise(mut spans: Vec<Span>) -> Vec<Span> {
    spans.retain(|&(start, end)| start < end);
    spans.sort_unstable();
    let mut merged: Vec<Span> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The parts of `spans` inside `[from, to)`, normalised.
pub(crate) fn clip(spans: impl IntoIterator<Item = Span>, from: Millis, to: Millis) -> Vec<Span> {
    normalise(
        spans
            .into_iter()
            .map(|(start, end)| (start.max(from), end.min(to)))
            .collect(),
    )
}

/// The time in both normalised sets.
pub(crate) fn intersect(left: &[Span], right: &[Span]) -> Vec<Span> {
    let mut both = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        let start = left[i].0.max(right[j].0);
        let end = left[i].1.min(right[j].1);
        if start < end {
            both.push((start, end));
        }
        // The span that ends first cannot meet anything further on the other side.
        if left[i].1 <= right[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    both
}

/// The time of `[from, to)` outside the normalised set `spans`.
pub(crate) fn complement(spans: &[Span], from: Millis, to: Millis) -> Vec<Span> {
    let mut gaps = Vec::new();
    let mut cursor = from;
    for &(start, end) in spans {
        if end <= cursor {
            continue;
        }
        if start >= to {
            break;
        }
        if start > cursor {
            gaps.push((cursor, start));
        }
        cursor = end;
    }
    if cursor < to {
        gaps.push((cursor, to));
    }
    gaps
}

/// The time of the normalised set `left` outside the normalised set `right`.
pub(crate) fn subtract(left: &[Span], right: &[Span]) -> Vec<Span> {
    let (Some(first), Some(last)) = (left.first(), left.last()) else {
        return Vec::new();
    };
    intersect(left, &complement(right, first.0, last.1))
}

/// How much time a normalised set holds.
pub(crate) fn length(spans: &[Span]) -> Millis {
    spans.iter().map(|&(start, end)| end - start).sum()
}

/// Whether the normalised set holds the instant `at`.
pub(crate) fn contains(spans: &[Span], at: Millis) -> bool {
    // Normalised spans are sorted by start and by end alike.
    let after = spans.partition_point(|&(_, end)| end <= at);
    spans.get(after).is_some_and(|&(start, _)| start <= at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_and_touching_spans_merge_and_empty_ones_go() {
        assert_eq!(
            normalise(vec![
                (10, 20),
                (0, 5),
                (15, 30),
                (30, 35),
                (40, 40),
                (50, 45)
            ]),
            vec![(0, 5), (10, 35)]
        );
        assert_eq!(length(&normalise(vec![(0, 10), (5, 15)])), 15);
    }

    #[test]
    fn set_operations() {
        let a = normalise(vec![(0, 10), (20, 30)]);
        let b = normalise(vec![(5, 25)]);
        assert_eq!(intersect(&a, &b), vec![(5, 10), (20, 25)]);
        assert_eq!(subtract(&a, &b), vec![(0, 5), (25, 30)]);
        assert_eq!(subtract(&b, &a), vec![(10, 20)]);
        assert_eq!(complement(&a, 0, 40), vec![(10, 20), (30, 40)]);
        assert_eq!(complement(&a, 12, 18), vec![(12, 18)]);
        assert_eq!(complement(&[], 3, 7), vec![(3, 7)]);
        assert_eq!(complement(&a, 5, 5), Vec::<Span>::new());
        assert_eq!(subtract(&[], &a), Vec::<Span>::new());
        assert_eq!(
            clip(vec![(0, 10), (20, 30)], 5, 25),
            vec![(5, 10), (20, 25)]
        );
    }

    #[test]
    fn membership_is_half_open() {
        let a = normalise(vec![(0, 10), (20, 30)]);
        assert!(contains(&a, 0));
        assert!(contains(&a, 9));
        assert!(!contains(&a, 10));
        assert!(!contains(&a, 15));
        assert!(contains(&a, 20));
        assert!(!contains(&a, 30));
        assert!(!contains(&[], 0));
    }
}
