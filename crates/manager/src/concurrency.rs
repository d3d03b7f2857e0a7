//! Lambda's concurrency model: an account-wide limit on invocations running at once, of which a
//! function may reserve a share. A reservation is both a guarantee (no other function can use
//! it) and a cap (the function never runs more at once); functions without one share what is
//! left unreserved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Why an invocation was throttled, as Lambda's `Reason` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleReason {
    /// The function used all of its reserved concurrency.
    ReservedFunction,
    /// Functions without a reservation used all of the unreserved concurrency.
    Account,
    /// No worker has room for another sandbox.
    Capacity,
}

impl ThrottleReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservedFunction => "ReservedFunctionConcurrentInvocationLimitExceeded",
            Self::Account => "ConcurrentInvocationLimitExceeded",
            Self::Capacity => "CapacityExhausted",
        }
    }
}

#[derive(Debug, Default)]
struct FunctionState {
    reserved: Option<u32>,
    in_flight: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Invocations running of functions without a reservation.
    unreserved_in_flight: u32,
    reserved_sum: u32,
    functions: HashMap<String, FunctionState>,
}

// Each change to the state is a few counter updates that cannot panic part-way (reserved_sum
// always includes every function's reservation, so its subtractions stay in range), so a panic
// elsewhere while the lock was held leaves it consistent. Carrying on keeps invocations
// running; failing would throttle every one from then on, and a permit dropped during the
// unwinding would otherwise never give its slot back.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct Concurrency {
    account_limit: u32,
    min_unreserved: u32,
    state: Arc<Mutex<State>>,
}

/// One running invocation; dropping it frees its slot.
pub struct Permit {
    state: Arc<Mutex<State>>,
    function: String,
    unreserved: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = lock(&self.state);
        if self.unreserved {
            s.unreserved_in_flight = s.unreserved_in_flight.saturating_sub(1);
        }
        if let Some(f) = s.functions.get_mut(&self.function) {
            f.in_flight = f.in_flight.saturating_sub(1);
        }
    }
}

/// The account's figures, as GetAccountSettings reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountConcurrency {
    pub limit: u32,
    pub unreserved: u32,
    pub min_unreserved: u32,
}

impl Concurrency {
    pub fn new(account_limit: u32, min_unreserved: u32) -> Self {
        Self {
            account_limit,
            min_unreserved: min_unreserved.min(account_limit),
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    pub fn account(&self) -> AccountConcurrency {
        let reserved = lock(&self.state).reserved_sum;
        AccountConcurrency {
            limit: self.account_limit,
            unreserved: self.account_limit.saturating_sub(reserved),
            min_unreserved: self.min_unreserved,
        }
    }

    /// Takes a slot for one invocation of `function`, or says why there is none.
    pub fn acquire(&self, function: &str) -> Result<Permit, ThrottleReason> {
        let mut s = lock(&self.state);
        let unreserved_cap = self.account_limit.saturating_sub(s.reserved_sum);
        let unreserved_in_flight = s.unreserved_in_flight;
        let entry = s.functions.entry(function.to_owned()).or_default();
        let unreserved = match entry.reserved {
            Some(reserved) if entry.in_flight >= reserved => {
                return Err(ThrottleReason::ReservedFunction);
            }
            Some(_) => false,
            None if unreserved_in_flight >= unreserved_cap => return Err(ThrottleReason::Account),
            None => true,
        };
        entry.in_flight += 1;
        if unreserved {
            s.unreserved_in_flight += 1;
        }
        Ok(Permit {
            state: self.state.clone(),
            function: function.to_owned(),
            unreserved,
        })
    }

    /// Sets or clears a function's reservation. Refused if it would leave less than the minimum
    /// unreserved; the message is Lambda's.
    pub fn set_reserved(&self, function: &str, reserved: Option<u32>) -> Result<(), String> {
        let mut s = lock(&self.state);
        let old = s
            .functions
            .get(function)
            .and_then(|f| f.reserved)
            .unwrap_or(0);
        let new_sum = s.reserved_sum - old + reserved.unwrap_or(0);
        if reserved.is_some() && self.account_limit.saturating_sub(new_sum) < self.min_unreserved
            || new_sum > self.account_limit
        {
            return Err(format!(
                "Specified ReservedConcurrentExecutions for function decreases account's \
                 UnreservedConcurrentExecution below its minimum value of [{}].",
                self.min_unreserved
            ));
        }
        s.reserved_sum = new_sum;
        let entry = s.functions.entry(function.to_owned()).or_default();
        // An invocation that started as unreserved stays counted there until it ends.
        entry.reserved = reserved;
        Ok(())
    }

    pub fn reserved(&self, function: &str) -> Option<u32> {
        lock(&self.state)
            .functions
            .get(function)
            .and_then(|f| f.reserved)
    }

    /// Forgets a deleted function.
    pub fn remove(&self, function: &str) {
        let mut s = lock(&self.state);
        if let Some(f) = s.functions.remove(function) {
            s.reserved_sum -= f.reserved.unwrap_or(0);
        }
    }

    /// Invocations running now, per function.
    pub fn in_flight(&self) -> Vec<(String, u32)> {
        lock(&self.state)
            .functions
            .iter()
            .filter(|(_, f)| f.in_flight > 0)
            .map(|(n, f)| (n.clone(), f.in_flight))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreserved_functions_share_what_is_left() {
        let c = Concurrency::new(3, 1);
        c.set_reserved("r", Some(2)).unwrap();
        let a = c.acquire("a").unwrap();
        assert_eq!(c.acquire("b").err(), Some(ThrottleReason::Account));
        drop(a);
        let _b = c.acquire("b").unwrap();
    }

    #[test]
    fn a_reservation_guarantees_and_caps() {
        let c = Concurrency::new(3, 1);
        c.set_reserved("r", Some(2)).unwrap();
        let _a = c.acquire("a").unwrap();
        let _r1 = c.acquire("r").unwrap();
        let _r2 = c.acquire("r").unwrap();
        assert_eq!(c.acquire("r").err(), Some(ThrottleReason::ReservedFunction));
    }

    #[test]
    fn zero_reserved_throttles_everything() {
        let c = Concurrency::new(10, 1);
        c.set_reserved("off", Some(0)).unwrap();
        assert_eq!(
            c.acquire("off").err(),
            Some(ThrottleReason::ReservedFunction)
        );
    }

    #[test]
    fn reservations_keep_the_minimum_unreserved() {
        let c = Concurrency::new(10, 4);
        c.set_reserved("a", Some(6)).unwrap();
        assert!(c.set_reserved("b", Some(1)).is_err());
        // Changing an existing reservation counts only the difference.
        c.set_reserved("a", Some(5)).unwrap();
        c.set_reserved("b", Some(1)).unwrap();
        assert_eq!(c.account().unreserved, 4);
        c.remove("a");
        assert_eq!(c.account().unreserved, 9);
        c.set_reserved("b", None).unwrap();
        assert_eq!(c.account().unreserved, 10);
    }

    #[test]
    fn clearing_a_reservation_while_running_keeps_counts_sane() {
        let c = Concurrency::new(2, 0);
        c.set_reserved("r", Some(1)).unwrap();
        let p = c.acquire("r").unwrap();
        c.set_reserved("r", None).unwrap();
        drop(p);
        let _a = c.acquire("r").unwrap();
        let _b = c.acquire("x").unwrap();
        assert_eq!(c.acquire("y").err(), Some(ThrottleReason::Account));
    }
}
