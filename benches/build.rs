//! With the `tonic` feature, generates the tonic client and server of `proto/echo.proto` (the
//! tonic peer in the echo benchmark) into `OUT_DIR`; that needs `protoc` (Debian's
//! `protobuf-compiler`). Without the feature there is nothing to generate, so a plain build of
//! the workspace needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Run again only when this file changes (tonic-prost-build adds the proto files).
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "tonic")]
    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`, so the payload is not copied into a `Vec<u8>`.
        .bytes(".")
        .compile_protos(&["proto/echo.proto"], &["proto"])?;
    Ok(())
}
