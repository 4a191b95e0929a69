use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = shared::Config::load().await?;
    // An accepted MLS Commit (and its Welcome) is pushed to the members' open connections.
    let sockets = shared::storage::apigateway::ManagementApiPusher::from_config(&config).await?;
    let app = shared::App::from_parts(config, shared::clock::system(), Some(sockets), None).await?;
    run(service_fn(|req| groups::handler(&app, req))).await
}
