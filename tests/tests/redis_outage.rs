//! A backing store that stops answering: 503 `unavailable`, and nothing half-written.

use relay_tests::outage::assert_redis_outage;
use relay_tests::servers::start_redis;
use relay_tests::{Stack, User};

#[tokio::test]
async fn redis_going_down_gives_503_and_writes_nothing() {
    let (port, mut redis) = start_redis();
    let url = format!("redis://127.0.0.1:{port}");
    let stack = Stack::with_env(&[("REDIS_URL", url.as_str())]).await;
    let alice = User::builder(&stack).create().await;
    let before = stack.items("users").await.len();
    redis.kill().unwrap();
    redis.wait().unwrap();

    assert_redis_outage(&stack, &alice, before, &port.to_string()).await;
}
