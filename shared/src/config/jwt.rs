//! Tokens and password hashing: the JWT key and lifetimes, the Argon2id cost.

use std::time::Duration;

use super::env::{invalid, Env};
use super::settings as s;
use super::ConfigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Argon2Params {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            m_kib: env.number(&s::ARGON2_M_KIB)?,
            t: env.number(&s::ARGON2_T)?,
            p: env.number(&s::ARGON2_P)?,
        })
    }
}

#[derive(Clone)]
pub struct JwtConfig {
    pub secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
    /// How long a rotated-away refresh token still yields its successor (0: not at all).
    pub refresh_grace: Duration,
}

impl JwtConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secret = env.required(&s::JWT_SECRET)?;
        if secret.len() < 32 {
            return Err(invalid(&s::JWT_SECRET, "at least 32 bytes"));
        }
        let secs = |setting| env.number(setting).map(Duration::from_secs);
        Ok(Self {
            secret: secret.into_bytes(),
            issuer: env.string(&s::JWT_ISSUER),
            audience: env.string(&s::JWT_AUDIENCE),
            access_ttl: secs(&s::ACCESS_TOKEN_TTL_SECS)?,
            refresh_ttl: secs(&s::REFRESH_TOKEN_TTL_SECS)?,
            leeway: secs(&s::JWT_LEEWAY_SECS)?,
            refresh_grace: secs(&s::REFRESH_GRACE_SECS)?,
        })
    }
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .field("refresh_grace", &self.refresh_grace)
            .finish()
    }
}
