//! Generates the tonic client and server of `proto/echo.proto` (the peer in the echo benchmark)
//! into `OUT_DIR`. Needs `protoc` (Debian's `protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`, so the payload is not copied into a `Vec<u8>`.
        .bytes(".")
        .compile_protos(&["proto/echo.proto"], &["proto"])?;
    Ok(())
}
