//! A throwaway certificate authority and the `localhost` certificate it signs, made with rcgen.
//! One piece for the tests (`support::TestCa`) and the examples that stand in for the upstream
//! (`bench_certs`, `stand_in_upstream`), which take it in with `#[path]`.

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The CA, its issuer (to sign more certificates) and a leaf for `localhost` and 127.0.0.1.
pub struct LocalCa {
    pub ca: Certificate,
    pub issuer: Issuer<'static, KeyPair>,
    pub leaf: Certificate,
    pub leaf_key: KeyPair,
}

impl LocalCa {
    /// A new CA with common name `name`, and its leaf.
    pub fn new(name: &str) -> LocalCa {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        LocalCa {
            ca,
            issuer,
            leaf,
            leaf_key,
        }
    }

    /// The leaf's chain as a server presents it: the leaf, then the CA, PEM.
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.leaf.pem(), self.ca.pem())
    }
}
