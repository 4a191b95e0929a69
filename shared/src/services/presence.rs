//! Presence, opt-in and mutual: a user's share list names who may see when the user is online;
//! a viewer sees a user only when each names the other. A user's first connection and the end
//! of the last are announced with a `presence` frame to every connected device of each such
//! viewer, at once (the share lists are read at every transition, so a revoked share stops the
//! frames from the next one on).

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;

use super::{Limit, Limiter};
use crate::clock::SharedClock;
use crate::crypto::tokens::Principal;
use crate::error::{Error, Result};
use crate::frames::ServerFrame;
use crate::model::{
    minute_of, DeviceAddress, DeviceId, PresenceOut, PresenceSharesOut, PresenceSharesRequest,
    UserId, UserPresence, MAX_PRESENCE_READ, MAX_PRESENCE_SHARES,
};
use crate::storage::{ConnectionRegistry, PresenceStore, PushError, Pusher, Transition};

/// Presence frames one announcement writes at once: a user shared with 1,000 others, each with
/// a few devices online, is announced in a few dozen rounds of pushes, not thousands at once.
pub const PUSH_CONCURRENCY: usize = 32;
/// How long one presence push is waited for. A connection still in its own `$connect` takes no
/// frame until that returns (locally a push waits for the socket to take it), and that
/// `$connect` may itself be announcing to the pusher's connection: two mutual sharers
/// connecting at once would wait on each other. Past this wait the push is given up and the
/// announcement goes on (locally the frame stays queued and arrives when the socket opens; on
/// AWS a `PostToConnection` answers well within it).
const PUSH_WAIT: std::time::Duration = std::time::Duration::from_millis(300);
/// Announcements one call makes at most: pushing finds connections gone, whose removal may be
/// their users' own last departure, announced in turn; past this many the rest are left to
/// those connections' own `$disconnect` (their entries have been removed already).
const MAX_ANNOUNCEMENTS: usize = 16;

#[derive(Clone)]
pub struct Presence {
    pub(crate) store: Arc<dyn PresenceStore>,
    pub(crate) registry: Arc<dyn ConnectionRegistry>,
    pub(crate) limiter: Limiter,
    pub(crate) clock: SharedClock,
}

impl Presence {
    /// `PUT /v1/presence/shares`: replaces the caller's share list (at once: a user dropped from
    /// it gets no further frame).
    pub async fn set_shares(
        &self,
        who: &Principal,
        req: PresenceSharesRequest,
    ) -> Result<PresenceSharesOut> {
        let user = who.user_id;
        let mut ids: Vec<UserId> = req.user_ids.into_iter().filter(|&u| u != user).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > MAX_PRESENCE_SHARES {
            return Err(Error::invalid(format!(
                "`user_ids` names at most {MAX_PRESENCE_SHARES} users"
            )));
        }
        self.limiter.take(Limit::PresenceShares { user }).await?;
        self.store.set_shares(user, &ids, req.last_seen).await?;
        tracing::info!(shares = ids.len(), "presence shares replaced");
        Ok(PresenceSharesOut {
            user_ids: ids,
            last_seen: req.last_seen,
        })
    }

    /// `GET /v1/presence/shares`
    pub async fn shares(&self, who: &Principal) -> Result<PresenceSharesOut> {
        let user = who.user_id;
        self.limiter.take(Limit::PresenceReads { user }).await?;
        let (user_ids, last_seen) = self.store.shares(user).await?;
        Ok(PresenceSharesOut {
            user_ids,
            last_seen,
        })
    }

    /// A user's share list and `last_seen` choice (for the account export).
    pub async fn shares_of(&self, user: UserId) -> Result<(Vec<UserId>, bool)> {
        self.store.shares(user).await
    }

