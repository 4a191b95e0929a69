//! Creates the tables from `infra/tables.json`, the same definitions the AWS template uses
//! (a check in `infra/lint` proves the two agree).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use serde::Deserialize;

use super::sdk_error;
use crate::error::{Error, Result};

const DEFINITIONS: &str = include_str!("../../../../infra/tables.json");

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableDef {
    /// Suffix after `<prefix>-`.
    pub table_name: String,
    pub key_schema: Vec<KeyDef>,
    pub attribute_definitions: Vec<AttrDef>,
    #[serde(default)]
    pub ttl_attribute: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyDef {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttrDef {
    pub attribute_name: String,
    pub attribute_type: String,
}

pub fn definitions() -> Vec<TableDef> {
    serde_json::from_str(DEFINITIONS).expect("infra/tables.json is valid")
}

fn table_name(prefix: &str, def: &TableDef) -> String {
    format!("{prefix}-{}", def.table_name.trim_start_matches('-'))
}

/// Creates any missing table (and its TTL setting); existing tables are left as they are.
pub async fn create_tables(client: &Client, prefix: &str) -> Result<()> {
    for def in definitions() {
        let name = table_name(prefix, &def);
        let mut req = client
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest);
        for k in &def.key_schema {
            req = req.key_schema(
                KeySchemaElement::builder()
                    .attribute_name(&k.attribute_name)
                    .key_type(KeyType::from(k.key_type.as_str()))
                    .build()
                    .map_err(|e| Error::Internal(e.to_string()))?,
            );
        }
        for a in &def.attribute_definitions {
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(&a.attribute_name)
                    .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                    .build()
                    .map_err(|e| Error::Internal(e.to_string()))?,
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                continue
            }
            Err(e) => return Err(sdk_error("create table", e)),
        }
        if let Some(attr) = &def.ttl_attribute {
            client
                .update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attr)
                        .enabled(true)
                        .build()
                        .map_err(|e| Error::Internal(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| sdk_error("enable ttl", e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_name_the_four_tables_the_adapters_use() {
        let defs = definitions();
        let names: Vec<String> = defs.iter().map(|d| table_name("p", d)).collect();
        let t = super::super::Tables::with_prefix("p");
        assert_eq!(names.len(), 4);
        for n in [&t.users, &t.keys, &t.sessions, &t.groups] {
            assert!(names.contains(n), "{n} missing from infra/tables.json");
        }
    }
}
