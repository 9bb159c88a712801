//! The JSON Schema of `routes.yaml`, generated from the raw config types (`config::raw`), so
//! it cannot drift from what the parser accepts. Draft-07, the newest draft that
//! yaml-language-server (VS Code, Neovim, IntelliJ's YAML plugin) fully supports. The
//! shipped copy is `deploy/routes.schema.json`; a test keeps it equal to this output.

use schemars::generate::SchemaSettings;

use super::raw::RawConfig;

/// The schema as pretty-printed JSON with a final newline.
pub fn json_schema() -> String {
    let schema = SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<RawConfig>();
    // Serializing a `serde_json::Value`-backed schema cannot fail.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
