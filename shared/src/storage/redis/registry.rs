//! `ConnectionRegistry` on Redis.
//!
//! The user's connection set and connection → session hash (`{user}` slot) and the connection
//! key (`{connection}` slot) live in two hash slots, so each change is two single-slot requests
//! sent together. Neither order leaves a stale entry behind for long: a set member whose key is
//! gone expires by its score (the deliver script drops it, registering prunes the hash), and the
//! key expires with the connection.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::AsyncCommands;
use uuid::Uuid;

use super::{Lua, RedisStore, CONNECTION_TTL_MS};
use crate::error::Result;
use crate::model::UserId;
use crate::storage::{ConnectionRegistry, Registration};

static REGISTER: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("register.lua")));
static EVICT: LazyLock<Lua> = LazyLock::new(|| Lua::new(include_str!("evict.lua")));

/// The connection key's value: `<user>|<session>|<valid_until_ms>`.
fn encode(r: &Registration) -> String {
    format!("{}|{}|{}", r.user_id, r.session_id, r.valid_until_ms)
}

/// None for anything else, e.g. a bare user id written before sessions were recorded: such a
/// connection is refused and its client reconnects, rather than kept without a session to check.
fn decode(raw: &str) -> Option<Registration> {
    let mut parts = raw.splitn(3, '|');
    Some(Registration {
        user_id: Uuid::parse_str(parts.next()?).ok()?,
        session_id: Uuid::parse_str(parts.next()?).ok()?,
        valid_until_ms: parts.next()?.parse().ok()?,
    })
}

#[async_trait]
impl ConnectionRegistry for RedisStore {
    async fn register(
        &self,
        connection_id: &str,
        registration: &Registration,
        now_ms: u64,
    ) -> Result<()> {
        let user_id = registration.user_id;
        // Deliveries stop going to the connection once its token has expired.
        let ends_ms = registration.valid_until_ms.min(now_ms + CONNECTION_TTL_MS);
        let mut by_user =
            REGISTER.call(&[&self.conns_key(user_id), &self.keys.conn_sessions(user_id)]);
        by_user
            .arg(connection_id)
            .arg(ends_ms)
            .arg(registration.session_id.to_string())
            .arg(now_ms)
            .arg(CONNECTION_TTL_MS);
        let mut b = self.connection();
        let (set, key): (Result<i64>, redis::RedisResult<()>) = futures::join!(
            self.run(&REGISTER, &by_user),
            b.pset_ex(
                self.conn_key(connection_id),
                encode(registration),
                CONNECTION_TTL_MS,
            )
        );
        set?;
        key.map_err(super::unavailable)?;
        Ok(())
    }

    async fn unregister(&self, connection_id: &str) -> Result<Option<UserId>> {
        let user = self.user_of(connection_id).await?;
        if let Some(user_id) = user {
            self.remove(user_id, connection_id).await?;
        }
        Ok(user)
    }

    async fn registration(&self, connection_id: &str) -> Result<Option<Registration>> {
        let raw: Option<String> = self
            .connection()
            .get(self.conn_key(connection_id))
            .await
            .map_err(super::unavailable)?;
        Ok(raw.as_deref().and_then(decode))
    }

    async fn user_of(&self, connection_id: &str) -> Result<Option<UserId>> {
        let raw: Option<String> = self
            .connection()
            .get(self.conn_key(connection_id))
            .await
            .map_err(super::unavailable)?;
        // A connection registered in the older format is still removed on disconnect.
        Ok(raw.and_then(|s| Uuid::parse_str(s.split('|').next().unwrap_or_default()).ok()))
    }

    async fn remove(&self, user_id: UserId, connection_id: &str) -> Result<()> {
        let mut by_user = redis::pipe();
        by_user
            .atomic()
            .zrem(self.conns_key(user_id), connection_id)
            .ignore()
            .hdel(self.keys.conn_sessions(user_id), connection_id)
            .ignore();
        let (mut a, mut b) = (self.connection(), self.connection());
        let (set, key): (redis::RedisResult<()>, redis::RedisResult<()>) = futures::join!(
            by_user.query_async(&mut a),
            b.del(self.conn_key(connection_id))
        );
        set.map_err(super::unavailable)?;
        key.map_err(super::unavailable)?;
        Ok(())
    }

    async fn evict_over(
        &self,
        user_id: UserId,
        connection_id: &str,
        max: u32,
        now_ms: u64,
    ) -> Result<Vec<String>> {
        let mut call = EVICT.call(&[&self.conns_key(user_id), &self.keys.conn_order(user_id)]);
        call.arg(connection_id)
            .arg(now_ms)
            .arg(max)
            .arg(CONNECTION_TTL_MS);
        self.run(&EVICT, &call).await
    }

    async fn connections(&self, user_id: UserId) -> Result<Vec<(String, Uuid)>> {
        let all: Vec<(String, String)> = self
            .connection()
            .hgetall(self.keys.conn_sessions(user_id))
            .await
            .map_err(super::unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(c, s)| Some((c, Uuid::parse_str(&s).ok()?)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_round_trip_and_old_values_are_refused() {
        let r = Registration {
            user_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            valid_until_ms: 1_764_000_000_000,
        };
        assert_eq!(decode(&encode(&r)), Some(r));
        assert_eq!(decode(&r.user_id.to_string()), None);
    }
}
