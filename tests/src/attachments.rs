//! Attachments as a client moves them: a presigned URL from the relay, then the bytes straight to
//! and from the S3-API server (the process's s3s-fs), over real HTTP both ways.

use std::time::Duration;

use rand::RngCore;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::status_json;
use crate::Stack;

/// `POST /v1/attachments` with `{"size": size}` (and a bearer token when one is given).
pub async fn create_response(stack: &Stack, token: Option<&str>, size: u64) -> reqwest::Response {
    let mut request = stack
        .http
        .post(stack.url("/v1/attachments"))
        .json(&json!({ "size": size }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST /v1/attachments")
}

/// `POST /v1/attachments`: the status and the body.
pub async fn create(stack: &Stack, token: &str, size: u64) -> (u16, Value) {
    status_json(create_response(stack, Some(token), size).await).await
}

/// `GET /v1/attachments/{id}` (with a bearer token when one is given): the status and the body.
pub async fn download(stack: &Stack, token: Option<&str>, id: &str) -> (u16, Value) {
    let mut request = stack.http.get(stack.url(&format!("/v1/attachments/{id}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    status_json(request.send().await.expect("GET /v1/attachments/{id}")).await
}

/// A granted upload: what `POST /v1/attachments` answered.
#[derive(Debug, Clone)]
pub struct Upload {
    pub id: String,
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub expires_in: u64,
    /// The whole answer, as it came.
    pub body: Value,
}

impl Upload {
    /// An upload URL for `size` bytes (asserts a 200).
    pub async fn grant(stack: &Stack, token: &str, size: u64) -> Self {
        let (status, body) = create(stack, token, size).await;
        assert_eq!(status, 200, "POST /v1/attachments: {body}");
        let headers = body["upload_headers"]
            .as_object()
            .expect("upload_headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("header value").to_string()))
            .collect();
        Self {
            id: body["id"].as_str().expect("id").to_string(),
            url: body["upload_url"].as_str().expect("upload_url").to_string(),
            method: body["upload_method"]
                .as_str()
                .expect("upload_method")
                .to_string(),
            headers,
            expires_in: body["expires_in"].as_u64().expect("expires_in"),
            body,
        }
    }

    /// Uploads `bytes` as a client must: the method and every upload header as given.
    pub async fn put(&self, bytes: &[u8]) -> (u16, String) {
        put(&self.url, &self.headers, bytes.to_vec(), true).await
    }
}

/// A download URL for `id` (asserts a 200).
pub async fn download_url(stack: &Stack, token: &str, id: &str) -> String {
    let (status, body) = download(stack, Some(token), id).await;
    assert_eq!(status, 200, "GET /v1/attachments/{id}: {body}");
    body["download_url"]
        .as_str()
        .expect("download_url")
        .to_string()
}

fn storage_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// A `PUT` of `body` to `url` with `headers`; with `signed_length` false the signed
/// `content-length` is left out and the body's own length is sent (honest framing of a body of
/// another length). The status and the storage's answer.
pub async fn put(
    url: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
    signed_length: bool,
) -> (u16, String) {
    let mut request = storage_client().put(url);
    for (k, v) in headers {
        if signed_length || !k.eq_ignore_ascii_case("content-length") {
            request = request.header(k, v);
        }
    }
    let response = request.body(body).send().await.expect("PUT to storage");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// A `GET` of `url` from the storage: the status and the bytes.
pub async fn get(url: &str) -> (u16, Vec<u8>) {
    let response = storage_client()
        .get(url)
        .send()
        .await
        .expect("GET from storage");
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap_or_default().to_vec())
}

/// The S3 error code of an XML error body (`<Code>…</Code>`), or "" when there is none.
pub fn s3_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_string())
        .unwrap_or_default()
}

/// Raw HTTP/1.1 to the storage, to send what no HTTP client sends (a body that does not match its
/// framing): `head` is the request line and headers (`Host` is added), then `body`; with
/// `close_write` the sending half is closed after it. What came back within 10 s, as text.
pub async fn raw_request(url: &str, head: &str, body: &[u8], close_write: bool) -> String {
    let parsed = reqwest::Url::parse(url).expect("url");
    let host = parsed.host_str().expect("host");
    let port = parsed.port_or_known_default().expect("port");
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .expect("connect to storage");
    let request = format!("{head}Host: {host}:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write");
    if close_write {
        stream.shutdown().await.expect("shutdown");
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The path and query of `url` (the request target of a raw request).
pub fn target(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).expect("url");
    match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    }
}

/// `len` random bytes (stand-in ciphertext).
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// A well-formed attachment id (22 characters of base64url) that was never issued.
pub fn unissued_id() -> String {
    shared::validation::encode_url(&random_bytes(16))
}

/// `url` with the last character of its `X-Amz-Signature` changed.
pub fn with_changed_signature(url: &str) -> String {
    let start = url.find("X-Amz-Signature=").expect("a presigned URL") + "X-Amz-Signature=".len();
    let end = url[start..].find('&').map_or(url.len(), |i| start + i);
    let last = &url[end - 1..end];
    let other = if last == "0" { "1" } else { "0" };
    format!("{}{other}{}", &url[..end - 1], &url[end..])
}

/// `url` without the query parameter `name`.
pub fn without_param(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').expect("a query");
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| kv.split('=').next() != Some(name))
        .collect();
    format!("{base}?{}", kept.join("&"))
}
