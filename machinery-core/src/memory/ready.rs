//! The ready messages of one queue, in delivery order, with a cheap hot path (append,
//! take the first) and ordered walks from any position (keyset pages).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use uuid::Uuid;

/// Priorities run from 0 to 9, higher first.
const LEVELS: usize = 10;

/// A message; its queue is the one that holds it.
#[derive(Debug, Clone)]
pub(super) struct Message {
    /// As published; nil when the publisher gave none.
    pub(super) uuid: Uuid,
    /// 0–9.
    pub(super) priority: u8,
    pub(super) payload: Vec<u8>,
    pub(super) delivery_count: u32,
    /// Its age: a message keeps its sequence number when it comes back, so it keeps
    /// its place.
    pub(super) seq: u64,
}

/// The ready messages of one priority, oldest (lowest sequence number) first.
///
/// Messages arrive mostly in sequence order (new ones get the next number) and go to
/// the back of `fifo`; one that comes back with an older number (a released delivery,
/// an expired lease, a delayed message now due) waits in `returned`. The next message
/// is the older of the two heads.
#[derive(Default)]
struct Level {
    /// Sorted by sequence number.
    fifo: VecDeque<Message>,
    returned: BTreeMap<u64, Message>,
}

impl Level {
    fn len(&self) -> usize {
        self.fifo.len() + self.returned.len()
    }

    fn push(&mut self, message: Message) {
        if self.fifo.back().is_none_or(|last| last.seq < message.seq) {
            self.fifo.push_back(message);
        } else {
            self.returned.insert(message.seq, message);
        }
    }

    /// Whether the next message is the head of `returned`.
    fn returned_first(&self) -> bool {
        match (self.fifo.front(), self.returned.first_key_value()) {
            (Some(f), Some((seq, _))) => *seq < f.seq,
            (None, r) => r.is_some(),
            (Some(_), None) => false,
        }
    }

    fn peek(&self) -> Option<&Message> {
        if self.returned_first() {
            self.returned.first_key_value().map(|(_, m)| m)
        } else {
            self.fifo.front()
        }
    }

    fn pop(&mut self) -> Option<Message> {
        if self.returned_first() {
            self.returned.pop_first().map(|(_, m)| m)
        } else {
            self.fifo.pop_front()
        }
    }

    /// The messages after sequence number `after` (all when `None`), in order.
    fn after(&self, after: Option<u64>) -> impl Iterator<Item = &Message> {
        let start = after.map_or(0, |seq| self.fifo.partition_point(|m| m.seq <= seq));
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        merge(
            self.fifo.range(start..),
            self.returned
                .range((from, Bound::Unbounded))
                .map(|(_, m)| m),
        )
    }

    fn retain(&mut self, mut keep: impl FnMut(&Message) -> bool) {
        self.fifo.retain(&mut keep);
        self.returned.retain(|_, m| keep(m));
    }
}

/// Two iterators sorted by sequence number, merged.
fn merge<'a>(
    mut a: impl Iterator<Item = &'a Message>,
    mut b: impl Iterator<Item = &'a Message>,
) -> impl Iterator<Item = &'a Message> {
    let (mut next_a, mut next_b) = (a.next(), b.next());
    std::iter::from_fn(move || match (next_a, next_b) {
        (Some(x), Some(y)) if y.seq < x.seq => {
            next_b = b.next();
            Some(y)
        }
        (Some(x), _) => {
            next_a = a.next();
            Some(x)
        }
        (None, Some(y)) => {
            next_b = b.next();
            Some(y)
        }
        (None, None) => None,
    })
}

/// The ready messages of a queue: higher priority first, then oldest first.
#[derive(Default)]
pub(super) struct Ready {
    levels: [Level; LEVELS],
    len: usize,
}

impl Ready {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, message: Message) {
        let level = usize::from(message.priority).min(LEVELS - 1);
        self.levels[level].push(message);
        self.len += 1;
    }

    /// The message delivered next.
    pub(super) fn peek(&self) -> Option<&Message> {
        if self.len == 0 {
            return None;
        }
        self.levels.iter().rev().find_map(Level::peek)
    }

    pub(super) fn pop(&mut self) -> Option<Message> {
        if self.len == 0 {
            return None;
        }
        let message = self
            .levels
            .iter_mut()
            .rev()
            .find(|l| l.len() > 0)
            .and_then(Level::pop)?;
        self.len -= 1;
        Some(message)
    }

    /// The messages after position `(priority, seq)` (all when `None`), in delivery
    /// order. Finding the position costs a binary search and a tree lookup per level.
    pub(super) fn after(&self, after: Option<(u8, u64)>) -> impl Iterator<Item = &Message> {
        let (top, seq) = match after {
            Some((priority, seq)) => (usize::from(priority).min(LEVELS - 1), Some(seq)),
            None => (LEVELS - 1, None),
        };
        (0..=top)
            .rev()
            .flat_map(move |level| self.levels[level].after(if level == top { seq } else { None }))
    }

    /// Keeps the messages `keep` accepts; returns how many were removed.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Message) -> bool) -> usize {
        for level in &mut self.levels {
            level.retain(&mut keep);
        }
        let left = self.levels.iter().map(Level::len).sum();
        let removed = self.len - left;
        self.len = left;
        removed
    }

    pub(super) fn clear(&mut self) {
        *self = Ready::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(priority: u8, seq: u64) -> Message {
        Message {
            uuid: Uuid::nil(),
            priority,
            payload: Vec::new(),
            delivery_count: 0,
            seq,
        }
    }

    fn order(ready: &Ready, after: Option<(u8, u64)>) -> Vec<(u8, u64)> {
        ready.after(after).map(|m| (m.priority, m.seq)).collect()
    }

    #[test]
    fn delivery_order_is_priority_then_age() {
        let mut ready = Ready::default();
        for (priority, seq) in [(0, 1), (5, 2), (0, 3), (9, 4), (5, 5), (0, 6)] {
            ready.push(message(priority, seq));
        }
        // Back with their old places: behind nothing older.
        ready.push(message(0, 0));
        ready.push(message(5, 1));
        let all = order(&ready, None);
        assert_eq!(
            all,
            [
                (9, 4),
                (5, 1),
                (5, 2),
                (5, 5),
                (0, 0),
                (0, 1),
                (0, 3),
                (0, 6)
            ]
        );
        for (i, position) in all.iter().enumerate() {
            assert_eq!(
                order(&ready, Some(*position)),
                all[i + 1..],
                "after {position:?}"
            );
        }
        // A position whose message is gone still places the walk.
        assert_eq!(order(&ready, Some((5, 3))), all[3..]);
        assert_eq!(order(&ready, Some((7, 100))), all[1..]);
        let mut popped = Vec::new();
        while let Some(peeked) = ready.peek().map(|m| (m.priority, m.seq)) {
            let m = ready.pop().unwrap();
            assert_eq!((m.priority, m.seq), peeked);
            popped.push(peeked);
        }
        assert_eq!(popped, all);
        assert_eq!(ready.len(), 0);
    }

    #[test]
    fn retain_counts_what_it_removes() {
        let mut ready = Ready::default();
        for seq in 1..=10 {
            ready.push(message((seq % 3) as u8, seq));
        }
        ready.push(message(1, 0));
        assert_eq!(ready.retain(|m| m.seq % 2 == 1), 6);
        assert_eq!(ready.len(), 5);
        assert!(ready.after(None).all(|m| m.seq % 2 == 1));
        ready.clear();
        assert!(ready.peek().is_none());
    }
}
