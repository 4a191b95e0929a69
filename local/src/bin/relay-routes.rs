//! `relay-routes`: prints the route table (`shared::routes`) as JSON, with the names of every
//! setting the code reads (`settings`, from `shared::config`) and how the functions' metrics
//! reach CloudWatch (`metrics`: namespace setting, each metric's dimensions, the labels' values,
//! from `shared::telemetry`), for the checks outside Rust (`infra/check_contract.py` compares the
//! AWS template, its dashboard and alarms included, with them).

fn main() {
    let mut table = shared::routes::table_json();
    let settings: Vec<&str> = shared::config::reference::every_setting()
        .map(|s| s.var)
        .collect();
    table["settings"] = serde_json::json!(settings);
    table["metrics"] = shared::telemetry::emf_json();
    println!("{table:#}");
}
