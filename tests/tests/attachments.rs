//! Attachments over real HTTP: the relay signs, the bytes go straight to and from the
//! process's S3-API server (s3s-fs, which checks SigV4 signatures, presigned URLs' expiry and the
//! signed headers). What the signed request allows is what storage accepts: exactly the granted
//! length, at the granted key, until the URL expires.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;

use relay_tests::attachments::{
    create, create_response, download, download_url, get, put, random_bytes, raw_request, s3_code,
    target, unissued_id, with_changed_signature, without_param, Upload,
};
use relay_tests::client::{assert_rate_limited, delete_auth, error_code};
use relay_tests::{eventually, Stack, User};
use serde_json::json;

const MIB: usize = 1024 * 1024;

fn is_base64url_id(id: &str) -> bool {
    id.len() == 22
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[tokio::test]
async fn a_mebibyte_goes_up_and_comes_back_the_same_through_the_presigned_urls() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bytes = random_bytes(MIB);

    let upload = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;
    assert!(is_base64url_id(&upload.id), "{}", upload.body);
    assert_eq!(upload.method, "PUT");
    assert_eq!(upload.expires_in, 300, "default ATTACHMENT_URL_TTL_SECS");
    assert!(
        upload
            .headers
            .contains(&("content-length".into(), bytes.len().to_string())),
        "the length is a header to send: {:?}",
        upload.headers
    );
    let signed = upload
        .url
        .split("X-Amz-SignedHeaders=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .expect("SigV4 query presigning");
    assert!(
        signed.split("%3B").any(|h| h == "content-length"),
        "content-length is signed: {signed}"
    );
    assert!(upload.url.contains(&format!("/attachments/{}?", upload.id)));
    let (status, answer) = upload.put(&bytes).await;
    assert_eq!(status, 200, "upload: {answer}");

    // The recipient gets a URL of his own from the id in the message.
    let (status, body) = download(&stack, Some(&bob.access), &upload.id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 300);
    let url = body["download_url"].as_str().expect("download_url");
    let (status, got) = get(url).await;
    assert_eq!(status, 200, "download: {}", String::from_utf8_lossy(&got));
    assert!(got == bytes, "the same bytes come back");

    // Neither URL names a user (only the uploader's index, server-side, links the id to alice).
    for url in [upload.url.as_str(), url] {
        for user in [&alice, &bob] {
            assert!(!url.contains(&user.user_id), "{url}");
            assert!(!url.contains(&user.username), "{url}");
        }
    }
}

#[tokio::test]
async fn ids_are_22_characters_of_base64url_and_never_repeat() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let mut ids = HashSet::new();
    for _ in 0..50 {
        let upload = Upload::grant(&stack, &alice.access, 10).await;
        assert!(is_base64url_id(&upload.id), "{}", upload.id);
        assert!(
            ids.insert(upload.id.clone()),
            "id {} given twice",
            upload.id
        );
    }
}

#[tokio::test]
async fn an_upload_longer_or_shorter_than_the_signed_length_is_refused_and_nothing_stored() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bytes = random_bytes(4096);
    let upload = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;

    let mut longer = bytes.clone();
    longer.extend_from_slice(b"one byte more than granted");
    for (what, body) in [
        ("longer", longer),
        ("one byte longer", random_bytes(bytes.len() + 1)),
        ("one byte shorter", bytes[..bytes.len() - 1].to_vec()),
        ("empty", Vec::new()),
    ] {
        let (status, answer) = put(&upload.url, &upload.headers, body, false).await;
        assert_eq!(status, 403, "{what}: {answer}");
        assert_eq!(
            s3_code(answer.as_bytes()),
            "SignatureDoesNotMatch",
            "{what}"
        );
    }
    let url = download_url(&stack, &alice.access, &upload.id).await;
    let (status, got) = get(&url).await;
    assert_eq!(
        status,
        404,
        "nothing stored: {}",
        String::from_utf8_lossy(&got)
    );

    // The URL itself is still good for exactly the granted length.
    let (status, answer) = upload.put(&bytes).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(get(&url).await, (200, bytes));
}

