//! With the `tch` feature: compiles `src/ops/aten/shim.cpp` (the ATen backward kernels tch does
//! not bind) against the libtorch that torch-sys found (`DEP_TCH_LIBTORCH_LIB`, its `lib`
//! folder; the headers are beside it). The default build compiles nothing.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    shim();
}

#[cfg(feature = "tch")]
fn shim() {
    use std::path::PathBuf;
    const SHIM: &str = "src/ops/aten/shim.cpp";
    println!("cargo:rerun-if-changed={SHIM}");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)");
    let root = PathBuf::from(lib)
        .parent()
        .expect("libtorch's lib folder has a parent")
        .to_path_buf();
    // torch-sys's own default; PyTorch's wheels use the C++11 ABI since 2.7.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file(SHIM)
        .compile("resnet_ode_aten");
}
