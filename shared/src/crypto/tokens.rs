//! Access tokens (HS256 JWTs) and opaque refresh tokens.

use crate::clock::SharedClock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::JwtConfig;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: Uuid,
    pub sid: Uuid,
    pub exp: u64,
    pub iat: u64,
    pub iss: String,
    pub aud: String,
    /// The device (docs/api.md §3.1); absent in tokens of device 1, which older tokens all are.
    #[serde(default = "primary", skip_serializing_if = "is_primary")]
    pub dev: u32,
}

fn primary() -> u32 {
    crate::ids::PRIMARY_DEVICE
}

fn is_primary(device: &u32) -> bool {
    *device == crate::ids::PRIMARY_DEVICE
}

/// The caller an access token proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub device_id: crate::ids::DeviceId,
    pub session_id: Uuid,
    /// Unix seconds at which the token stops being accepted (leeway included).
    pub valid_until: u64,
}

#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    config: JwtConfig,
    clock: SharedClock,
}

impl TokenIssuer {
    pub fn new(config: &JwtConfig, clock: SharedClock) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against `clock`, not by the library against the system time.
        validation.validate_exp = false;
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = config.leeway.as_secs();
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Self {
            encoding: EncodingKey::from_secret(&config.secret),
            decoding: DecodingKey::from_secret(&config.secret),
            validation,
            config: config.clone(),
            clock,
        }
    }

    /// Unix seconds by the issuer's clock.
    pub fn now_secs(&self) -> u64 {
        self.clock.now_secs()
    }

    pub fn access_ttl_secs(&self) -> u64 {
        self.config.access_ttl.as_secs()
    }

    pub fn leeway_secs(&self) -> u64 {
        self.config.leeway.as_secs()
    }

    pub fn refresh_ttl_secs(&self) -> u64 {
        self.config.refresh_ttl.as_secs()
    }

    pub fn refresh_grace_secs(&self) -> u64 {
        self.config.refresh_grace.as_secs()
    }

    pub fn issue_access(
        &self,
        user_id: Uuid,
        device_id: crate::ids::DeviceId,
        session_id: Uuid,
    ) -> Result<String> {
        let iat = self.now_secs();
        let claims = Claims {
            sub: user_id,
            sid: session_id,
            dev: device_id,
            iat,
            exp: iat + self.access_ttl_secs(),
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("jwt encode: {e}")))
    }

    /// Signature, algorithm, issuer, audience and expiry (with leeway). Revocation is checked by
    /// the caller.
    pub fn verify_access(&self, token: &str) -> Result<Principal> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| Error::Unauthorized)?;
        let valid_until = data.claims.exp.saturating_add(self.config.leeway.as_secs());
        if valid_until < self.now_secs() {
            return Err(Error::Unauthorized);
        }
        Ok(Principal {
            user_id: data.claims.sub,
            device_id: data.claims.dev,
            session_id: data.claims.sid,
            valid_until,
        })
    }
}

/// An opaque refresh token: who, which session, and a 256-bit secret of which only a hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub user_id: Uuid,
    pub session_id: Uuid,
    secret: [u8; 32],
}