/// The upload headers other than `content-length`, as lines of a raw request.
fn signed_besides_length(upload: &Upload) -> String {
    upload
        .headers
        .iter()
        .filter(|(k, _)| k != "content-length")
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect()
}

#[tokio::test]
async fn a_body_that_lies_about_its_framing_never_stores_more_or_less_than_granted() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let n = 2048;
    let bytes = random_bytes(n);

    // The signed Content-Length with more bytes behind it: storage reads the granted length
    // and no more (the rest is not part of the request).
    let upload = Upload::grant(&stack, &alice.access, n as u64).await;
    let mut more = bytes.clone();
    more.extend_from_slice(&random_bytes(1000));
    let head = format!(
        "PUT {} HTTP/1.1\r\nContent-Length: {n}\r\n{}",
        target(&upload.url),
        signed_besides_length(&upload)
    );
    let answer = raw_request(&upload.url, &head, &more, true).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let url = download_url(&stack, &alice.access, &upload.id).await;
    assert_eq!(
        get(&url).await,
        (200, bytes.clone()),
        "exactly the granted bytes"
    );

    // The signed Content-Length, then fewer bytes and the end of the stream: nothing is stored.
    let upload = Upload::grant(&stack, &alice.access, n as u64).await;
    let head = format!(
        "PUT {} HTTP/1.1\r\nContent-Length: {n}\r\n{}",
        target(&upload.url),
        signed_besides_length(&upload)
    );
    let answer = raw_request(&upload.url, &head, &bytes[..n - 1], true).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    let url = download_url(&stack, &alice.access, &upload.id).await;
    assert_eq!(get(&url).await.0, 404, "a truncated upload stores nothing");

    // No Content-Length at all (chunked, any length): the signed header is missing.
    let head = format!(
        "PUT {} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n{}",
        target(&upload.url),
        signed_besides_length(&upload)
    );
    let mut chunked = format!("{:x}\r\n", n + 1000).into_bytes();
    chunked.extend_from_slice(&more);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let answer = raw_request(&upload.url, &head, &chunked, false).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(s3_code(answer.as_bytes()), "SignatureDoesNotMatch");
    assert_eq!(get(&url).await.0, 404);
}

#[tokio::test]
async fn expired_upload_and_download_urls_are_refused() {
    let stack = Stack::with_env(&[("ATTACHMENT_URL_TTL_SECS", "1")]).await;
    let alice = User::builder(&stack).create().await;
    let bytes = random_bytes(1000);

    let late = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;
    assert_eq!(late.expires_in, 1);
    let stored = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;
    let (status, answer) = stored.put(&bytes).await;
    assert_eq!(status, 200, "{answer}");
    let (status, body) = download(&stack, Some(&alice.access), &stored.id).await;
    assert_eq!(
        (status, body["expires_in"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    let old_download = body["download_url"].as_str().unwrap().to_string();

    // Storage checks its own (wall) clock, so real time must pass. The download URL was signed
    // after the late upload's, so once storage refuses it the upload URL has expired too (a GET
    // stores nothing, where an upload tried too early would).
    eventually("storage to refuse the expired download URL", async || {
        get(&old_download).await.0 == 403
    })
    .await;
    let (status, answer) = late.put(&bytes).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(s3_code(answer.as_bytes()), "AccessDenied");
    assert!(answer.contains("expired"), "{answer}");
    let (status, got) = get(&old_download).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&got));
    assert_eq!(s3_code(&got), "AccessDenied");

    // The object is there: a fresh URL gets it.
    let url = download_url(&stack, &alice.access, &stored.id).await;
    assert_eq!(get(&url).await, (200, bytes));
    let url = download_url(&stack, &alice.access, &late.id).await;
    assert_eq!(get(&url).await.0, 404, "the late upload stored nothing");
}

#[tokio::test]
async fn a_url_with_a_changed_or_missing_signature_is_refused() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bytes = random_bytes(1000);
    let upload = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;

    let changed = with_changed_signature(&upload.url);
    assert_ne!(changed, upload.url);
    let unsigned = upload.url.split('?').next().unwrap().to_string();
    for (what, url, code) in [
        ("changed signature", changed, "SignatureDoesNotMatch"),
        (
            "no signature",
            without_param(&upload.url, "X-Amz-Signature"),
            "AccessDenied",
        ),
        ("no query", unsigned, "AccessDenied"),
        (
            "a later expiry",
            upload
                .url
                .replace("X-Amz-Expires=300", "X-Amz-Expires=604800"),
            "SignatureDoesNotMatch",
        ),
    ] {
        let (status, answer) = put(&url, &upload.headers, bytes.clone(), true).await;
        assert_eq!(status, 403, "{what}: {answer}");
        assert_eq!(s3_code(answer.as_bytes()), code, "{what}: {answer}");
    }
    let download = download_url(&stack, &alice.access, &upload.id).await;
    assert_eq!(get(&download).await.0, 404, "nothing stored");

    let (status, answer) = upload.put(&bytes).await;
    assert_eq!(status, 200, "{answer}");
    let (status, got) = get(&with_changed_signature(&download)).await;
    assert_eq!(
        (status, s3_code(&got).as_str()),
        (403, "SignatureDoesNotMatch")
    );
    let (status, got) = get(&without_param(&download, "X-Amz-Signature")).await;
    assert_eq!((status, s3_code(&got).as_str()), (403, "AccessDenied"));
    assert_eq!(get(&download).await, (200, bytes));
}

