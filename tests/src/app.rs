//! An `App` on the test servers, for tests that call handler functions directly with events.

use std::sync::Arc;

use shared::App;

use crate::stack::{config_with_tables, test_env};

/// Tables created, clients built, as a Lambda cold start would.
pub async fn test_app() -> Arc<App> {
    let (config, _) = config_with_tables(&test_env()).await;
    App::from_config(config).await.expect("app")
}
