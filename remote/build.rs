//! Compiles `proto/strata/plugin/v1/plugin.proto` with protox (a Rust
//! protobuf compiler: no `protoc` on the build machine) and generates the
//! prost messages and the tonic client and server from its descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let file = root.join("strata/plugin/v1/plugin.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
