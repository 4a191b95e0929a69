use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use shared::routes::Function;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let telemetry = shared::telemetry::lambda(Function::Connection)?;
    let config = shared::Config::load().await?;
    let pusher = shared::storage::apigateway::ManagementApiPusher::from_config(&config).await?;
    let relay = shared::App::from_config(config).await?.relay(pusher);
    run(service_fn(|ev: LambdaEvent<_>| {
        telemetry.websocket(ev.payload, |ev| connection::handler(&relay, ev))
    }))
    .await
}
