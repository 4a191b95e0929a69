//! DynamoDB adapters: users, keys, sessions and groups, one struct over one client.

mod attachments;
mod groups;
mod items;
mod key_packages;
mod keys;
mod mls_items;
mod sessions;
pub mod tables;
mod users;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use aws_sdk_dynamodb::Client;
use futures::future::try_join_all;
use std::collections::HashMap;

use crate::clock::SharedClock;
use crate::error::{Error, Result};

pub type Item = HashMap<String, AttributeValue>;

/// Table names of one deployment.
#[derive(Debug, Clone)]
pub struct Tables {
    pub users: String,
    pub keys: String,
    pub sessions: String,
    pub groups: String,
}

impl Tables {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            users: format!("{prefix}-users"),
            keys: format!("{prefix}-keys"),
            sessions: format!("{prefix}-sessions"),
            groups: format!("{prefix}-groups"),
        }
    }
}

#[derive(Clone)]
pub struct Dynamo {
    client: Client,
    tables: Tables,
    /// Session expiry and `created_at` follow it: `App::assemble` hands over the App's clock.
    clock: SharedClock,
}

/// Builds the SDK client from the standard AWS settings (`AWS_REGION`, `AWS_ENDPOINT_URL_DYNAMODB`,
/// credentials chain) and the shared timeouts (`storage::aws`).
pub async fn client_from_env() -> Client {
    client_with(None).await
}

/// The same client, sent to `endpoint` (e.g. a second local engine) instead of the configured one.
pub async fn client_for_endpoint(endpoint: &str) -> Client {
    client_with(Some(endpoint)).await
}

async fn client_with(endpoint: Option<&str>) -> Client {
    let shared = crate::storage::aws::sdk_config(endpoint).await;
    let config = aws_sdk_dynamodb::config::Builder::from(&shared)
        .interceptor(crate::storage::aws::Calls::of("dynamodb"))
        .build();
    Client::from_conf(config)
}

impl Dynamo {
    /// On the system clock until [`Self::with_clock`] (which `App::assemble` calls).
    pub fn new(client: Client, tables: Tables) -> Self {
        Self {
            client,
            tables,
            clock: crate::clock::system(),
        }
    }

    /// The same adapter reading time from `clock`.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Writes in chunks of 25 (the BatchWriteItem limit), concurrently, retrying unprocessed items.
    async fn batch_write(&self, table: &str, requests: Vec<WriteRequest>) -> Result<()> {
        let chunks = requests
            .chunks(25)
            .map(|c| self.batch_chunk(table, c.to_vec()));
        try_join_all(chunks).await?;
        Ok(())
    }

    async fn batch_chunk(&self, table: &str, mut pending: Vec<WriteRequest>) -> Result<()> {
        for attempt in 0..8u32 {
            let out = self
                .client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| sdk_error("batch write", e))?;
            pending = out
                .unprocessed_items
                .and_then(|mut m| m.remove(table))
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
        }
        Err(Error::Unavailable(
            "dynamodb: batch write left unprocessed items".into(),
        ))
    }

    async fn batch_put(&self, table: &str, items: Vec<Item>) -> Result<()> {
        let reqs = items
            .into_iter()
            .map(|item| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .expect("item set"),
                    )
                    .build()
            })
            .collect();
        self.batch_write(table, reqs).await
    }

    async fn batch_delete(&self, table: &str, keys: Vec<Item>) -> Result<()> {
        let reqs = keys
            .into_iter()
            .map(|key| {
                WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(key))
                            .build()
                            .expect("key set"),
                    )
                    .build()
            })
            .collect();
        self.batch_write(table, reqs).await
    }

    /// A query of partition `pk` of `table`, narrowed to the sort keys starting with `prefix`
    /// when there is one.
    fn query_partition(&self, table: &str, pk: &str, prefix: Option<&str>) -> QueryFluentBuilder {
        let query = self
            .client
            .query()
            .table_name(table)
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()));
        match prefix {
            Some(p) => query
                .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                .expression_attribute_values(":p", AttributeValue::S(p.to_string())),
            None => query.key_condition_expression("pk = :pk"),
        }
    }

    /// Every item of partition `pk` whose sort key starts with `prefix`, keys only.
    async fn query_keys(&self, table: &str, pk: &str, prefix: Option<&str>) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let query = self
            .query_partition(table, pk, prefix)
            .consistent_read(true)
            .projection_expression("pk, sk");
        each_page(query, "query", |page| {
            out.extend(page.items.unwrap_or_default())
        })
        .await?;
        Ok(out)
    }
}

/// Sends `query` page after page (a page ending with a non-empty `LastEvaluatedKey` has a next),
/// handing each page to `each`.
async fn each_page(
    query: QueryFluentBuilder,
    what: &str,
    mut each: impl FnMut(QueryOutput),
) -> Result<()> {
    let mut start: Option<Item> = None;
    loop {
        let mut page = query
            .clone()
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| sdk_error(what, e))?;
        let next = page.last_evaluated_key.take().filter(|k| !k.is_empty());
        each(page);
        match next {
            Some(k) => start = Some(k),
            None => return Ok(()),
        }
    }
}

/// The first `max` items of `query` that `read` keeps (`None`: skipped, e.g. an item past its
/// expiry that TTL deletion, which is lazy, has not removed yet), and whether there were more:
/// pages stop once one past `max` is kept, so the read is bounded whatever the partition holds.
pub(crate) async fn first_kept<T>(
    query: QueryFluentBuilder,
    what: &str,
    max: usize,
    mut read: impl FnMut(&Item) -> Result<Option<T>>,
) -> Result<(Vec<T>, bool)> {
    let mut found = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut page = query
            .clone()
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| sdk_error(what, e))?;
        for item in page.items.take().unwrap_or_default() {
            let Some(kept) = read(&item)? else { continue };
            if found.len() == max {
                return Ok((found, true));
            }
            found.push(kept);
        }
        match page.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(k) => start = Some(k),
            None => return Ok((found, false)),
        }
    }
}

/// Maps an SDK failure to `Unavailable` with a detail for the log (never for the client): the
/// service's code and message, or the failure with its whole chain of causes (an unreachable
/// endpoint says which connection error).
pub(crate) fn sdk_error<E, R>(what: &str, e: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match &e {
        SdkError::ServiceError(s) => format!(
            "{}: {}",
            s.err().code().unwrap_or("service error"),
            s.err().message().unwrap_or("")
        ),
        other => DisplayErrorContext(other).to_string(),
    };
    Error::unavailable(&format!("dynamodb {what}"), detail)
}

/// True when the service error is a failed condition.
pub(crate) fn is_condition_failed<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(s) if s.err().code() == Some("ConditionalCheckFailedException"))
}

#[async_trait::async_trait]
impl crate::storage::Health for Dynamo {
    async fn ping(&self) -> Result<()> {
        self.client
            .get_item()
            .table_name(&self.tables.users)
            .key("pk", AttributeValue::S("health#".into()))
            .send()
            .await
            .map_err(|e| sdk_error("health", e))?;
        Ok(())
    }
}
