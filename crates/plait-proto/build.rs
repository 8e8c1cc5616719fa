//! Compiles the API protos without a system `protoc`: protox parses them into a
//! `FileDescriptorSet`, tonic-prost-build generates messages, clients and servers from
//! it, and the encoded set is kept in `OUT_DIR` for gRPC reflection.

use std::path::{Path, PathBuf};

use prost::Message;

/// Where the versioned packages live, relative to this crate.
const PROTO_ROOT: &str = "../../proto";
/// The package directory this crate compiles; every `.proto` in it is included.
const PROTO_PACKAGE_DIR: &str = "../../proto/plait/v1";
/// The encoded descriptor set, read back by `lib.rs` with `include_bytes!`.
const DESCRIPTOR_FILE: &str = "plait_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed={PROTO_PACKAGE_DIR}");

    let mut protos: Vec<PathBuf> = std::fs::read_dir(PROTO_PACKAGE_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    protos.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    // Sorted so the descriptor set, and so the generated code, does not depend on the
    // order the file system lists the directory in.
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    if protos.is_empty() {
        return Err(format!("no .proto files under {PROTO_PACKAGE_DIR}").into());
    }

    let descriptors = protox::compile(&protos, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(Path::new(&out_dir).join(DESCRIPTOR_FILE), descriptors.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The rerun lines above cover the protos; the builder's own would name paths
        // protoc never saw.
        .emit_rerun_if_changed(false)
        .compile_fds(descriptors)?;
    Ok(())
}
