//! Caps a store's linear memory at the function's MemorySize and records its peak.

use wasmtime::ResourceLimiter;

pub(crate) struct MemoryLimiter {
    limit: u64,
    peak: u64,
    exceeded: bool,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            peak: 0,
            exceeded: false,
        }
    }

    pub(crate) fn peak_bytes(&self) -> u64 {
        self.peak
    }

    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.exceeded = true;
            // Trapping, rather than letting `memory.grow` return -1, makes the failure visible
            // as what it is instead of whatever the guest's allocator does next.
            return Err(wasmtime::format_err!(
                "memory limit of {} MB exceeded",
                self.limit >> 20
            ));
        }
        self.peak = self.peak.max(desired as u64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}
