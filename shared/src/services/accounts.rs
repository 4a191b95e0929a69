//! Registration, login, token refresh, logout, lookup and account deletion.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::{Limit, Limiter};
use crate::crypto::password::PasswordHashing;
use crate::crypto::tokens::{Principal, RefreshToken, TokenIssuer};
use crate::error::{Error, Result};
use crate::model::{
    Credentials, Device, DeviceAddress, DeviceId, DeviceList, LoginRequest, NewAccount,
    RefreshRequest, RegisterRequest, TokensOut, UserId, UserOut, MAX_DEVICE_ID, PRIMARY_DEVICE,
};
use crate::storage::{
    AttachmentIndex, BlobStore, ConnectionRegistry, Inbox, PreviousRefresh, PushError, Pusher,
    Revocations, Rotation, SessionRecord, SessionStore, UserStore,
};
use crate::validation;

/// Constant-time comparison of two refresh hashes.
fn same(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[derive(Clone)]
pub struct Accounts {
    pub(crate) users: Arc<dyn UserStore>,
    pub(crate) sessions: Arc<dyn SessionStore>,
    pub(crate) revocations: Arc<dyn Revocations>,
    pub(crate) inbox: Arc<dyn Inbox>,
    pub(crate) connections: Arc<dyn ConnectionRegistry>,
    /// Closes the WebSocket connections of ended sessions; without it (a function that has no
    /// Management API endpoint) they are refused at their next frame instead.
    pub(crate) sockets: Option<Arc<dyn Pusher>>,
    /// The deleted account leaves its groups.
    pub(crate) groups: super::groups::Groups,
    /// Connections closed here are counted out of their user's presence (announced offline
    /// with the last one); deletion erases the account's presence.
    pub(crate) presence: super::presence::Presence,
    /// Deletion erases the account's uploads (their objects in `blobs`) and their index.
    pub(crate) uploads: Arc<dyn AttachmentIndex>,
    /// Where the uploads are; none where no bucket is configured.
    pub(crate) blobs: Option<Arc<dyn BlobStore>>,
    pub(crate) limiter: Limiter,
    pub(crate) hashing: PasswordHashing,
    pub(crate) tokens: TokenIssuer,
}

impl Accounts {
    async fn limit_auth(&self, ip: &str) -> Result<()> {
        self.limiter.take(Limit::Auth { ip }).await
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
        // The relay's copy of the device list only speeds up sends; a missing one is rebuilt
        // from the user store.
        let devices = DeviceList {
            version: 1,
            devices: vec![Device {
                device_id: PRIMARY_DEVICE,
                registration_id: account.profile.registration_id,
                created_at: self.tokens.now_secs(),
            }],
        };
        if let Err(e) = self.inbox.set_devices(account.user_id, &devices).await {
            e.log();
        }
        tracing::info!("registered");
        Ok(UserOut {
            user_id: account.user_id,
            username: account.username,
        })
    }

    /// `POST /v1/sessions`
    pub async fn login(&self, req: LoginRequest, ip: &str) -> Result<TokensOut> {
        self.limit_auth(ip).await?;
        let name = validation::username(&req.username).ok();
        let charged = self.charge_login(ip, name.as_deref()).await?;
        let checked = self.check_password(&req.password, name.as_deref()).await;
        // Only a wrong password keeps its token; anything else was no guess.
        if !matches!(checked, Err(Error::InvalidCredentials)) {
            for which in &charged {
                self.limiter.give_back(*which, 1).await;
            }
        }
        let creds = match checked {
            Err(Error::InvalidCredentials) => {
                tracing::info!("login refused: invalid credentials");
                return Err(Error::InvalidCredentials);
            }
            other => other?,
        };
        // A device that is not the account's is refused like a wrong password (the session
        // store checks it again as it writes, against a removal racing this login).
        let device_id = match req.device_id {
            None => PRIMARY_DEVICE,
            Some(d) => DeviceId::try_from(d)
                .ok()
                .filter(|d| (PRIMARY_DEVICE..=MAX_DEVICE_ID).contains(d))
                .ok_or(Error::InvalidCredentials)?,
        };
        match self.start_session(creds.user_id, device_id).await? {
            Some(tokens) => Ok(tokens),
            None => {
                tracing::info!("login refused: account deleted meanwhile");
                Err(Error::InvalidCredentials)
            }
        }
    }

    /// Takes a failure token per IP and per username before the password is checked, so that
    /// concurrent guesses cannot all pass a check made before any of them is charged. Returns
    /// the buckets charged, for `login` to give back unless the password was wrong.
    async fn charge_login<'a>(&self, ip: &'a str, name: Option<&'a str>) -> Result<Vec<Limit<'a>>> {
        let mut charged = Vec::with_capacity(2);
        let buckets = std::iter::once(Limit::LoginFailures { ip })
            .chain(name.map(|username| Limit::LoginFailuresUser { username }));
        for which in buckets {
            if let Err(e) = self.limiter.take(which).await {
                for taken in &charged {
                    self.limiter.give_back(*taken, 1).await;
                }
                if matches!(e, Error::RateLimited { .. }) {
                    let per = match which {
                        Limit::LoginFailuresUser { .. } => "username",
                        _ => "ip",
                    };
                    tracing::info!(per, "login refused: too many failures");
                }
                return Err(e);
            }
            charged.push(which);
        }
        Ok(charged)
    }

    /// The credentials if the password is right; `InvalidCredentials` for an unknown or
    /// malformed name too (verified against a dummy hash, so the time is the same).
    async fn check_password(&self, password: &str, name: Option<&str>) -> Result<Credentials> {
        let creds = match name {
            Some(name) => self.users.credentials(name).await?,
            None => None,
        };
        let ok = self
            .hashing
            .verify(password, creds.as_ref().map(|c| c.password_hash.as_str()))
            .await?;
        creds.filter(|_| ok).ok_or(Error::InvalidCredentials)
    }

    /// A new session for the device, unless the user or the device is gone by the time it is
    /// written (then None).
    pub(crate) async fn start_session(
        &self,
        user_id: UserId,
        device_id: DeviceId,
    ) -> Result<Option<TokensOut>> {
        let session_id = Uuid::new_v4();
        // Issued before the session exists: a deletion or logout that finds the session revokes
        // it for at least as long as this token lives.
        let access = self.tokens.issue_access(user_id, device_id, session_id)?;
        let refresh = RefreshToken::generate(user_id, session_id);
        let record = SessionRecord {
            device_id,
            refresh_hash: refresh.hash(),
            expires_at: self.tokens.now_secs() + self.tokens.refresh_ttl_secs(),
            previous: None,
        };
        if !self.sessions.create(user_id, session_id, &record).await? {
            return Ok(None);
        }
        tracing::info!(device_id, %session_id, "session started");
        Ok(Some(self.tokens_out(user_id, device_id, access, &refresh)))
    }

    fn tokens_out(
        &self,
        user_id: UserId,
        device_id: DeviceId,
        access_token: String,
        refresh: &RefreshToken,
    ) -> TokensOut {
        TokensOut {
            user_id,
            device_id,
            access_token,
            token_type: "Bearer",
            expires_in: self.tokens.access_ttl_secs(),
            refresh_token: refresh.encode(),
        }
    }

    /// `POST /v1/sessions/refresh`: rotation. The token rotated away last still yields the same
    /// successor for `REFRESH_GRACE_SECS` (a lost answer, two refreshes at once); any other
    /// stale token revokes the session.
    pub async fn refresh(&self, req: RefreshRequest, ip: &str) -> Result<TokensOut> {
        self.limit_auth(ip).await?;
        let presented = RefreshToken::decode(&req.refresh_token)?;
        let (user_id, session_id) = (presented.user_id, presented.session_id);
        let presented_hash = presented.hash();
        let mut record = self
            .sessions
            .get(user_id, session_id)
            .await?
            .ok_or(Error::Unauthorized)?;
        let device_id = record.device_id;
        // Before the session is written (rotation, which checks the user and device), for the
        // reason given in `start_session`.
        let access = self.tokens.issue_access(user_id, device_id, session_id)?;
        if same(&presented_hash, &record.refresh_hash) {
            let next = RefreshToken::generate(user_id, session_id);
            let now = self.tokens.now_secs();
            let grace = self.tokens.refresh_grace_secs();
            let rotated = SessionRecord {
                device_id,
                refresh_hash: next.hash(),
                expires_at: now + self.tokens.refresh_ttl_secs(),
                previous: (grace > 0).then(|| PreviousRefresh {
                    hash: presented_hash.clone(),
                    until: now + grace,
                    sealed_next: presented.seal(&next),
                }),
            };
            match self
                .sessions
                .rotate(user_id, session_id, &presented_hash, &rotated)
                .await?
            {
                Rotation::Rotated => return Ok(self.tokens_out(user_id, device_id, access, &next)),
                Rotation::UserGone => {
                    tracing::info!("refresh refused: account deleted");
                    self.end_session(user_id, session_id).await?;
                    return Err(Error::Unauthorized);
                }
                // A concurrent refresh with the same token won: its successor is the answer.
                Rotation::Stale => {
                    record = self
                        .sessions
                        .get(user_id, session_id)
                        .await?
                        .ok_or(Error::Unauthorized)?;
                    if same(&presented_hash, &record.refresh_hash) {
                        return Err(Error::unavailable(
                            "rotate session",
                            "concurrent transactions kept conflicting",
                        ));
                    }
                }
            }
        }
        self.refresh_with_previous(&presented, &presented_hash, &record, access)
            .await
    }

    /// A token that is not the session's current one: the previous token within the grace
    /// window gets the current successor again; anything else is reuse and ends the session.
    async fn refresh_with_previous(
        &self,
        presented: &RefreshToken,
        presented_hash: &str,
        record: &SessionRecord,
        access: String,
    ) -> Result<TokensOut> {
        let (user_id, session_id) = (presented.user_id, presented.session_id);
        let now = self.tokens.now_secs();
        let successor = record
            .previous
            .as_ref()
            .filter(|p| same(presented_hash, &p.hash) && now < p.until)
            .and_then(|p| presented.unseal(&p.sealed_next))
            .filter(|next| same(&next.hash(), &record.refresh_hash));
        let Some(next) = successor else {
            tracing::warn!(%session_id, "rotated refresh token reused: session revoked");
            self.end_session(user_id, session_id).await?;
            return Err(Error::Unauthorized);
        };
        // Rotation checks the user and device in its transaction; this answer writes nothing,
        // so it looks.
        let device_listed = match self.users.devices(user_id).await? {
            Some(list) => list.get(record.device_id).is_some(),
            None => false,
        };
        if !device_listed {
            self.end_session(user_id, session_id).await?;
            return Err(Error::Unauthorized);
        }
        tracing::info!(%session_id, "refresh repeated within the grace window");
        Ok(self.tokens_out(user_id, record.device_id, access, &next))
    }

    async fn end_session(&self, user_id: UserId, session_id: Uuid) -> Result<()> {
        self.revoke_access(session_id).await?;
        self.sessions.delete(user_id, session_id).await?;
        self.close_connections(user_id, |sid, _| sid == session_id)
            .await;
        Ok(())
    }

    /// Closes the user's open WebSocket connections whose session and device `ended` picks,
    /// after their sessions were revoked. A failure is logged, not returned: the session is
    /// over either way, and the relay refuses a connection of a revoked session at its next
    /// frame.
    pub(crate) async fn close_connections(
        &self,
        user_id: UserId,
        ended: impl Fn(Uuid, DeviceId) -> bool,
    ) {
        let Some(sockets) = &self.sockets else {
            return;
        };
        let open = match self.connections.connections(user_id).await {
            Ok(open) => open,
            Err(e) => return e.log(),
        };
        let ended: Vec<_> = open
            .into_iter()
            .filter(|(_, c)| ended(c.session_id, c.device_id))
            .collect();
        // Their `$disconnect` will find no registration: what ack-mode ones held goes back now.
        let mut holding: Vec<DeviceId> = ended
            .iter()
            .filter(|(_, c)| c.ack)
            .map(|(_, c)| c.device_id)
            .collect();
        holding.sort_unstable();
        holding.dedup();
        let closing = ended.into_iter().map(|(connection_id, c)| async move {
            let device_id = c.device_id;
            match sockets.close(&connection_id).await {
                Ok(()) | Err(PushError::Gone) => {}
                Err(PushError::Failed(detail)) => {
                    tracing::warn!(%connection_id, detail = %detail, "connection not closed")
                }
            }
            let device = DeviceAddress::new(user_id, device_id);
            if let Err(e) = self.connections.remove(device, &connection_id).await {
                e.log();
            }
            self.presence
                .disconnected(sockets.as_ref(), user_id, &connection_id)
                .await;
            tracing::info!(%connection_id, "connection of an ended session closed");
        });
        futures::future::join_all(closing).await;
        for device_id in holding {
            if let Err(e) = self
                .inbox
                .release(DeviceAddress::new(user_id, device_id))
                .await
            {
                e.log();
            }
        }
    }

    /// Access tokens of the session stop working for as long as any could still be accepted.
    pub(crate) async fn revoke_access(&self, session_id: Uuid) -> Result<()> {
        let until =
            self.tokens.now_secs() + self.tokens.access_ttl_secs() + self.tokens.leeway_secs();
        self.revocations.revoke(session_id, until).await
    }

    /// `DELETE /v1/sessions/current`
    pub async fn logout(&self, who: &Principal) -> Result<()> {
        self.end_session(who.user_id, who.session_id).await?;
        tracing::info!(session_id = %who.session_id, "logged out");
        Ok(())
    }

    /// `GET /v1/users?username=`
    /// Charged per requester before the name is looked at, so that probing names (valid or
    /// not, taken or not) costs the same.
    pub async fn lookup(&self, who: &Principal, username: &str) -> Result<UserOut> {
        let requester = who.user_id;
        self.limiter.take(Limit::Lookup { requester }).await?;
        let name = validation::username(username).map_err(|_| Error::UserNotFound)?;
        self.users
            .find_by_name(&name)
            .await?
            .ok_or(Error::UserNotFound)
    }

    /// `DELETE /v1/users/me`: user, keys, sessions, inbox, and the user's place in every group.
    pub async fn delete(&self, who: &Principal) -> Result<()> {
        // The account is the primary device's: a linked device may only remove itself.
        if who.device_id != PRIMARY_DEVICE {
            return Err(Error::Forbidden);
        }
        self.revoke_access(who.session_id).await?;
        let devices: Vec<DeviceId> = match self.users.devices(who.user_id).await? {
            Some(list) => list.devices.iter().map(|d| d.device_id).collect(),
            None => vec![PRIMARY_DEVICE],
        };
        // The groups are left before the user goes, so a failure there leaves an account the
        // client can delete again (after logging in); once the user is gone no invitation can
        // name it, and the last step catches one that was being written meanwhile.
        self.groups.leave_all(who.user_id).await?;
        // The uploads go while the account can still retry a failed deletion; an upload
        // recorded meanwhile (by another device's token) is caught by the last step, since
        // none is recorded once the user is gone.
        self.erase_uploads(who.user_id).await?;
        // The user goes before the sessions: they are only created or rotated while the user
        // item exists (conditional writes), so once it is gone the sessions listed next are all
        // there will ever be, and revoking them ends every token, including a racing login's.
        self.users.delete(who.user_id).await?;
        for session_id in self.sessions.delete_all(who.user_id).await? {
            self.revoke_access(session_id).await?;
        }
        self.close_connections(who.user_id, |_, _| true).await;
        self.inbox.close(who.user_id, &devices).await?;
        self.presence.forget(who.user_id).await?;
        self.groups.leave_all(who.user_id).await?;
        self.erase_uploads(who.user_id).await?;
        tracing::info!("account deleted");
        Ok(())
    }

    async fn erase_uploads(&self, user: UserId) -> Result<()> {
        let erased =
            super::attachments::erase_uploads(self.uploads.as_ref(), self.blobs.as_deref(), user)
                .await?;
        if erased > 0 {
            tracing::info!(uploads = erased, "uploads erased");
        }
        Ok(())
    }
}
