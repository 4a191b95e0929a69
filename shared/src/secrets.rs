//! Secrets read once at cold start: on AWS the JWT signing key (and an external Redis URL that
//! carries a password) live in Secrets Manager, and the function's environment holds only the
//! secret's id (`JWT_SECRET_ID`, `REDIS_URL_SECRET_ID`), so the values never appear in the Lambda
//! configuration. Locally the variables themselves are set and nothing is fetched.

use std::collections::HashMap;

use crate::config::{settings, Config, ConfigError};

/// Variables that may be given as the id of a secret instead (variable, variable naming the
/// secret): the secret's SecretString is the value.
pub const SECRET_VARIABLES: [(&str, &str); 2] = [
    (settings::JWT_SECRET.var, settings::JWT_SECRET_ID.var),
    (settings::REDIS_URL.var, settings::REDIS_URL_SECRET_ID.var),
];

/// Where secret values come from (Secrets Manager on AWS; anything in tests of the config).
#[async_trait::async_trait]
pub trait SecretSource: Send + Sync {
    async fn secret_string(&self, id: &str) -> Result<String, String>;
}

#[async_trait::async_trait]
impl SecretSource for aws_sdk_secretsmanager::Client {
    async fn secret_string(&self, id: &str) -> Result<String, String> {
        let out = self
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
        out.secret_string
            .ok_or_else(|| "the secret has no SecretString".to_string())
    }
}

/// The values of the secret variables that are unset but name a secret, fetched.
pub async fn resolve(
    get: impl Fn(&str) -> Option<String>,
    source: &dyn SecretSource,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut resolved = HashMap::new();
    let set = |v: &str| get(v).filter(|s| !s.trim().is_empty());
    for (var, id_var) in SECRET_VARIABLES {
        if let (None, Some(id)) = (set(var), set(id_var)) {
            // The error names the variable and the secret id, never a value.
            let value = source
                .secret_string(&id)
                .await
                .map_err(|detail| ConfigError::Secret {
                    var: id_var.to_string(),
                    detail,
                })?;
            resolved.insert(var.to_string(), value);
        }
    }
    Ok(resolved)
}

impl Config {
    /// The configuration of a function: the environment, with the secrets it names fetched from
    /// Secrets Manager (only when a `<VAR>_SECRET_ID` is set, so local runs make no AWS call).
    pub async fn load() -> Result<Self, ConfigError> {
        let get = |k: &str| std::env::var(k).ok();
        let wanted = SECRET_VARIABLES
            .iter()
            .any(|(var, id_var)| get(var).is_none() && get(id_var).is_some());
        if !wanted {
            return Self::from_env();
        }
        let client =
            aws_sdk_secretsmanager::Client::new(&crate::storage::aws::sdk_config(None).await);
        Self::load_with(get, &client).await
    }

    /// `load` on any variables and secret source.
    pub async fn load_with(
        get: impl Fn(&str) -> Option<String>,
        source: &dyn SecretSource,
    ) -> Result<Self, ConfigError> {
        let resolved = resolve(&get, source).await?;
        Self::from_lookup(|k| resolved.get(k).cloned().or_else(|| get(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(HashMap<&'static str, &'static str>);

    #[async_trait::async_trait]
    impl SecretSource for Fixed {
        async fn secret_string(&self, id: &str) -> Result<String, String> {
            self.0
                .get(id)
                .map(|s| s.to_string())
                .ok_or_else(|| format!("no secret {id}"))
        }
    }

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef-from-the-secret";

    #[tokio::test]
    async fn a_secret_id_is_resolved_and_a_set_variable_wins() {
        let source = Fixed(HashMap::from([("relay/jwt", KEY)]));
        let config = Config::load_with(
            env(&[
                ("JWT_SECRET_ID", "relay/jwt"),
                ("REDIS_URL", "redis://127.0.0.1:6379"),
            ]),
            &source,
        )
        .await
        .unwrap();
        assert_eq!(config.jwt.secret.as_slice(), KEY.as_bytes());
        let set = "a-variable-set-directly-wins-over-the-secret-id";
        let pairs: &'static [(&str, &str)] = Box::leak(Box::new([
            ("JWT_SECRET", set),
            ("JWT_SECRET_ID", "relay/jwt"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ]));
        let config = Config::load_with(env(pairs), &source).await.unwrap();
        assert_eq!(config.jwt.secret.as_slice(), set.as_bytes());
    }

    #[tokio::test]
    async fn a_missing_secret_names_the_variable_not_a_value() {
        let source = Fixed(HashMap::new());
        let err = Config::load_with(
            env(&[("JWT_SECRET_ID", "relay/nope"), ("REDIS_URL", "redis://x")]),
            &source,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("JWT_SECRET_ID"), "{err}");
    }
}
