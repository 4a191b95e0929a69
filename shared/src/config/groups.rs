//! Group sizes and how a group send pushes to online members.

use std::time::Duration;

use super::env::{invalid, Env};
use super::settings as s;
use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Roster entries per group, invitees included (`GROUP_MAX_MEMBERS`).
    pub max_members: usize,
    /// Largest decoded `meta` blob (`GROUP_META_MAX_BYTES`).
    pub meta_max_bytes: usize,
    /// Pushes to online member devices one group send runs at once (`GROUP_PUSH_CONCURRENCY`).
    pub push_concurrency: usize,
    /// How long a group send pushes before leaving the rest in the inboxes
    /// (`GROUP_PUSH_BUDGET_MS`).
    pub push_budget: Duration,
}

impl GroupLimits {
    /// Largest `GROUP_MAX_MEMBERS`: at about 70 bytes an entry, a roster of 5,000 (350 KB) still
    /// fits the one DynamoDB item (400 KB at most) every change rewrites and every group send
    /// reads (the adapter suite writes one).
    pub const LARGEST_ROSTER: usize = 5000;

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_members: usize = env.number(&s::GROUP_MAX_MEMBERS)?;
        // A group of one is a creator talking to themselves; 2 is the smallest that is a group.
        if !(2..=Self::LARGEST_ROSTER).contains(&max_members) {
            return Err(invalid(&s::GROUP_MAX_MEMBERS, "2 to 5000"));
        }
        Ok(Self {
            max_members,
            meta_max_bytes: env.number(&s::GROUP_META_MAX_BYTES)?,
            push_concurrency: env.number_at_least(&s::GROUP_PUSH_CONCURRENCY, 1, "at least 1")?,
            push_budget: Duration::from_millis(env.number(&s::GROUP_PUSH_BUDGET_MS)?),
        })
    }
}

impl Default for GroupLimits {
    fn default() -> Self {
        Self::from_env(&Env::new(&|_| None)).expect("the declared defaults parse")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<GroupLimits, ConfigError> {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        GroupLimits::from_env(&Env::new(&get))
    }

    #[test]
    fn defaults_and_bounds() {
        let d = parse(&[]).unwrap();
        assert_eq!(d.max_members, 1500);
        assert_eq!(d.meta_max_bytes, 4096);
        assert_eq!(d.push_concurrency, 32);
        assert_eq!(d.push_budget, Duration::from_millis(5000));
        assert_eq!(parse(&[("GROUP_MAX_MEMBERS", "2")]).unwrap().max_members, 2);
        for bad in ["1", "5001", "x"] {
            let err = parse(&[("GROUP_MAX_MEMBERS", bad)]).unwrap_err();
            assert!(err.to_string().contains("GROUP_MAX_MEMBERS"), "{err}");
        }
        assert!(parse(&[("GROUP_PUSH_CONCURRENCY", "0")]).is_err());
    }
}
