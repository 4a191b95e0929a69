//! The configuration reference, generated: one table of every setting (`settings::ALL`, then
//! `RateLimits::SETTINGS`) written between markers into README.md and docs/api.md §8, and a check
//! that docs/api.md §7.1 names each rate limit with its default. `relay-contract --write`
//! rewrites the tables; a test fails while a committed document differs from the code.

use super::settings::{Setting, ALL};
use super::RateLimits;

/// The documents that carry the table, relative to the repository root.
pub const DOCUMENTS: [&str; 2] = ["README.md", "docs/api.md"];

/// The document whose section headings `§N.N` refers to.
const API_DOC: &str = "docs/api.md";

const BEGIN: &str = "<!-- configuration table: generated from shared/src/config (settings.rs, \
rate_limits.rs) by `cargo run -p local-gateway --bin relay-contract -- --write`; edit those, \
not this table -->";
const END: &str = "<!-- end of the generated configuration table -->";

/// Every setting, in the reference's order.
pub fn every_setting() -> impl Iterator<Item = &'static Setting> {
    ALL.iter().chain(RateLimits::SETTINGS)
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// `§N.N` in a meaning, linked to that section of docs/api.md (`prefix` is how `doc` reaches
/// it: empty from docs/api.md itself).
fn link_sections(meaning: &str, api_doc: &str, prefix: &str) -> String {
    let mut out = String::new();
    let mut rest = meaning;
    while let Some(at) = rest.find('§') {
        out.push_str(&rest[..at]);
        let after = &rest[at + '§'.len_utf8()..];
        let len = after
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(after.len());
        let number = after[..len].trim_end_matches('.');
        let heading = api_doc.lines().find_map(|l| {
            let title = l.trim_start_matches('#');
            (l.starts_with('#') && title.trim_start().starts_with(&format!("{number} ")))
                .then(|| title.trim())
        });
        match heading {
            Some(h) => out.push_str(&format!("[§{number}]({prefix}#{})", anchor(h))),
            None => out.push_str(&format!("§{number}")),
        }
        rest = &after[number.len()..];
    }
    out.push_str(rest);
    out
}

/// The table as it stands in `path`, markers included.
pub fn table(path: &str, api_doc: &str) -> String {
    let prefix = if path == API_DOC { "" } else { API_DOC };
    let mut out = format!("{BEGIN}\n| variable | default | meaning |\n|---|---|---|\n");
    for s in every_setting() {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            s.var,
            s.default_column(),
            link_sections(s.meaning, api_doc, prefix)
        ));
    }
    out.push_str(END);
    out
}

/// `text` with its generated table replaced by the code's; `None` when it has no markers.
pub fn regenerate(path: &str, text: &str, api_doc: &str) -> Option<String> {
    let start = text.find(BEGIN)?;
    let end = start + text[start..].find(END)? + END.len();
    Some(format!(
        "{}{}{}",
        &text[..start],
        table(path, api_doc),
        &text[end..]
    ))
}

/// What docs/api.md §7.1's table says of the rate limits that the code does not: each line names
/// a variable missing, unknown or with another default.
pub fn rate_limit_differences(api_doc: &str) -> Vec<String> {
    let section = api_doc
        .split("\n### ")
        .find(|s| s.starts_with("7.1 "))
        .unwrap_or("");
    let documented: Vec<(String, String)> = section
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let var = cells
                .get(1)?
                .strip_prefix("`RATE_LIMIT_")?
                .strip_suffix('`')?;
            let default = cells.get(2)?.strip_prefix('`')?.split('`').next()?;
            Some((format!("RATE_LIMIT_{var}"), default.to_string()))
        })
        .collect();
    let mut out = Vec::new();
    for s in RateLimits::SETTINGS {
        match documented.iter().find(|(v, _)| v == s.var) {
            None => out.push(format!("{}: missing from docs/api.md §7.1", s.var)),
            Some((_, d)) if d != s.default => out.push(format!(
                "{}: docs/api.md §7.1 says {d}, the code {}",
                s.var, s.default
            )),
            _ => {}
        }
    }
    for (v, _) in &documented {
        if !RateLimits::SETTINGS.iter().any(|s| s.var == v) {
            out.push(format!(
                "{v}: in docs/api.md §7.1 but not a limit of the code"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_tables_of_readme_and_api_md_match_the_code() {
        let api_doc = crate::repo_file(API_DOC);
        for path in DOCUMENTS {
            let text = crate::repo_file(path);
            let generated = regenerate(path, &text, &api_doc)
                .unwrap_or_else(|| panic!("{path} has no generated configuration table"));
            assert!(
                generated == text,
                "{path}'s configuration table is out of date with shared/src/config; run \
                 `cargo run -p local-gateway --bin relay-contract -- --write`"
            );
        }
        let diffs = rate_limit_differences(&api_doc);
        assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    }

    /// The checks broken on purpose: a row edited by hand, a limit missing from §7.1 and a
    /// default changed there are each caught.
    #[test]
    fn the_checks_catch_a_hand_edited_row_and_a_wrong_rate_limit_line() {
        let api_doc = crate::repo_file(API_DOC);
        let text = crate::repo_file("README.md");
        let edited = text.replacen("| `INBOX_MAX` | `1000` |", "| `INBOX_MAX` | `500` |", 1);
        assert_ne!(edited, text, "README.md has the INBOX_MAX row");
        assert_ne!(regenerate("README.md", &edited, &api_doc).unwrap(), edited);

        let without = api_doc.replacen("| `RATE_LIMIT_LINK` |", "| `RATE_LIMIT_LUNK` |", 1);
        let diffs = rate_limit_differences(&without);
        assert!(
            diffs
                .iter()
                .any(|d| d.starts_with("RATE_LIMIT_LINK: missing")),
            "{diffs:?}"
        );
        assert!(
            diffs.iter().any(|d| d.starts_with("RATE_LIMIT_LUNK")),
            "{diffs:?}"
        );
        let changed = api_doc.replacen(
            "| `RATE_LIMIT_LINK` | `10/600`",
            "| `RATE_LIMIT_LINK` | `11/600`",
            1,
        );
        assert!(rate_limit_differences(&changed)
            .iter()
            .any(|d| d.contains("says 11/600")),);
    }

    #[test]
    fn sections_are_linked_to_their_headings() {
        let doc = "## 7. Limits\n### 7.6 Gateway limits on AWS\n";
        assert_eq!(
            link_sections("see §7.6; more", doc, ""),
            "see [§7.6](#76-gateway-limits-on-aws); more"
        );
        assert_eq!(
            link_sections("(§7.6)", doc, "docs/api.md"),
            "([§7.6](docs/api.md#76-gateway-limits-on-aws))"
        );
    }
}
