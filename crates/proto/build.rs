//! Compiles `/proto` with protox (no system `protoc`) and writes the descriptor set used by
//! gRPC reflection.
use protox::prost::Message;

const FILES: &[&str] = &[
    "userimport/directory/v1/directory_user.proto",
    "userimport/directory/v1/directory_service.proto",
    "userimport/registry/v1/registry_user.proto",
    "userimport/registry/v1/registry_service.proto",
    "userimport/registry/v1/role_rule_changes.proto",
    "userimport/importer/v1/importer_service.proto",
    "userimport/importer/v1/import_chunk.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    // compile_fds emits no rerun-if-changed lines of its own.
    println!("cargo:rerun-if-changed={}", root.display());
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let fds = protox::compile(FILES, [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
