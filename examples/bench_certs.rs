//! Writes a throwaway CA and a server certificate for `localhost`/127.0.0.1, for the benchmark's
//! upstream stand-in: `cargo run --release --example bench_certs -- <dir>` writes `ca.pem`,
//! `server.pem` (leaf then CA) and `server.key`.

#[path = "../tests/support/ca.rs"]
#[allow(dead_code)] // the issuer is for the tests' client certificates
mod ca;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: bench_certs <dir>");
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir).unwrap();
    let certs = ca::LocalCa::new("specgate bench CA");
    std::fs::write(dir.join("ca.pem"), certs.ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), certs.chain_pem()).unwrap();
    std::fs::write(dir.join("server.key"), certs.leaf_key.serialize_pem()).unwrap();
}
