//! A bounded queue of events that folds identical reads into one.

use std::collections::HashMap;
use std::io;

use tokenguard_schema::{TokenKind, TokenRead};

/// Identity of a read for folding: the same process, token and pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CoalesceKey {
    pid: u32,
    start_time: u64,
    uid: u32,
    exe: String,
    comm: String,
    token_kind: TokenKind,
    token_path: String,
    host_path: bool,
    container_id: Option<String>,
    pod_uid: Option<String>,
}

impl CoalesceKey {
    fn of(read: &TokenRead) -> CoalesceKey {
        CoalesceKey {
            pid: read.process.pid,
            start_time: read.process.start_time,
            uid: read.process.uid,
            exe: read.process.exe.clone(),
            comm: read.process.comm.clone(),
            token_kind: read.token.kind,
            token_path: read.token.path.clone(),
            host_path: read.token.host_path,
            container_id: read.container.as_ref().map(|c| c.id.clone()),
            pod_uid: read.pod.as_ref().map(|p| p.uid.clone()),
        }
    }
}

/// Result of [`CoalescingQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Folded into an identical queued event, whose `count` grew.
    Coalesced,
    /// The queue was full.
    Dropped,
    /// The event alone, encoded as JSON, has this many bytes, more than the
    /// queue's maximum event size, so no batch could carry it.
    TooLarge(usize),
}

/// An event with the size of its JSON encoding in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizedRead {
    pub read: TokenRead,
    pub size: usize,
}

/// Events waiting to be sent, oldest first. An identical read folds into the
/// queued event, which keeps its `event_id` and `observed_at`.
#[derive(Debug)]
pub struct CoalescingQueue {
    events: Vec<SizedRead>,
    index: HashMap<CoalesceKey, usize>,
    capacity: usize,
    max_event_size: usize,
}

impl CoalescingQueue {
    /// Builds a queue of at most `capacity` distinct events, each at most
    /// `max_event_size` bytes once encoded.
    pub fn new(capacity: usize, max_event_size: usize) -> CoalescingQueue {
        CoalescingQueue {
            events: Vec::new(),
            index: HashMap::new(),
            capacity,
            max_event_size,
        }
    }

    /// Queues `read` or folds it into an identical queued event.
    pub fn push(&mut self, read: TokenRead) -> Pushed {
        let key = CoalesceKey::of(&read);
        if let Some(&position) = self.index.get(&key) {
            let queued = &mut self.events[position];
            let count = queued.read.count.saturating_add(read.count);
            // `count` is encoded as a bare decimal integer, so only its digits
            // change the size.
            queued.size = queued.size - decimal_digits(queued.read.count) + decimal_digits(count);
            queued.read.count = count;
            return Pushed::Coalesced;
        }
        let size = encoded_len(&read);
        // Folding may later grow `count` to `u32::MAX`, which must still fit.
        let max_size = size - decimal_digits(read.count) + decimal_digits(u32::MAX);
        if max_size > self.max_event_size {
            return Pushed::TooLarge(size);
        }
        if self.events.len() >= self.capacity {
            return Pushed::Dropped;
        }
        self.index.insert(key, self.events.len());
        self.events.push(SizedRead { read, size });
        Pushed::Queued
    }

    /// Removes and returns the oldest events, at most `max_events` of them
    /// and at most `max_bytes` in total counting one separator byte between
    /// two events. It stops at the first event that does not fit, so events
    /// leave in the order they came.
    pub fn take(&mut self, max_events: usize, max_bytes: usize) -> Vec<SizedRead> {
        let mut bytes = 0;
        let mut count = 0;
        for queued in self.events.iter().take(max_events) {
            let separator = usize::from(count > 0);
            if bytes + separator + queued.size > max_bytes {
                break;
            }
            bytes += separator + queued.size;
            count += 1;
        }
        let rest = self.events.split_off(count);
        let taken = std::mem::replace(&mut self.events, rest);
        self.index = self
            .events
            .iter()
            .enumerate()
            .map(|(position, queued)| (CoalesceKey::of(&queued.read), position))
            .collect();
        taken
    }

