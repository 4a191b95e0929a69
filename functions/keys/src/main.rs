use lambda_http::{run, service_fn, Error};
use shared::routes::Function;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let telemetry = shared::telemetry::lambda(Function::Keys)?;
    let app = shared::App::from_config(shared::Config::load().await?).await?;
    run(service_fn(|req| {
        telemetry.http(req, |req| keys::handler(&app, req))
    }))
    .await
}
