//! The HTTP API's route table, as API Gateway matches it: route key, path parameters, function.

use std::collections::HashMap;

pub use shared::routes::Function;
use shared::routes::HttpRoute;

pub struct Route {
    pub key: &'static str,
    pub function: Function,
    pub params: HashMap<String, String>,
}

/// Every HTTP route key with its function, from the one route table.
fn table() -> impl Iterator<Item = (&'static str, Function)> {
    HttpRoute::ALL.into_iter().map(|r| (r.key(), r.function()))
}

pub fn matching(method: &str, path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    table().find_map(|(key, function)| {
        let (m, pattern) = key.split_once(' ')?;
        if m != method {
            return None;
        }
        let pattern: Vec<&str> = pattern.split('/').collect();
        if pattern.len() != segments.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (p, s) in pattern.iter().zip(&segments) {
            match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if !s.is_empty() => {
                    params.insert(name.to_string(), s.to_string());
                }
                Some(_) => return None,
                None if p == s => {}
                None => return None,
            }
        }
        Some(Route {
            key,
            function,
            params,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_like_api_gateway() {
        let r = matching("GET", "/v1/users/abc/bundle").unwrap();
        assert_eq!(
            (r.key, r.function, r.params["user_id"].as_str()),
            ("GET /v1/users/{user_id}/bundle", Function::Keys, "abc")
        );
        assert_eq!(
            matching("GET", "/v1/users").unwrap().function,
            Function::Users
        );
        assert_eq!(
            matching("DELETE", "/v1/users/me").unwrap().key,
            "DELETE /v1/users/me"
        );
        assert!(matching("POST", "/v1/keys").is_none());
        assert!(matching("GET", "/v1/users//bundle").is_none());
        assert!(matching("GET", "/nope").is_none());
    }
}
