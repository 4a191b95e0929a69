//! Stored keys, who counts as a new account, devices per account and linking.

use std::time::Duration;

use super::env::{invalid, Env};
use super::settings as s;
use super::ConfigError;

/// Stored keys and who counts as new when bundles are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLimits {
    /// One-time prekeys stored per user and per kind (EC, Kyber).
    pub max_one_time_prekeys: u64,
    /// MLS KeyPackages stored per device, the last-resort one not counted.
    pub max_key_packages: u64,
    /// Accounts younger than this fetch from the `bundle_target_new` budget and upload from
    /// `attachments_new`.
    pub new_account_age: Duration,
}

impl KeyLimits {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            max_one_time_prekeys: env.number_at_least(
                &s::MAX_ONE_TIME_PREKEYS,
                crate::validation::MAX_BATCH as u64,
                "at least 100 (a registration may bring 100 of each kind)",
            )?,
            max_key_packages: env.number_at_least(
                &s::MLS_MAX_KEY_PACKAGES,
                crate::validation::MAX_BATCH as u64,
                "at least 100 (one upload may bring 100)",
            )?,
            new_account_age: Duration::from_secs(env.number(&s::NEW_ACCOUNT_AGE_SECS)?),
        })
    }
}

/// Devices per account and linking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Devices per account, the primary included (`MAX_DEVICES`).
    pub max_devices: u32,
    /// How long a linking code and a provisioning address last (`PROVISIONING_TTL_SECS`).
    pub provisioning_ttl: Duration,
    /// Largest decoded provisioning message (`PROVISIONING_MAX_BYTES`).
    pub provisioning_max_bytes: usize,
    /// `BUNDLE_WITHOUT_ONE_TIME=1`: a device with no one-time prekey left is handed out without
    /// one (Signal's behaviour) instead of the whole fetch answering 412.
    pub bundle_without_one_time: bool,
}

impl DeviceLimits {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_devices: u32 = env.number(&s::MAX_DEVICES)?;
        if !(1..=crate::ids::MAX_DEVICE_ID).contains(&max_devices) {
            return Err(invalid(&s::MAX_DEVICES, "1 to 255"));
        }
        Ok(Self {
            max_devices,
            provisioning_ttl: Duration::from_secs(env.number_at_least(
                &s::PROVISIONING_TTL_SECS,
                1,
                "at least 1",
            )?),
            provisioning_max_bytes: env.number(&s::PROVISIONING_MAX_BYTES)?,
            bundle_without_one_time: env.flag(&s::BUNDLE_WITHOUT_ONE_TIME)?.unwrap_or(false),
        })
    }
}

impl Default for DeviceLimits {
    fn default() -> Self {
        Self::from_env(&Env::new(&|_| None)).expect("the declared defaults parse")
    }
}
