//! Scenario 6: an attachment through the presigned URLs (the relay signs, the client moves the
//! bytes) beside the same transfer straight to the S3 server with the SDK's own request signing
//! (no presigning): the floor. Also the relay's CPU per attachment (both URLs signed), read from
//! the gateway's /proc around the two HTTP calls.

use std::time::Instant;

use relay_tests::client::{get_auth, post_auth_json};
use relay_tests::Stack;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::util::{cpu_secs, log};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Attachments {
    pub size_mib: f64,
    pub rounds: usize,
    pub upload_mib_s: f64,
    pub download_mib_s: f64,
    pub floor_upload_mib_s: f64,
    pub floor_download_mib_s: f64,
    /// The gateway's CPU per attachment: `POST /v1/attachments` and `GET /v1/attachments/{id}`,
    /// over `rounds × 100` of them.
    pub relay_cpu_ms: f64,
    pub errors: u64,
}

fn rate(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9)
}

/// `rounds` attachments of `size` bytes each way, through the relay's URLs and straight to S3.
pub async fn attachments(
    stack: &Stack,
    gateway_pid: u32,
    s3_url: &str,
    bucket: &str,
    size: usize,
    rounds: usize,
) -> Attachments {
    let user = super::scenarios::create_users(stack, 1, 1).await.remove(0);
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let http = reqwest::Client::new();
    let s3 = floor_client(s3_url).await;
    let mut out = Attachments {
        size_mib: size as f64 / (1024.0 * 1024.0),
        rounds,
        ..Default::default()
    };
    // The relay's part alone, over many attachments (the CPU clock ticks in 10 ms): sign an
    // upload and a download.
    let signs = rounds * 100;
    let cpu0 = cpu_secs(gateway_pid).unwrap_or(0.0);
    for _ in 0..signs {
        let (status, grant) = post_auth_json(
            stack,
            "/v1/attachments",
            &user.access,
            &json!({"size": size}),
        )
        .await;
        let id = grant["id"].as_str().unwrap_or_default().to_string();
        let (dstatus, _) = get_auth(stack, &format!("/v1/attachments/{id}"), &user.access).await;
        if status != 200 || dstatus != 200 {
            out.errors += 1;
        }
    }
    out.relay_cpu_ms = (cpu_secs(gateway_pid).unwrap_or(0.0) - cpu0) * 1000.0 / signs as f64;
    let (mut up, mut down, mut floor_up, mut floor_down) = (0.0, 0.0, 0.0, 0.0);
    for round in 0..rounds {
        let (status, grant) = post_auth_json(
            stack,
            "/v1/attachments",
            &user.access,
            &json!({"size": size}),
        )
        .await;
        let id = grant["id"].as_str().unwrap_or_default().to_string();
        let (dstatus, download) =
            get_auth(stack, &format!("/v1/attachments/{id}"), &user.access).await;
        if status != 200 || dstatus != 200 {
            out.errors += 1;
            log(format!(
                "attachments: {status} {grant} / {dstatus} {download}"
            ));
            continue;
        }
        let mut put = http.put(grant["upload_url"].as_str().unwrap_or_default());
        for (k, v) in grant["upload_headers"].as_object().into_iter().flatten() {
            put = put.header(k, v.as_str().unwrap_or_default());
        }
        let t = Instant::now();
        let ok = put
            .body(data.clone())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        up += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let got = match http
            .get(download["download_url"].as_str().unwrap_or_default())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.bytes().await.ok(),
            _ => None,
        };
        down += t.elapsed().as_secs_f64();
        if !ok || got.as_deref() != Some(&data[..]) {
            out.errors += 1;
        }

        // The floor: the same bytes with the SDK's signed requests, no presigning.
        let key = format!("floor/{round}");
        let t = Instant::now();
        let put = s3
            .put_object()
            .bucket(bucket)
            .key(&key)
            .body(data.clone().into())
            .send()
            .await;
        floor_up += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let got = match s3.get_object().bucket(bucket).key(&key).send().await {
            Ok(o) => o.body.collect().await.ok().map(|b| b.into_bytes()),
            Err(_) => None,
        };
        floor_down += t.elapsed().as_secs_f64();
        if put.is_err() || got.as_deref() != Some(&data[..]) {
            out.errors += 1;
        }
    }
    let n = rounds.max(1);
    out.upload_mib_s = rate(size * n, up);
    out.download_mib_s = rate(size * n, down);
    out.floor_upload_mib_s = rate(size * n, floor_up);
    out.floor_download_mib_s = rate(size * n, floor_down);
    out
}

async fn floor_client(s3_url: &str) -> aws_sdk_s3::Client {
    let shared = shared::storage::aws::sdk_config(Some(s3_url)).await;
    let credentials = aws_sdk_s3::config::Credentials::new(
        relay_tests::stack::TEST_ACCESS_KEY,
        relay_tests::stack::TEST_SECRET_KEY,
        None,
        None,
        "relay-bench",
    );
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .credentials_provider(credentials)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