#[tokio::test]
async fn a_url_is_good_for_its_own_key_only() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let bytes = random_bytes(1000);
    let mine = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;
    let other = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;
    let key = format!("/attachments/{}", mine.id);
    let bucket_path = reqwest::Url::parse(&mine.url).unwrap().path().to_string();
    let bucket = bucket_path.trim_end_matches(&key);

    for (what, url) in [
        ("another issued id", mine.url.replace(&mine.id, &other.id)),
        (
            "an id never issued",
            mine.url.replace(&mine.id, &unissued_id()),
        ),
        (
            "outside attachments/",
            mine.url.replace(&key, &format!("/{}", mine.id)),
        ),
        (
            "another bucket",
            mine.url.replace(&format!("{bucket}/"), "/another-bucket/"),
        ),
    ] {
        assert_ne!(url, mine.url, "{what}");
        let (status, answer) = put(&url, &mine.headers, bytes.clone(), true).await;
        assert_eq!(status, 403, "{what}: {answer}");
        assert_eq!(
            s3_code(answer.as_bytes()),
            "SignatureDoesNotMatch",
            "{what}"
        );
    }
    let other_download = download_url(&stack, &alice.access, &other.id).await;
    assert_eq!(
        get(&other_download).await.0,
        404,
        "nothing written at the other id"
    );

    // Downloads too: the URL of one id does not read another.
    let (status, answer) = other.put(&bytes).await;
    assert_eq!(status, 200, "{answer}");
    let mine_download = download_url(&stack, &alice.access, &mine.id).await;
    let (status, got) = get(&mine_download.replace(&mine.id, &other.id)).await;
    assert_eq!(
        (status, s3_code(&got).as_str()),
        (403, "SignatureDoesNotMatch")
    );
    assert_eq!(get(&other_download).await, (200, bytes));
}

