//! `relay-routes`: prints the route table (`shared::routes`) as JSON, with the names of every
//! setting the code reads (`settings`, from `shared::config`), for the checks outside Rust
//! (`infra/check_contract.py` compares the AWS template with them).

fn main() {
    let mut table = shared::routes::table_json();
    let settings: Vec<&str> = shared::config::reference::every_setting()
        .map(|s| s.var)
        .collect();
    table["settings"] = serde_json::json!(settings);
    println!("{table:#}");
}
