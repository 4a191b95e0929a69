use lambda_http::{run, service_fn, Error};
use shared::routes::Function;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let telemetry = shared::telemetry::lambda(Function::Groups)?;
    let config = shared::Config::load().await?;
    // An accepted MLS Commit (and its Welcome) is pushed to the members' open connections.
    let sockets = shared::storage::apigateway::ManagementApiPusher::from_config(&config).await?;
    let app = shared::App::from_parts(config, shared::clock::system(), Some(sockets), None).await?;
    run(service_fn(|req| {
        telemetry.http(req, |req| groups::handler(&app, req))
    }))
    .await
}
