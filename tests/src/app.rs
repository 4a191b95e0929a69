//! An `App` on the test servers, for tests that call handler functions directly with events.

use std::sync::Arc;

use shared::{App, Config};

use crate::stack::{set_aws_env, test_env};

/// Tables created, clients built, as a Lambda cold start would.
pub async fn test_app() -> Arc<App> {
    let env = test_env();
    let config = Config::from_lookup(|k| env.get(k).cloned()).expect("test config");
    set_aws_env();
    let client = shared::storage::dynamodb::client_from_env().await;
    shared::storage::dynamodb::tables::create_tables(&client, &config.table_prefix)
        .await
        .expect("create tables");
    App::from_config(config).await.expect("app")
}