#[tokio::test]
async fn sizes_outside_1_to_attachment_max_bytes_get_no_url() {
    let stack = Stack::with_env(&[("ATTACHMENT_MAX_BYTES", "1000")]).await;
    let alice = User::builder(&stack).create().await;
    for size in [1001, 0, u64::MAX] {
        let (status, body) = create(&stack, &alice.access, size).await;
        assert_eq!(status, 400, "size {size}: {body}");
        assert_eq!(error_code(&body), "invalid_request", "size {size}");
        assert!(
            body.get("upload_url").is_none() && body.get("id").is_none(),
            "{body}"
        );
    }
    for bad in [
        json!({}),
        json!({"size": -1}),
        json!({"size": "10"}),
        json!({"size": 1.5}),
    ] {
        let r = stack
            .http
            .post(stack.url("/v1/attachments"))
            .bearer_auth(&alice.access)
            .json(&bad)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.get("upload_url").is_none(), "{body}");
    }
    // The limit itself is granted, and storage takes exactly that.
    let bytes = random_bytes(1000);
    let upload = Upload::grant(&stack, &alice.access, 1000).await;
    assert_eq!(upload.put(&bytes).await.0, 200);

    // The default limit: 100 MiB.
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let (status, body) = create(&stack, &alice.access, 100 * MIB as u64 + 1).await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "invalid_request"),
        "{body}"
    );
    let upload = Upload::grant(&stack, &alice.access, 100 * MIB as u64).await;
    assert!(upload
        .headers
        .contains(&("content-length".into(), (100 * MIB).to_string())));
}

#[tokio::test]
async fn both_routes_need_a_valid_token() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let upload = Upload::grant(&stack, &alice.access, 10).await;
    for token in [None, Some("not-a-token")] {
        let r = create_response(&stack, token, 10).await;
        assert_eq!(r.status(), 401, "POST with {token:?}");
        let (status, body) = download(&stack, token, &upload.id).await;
        assert_eq!(status, 401, "GET with {token:?}: {body}");
        assert_eq!(error_code(&body), "unauthorized");
    }
}

#[tokio::test]
async fn a_malformed_id_is_attachment_not_found_and_an_id_never_uploaded_is_a_storage_404() {
    let stack = Stack::start().await;
    let alice = User::builder(&stack).create().await;
    let id = unissued_id();
    for bad in [
        "short".to_string(),
        format!("{id}A"),
        id[..21].to_string(),
        format!("{}.", &id[..21]),
        format!("{}%2F", &id[..19]),
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
    ] {
        let (status, body) = download(&stack, Some(&alice.access), &bad).await;
        assert_eq!(status, 404, "{bad}: {body}");
        assert_eq!(error_code(&body), "attachment_not_found", "{bad}");
    }
    // The relay does not look: the storage answers for an id it never received.
    let url = download_url(&stack, &alice.access, &id).await;
    let (status, got) = get(&url).await;
    assert_eq!((status, s3_code(&got).as_str()), (404, "NoSuchKey"));
}

#[tokio::test]
async fn upload_grants_are_rate_limited_per_user() {
    // Every account established: the bucket of accounts past their first day.
    let stack = Stack::with_env(&[
        ("RATE_LIMIT_ATTACHMENTS", "2/3600"),
        ("NEW_ACCOUNT_AGE_SECS", "0"),
    ])
    .await;
    let (alice, bob) = User::pair(&stack).await;
    let first = Upload::grant(&stack, &alice.access, 10).await;
    Upload::grant(&stack, &alice.access, 10).await;
    assert_rate_limited(create_response(&stack, Some(&alice.access), 10).await, 3600).await;
    // Another user has a bucket of his own; downloads are not counted.
    Upload::grant(&stack, &bob.access, 10).await;
    download_url(&stack, &alice.access, &first.id).await;
}

#[tokio::test]
async fn without_a_bucket_the_routes_are_unavailable() {
    let stack = Stack::with_env(&[("ATTACHMENTS_BUCKET", "")]).await;
    let alice = User::builder(&stack).create().await;
    let (status, body) = create(&stack, &alice.access, 10).await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"), "{body}");
    let (status, body) = download(&stack, Some(&alice.access), &unissued_id()).await;
    assert_eq!((status, error_code(&body)), (503, "unavailable"), "{body}");
}

/// A `GET` of `url`: the status and the `content-type` and `content-disposition` served.
async fn served_as(url: &str) -> (u16, String, String) {
    let response = reqwest::get(url).await.expect("GET from storage");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let served = (
        response.status().as_u16(),
        header("content-type"),
        header("content-disposition"),
    );
    let _ = response.bytes().await;
    served
}

