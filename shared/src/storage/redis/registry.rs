//! `ConnectionRegistry` on Redis.
//!
//! The user's connection set and connection → session hash (`{user}` slot) and the connection
//! key (`{connection}` slot) live in two hash slots, so each change is two single-slot requests
//! sent together. Neither order leaves a stale entry behind for long: a set member whose key is
//! gone expires by its score (the deliver script drops it, registering prunes the hash), and the
//! key expires with the connection.

use async_trait::async_trait;
use redis::AsyncCommands;
use uuid::Uuid;

use super::scripts::{evict, evict::Evict, register, register::Register};
use super::{RedisStore, CONNECTION_TTL_MS};
use crate::error::Result;
use crate::model::{DeviceAddress, UserId, PRIMARY_DEVICE};
use crate::storage::{Connected, ConnectionRegistry, Registration};

/// The connection key's value:
/// `<user>|<session>|<valid_until_ms>|<device>|<ack 0/1>|<new_account_until_ms>`.
fn encode(r: &Registration) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}",
        r.user_id,
        r.session_id,
        r.valid_until_ms,
        r.device_id,
        u8::from(r.ack),
        r.new_account_until_ms
    )
}

/// None for anything else, e.g. a bare user id written before sessions were recorded: such a
/// connection is refused and its client reconnects, rather than kept without a session to check.
/// A value without a device (written before devices) is device 1's, without a mode
/// fire-and-forget, without an account age an established account's.
fn decode(raw: &str) -> Option<Registration> {
    let mut parts = raw.splitn(6, '|');
    Some(Registration {
        user_id: Uuid::parse_str(parts.next()?).ok()?,
        session_id: Uuid::parse_str(parts.next()?).ok()?,
        valid_until_ms: parts.next()?.parse().ok()?,
        device_id: match parts.next() {
            Some(d) => d.parse().ok()?,
            None => PRIMARY_DEVICE,
        },
        ack: parts.next() == Some("1"),
        new_account_until_ms: parts.next().and_then(|t| t.parse().ok()).unwrap_or(0),
    })
}

/// A `conn_sessions` value: `<session>|<device>|<ack 0/1>`; from before devices a bare
/// session (device 1), from before ack mode `<session>|<device>`.
pub(super) fn session_and_device(raw: &str) -> Option<Connected> {
    let mut parts = raw.splitn(3, '|');
    let session_id = Uuid::parse_str(parts.next()?).ok()?;
    let device_id = match parts.next() {
        Some(d) => d.parse().ok()?,
        None => PRIMARY_DEVICE,
    };
    Some(Connected {
        session_id,
        device_id,
        ack: parts.next() == Some("1"),
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
        let by_user = Register {
            connection_id,
            registration,
            // Deliveries stop going to the connection once its token has expired.
            ends_ms: registration.valid_until_ms.min(now_ms + CONNECTION_TTL_MS),
            now_ms,
            ttl_ms: CONNECTION_TTL_MS,
        }
        .call(&self.keys);
        let mut b = self.connection();
        let (set, key): (Result<redis::Value>, redis::RedisResult<()>) = futures::join!(
            self.run(&by_user),
            b.pset_ex(
                self.conn_key(connection_id),
                encode(registration),
                CONNECTION_TTL_MS,
            )
        );
        register::decode(set?)?;
        key.map_err(super::unavailable)?;
        Ok(())
    }

    async fn unregister(&self, connection_id: &str) -> Result<Option<Registration>> {
        let raw: Option<String> = self
            .connection()
            .get(self.conn_key(connection_id))
            .await
            .map_err(super::unavailable)?;
        let Some(raw) = raw else { return Ok(None) };
        // A connection registered in an older format is still removed on disconnect.
        let registration = match decode(&raw) {
            Some(r) => r,
            None => match Uuid::parse_str(raw.split('|').next().unwrap_or_default()) {
                Ok(user_id) => Registration {
                    user_id,
                    device_id: PRIMARY_DEVICE,
                    session_id: Uuid::nil(),
                    valid_until_ms: 0,
                    ack: false,
                    new_account_until_ms: 0,
                },
                Err(_) => return Ok(None),
            },
        };
        let device = DeviceAddress::new(registration.user_id, registration.device_id);
        self.remove(device, connection_id).await?;
        Ok(Some(registration))
    }

    async fn registration(&self, connection_id: &str) -> Result<Option<Registration>> {
        let raw: Option<String> = self
            .connection()
            .get(self.conn_key(connection_id))
            .await
            .map_err(super::unavailable)?;
        Ok(raw.as_deref().and_then(decode))
    }

    async fn remove(&self, device: DeviceAddress, connection_id: &str) -> Result<()> {
        let user_id = device.user_id;
        let mut by_user = redis::pipe();
        by_user
            .atomic()
            .zrem(self.keys.conns(device), connection_id)
            .ignore()
            .srem(self.keys.ack_conns(device), connection_id)
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
        device: DeviceAddress,
        connection_id: &str,
        max: u32,
        now_ms: u64,
    ) -> Result<Vec<(String, bool)>> {
        let call = Evict {
            device,
            connection_id,
            max,
            now_ms,
            ttl_ms: CONNECTION_TTL_MS,
        }
        .call(&self.keys);
        evict::decode(self.run(&call).await?)
    }

    async fn connections(&self, user_id: UserId) -> Result<Vec<(String, Connected)>> {
        let all: Vec<(String, String)> = self
            .connection()
            .hgetall(self.keys.conn_sessions(user_id))
            .await
            .map_err(super::unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(c, raw)| Some((c, session_and_device(&raw)?)))
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
            device_id: 3,
            session_id: Uuid::new_v4(),
            valid_until_ms: 1_764_000_000_000,
            ack: true,
            new_account_until_ms: 1_763_000_000_000,
        };
        assert_eq!(decode(&encode(&r)), Some(r));
        let before_ages = format!("{}|{}|{}|3|1", r.user_id, r.session_id, r.valid_until_ms);
        assert_eq!(
            decode(&before_ages).map(|r| (r.ack, r.new_account_until_ms)),
            Some((true, 0))
        );
        let plain = Registration { ack: false, ..r };
        assert_eq!(decode(&encode(&plain)), Some(plain));
        assert_eq!(decode(&r.user_id.to_string()), None);
        let before_devices = format!("{}|{}|{}", r.user_id, r.session_id, r.valid_until_ms);
        assert_eq!(
            decode(&before_devices).map(|r| (r.device_id, r.ack)),
            Some((1, false))
        );
        let s = Uuid::new_v4();
        let connected = |device_id, ack| {
            Some(Connected {
                session_id: s,
                device_id,
                ack,
            })
        };
        assert_eq!(session_and_device(&format!("{s}|2|1")), connected(2, true));
        assert_eq!(session_and_device(&format!("{s}|2")), connected(2, false));
        assert_eq!(session_and_device(&s.to_string()), connected(1, false));
    }
}
