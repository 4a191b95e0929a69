//! `relay-routes`: prints the route table (`shared::routes`) as JSON, for the checks outside Rust
//! (`infra/check_contract.py` compares the AWS template with it).

fn main() {
    println!("{:#}", shared::routes::table_json());
}
