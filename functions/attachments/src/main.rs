use lambda_http::{run, service_fn, Error};
use shared::routes::Function;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let telemetry = shared::telemetry::lambda(Function::Attachments)?;
    let config = shared::Config::load().await?;
    let blobs = shared::storage::s3::blobs(&config).await;
    let app = shared::App::from_parts(config, shared::clock::system(), None, blobs).await?;
    run(service_fn(|req| {
        telemetry.http(req, |req| attachments::handler(&app, req))
    }))
    .await
}
