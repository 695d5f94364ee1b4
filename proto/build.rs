//! Generates the gRPC code from `graylane.proto` with protox, a pure-Rust protobuf
//! compiler, so building graylane never needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build only tracks what protoc reports; with compile_fds we must say
    // ourselves that edits to the .proto regenerate.
    println!("cargo:rerun-if-changed=graylane.proto");
    let fds = protox::compile(["graylane.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::Codec")
        .compile_fds(fds)?;
    Ok(())
}