impl RefreshToken {
    pub fn generate(user_id: Uuid, session_id: Uuid) -> Self {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            user_id,
            session_id,
            secret,
        }
    }

    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(64);
        raw.extend_from_slice(self.user_id.as_bytes());
        raw.extend_from_slice(self.session_id.as_bytes());
        raw.extend_from_slice(&self.secret);
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(token: &str) -> Result<Self> {
        let raw = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| Error::Unauthorized)?;
        if raw.len() != 64 {
            return Err(Error::Unauthorized);
        }
        let uuid = |b: &[u8]| Uuid::from_slice(b).map_err(|_| Error::Unauthorized);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&raw[32..]);
        Ok(Self {
            user_id: uuid(&raw[..16])?,
            session_id: uuid(&raw[16..32])?,
            secret,
        })
    }

    /// What the store keeps: SHA-256 of the secret, hex.
    pub fn hash(&self) -> String {
        hex(&Sha256::digest(self.secret))
    }

    /// A one-time pad only this token's secret yields; domain-separated from `hash`, so what the
    /// store keeps never reveals it.
    fn pad(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"relay refresh grace v1\0");
        h.update(self.secret);
        h.finalize().into()
    }

    /// `next`'s secret masked with this token's pad (hex). The store keeps it so that, during the
    /// grace window, the holder of this (rotated) token can get `next` back, and nobody else can:
    /// the store never holds a usable refresh token.
    pub fn seal(&self, next: &RefreshToken) -> String {
        let pad = self.pad();
        let masked: Vec<u8> = next.secret.iter().zip(pad).map(|(a, b)| a ^ b).collect();
        hex(&masked)
    }

    /// The token `seal` masked, for the same session; None if `sealed` is not one.
    pub fn unseal(&self, sealed: &str) -> Option<RefreshToken> {
        if sealed.len() != 64 || !sealed.is_ascii() {
            return None;
        }
        let pad = self.pad();
        let mut secret = [0u8; 32];
        for (i, out) in secret.iter_mut().enumerate() {
            let byte = u8::from_str_radix(&sealed[2 * i..2 * i + 2], 16).ok()?;
            *out = byte ^ pad[i];
        }
        Some(Self {
            user_id: self.user_id,
            session_id: self.session_id,
            secret,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(secret: &str) -> JwtConfig {
        JwtConfig {
            secret: secret.as_bytes().to_vec(),
            issuer: "relay".into(),
            audience: "relay-clients".into(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(3600),
            leeway: Duration::from_secs(60),
            refresh_grace: Duration::from_secs(10),
        }
    }

    #[test]
    fn access_tokens_round_trip_and_reject_forgeries() {
        let issuer = TokenIssuer::new(
            &config("a-secret-of-at-least-32-bytes-long!"),
            crate::clock::system(),
        );
        let (u, s) = (Uuid::new_v4(), Uuid::new_v4());
        let t = issuer.issue_access(u, 1, s).unwrap();
        let p = issuer.verify_access(&t).unwrap();
        assert_eq!((p.user_id, p.session_id), (u, s));
        let other = TokenIssuer::new(
            &config("another-secret-of-at-least-32-bytes"),
            crate::clock::system(),
        );
        assert!(other.verify_access(&t).is_err());
        assert!(issuer.verify_access("garbage").is_err());
        // alg:none with the same claims
        let claims = t.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            claims
        );
        assert!(issuer.verify_access(&none).is_err());
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let issuer = TokenIssuer::new(
            &config("a-secret-of-at-least-32-bytes-long!"),
            crate::clock::system(),
        );
        let mk = |exp: u64| {
            let c = Claims {
                sub: Uuid::new_v4(),
                sid: Uuid::new_v4(),
                iat: exp - 10,
                exp,
                iss: "relay".into(),
                aud: "relay-clients".into(),
                dev: 1,
            };
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(b"a-secret-of-at-least-32-bytes-long!"),
            )
            .unwrap()
        };
        assert!(
            issuer
                .verify_access(&mk(crate::clock::unix_secs() - 30))
                .is_ok(),
            "within leeway"
        );
        assert!(
            issuer
                .verify_access(&mk(crate::clock::unix_secs() - 120))
                .is_err(),
            "past leeway"
        );
    }

    #[test]
    fn refresh_tokens_round_trip_and_hash() {
        let t = RefreshToken::generate(Uuid::new_v4(), Uuid::new_v4());
        let back = RefreshToken::decode(&t.encode()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.hash(), t.hash());
        assert_eq!(t.hash().len(), 64);
        assert_ne!(
            RefreshToken::generate(t.user_id, t.session_id).hash(),
            t.hash()
        );
        assert!(RefreshToken::decode("short").is_err());
    }

    #[test]
    fn only_the_previous_token_unseals_its_successor() {
        let (u, s) = (Uuid::new_v4(), Uuid::new_v4());
        let (prev, next) = (RefreshToken::generate(u, s), RefreshToken::generate(u, s));
        let sealed = prev.seal(&next);
        assert_eq!(prev.unseal(&sealed), Some(next.clone()));
        assert_ne!(RefreshToken::generate(u, s).unseal(&sealed), Some(next));
        assert_ne!(sealed, prev.hash(), "the pad must not be the stored hash");
        assert_eq!(prev.unseal("zz"), None);
    }
}
