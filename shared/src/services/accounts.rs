//! Registration, login, token refresh, logout, lookup and account deletion.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{limit, Limit};
use crate::config::RateLimits;
use crate::crypto::password::PasswordHashing;
use crate::crypto::tokens::{Principal, RefreshToken, TokenIssuer};
use crate::error::{Error, Result};
use crate::model::{
    LoginRequest, NewAccount, RefreshRequest, RegisterRequest, TokensOut, UserId, UserOut,
};
use crate::storage::{Inbox, RateLimiter, Revocations, SessionRecord, SessionStore, UserStore};
use crate::validation;

#[derive(Clone)]
pub struct Accounts {
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) sessions: Arc<dyn SessionStore>,
    pub(crate) revocations: Arc<dyn Revocations>,
    pub(crate) inbox: Arc<dyn Inbox>,
    pub(crate) limiter: Arc<dyn RateLimiter>,
    pub(crate) hashing: PasswordHashing,
    pub(crate) tokens: TokenIssuer,
    pub(crate) limits: RateLimits,
}

impl Accounts {
    async fn limit_auth(&self, ip: &str) -> Result<()> {
        limit(self.limiter.as_ref(), &self.limits, Limit::Auth { ip }, 1).await
    }

    /// `POST /v1/users`
    pub async fn register(&self, req: RegisterRequest, ip: &str) -> Result<UserOut> {
        self.limit_auth(ip).await?;
        let (username, profile, one_time, kyber_one_time) = req.validate()?;
        let password_hash = self.hashing.hash(&req.password).await?;
        let account = NewAccount {
            user_id: Uuid::new_v4(),
            username,
            password_hash,
            profile,
            one_time,
            kyber_one_time,
        };
        self.users.create(&account).await?;
        // The marker only speeds up sends; a missing one is repaired from the user store.
        if let Err(e) = self.inbox.open(account.user_id).await {
            e.log();
        }
        tracing::info!(user_id = %account.user_id, "registered");
        Ok(UserOut {
            user_id: account.user_id,
            username: account.username,
        })
    }

    /// `POST /v1/sessions`
    pub async fn login(&self, req: LoginRequest, ip: &str) -> Result<TokensOut> {
        self.limit_auth(ip).await?;
        let failures = Limit::LoginFailures { ip };
        limit(self.limiter.as_ref(), &self.limits, failures, 0).await?;
        let creds = match validation::username(&req.username) {
            Ok(name) => self.users.credentials(&name).await?,
            Err(_) => None,
        };
        let ok = self
            .hashing
            .verify(
                &req.password,
                creds.as_ref().map(|c| c.password_hash.as_str()),
            )
            .await?;
        let Some(creds) = creds.filter(|_| ok) else {
            // Counting the failure may itself hit the limit; the answer is still "invalid".
            let _ = limit(self.limiter.as_ref(), &self.limits, failures, 1).await;
            return Err(Error::InvalidCredentials);
        };
        self.start_session(creds.user_id).await
    }

    async fn start_session(&self, user_id: UserId) -> Result<TokensOut> {
        let session_id = Uuid::new_v4();
        let refresh = RefreshToken::generate(user_id, session_id);
        let record = SessionRecord {
            refresh_hash: refresh.hash(),
            expires_at: self.tokens.now_secs() + self.tokens.refresh_ttl_secs(),
        };
        self.sessions.create(user_id, session_id, &record).await?;
        tracing::info!(%user_id, %session_id, "session started");
        self.tokens_out(user_id, session_id, &refresh)
    }

    fn tokens_out(
        &self,
        user_id: UserId,
        session_id: Uuid,
        refresh: &RefreshToken,
    ) -> Result<TokensOut> {
        Ok(TokensOut {
            user_id,
            access_token: self.tokens.issue_access(user_id, session_id)?,
            token_type: "Bearer",
            expires_in: self.tokens.access_ttl_secs(),
            refresh_token: refresh.encode(),
        })
    }

    /// `POST /v1/sessions/refresh`: rotation; a token already rotated away revokes the session.
    pub async fn refresh(&self, req: RefreshRequest, ip: &str) -> Result<TokensOut> {
        self.limit_auth(ip).await?;
        let presented = RefreshToken::decode(&req.refresh_token)?;
        let (user_id, session_id) = (presented.user_id, presented.session_id);
        let record = self
            .sessions
            .get(user_id, session_id)
            .await?
            .ok_or(Error::Unauthorized)?;
        let presented_hash = presented.hash();
        if !bool::from(
            presented_hash
                .as_bytes()
                .ct_eq(record.refresh_hash.as_bytes()),
        ) {
            tracing::warn!(%user_id, %session_id, "rotated refresh token reused: session revoked");
            self.end_session(user_id, session_id).await?;
            return Err(Error::Unauthorized);
        }
        let next = RefreshToken::generate(user_id, session_id);
        let record = SessionRecord {
            refresh_hash: next.hash(),
            expires_at: self.tokens.now_secs() + self.tokens.refresh_ttl_secs(),
        };
        if !self
            .sessions
            .rotate(user_id, session_id, &presented_hash, &record)
            .await?
        {
            // Someone rotated this token a moment ago: the same token was used twice.
            self.end_session(user_id, session_id).await?;
            return Err(Error::Unauthorized);
        }
        self.tokens_out(user_id, session_id, &next)
    }

    async fn end_session(&self, user_id: UserId, session_id: Uuid) -> Result<()> {
        self.revoke_access(session_id).await?;
        self.sessions.delete(user_id, session_id).await
    }

    /// Access tokens of the session stop working for as long as any could still be accepted.
    async fn revoke_access(&self, session_id: Uuid) -> Result<()> {
        let until =
            self.tokens.now_secs() + self.tokens.access_ttl_secs() + self.tokens.leeway_secs();
        self.revocations.revoke(session_id, until).await
    }

    /// `DELETE /v1/sessions/current`
    pub async fn logout(&self, who: &Principal) -> Result<()> {
        self.end_session(who.user_id, who.session_id).await?;
        tracing::info!(user_id = %who.user_id, session_id = %who.session_id, "logged out");
        Ok(())
    }

    /// `GET /v1/users?username=`
    pub async fn lookup(&self, username: &str) -> Result<UserOut> {
        let name = validation::username(username).map_err(|_| Error::UserNotFound)?;
        self.users
            .find_by_name(&name)
            .await?
            .ok_or(Error::UserNotFound)
    }

    /// `DELETE /v1/users/me`: user, keys, sessions and inbox.
    pub async fn delete(&self, who: &Principal) -> Result<()> {
        self.revoke_access(who.session_id).await?;
        for session_id in self.sessions.delete_all(who.user_id).await? {
            self.revoke_access(session_id).await?;
        }
        self.users.delete(who.user_id).await?;
        self.inbox.close(who.user_id).await?;
        tracing::info!(user_id = %who.user_id, "account deleted");
        Ok(())
    }
}
