//! Reading declared settings (`config::settings`) from a source of variables: a value that is
//! empty or only whitespace counts as unset, an unset one takes its declared default, and every
//! error names the variable.

use std::str::FromStr;

use super::settings::Setting;
use super::ConfigError;

/// Variables as the process environment (or a test's map) gives them.
pub struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl<'a> Env<'a> {
    pub fn new(get: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self(get)
    }

    /// The value set, if any.
    pub fn set(&self, setting: &Setting) -> Option<String> {
        (self.0)(setting.var).filter(|v| !v.trim().is_empty())
    }

    pub fn required(&self, setting: &Setting) -> Result<String, ConfigError> {
        self.set(setting)
            .ok_or_else(|| ConfigError::Missing(setting.var.to_string()))
    }

    /// The value set, else the declared default.
    pub fn string(&self, setting: &Setting) -> String {
        self.set(setting)
            .unwrap_or_else(|| setting.default.to_string())
    }

    /// A whole number (the value set, else the default).
    pub fn number<T: FromStr>(&self, setting: &Setting) -> Result<T, ConfigError> {
        self.string(setting)
            .trim()
            .parse()
            .map_err(|_| invalid(setting, "a non-negative whole number"))
    }

    /// A whole number of at least `min`; `expected` says so in the error.
    pub fn number_at_least<T: FromStr + PartialOrd>(
        &self,
        setting: &Setting,
        min: T,
        expected: &'static str,
    ) -> Result<T, ConfigError> {
        let n: T = self.number(setting)?;
        if n < min {
            return Err(invalid(setting, expected));
        }
        Ok(n)
    }

    /// `true`/`1`/`yes` or `false`/`0`/`no`; `None` when neither set nor defaulted.
    pub fn flag(&self, setting: &Setting) -> Result<Option<bool>, ConfigError> {
        let raw = self.string(setting).trim().to_ascii_lowercase();
        match raw.as_str() {
            "" => Ok(None),
            "true" | "1" | "yes" => Ok(Some(true)),
            "false" | "0" | "no" => Ok(Some(false)),
            _ => Err(invalid(setting, "true or false")),
        }
    }
}

/// The error for a value that does not parse or breaks a rule.
pub fn invalid(setting: &Setting, expected: &'static str) -> ConfigError {
    ConfigError::Invalid {
        var: setting.var.to_string(),
        expected,
    }
}
