//! Whether an account is new (younger than `NEW_ACCOUNT_AGE_SECS`): new accounts cost nothing but
//! a registration, so the budgets others depend on (a target's bundles, storage) give them less.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::error::Result;
use crate::model::UserId;
use crate::storage::UserStore;

/// Bounds the in-process set of established accounts of a warm function.
const ESTABLISHED_CACHE_MAX: usize = 100_000;

#[derive(Clone)]
pub struct AccountAge {
    users: Arc<dyn UserStore>,
    clock: SharedClock,
    /// `NEW_ACCOUNT_AGE_SECS`; zero: no account is new.
    new_for: Duration,
    /// Accounts found established: an account only ever ages, so a warm function asks the user
    /// store about each at most once.
    established: Arc<Mutex<HashSet<UserId>>>,
}

impl AccountAge {
    pub fn new(users: Arc<dyn UserStore>, clock: SharedClock, new_for: Duration) -> Self {
        Self {
            users,
            clock,
            new_for,
            established: Default::default(),
        }
    }

    /// Whether `user`'s account is younger than `NEW_ACCOUNT_AGE_SECS`: one read of the user
    /// store until the account is found established, none after.
    pub async fn is_new(&self, user: UserId) -> Result<bool> {
        Ok(self.new_until_ms(user).await? > self.clock.now_ms())
    }

    /// Until when (Unix ms) `user`'s account counts as new; 0 once it is established. One read of
    /// the user store until the account is found established, none after.
    pub async fn new_until_ms(&self, user: UserId) -> Result<u64> {
        let age_ms = self.new_for.as_millis() as u64;
        if age_ms == 0 || self.established.lock().expect("cache lock").contains(&user) {
            return Ok(0);
        }
        let until = match self.users.created_at(user).await? {
            Some(created_secs) => created_secs.saturating_mul(1000).saturating_add(age_ms),
            // A token outliving its account gets no more than a new one.
            None => self.clock.now_ms().saturating_add(age_ms),
        };
        if until > self.clock.now_ms() {
            return Ok(until);
        }
        let mut cache = self.established.lock().expect("cache lock");
        if cache.len() >= ESTABLISHED_CACHE_MAX {
            cache.clear();
        }
        cache.insert(user);
        Ok(0)
    }
}
