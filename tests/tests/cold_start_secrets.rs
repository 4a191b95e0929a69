//! Secrets at cold start against a real Secrets Manager API (moto_server): a function whose
//! environment names the JWT secret and the Redis URL by id gets their values, and a secret that
//! cannot be read stops the cold start with the variable's name, never a value.

use relay_tests::servers::moto;
use relay_tests::stack::set_aws_credentials;
use shared::Config;

async fn client() -> aws_sdk_secretsmanager::Client {
    set_aws_credentials();
    aws_sdk_secretsmanager::Client::new(&shared::storage::aws::sdk_config(Some(moto())).await)
}

fn unique(name: &str) -> String {
    format!("relay-test/{name}-{}", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn a_cold_start_reads_the_jwt_secret_and_redis_url_it_names() {
    let sm = client().await;
    let (jwt_id, redis_id) = (unique("jwt"), unique("redis"));
    let jwt = "a-signing-key-that-only-secrets-manager-holds-0123456789";
    let redis = "rediss://:password-only-in-the-secret@cache.example:6379";
    for (id, value) in [(&jwt_id, jwt), (&redis_id, redis)] {
        sm.create_secret()
            .name(id.as_str())
            .secret_string(value)
            .send()
            .await
            .expect("create secret");
    }
    let env = [
        ("JWT_SECRET_ID", jwt_id.clone()),
        ("REDIS_URL_SECRET_ID", redis_id.clone()),
    ];
    let config = Config::load_with(
        |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
        &sm,
    )
    .await
    .expect("config");
    assert_eq!(config.jwt.secret, jwt.as_bytes());
    assert_eq!(config.redis_url, redis);
}

#[tokio::test]
async fn an_unreadable_secret_stops_the_cold_start_naming_the_variable() {
    let sm = client().await;
    let missing = unique("never-created");
    let env = [
        ("JWT_SECRET_ID", missing.clone()),
        ("REDIS_URL", "redis://127.0.0.1:6379".to_string()),
    ];
    let err = Config::load_with(
        |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
        &sm,
    )
    .await
    .expect_err("a missing secret must stop the start");
    let text = err.to_string();
    assert!(text.contains("JWT_SECRET_ID"), "{text}");
    assert!(text.contains("ResourceNotFound"), "{text}");
}
