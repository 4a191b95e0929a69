//! `SessionStore` on DynamoDB: one item per session under the user's partition.

use async_trait::async_trait;
use uuid::Uuid;

use super::items::{get_n, get_s, key, n, s};
use super::{is_condition_failed, sdk_error, Dynamo};
use crate::error::Result;
use crate::model::UserId;
use crate::storage::{SessionRecord, SessionStore};

#[async_trait]
impl SessionStore for Dynamo {
    async fn create(
        &self,
        user_id: UserId,
        session_id: Uuid,
        record: &SessionRecord,
    ) -> Result<()> {
        let mut item = key(user_id.to_string(), session_id.to_string());
        item.insert("refresh_hash".into(), s(&record.refresh_hash));
        item.insert("expires_at".into(), n(record.expires_at));
        self.client
            .put_item()
            .table_name(&self.tables.sessions)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| sdk_error("create session", e))?;
        Ok(())
    }

    async fn get(&self, user_id: UserId, session_id: Uuid) -> Result<Option<SessionRecord>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.sessions)
            .set_key(Some(key(user_id.to_string(), session_id.to_string())))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("get session", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let record = SessionRecord {
            refresh_hash: get_s(&item, "refresh_hash")?.to_string(),
            expires_at: get_n(&item, "expires_at")?,
        };
        // TTL deletion is lazy: an expired item may still be there.
        Ok((record.expires_at > self.clock.now_secs()).then_some(record))
    }

    async fn rotate(
        &self,
        user_id: UserId,
        session_id: Uuid,
        old_hash: &str,
        next: &SessionRecord,
    ) -> Result<bool> {
        let res = self
            .client
            .update_item()
            .table_name(&self.tables.sessions)
            .set_key(Some(key(user_id.to_string(), session_id.to_string())))
            .update_expression("SET refresh_hash = :new, expires_at = :exp")
            // An expired item may outlive its TTL: it must not come back to life.
            .condition_expression("refresh_hash = :old AND expires_at > :now")
            .expression_attribute_values(":new", s(&next.refresh_hash))
            .expression_attribute_values(":exp", n(next.expires_at))
            .expression_attribute_values(":old", s(old_hash))
            .expression_attribute_values(":now", n(self.clock.now_secs()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("rotate session", e)),
        }
    }

    async fn delete(&self, user_id: UserId, session_id: Uuid) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.tables.sessions)
            .set_key(Some(key(user_id.to_string(), session_id.to_string())))
            .send()
            .await
            .map_err(|e| sdk_error("delete session", e))?;
        Ok(())
    }

    async fn delete_all(&self, user_id: UserId) -> Result<Vec<Uuid>> {
        let keys = self
            .query_keys(&self.tables.sessions, &user_id.to_string(), None)
            .await?;
        let ids = keys
            .iter()
            .filter_map(|k| get_s(k, "sk").ok().and_then(|s| Uuid::parse_str(s).ok()))
            .collect();
        self.batch_delete(&self.tables.sessions, keys).await?;
        Ok(ids)
    }
}
