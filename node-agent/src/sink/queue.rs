//! A bounded queue of events that folds identical reads into one.

use std::collections::HashMap;

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
}

/// Events waiting to be sent, oldest first. An identical read folds into the
/// queued event, which keeps its `event_id` and `observed_at`.
#[derive(Debug)]
pub struct CoalescingQueue {
    events: Vec<TokenRead>,
    index: HashMap<CoalesceKey, usize>,
    capacity: usize,
}

impl CoalescingQueue {
    /// Builds a queue of at most `capacity` distinct events.
    pub fn new(capacity: usize) -> CoalescingQueue {
        CoalescingQueue {
            events: Vec::new(),
            index: HashMap::new(),
            capacity,
        }
    }

    /// Queues `read` or folds it into an identical queued event.
    pub fn push(&mut self, read: TokenRead) -> Pushed {
        let key = CoalesceKey::of(&read);
        if let Some(&position) = self.index.get(&key) {
            let queued = &mut self.events[position];
            queued.count = queued.count.saturating_add(read.count);
            return Pushed::Coalesced;
        }
        if self.events.len() >= self.capacity {
            return Pushed::Dropped;
        }
        self.index.insert(key, self.events.len());
        self.events.push(read);
        Pushed::Queued
    }

    /// Removes and returns up to `max` of the oldest events.
    pub fn take(&mut self, max: usize) -> Vec<TokenRead> {
        let rest = self.events.split_off(max.min(self.events.len()));
        let taken = std::mem::replace(&mut self.events, rest);
        self.index = self
            .events
            .iter()
            .enumerate()
            .map(|(position, read)| (CoalesceKey::of(read), position))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokenguard_core::conformance::sample_read;

    fn read(id: &str, exe: &str) -> TokenRead {
        let mut read = sample_read(exe, "x");
        read.event_id = id.to_owned();
        read
    }

    #[test]
    fn identical_reads_fold() {
        let mut queue = CoalescingQueue::new(10);
        assert_eq!(queue.push(read("b:1", "/bin/a")), Pushed::Queued);
        assert_eq!(queue.push(read("b:2", "/bin/a")), Pushed::Coalesced);
        assert_eq!(queue.push(read("b:3", "/bin/a")), Pushed::Coalesced);
        let events = queue.take(10);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_id, "b:1");
        assert_eq!(events[0].count, 3);
    }

    #[test]
    fn different_process_or_pod_not_folded() {
        let mut queue = CoalescingQueue::new(10);
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
        let mut queue = CoalescingQueue::new(1);
        queue.push(read("b:1", "/bin/a"));
        assert_eq!(queue.push(read("b:2", "/bin/b")), Pushed::Dropped);
        assert_eq!(queue.push(read("b:3", "/bin/a")), Pushed::Coalesced);
    }

    #[test]
    fn take_keeps_index_of_rest() {
        let mut queue = CoalescingQueue::new(10);
        queue.push(read("b:1", "/bin/a"));
        queue.push(read("b:2", "/bin/b"));
        queue.push(read("b:3", "/bin/c"));
        let first = queue.take(2);
        assert_eq!(first.len(), 2);
        assert_eq!(queue.push(read("b:4", "/bin/c")), Pushed::Coalesced);
        assert_eq!(queue.push(read("b:5", "/bin/a")), Pushed::Queued);
        let rest = queue.take(10);
        assert_eq!(rest[0].event_id, "b:3");
        assert_eq!(rest[0].count, 2);
        assert_eq!(rest[1].event_id, "b:5");
    }
}
