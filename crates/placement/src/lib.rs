//! Placement: given the workers' capacity and load and a request for a sandbox, pick a worker.
//!
//! A pure decision: no I/O, no async, no clocks, no randomness. The same inputs always give the
//! same answer, which is what makes it testable and lets the Worker Manager replay decisions.

#![forbid(unsafe_code)]

/// What Placement knows about one worker when it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerView {
    pub capacity_mb: u64,
    pub reserved_mb: u64,
    pub healthy: bool,
    /// Whether the worker already holds the function's code package.
    pub has_code: bool,
    /// How many sandboxes of the requested function the worker hosts already.
    pub sandboxes_of_function: u32,
}

impl WorkerView {
    fn free_mb(&self) -> u64 {
        self.capacity_mb.saturating_sub(self.reserved_mb)
    }
}

/// A request for one new sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxRequest {
    pub memory_mb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacementDecision {
    /// Place the sandbox on the worker at this index.
    Place(usize),
    /// No healthy worker has room for the sandbox.
    NoCapacity,
}

/// Picks a worker: among healthy ones with enough free memory, prefer one that has the code
/// cached (no download on the cold path), then one hosting fewer sandboxes of the same function
/// (spreading limits the blast radius of a worker failure), then the one with most free memory.
/// Ties go to the lowest index.
pub fn place(workers: &[WorkerView], request: &SandboxRequest) -> PlacementDecision {
    workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.healthy && w.free_mb() >= request.memory_mb)
        .min_by_key(|(i, w)| {
            (
                !w.has_code,
                w.sandboxes_of_function,
                std::cmp::Reverse(w.free_mb()),
                *i,
            )
        })
        .map_or(PlacementDecision::NoCapacity, |(i, _)| {
            PlacementDecision::Place(i)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(capacity_mb: u64, reserved_mb: u64) -> WorkerView {
        WorkerView {
            capacity_mb,
            reserved_mb,
            healthy: true,
            has_code: false,
            sandboxes_of_function: 0,
        }
    }

    const REQ: SandboxRequest = SandboxRequest { memory_mb: 128 };

    #[test]
    fn no_workers_means_no_capacity() {
        assert_eq!(place(&[], &REQ), PlacementDecision::NoCapacity);
    }

    #[test]
    fn full_or_unhealthy_workers_are_skipped() {
        let mut sick = worker(4096, 0);
        sick.healthy = false;
        let full = worker(1024, 1000);
        assert_eq!(
            place(&[sick.clone(), full.clone()], &REQ),
            PlacementDecision::NoCapacity
        );
        assert_eq!(
            place(&[sick, full, worker(256, 0)], &REQ),
            PlacementDecision::Place(2)
        );
    }

    #[test]
    fn cached_code_beats_free_memory() {
        let mut cached = worker(1024, 512);
        cached.has_code = true;
        assert_eq!(
            place(&[worker(8192, 0), cached], &REQ),
            PlacementDecision::Place(1)
        );
    }

    #[test]
    fn spreads_a_function_across_workers() {
        let mut busy = worker(8192, 0);
        busy.sandboxes_of_function = 3;
        let mut other = worker(2048, 0);
        other.sandboxes_of_function = 1;
        assert_eq!(place(&[busy, other], &REQ), PlacementDecision::Place(1));
    }

    #[test]
    fn most_free_memory_then_lowest_index() {
        assert_eq!(
            place(&[worker(1024, 0), worker(2048, 0)], &REQ),
            PlacementDecision::Place(1)
        );
        assert_eq!(
            place(&[worker(1024, 0), worker(1024, 0)], &REQ),
            PlacementDecision::Place(0)
        );
    }
}
