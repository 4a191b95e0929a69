//! Lambda mode: events go to functions behind a Lambda invoke API (e.g. `cargo lambda watch`),
//! the very binaries AWS runs; the connection function pushes back through this gateway's
//! Management API, as it does through API Gateway's.

use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::apigw::{
    ApiGatewayProxyResponse, ApiGatewayV2httpRequest, ApiGatewayV2httpResponse,
    ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::encodings::Body;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::functions::Functions;
use crate::routes::Function;

pub struct LambdaEndpoint {
    client: reqwest::Client,
    base: String,
}

impl LambdaEndpoint {
    pub fn new(base: &str) -> Self {
        // The first invocation of a function under `cargo lambda watch` may compile it.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .expect("http client");
        Self {
            client,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    async fn invoke<E: Serialize, R: DeserializeOwned>(
        &self,
        function: &str,
        event: &E,
    ) -> Result<R, String> {
        let url = format!("{}/2015-03-31/functions/{function}/invocations", self.base);
        let resp = self
            .client
            .post(&url)
            .json(event)
            .send()
            .await
            .map_err(|e| format!("invoke {function}: {e}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("invoke {function}: {e}"))?;
        if !status.is_success() {
            return Err(format!("invoke {function}: {status}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("response of {function}: {e}"))
    }
}

fn bad_gateway(detail: &str) -> (i64, Option<Body>) {
    tracing::error!(detail, "function invocation failed");
    (
        502,
        Some(Body::Text(
            r#"{"error":{"code":"bad_gateway","message":"the function failed"}}"#.into(),
        )),
    )
}

#[async_trait]
impl Functions for LambdaEndpoint {
    async fn http(
        &self,
        function: Function,
        event: ApiGatewayV2httpRequest,
    ) -> ApiGatewayV2httpResponse {
        self.invoke(function.name(), &event)
            .await
            .unwrap_or_else(|e| {
                let mut r = ApiGatewayV2httpResponse::default();
                (r.status_code, r.body) = bad_gateway(&e);
                r
            })
    }

    async fn websocket(&self, event: ApiGatewayWebsocketProxyRequest) -> ApiGatewayProxyResponse {
        self.invoke("connection", &event).await.unwrap_or_else(|e| {
            let mut r = ApiGatewayProxyResponse::default();
            (r.status_code, r.body) = bad_gateway(&e);
            r
        })
    }
}
