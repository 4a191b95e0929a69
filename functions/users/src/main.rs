use lambda_http::{run, service_fn, Error};
use shared::routes::Function;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let telemetry = shared::telemetry::lambda(Function::Users)?;
    let config = shared::Config::load().await?;
    // Logout and account deletion close the sessions' WebSocket connections through it.
    let sockets = shared::storage::apigateway::ManagementApiPusher::from_config(&config).await?;
    // Account deletion deletes the account's uploads from the attachments bucket.
    let blobs = shared::storage::s3::blobs(&config).await;
    let app =
        shared::App::from_parts(config, shared::clock::system(), Some(sockets), blobs).await?;
    run(service_fn(|req| {
        telemetry.http(req, |req| users::handler(&app, req))
    }))
    .await
}