    /// Number of distinct queued events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Returns whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Returns the size in bytes of `read` encoded as JSON, as in a batch body.
pub fn encoded_len(read: &TokenRead) -> usize {
    let mut counter = ByteCounter(0);
    match serde_json::to_writer(&mut counter, read) {
        Ok(()) => counter.0,
        // Encoding fails only on a writer error or a map key that is not a
        // string, and neither occurs here. A huge size makes the queue reject it.
        Err(_) => usize::MAX / 2,
    }
}

fn decimal_digits(value: u32) -> usize {
    value.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// An `io::Write` that only counts the bytes written to it.
struct ByteCounter(usize);

impl io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenguard_core::conformance::sample_read;

    const MAX_EVENT_SIZE: usize = 1 << 20;

    fn read(id: &str, exe: &str) -> TokenRead {
        let mut read = sample_read(exe, "x");
        read.event_id = id.to_owned();
        read
    }

    #[test]
    fn identical_reads_fold() {
        let mut queue = CoalescingQueue::new(10, MAX_EVENT_SIZE);
        assert_eq!(queue.push(read("b:1", "/bin/a")), Pushed::Queued);
        assert_eq!(queue.push(read("b:2", "/bin/a")), Pushed::Coalesced);
        assert_eq!(queue.push(read("b:3", "/bin/a")), Pushed::Coalesced);
        let events = queue.take(10, usize::MAX);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].read.event_id, "b:1");
        assert_eq!(events[0].read.count, 3);
    }

    #[test]
    fn different_process_or_pod_not_folded() {
        let mut queue = CoalescingQueue::new(10, MAX_EVENT_SIZE);
        queue.push(read("b:1", "/bin/a"));
        let mut other_pid = read("b:2", "/bin/a");
        other_pid.process.pid += 1;
        assert_eq!(queue.push(other_pid), Pushed::Queued);
        let mut other_pod = read("b:3", "/bin/a");
        other_pod.pod.as_mut().unwrap().uid = "other".to_owned();
        assert_eq!(queue.push(other_pod), Pushed::Queued);
        let mut host_copy = read("b:4", "/bin/a");
        host_copy.token.host_path = true;
        assert_eq!(queue.push(host_copy), Pushed::Queued);
        assert_eq!(queue.len(), 4);
    }

    #[test]
    fn full_queue_drops_new_but_folds_known() {
        let mut queue = CoalescingQueue::new(1, MAX_EVENT_SIZE);
        queue.push(read("b:1", "/bin/a"));
        assert_eq!(queue.push(read("b:2", "/bin/b")), Pushed::Dropped);
        assert_eq!(queue.push(read("b:3", "/bin/a")), Pushed::Coalesced);
    }

    #[test]
    fn take_keeps_index_of_rest() {
        let mut queue = CoalescingQueue::new(10, MAX_EVENT_SIZE);
        queue.push(read("b:1", "/bin/a"));
        queue.push(read("b:2", "/bin/b"));
        queue.push(read("b:3", "/bin/c"));
        let first = queue.take(2, usize::MAX);
        assert_eq!(first.len(), 2);
        assert_eq!(queue.push(read("b:4", "/bin/c")), Pushed::Coalesced);
        assert_eq!(queue.push(read("b:5", "/bin/a")), Pushed::Queued);
        let rest = queue.take(10, usize::MAX);
        assert_eq!(rest[0].read.event_id, "b:3");
        assert_eq!(rest[0].read.count, 2);
        assert_eq!(rest[1].read.event_id, "b:5");
    }

    #[test]
    fn size_matches_encoding_after_folds() {
        let mut queue = CoalescingQueue::new(10, MAX_EVENT_SIZE);
        for id in 0..12 {
            queue.push(read(&format!("b:{id}"), "/bin/a"));
        }
        let events = queue.take(10, usize::MAX);
        assert_eq!(events[0].read.count, 12);
        assert_eq!(
            events[0].size,
            serde_json::to_vec(&events[0].read).unwrap().len()
        );
    }

    #[test]
    fn take_stops_at_byte_limit() {
        let mut queue = CoalescingQueue::new(10, MAX_EVENT_SIZE);
        queue.push(read("b:1", "/bin/a"));
        queue.push(read("b:2", "/bin/b"));
        queue.push(read("b:3", "/bin/c"));
        let size = encoded_len(&read("b:1", "/bin/a"));
        // Two events and the comma between them, one byte short of a third.
        let first = queue.take(10, 3 * size + 1);
        assert_eq!(first.len(), 2);
        let rest = queue.take(10, size);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].read.event_id, "b:3");
    }

    #[test]
    fn take_keeps_event_too_large_for_budget() {
        let mut queue = CoalescingQueue::new(10, MAX_EVENT_SIZE);
        queue.push(read("b:1", "/bin/a"));
        assert!(queue.take(10, 10).is_empty());
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn oversized_event_rejected() {
        let mut queue = CoalescingQueue::new(10, 1000);
        let mut big = read("b:1", "/bin/a");
        big.process.args = vec!["x".repeat(1000)];
        let size = encoded_len(&big);
        assert_eq!(queue.push(big), Pushed::TooLarge(size));
        assert!(queue.is_empty());
    }

    #[test]
    fn event_rejected_when_folding_could_overflow() {
        let event = read("b:1", "/bin/a");
        let size = encoded_len(&event);
        // Room for the event with `count` 1 but not with ten digits of it.
        let mut queue = CoalescingQueue::new(10, size + 8);
        assert_eq!(queue.push(event.clone()), Pushed::TooLarge(size));
        let mut queue = CoalescingQueue::new(10, size + 9);
        assert_eq!(queue.push(event), Pushed::Queued);
    }
}
