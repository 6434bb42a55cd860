//! Compiles proto/sfs.proto with protox (pure Rust, no `protoc` needed).
fn main() {
    println!("cargo:rerun-if-changed=proto/sfs.proto");
    let fds = protox::compile(["proto/sfs.proto"], ["proto"]).expect("proto/sfs.proto compiles");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generating gRPC code");
}
