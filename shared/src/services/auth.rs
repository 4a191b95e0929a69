//! Bearer authentication: signature and expiry from the JWT, revocation from one Redis lookup.

use std::sync::Arc;

use crate::crypto::tokens::{Principal, TokenIssuer};
use crate::error::{Error, Result};
use crate::storage::Revocations;

#[derive(Clone)]
pub struct Authenticator {
    pub(crate) tokens: TokenIssuer,
    pub(crate) revocations: Arc<dyn Revocations>,
}

impl Authenticator {
    pub fn new(tokens: TokenIssuer, revocations: Arc<dyn Revocations>) -> Self {
        Self {
            tokens,
            revocations,
        }
    }

    pub async fn authenticate(&self, token: Option<&str>) -> Result<Principal> {
        let token = token.filter(|t| !t.is_empty()).ok_or(Error::Unauthorized)?;
        let principal = self.tokens.verify_access(token)?;
        if self.revocations.is_revoked(principal.session_id).await? {
            return Err(Error::Unauthorized);
        }
        Ok(principal)
    }
}
