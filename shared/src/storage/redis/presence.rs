//! `PresenceStore` on Redis: every key of a user's presence is in the user's `{user}` slot, so
//! each change is one script or one transaction there. Reads about many users (a viewer's
//! `GET /v1/presence`, the audience of a transition) are one small single-slot pipeline per
//! user, a bounded number at once.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use redis::AsyncCommands;
use uuid::Uuid;

use super::registry::session_and_device;
use super::scripts::presence::{self, Direction, Presence};
use super::{RedisStore, CONNECTION_TTL_MS};
use crate::error::Result;
use crate::model::{DeviceId, UserId};
use crate::storage::{PresenceStore, Seen, Transition};

/// Users read at once (each one round trip to its slot's node).
const READ_CONCURRENCY: usize = 64;

#[async_trait]
impl PresenceStore for RedisStore {
    async fn set_shares(&self, user: UserId, shares: &[UserId], last_seen: bool) -> Result<()> {
        let (list, state) = (self.keys.presence_shares(user), self.keys.presence(user));
        let mut tx = redis::pipe();
        tx.atomic().del(&list).ignore();
        if !shares.is_empty() {
            let ids: Vec<String> = shares.iter().map(Uuid::to_string).collect();
            tx.sadd(&list, ids).ignore();
        }
        if last_seen {
            tx.hset(&state, "last_seen", "1").ignore();
        } else {
            tx.hdel(&state, &["last_seen", "offline_at"]).ignore();
        }
        let () = tx
            .query_async(&mut self.connection())
            .await
            .map_err(super::unavailable)?;
        Ok(())
    }

    async fn shares(&self, user: UserId) -> Result<(Vec<UserId>, bool)> {
        let mut tx = redis::pipe();
        tx.atomic()
            .smembers(self.keys.presence_shares(user))
            .hget(self.keys.presence(user), "last_seen");
        let (ids, last_seen): (Vec<String>, Option<String>) = tx
            .query_async(&mut self.connection())
            .await
            .map_err(super::unavailable)?;
        let mut ids: Vec<UserId> = ids.iter().filter_map(|i| Uuid::parse_str(i).ok()).collect();
        ids.sort_unstable();
        Ok((ids, last_seen.as_deref() == Some("1")))
    }

    async fn seen(&self, viewer: UserId, users: &[UserId], now_ms: u64) -> Result<Vec<Seen>> {
        let viewer = viewer.to_string();
        let reads: Vec<_> = users
            .iter()
            .map(|&user| {
                let mut conn = self.connection();
                let mut p = redis::pipe();
                p.sismember(self.keys.presence_shares(user), &viewer)
                    .zcount(self.keys.presence_conns(user), now_ms + 1, "+inf")
                    .hmget(self.keys.presence(user), &["last_seen", "offline_at"]);
                async move {
                    let (shares, live, (shown, at)): (bool, u64, (Option<String>, Option<u64>)) =
                        p.query_async(&mut conn).await.map_err(super::unavailable)?;
                    Ok::<_, crate::error::Error>(Seen {
                        shares_with_viewer: shares,
                        online: live > 0,
                        offline_at_ms: at.filter(|_| shown.as_deref() == Some("1")),
                    })
                }
            })
            .collect();
        futures::stream::iter(reads)
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await
    }

    async fn audience(
        &self,
        user: UserId,
        candidates: &[UserId],
    ) -> Result<Vec<(UserId, Vec<(String, DeviceId)>)>> {
        let user = user.to_string();
        let reads: Vec<_> = candidates
            .iter()
            .map(|&candidate| {
                let mut conn = self.connection();
                let mut p = redis::pipe();
                p.sismember(self.keys.presence_shares(candidate), &user)
                    .hgetall(self.keys.conn_sessions(candidate));
                async move {
                    let (shares, open): (bool, Vec<(String, String)>) =
                        p.query_async(&mut conn).await.map_err(super::unavailable)?;
                    let connections: Vec<(String, DeviceId)> = open
                        .into_iter()
                        .filter_map(|(c, raw)| Some((c, session_and_device(&raw)?.device_id)))
                        .collect();
                    Ok::<_, crate::error::Error>(
                        (shares && !connections.is_empty()).then_some((candidate, connections)),
                    )
                }
            })
            .collect();
        let found: Vec<_> = futures::stream::iter(reads)
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn connected(
        &self,
        user: UserId,
        connection_id: &str,
        now_ms: u64,
    ) -> Result<Transition> {
        // The gateway's longest connection, not the token's end: a socket stays open (and its
        // user online) past its token until its next frame is refused and it is ended.
        let call = Presence {
            user,
            connection_id,
            direction: Direction::In {
                ends_ms: now_ms + CONNECTION_TTL_MS,
                ttl_ms: CONNECTION_TTL_MS,
            },
            now_ms,
        }
        .call(&self.keys);
        presence::decode(self.run(&call).await?)
    }

    async fn disconnected(
        &self,
        user: UserId,
        connection_id: &str,
        now_ms: u64,
    ) -> Result<Transition> {
        let call = Presence {
            user,
            connection_id,
            direction: Direction::Out,
            now_ms,
        }
        .call(&self.keys);
        presence::decode(self.run(&call).await?)
    }

    async fn forget(&self, user: UserId) -> Result<()> {
        let () = self
            .connection()
            .del(&[
                self.keys.presence_shares(user),
                self.keys.presence(user),
                self.keys.presence_conns(user),
            ])
            .await
            .map_err(super::unavailable)?;
        Ok(())
    }
}
