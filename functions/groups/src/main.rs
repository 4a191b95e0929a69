use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = shared::App::from_config(shared::Config::load().await?).await?;
    run(service_fn(|req| groups::handler(&app, req))).await
}