#[tokio::test]
async fn downloads_are_octet_stream_attachments_whatever_the_uploader_sends() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let page = b"<html><script>alert(document.domain)</script></html>".to_vec();
    let upload = Upload::grant(&stack, &alice.access, page.len() as u64).await;
    for (name, value) in [
        ("content-type", "application/octet-stream"),
        ("content-disposition", "attachment"),
    ] {
        assert!(
            upload.headers.contains(&(name.into(), value.into())),
            "{name} is an upload header to send: {:?}",
            upload.headers
        );
    }

    // A page: its type replaced, or the disposition left out, breaks the signature.
    let as_html: Vec<(String, String)> = upload
        .headers
        .iter()
        .map(|(k, v)| match k.as_str() {
            "content-type" => (k.clone(), "text/html".to_string()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let inline: Vec<(String, String)> = upload
        .headers
        .iter()
        .filter(|(k, _)| k != "content-disposition")
        .cloned()
        .collect();
    for (what, headers) in [("text/html", as_html), ("no disposition", inline)] {
        let (status, answer) = put(&upload.url, &headers, page.clone(), true).await;
        assert_eq!(status, 403, "{what}: {answer}");
        assert_eq!(
            s3_code(answer.as_bytes()),
            "SignatureDoesNotMatch",
            "{what}"
        );
    }
    let url = download_url(&stack, &bob.access, &upload.id).await;
    assert_eq!(get(&url).await.0, 404, "nothing was stored");

    let (status, answer) = upload.put(&page).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        served_as(&url).await,
        (
            200,
            "application/octet-stream".to_string(),
            "attachment".to_string()
        )
    );
    assert!(
        url.contains("response-content-type=application%2Foctet-stream")
            && url.contains("response-content-disposition=attachment"),
        "storage that honours overrides serves the same: {url}"
    );
}

/// The environment with the attachment upload limits at their defaults (empty is unset).
const DEFAULT_UPLOAD_LIMITS: [(&str, &str); 4] = [
    ("RATE_LIMIT_ATTACHMENTS", ""),
    ("RATE_LIMIT_ATTACHMENTS_NEW", ""),
    ("RATE_LIMIT_ATTACHMENTS_IP", ""),
    // The default age (tests/limits-off.env counts no account as new).
    ("NEW_ACCOUNT_AGE_SECS", "86400"),
];

/// Asks for upload URLs until one is refused; how many were granted (at most `max`).
async fn grants_until_refused(
    stack: &Stack,
    token: &str,
    max: usize,
) -> (usize, reqwest::Response) {
    for granted in 0..max {
        let r = create_response(stack, Some(token), 10).await;
        if r.status() != 200 {
            return (granted, r);
        }
    }
    panic!("{max} upload URLs and no refusal");
}

#[tokio::test]
async fn new_accounts_and_one_address_have_upload_budgets_of_their_own() {
    let stack = Stack::with_env(&DEFAULT_UPLOAD_LIMITS).await;
    let start = std::time::Instant::now();
    let veteran = User::builder(&stack).create().await;
    // The veteran ages past NEW_ACCOUNT_AGE_SECS (one day); its tokens with it.
    stack.advance(Duration::from_secs(86_400 + 1));
    let veteran_access = veteran.log_in(&stack).await.0;

    // A fresh account: 10 URLs at once, then one every 6 minutes.
    let fresh = User::builder(&stack).create().await;
    let (granted, refused) = grants_until_refused(&stack, &fresh.access, 40).await;
    assert_eq!(granted, 10, "a new account's budget");
    assert_rate_limited(refused, 360).await;
    // An established account has the larger one (30 at once, then one a minute).
    let (granted, refused) = grants_until_refused(&stack, &veteran_access, 40).await;
    assert_eq!(granted, 30, "an established account's budget");
    assert_rate_limited(refused, 60).await;

    // Every account here shares 127.0.0.1: 120 URLs at once, then one every 15 s, however many
    // accounts ask. 40 are spent; eight more fresh accounts take the other 80.
    for _ in 0..8 {
        let sybil = User::builder(&stack).create().await;
        let (granted, _) = grants_until_refused(&stack, &sybil.access, 40).await;
        assert_eq!(granted, 10);
    }
    // The address's bucket refills while this runs (Redis' clock, not the stack's): the next
    // account gets what came back since, and is refused well before its own 10.
    let late = User::builder(&stack).create().await;
    let (granted, refused) = grants_until_refused(&stack, &late.access, 10).await;
    let refilled = start.elapsed().as_secs() / 15 + 1;
    assert!(
        granted < 10 && granted as u64 <= refilled,
        "{granted} granted past the address's budget ({refilled} refilled)"
    );
    assert_rate_limited(refused, 15).await;
}

#[tokio::test]
async fn deleting_the_account_deletes_its_uploaded_objects_and_their_index() {
    let stack = Stack::start().await;
    let (alice, bob) = User::pair(&stack).await;
    let bytes = random_bytes(4096);
    let mut uploads = Vec::new();
    for _ in 0..3 {
        let upload = Upload::grant(&stack, &alice.access, bytes.len() as u64).await;
        assert_eq!(upload.put(&bytes).await.0, 200);
        uploads.push(upload);
    }
    // Bob's upload stays: only the deleted account's uploads go.
    let kept = Upload::grant(&stack, &bob.access, bytes.len() as u64).await;
    assert_eq!(kept.put(&bytes).await.0, 200);
    let indexed = |user: &str| {
        let pk = format!("user#{user}");
        let stack = &stack;
        async move {
            stack
                .items("groups")
                .await
                .into_iter()
                .filter(|i| {
                    i["pk"].as_s().unwrap() == &pk && i["sk"].as_s().unwrap().starts_with("att")
                })
                .count()
        }
    };
    // Three uploads and one day's count.
    assert_eq!(indexed(&alice.user_id).await, 4);
    for upload in &uploads {
        let url = download_url(&stack, &bob.access, &upload.id).await;
        assert_eq!(get(&url).await.0, 200);
    }

    assert_eq!(
        delete_auth(&stack, "/v1/users/me", &alice.access).await,
        204
    );

    for upload in &uploads {
        let url = download_url(&stack, &bob.access, &upload.id).await;
        let (status, got) = get(&url).await;
        assert_eq!((status, s3_code(&got).as_str()), (404, "NoSuchKey"));
    }
    assert_eq!(indexed(&alice.user_id).await, 0);
    let url = download_url(&stack, &bob.access, &kept.id).await;
    let (status, got) = get(&url).await;
    assert_eq!(status, 200);
    assert!(got == bytes);
    assert_eq!(indexed(&bob.user_id).await, 2);
}

#[tokio::test]
async fn a_users_uploads_are_indexed_at_most_322_a_day() {
    // Budgets wide enough that only the index's bound refuses.
    let stack = Stack::with_env(&[
        ("RATE_LIMIT_ATTACHMENTS", "400/60"),
        ("RATE_LIMIT_ATTACHMENTS_IP", "400/60"),
        ("NEW_ACCOUNT_AGE_SECS", "0"),
    ])
    .await;
    // The gateway's clock just after a UTC midnight, so the whole test falls in one day.
    let now = shared::clock::unix_secs();
    let day = 86_400;
    stack.advance(Duration::from_secs(now.div_ceil(day) * day + 10 - now));
    let (alice, bob) = User::pair(&stack).await;
    let granted = futures::stream::iter(0..322)
        .map(|_| create(&stack, &alice.access, 10))
        .buffer_unordered(8)
        .filter(|(status, _)| futures::future::ready(*status == 200))
        .count()
        .await;
    assert_eq!(granted, 322);
    // Refused until the next day; another user is not affected.
    assert_rate_limited(create_response(&stack, Some(&alice.access), 10).await, day).await;
    Upload::grant(&stack, &bob.access, 10).await;
    stack.advance(Duration::from_secs(day));
    let (access, _) = alice.log_in(&stack).await;
    Upload::grant(&stack, &access, 10).await;
}
