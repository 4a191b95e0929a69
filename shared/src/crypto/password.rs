//! Argon2id password hashing, run off the async threads.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::Argon2Params;
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct PasswordHashing {
    argon: Arc<Argon2<'static>>,
    /// A hash of a random password, verified against when the username is unknown, so the
    /// response time does not tell which usernames exist. Made on first use, not at cold start.
    dummy: Arc<OnceLock<String>>,
}

impl PasswordHashing {
    pub fn new(p: Argon2Params) -> Result<Self> {
        let params = Params::new(p.m_kib, p.t, p.p, None)
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
        Ok(Self {
            argon: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
            dummy: Default::default(),
        })
    }

    /// PHC string (`$argon2id$v=19$m=…`).
    pub async fn hash(&self, password: &str) -> Result<String> {
        let argon = self.argon.clone();
        let password = password.to_owned();
        blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            argon
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(format!("argon2 hash: {e}")))
        })
        .await
    }

    /// Verifies against a stored PHC string, or against a dummy hash when `stored` is `None`
    /// (always false then) so that both paths cost the same.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool> {
        let known = stored.is_some();
        let stored = match stored {
            Some(s) => s.to_string(),
            None => self.dummy_hash().await?,
        };
        let argon = self.argon.clone();
        let password = password.to_owned();
        let ok = blocking(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| Error::Internal(format!("stored hash: {e}")))?;
            Ok(argon.verify_password(password.as_bytes(), &parsed).is_ok())
        })
        .await?;
        Ok(ok && known)
    }

    async fn dummy_hash(&self) -> Result<String> {
        if let Some(h) = self.dummy.get() {
            return Ok(h.clone());
        }
        let random: String = {
            use rand::Rng;
            rand::thread_rng()
                .sample_iter(rand::distributions::Alphanumeric)
                .take(32)
                .map(char::from)
                .collect()
        };
        let h = self.hash(&random).await?;
        Ok(self.dummy.get_or_init(|| h).clone())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHashing {
        PasswordHashing::new(Argon2Params {
            m_kib: 1024,
            t: 1,
            p: 1,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_phc_and_verify() {
        let h = cheap();
        let stored = h.hash("correct horse").await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains("correct horse"));
        assert!(h.verify("correct horse", Some(&stored)).await.unwrap());
        assert!(!h.verify("wrong horse", Some(&stored)).await.unwrap());
        assert!(!h.verify("correct horse", None).await.unwrap());
    }
}
