//! `register.lua`: a connection into its device's sets (the `{user}` half of registering).

use redis::Value;

use super::{Call, Reply, REGISTER};
use crate::error::Result;
use crate::storage::redis::RedisKeys;
use crate::storage::Registration;

/// What a call to `register.lua` takes, by name.
pub(crate) struct Register<'a> {
    pub connection_id: &'a str,
    pub registration: &'a Registration,
    /// When the registration ends (ms).
    pub ends_ms: u64,
    pub now_ms: u64,
    pub ttl_ms: u64,
}

impl Register<'_> {
    pub(crate) fn call(&self, keys: &RedisKeys) -> Call {
        let r = self.registration;
        let device = r.device();
        REGISTER
            .call()
            .key(keys.conns(device))
            .key(keys.conn_sessions(r.user_id))
            .key(keys.ack_conns(device))
            .arg(self.connection_id)
            .arg(self.ends_ms)
            .arg(r.session_id.to_string())
            .arg(self.now_ms)
            .arg(self.ttl_ms)
            .arg(r.device_id)
            .arg(u8::from(r.ack))
    }
}

pub(crate) fn decode(reply: Value) -> Result<()> {
    let reply = Reply::new(&REGISTER, reply)?;
    match reply.tag() {
        "registered" => reply.end(),
        _ => Err(reply.unknown()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{named, shape};
    use super::*;
    use uuid::Uuid;

    #[test]
    fn the_call_has_the_layout_the_script_names() {
        let registration = Registration {
            user_id: Uuid::nil(),
            device_id: 2,
            session_id: Uuid::nil(),
            valid_until_ms: 1,
            ack: true,
            new_account_until_ms: 0,
        };
        let c = Register {
            connection_id: "c",
            registration: &registration,
            ends_ms: 1,
            now_ms: 1,
            ttl_ms: 1,
        }
        .call(&RedisKeys::new(""));
        assert_eq!(shape(&c), named(&REGISTER));
        let s = |t: &str| Value::BulkString(t.as_bytes().to_vec());
        assert!(decode(Value::Array(vec![s("registered")])).is_ok());
        assert!(decode(Value::Int(1)).is_err());
    }
}