    /// `GET /v1/presence?user_ids=a,b,…`: the presence of those who share with the caller and
    /// with whom the caller shares; the others are left out, whether or not they exist.
    pub async fn read(&self, who: &Principal, user_ids: &str) -> Result<PresenceOut> {
        let viewer = who.user_id;
        let mut asked: Vec<UserId> = Vec::new();
        for raw in user_ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let id = uuid::Uuid::parse_str(raw)
                .map_err(|_| Error::invalid("`user_ids` is a comma-separated list of user ids"))?;
            if !asked.contains(&id) {
                asked.push(id);
            }
            if asked.len() > MAX_PRESENCE_READ {
                return Err(Error::invalid(format!(
                    "`user_ids` names at most {MAX_PRESENCE_READ} users"
                )));
            }
        }
        self.limiter
            .take(Limit::PresenceReads { user: viewer })
            .await?;
        let (mine, _) = self.store.shares(viewer).await?;
        let mine: HashSet<UserId> = mine.into_iter().collect();
        // Only those the caller shares with are read at all.
        let asked: Vec<UserId> = asked.into_iter().filter(|u| mine.contains(u)).collect();
        let seen = self.store.seen(viewer, &asked, self.clock.now_ms()).await?;
        let presence = asked
            .into_iter()
            .zip(seen)
            .filter(|(_, s)| s.shares_with_viewer)
            .map(|(user_id, s)| UserPresence {
                user_id,
                online: s.online,
                last_seen: if s.online {
                    None
                } else {
                    s.offline_at_ms.map(minute_of)
                },
            })
            .collect();
        Ok(PresenceOut { presence })
    }

    /// A connection of `user` was registered: the user's first announces them online. A
    /// failure is logged, never the connection's.
    pub async fn connected(&self, pusher: &dyn Pusher, user: UserId, connection_id: &str) {
        let now = self.clock.now_ms();
        match self.store.connected(user, connection_id, now).await {
            Ok(Transition::Online) => self.announce(pusher, user, Transition::Online).await,
            Ok(_) => {}
            Err(e) => e.log(),
        }
    }

    /// A connection of `user` left the registry (disconnect, eviction, session end, found gone):
    /// the user's last announces them offline.
    pub async fn disconnected(&self, pusher: &dyn Pusher, user: UserId, connection_id: &str) {
        let now = self.clock.now_ms();
        match self.store.disconnected(user, connection_id, now).await {
            Ok(Transition::Offline) => self.announce(pusher, user, Transition::Offline).await,
            Ok(_) => {}
            Err(e) => e.log(),
        }
    }

    /// Writes the transition to every connected device of each user who shares both ways with
    /// `user`. A connection found gone is removed from the registry and counted out of its
    /// user's presence, which may announce that user offline in turn (up to
    /// `MAX_ANNOUNCEMENTS` in one call).
    async fn announce(&self, pusher: &dyn Pusher, user: UserId, transition: Transition) {
        let mut pending = vec![(user, transition)];
        let mut made = 0;
        while let Some((user, transition)) = pending.pop() {
            if made == MAX_ANNOUNCEMENTS {
                break;
            }
            made += 1;
            let gone = match self.announce_one(pusher, user, transition).await {
                Ok(gone) => gone,
                Err(e) => {
                    e.log();
                    continue;
                }
            };
            for (viewer, connection_id, device_id) in gone {
                let device = DeviceAddress::new(viewer, device_id);
                if let Err(e) = self.registry.remove(device, &connection_id).await {
                    e.log();
                    continue;
                }
                let now = self.clock.now_ms();
                match self.store.disconnected(viewer, &connection_id, now).await {
                    Ok(Transition::Offline) => pending.push((viewer, Transition::Offline)),
                    Ok(_) => {}
                    Err(e) => e.log(),
                }
            }
        }
    }

    /// One transition's frames; returns the connections found gone.
    async fn announce_one(
        &self,
        pusher: &dyn Pusher,
        user: UserId,
        transition: Transition,
    ) -> Result<Vec<(UserId, String, DeviceId)>> {
        let (shares, shows_last_seen) = self.store.shares(user).await?;
        if shares.is_empty() {
            return Ok(Vec::new());
        }
        let audience = self.store.audience(user, &shares).await?;
        let online = transition == Transition::Online;
        let frame = ServerFrame::Presence {
            user_id: user,
            online,
            last_seen: (!online && shows_last_seen).then(|| minute_of(self.clock.now_ms())),
        }
        .to_json();
        let frame = frame.as_str();
        let pushes: Vec<_> = audience
            .into_iter()
            .flat_map(|(viewer, connections)| {
                connections
                    .into_iter()
                    .map(move |(connection_id, device_id)| (viewer, connection_id, device_id))
            })
            .map(|(viewer, connection_id, device_id)| async move {
                match tokio::time::timeout(PUSH_WAIT, pusher.push(&connection_id, frame)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(PushError::Gone)) => Some((viewer, connection_id, device_id)),
                    Ok(Err(PushError::Failed(detail))) => {
                        tracing::warn!(%connection_id, detail = %detail, "presence not written");
                        None
                    }
                    Err(_) => {
                        tracing::info!(%connection_id, "presence push given up after its wait");
                        None
                    }
                }
            })
            .collect();
        let written: Vec<Option<(UserId, String, DeviceId)>> = futures::stream::iter(pushes)
            .buffer_unordered(PUSH_CONCURRENCY)
            .collect()
            .await;
        let gone: Vec<_> = written.into_iter().flatten().collect();
        tracing::debug!(online, "presence announced");
        Ok(gone)
    }

    /// Erases the user's presence (account deletion), after its connections were closed.
    pub async fn forget(&self, user: UserId) -> Result<()> {
        self.store.forget(user).await
    }
}
