use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = shared::Config::load().await?;
    let pusher = shared::storage::apigateway::ManagementApiPusher::from_config(&config).await?;
    let relay = shared::App::from_config(config).await?.relay(pusher);
    run(service_fn(|ev: LambdaEvent<_>| {
        connection::handler(&relay, ev.payload)
    }))
    .await
}
