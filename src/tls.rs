//! TLS for both tools, through rustls with the `ring` crypto provider:
//! loading certificates and keys (PEM), the server's configuration and its
//! reload on SIGHUP, sockclient's configuration, the identity a verified
//! client certificate gives a peer, and errors said in words.
//!
//! # Choices
//!
//! - **`ring`, not `aws-lc-rs`**, as rustls' crypto provider: `ring`
//!   builds from its own small C and assembly with the C compiler alone,
//!   in well under a minute on a 2-core machine; `aws-lc-rs` compiles
//!   AWS-LC (a BoringSSL fork: hundreds of C files, CMake on some
//!   targets) and takes several minutes there, on every clean CI build.
//!   `ring` has every suite TLS 1.2 and 1.3 need (AES-GCM, ChaCha20, ECDSA
//!   P-256/P-384, Ed25519, RSA) and runs them at the speeds the benchmark
//!   needs (`docs/BENCHMARKS.md`). Nothing here needs FIPS or
//!   post-quantum key exchange, the two reasons to take `aws-lc-rs`.
//! - **`rustls-native-certs`, not `webpki-roots`**, for sockclient's
//!   `--tls` without `--tls-ca`: "the system's trust store" is what the
//!   administrator manages (`update-ca-certificates`, a company CA added
//!   to it, `SSL_CERT_FILE`), and it is updated with the system;
//!   `webpki-roots` is Mozilla's list compiled into the binary, which only
//!   a rebuild updates and to which no local CA can be added.
//! - PEM is read with `rustls-pki-types`' own parser (`rustls-pemfile` is
//!   no longer maintained).

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

/// The crypto provider of both tools: `ring` (see the module doc).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2, nothing older (rustls has nothing older).
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The certificates of a PEM file, in order (a chain: the end entity
/// first); an error that names the file when there are none.
pub fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let cannot = |why: String| format!("cannot load {what} {}: {why}", path.display());
    std::fs::metadata(path).map_err(|e| cannot(crate::diag::describe(&e)))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| cannot(pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cannot(pem_error(e)))?;
    if certs.is_empty() {
        return Err(cannot(
            "no certificate in it (a PEM file with '-----BEGIN CERTIFICATE-----' is expected)"
                .into(),
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let cannot = |why: String| format!("cannot load the TLS key {}: {why}", path.display());
    std::fs::metadata(path).map_err(|e| cannot(crate::diag::describe(&e)))?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => cannot(
            "no private key in it (a PEM file with '-----BEGIN PRIVATE KEY-----' is expected)"
                .into(),
        ),
        e => cannot(pem_error(e)),
    })
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => crate::diag::describe(&e),
        e => format!("not valid PEM ({e:?})"),
    }
}

/// A warning when the key file can be read by users other than its owner
/// and group (a world-readable private key).
pub fn key_exposure(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    (m.mode() & 0o004 != 0).then(|| {
        format!(
            "the TLS key {} can be read by every user (mode {:04o}); make it readable by sockserve's user only (chmod 600, or LoadCredential= under systemd)",
            path.display(),
            m.mode() & 0o7777
        )
    })
}

/// Where the server's certificate, key and client CAs come from.
#[derive(Clone, Debug)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `--tls-client-ca`: client certificates are required and verified
    /// against these CAs.
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    /// A server configuration from the files as they are now.
    pub fn load(&self) -> Result<ServerConfig, String> {
        let certs = load_certs(&self.cert, "the TLS certificate")?;
        let key = load_key(&self.key)?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in load_certs(ca, "the client CA file")? {
                    roots.add(c).map_err(|e| {
                        format!(
                            "cannot load the client CA file {}: {}",
                            ca.display(),
                            describe_error(&e)
                        )
                    })?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| format!("cannot use the client CA file {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "cannot use the TLS certificate {} with the key {}: {}",
                self.cert.display(),
                self.key.display(),
                match e {
                    rustls::Error::InconsistentKeys(_) =>
                        "the key is not the certificate's (its public key differs)".to_string(),
                    e => describe_error(&e),
                }
            )
        })
    }
}

/// The server's TLS configuration, replaced whole on a reload: each new
/// connection takes the one in force when it starts.
pub struct ServerTls {
    files: ServerFiles,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}

impl ServerTls {
    /// Loads the files; warns about a key other users can read.
    pub fn load(files: ServerFiles) -> Result<ServerTls, String> {
        let config = files.load()?;
        if let Some(w) = key_exposure(&files.key) {
            crate::warn!("{w}");
        }
        Ok(ServerTls {
            files,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// The configuration for a new connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads the files again (SIGHUP): on success new connections use
    /// them; on failure the error is logged and the configuration in
    /// force stays.
    pub fn reload(&self) {
        match self.files.load() {
            Ok(c) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(c);
                if let Some(w) = key_exposure(&self.files.key) {
                    crate::warn!("{w}");
                }
                crate::info!(
                    "reloaded the TLS certificate {} and key {}{}",
                    self.files.cert.display(),
                    self.files.key.display(),
                    match &self.files.client_ca {
                        Some(ca) => format!(" and the client CAs {}", ca.display()),
                        None => String::new(),
                    }
                );
            }
            Err(e) => crate::error!("{e}; keeping the certificate loaded before"),
        }
    }
}

/// What sockclient needs for TLS.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    /// `--tls-ca`: trust these CAs instead of the system's.
    pub ca: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`: a client certificate.
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl ClientFiles {
    /// sockclient's configuration: the CAs of `--tls-ca` or of the
    /// system's store, and the client certificate if any.
    pub fn load(&self) -> Result<ClientConfig, String> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for c in load_certs(ca, "the CA file")? {
                    roots.add(c).map_err(|e| {
                        format!(
                            "cannot load the CA file {}: {}",
                            ca.display(),
                            describe_error(&e)
                        )
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default();
                    return Err(format!(
                        "no trusted CA certificate in the system's store{why}; install ca-certificates, set SSL_CERT_FILE, or give --tls-ca FILE"
                    ));
                }
            }
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|e| format!("cannot set up TLS verification: {e}"))?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(VERSIONS)
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_webpki_verifier(verifier);
        match &self.cert {
            Some((cert, key)) => {
                let certs = load_certs(cert, "the TLS certificate")?;
                let k = load_key(key)?;
                builder.with_client_auth_cert(certs, k).map_err(|e| {
                    format!(
                        "cannot use the TLS certificate {} with the key {}: {}",
                        cert.display(),
                        key.display(),
                        describe_error(&e)
                    )
                })
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

/// The name sockclient verifies the server's certificate against:
/// `--tls-server-name`, else the host of the address (a name or an IP
/// address).
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("'{name}' is not a DNS name or an IP address to verify"))
}

/// A TLS error in words a user can act on: why a certificate was not
/// accepted (expired, wrong name, unknown CA, ...), or what the peer's
/// alert said.
pub fn describe_error(e: &rustls::Error) -> String {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(c) => describe_cert_error(c),
        rustls::Error::NoCertificatesPresented => "the client sent no certificate".into(),
        rustls::Error::AlertReceived(a) => {
            let what = match a {
                A::CertificateRequired => {
                    "a client certificate is required (give --tls-cert and --tls-key)"
                }
                A::BadCertificate => "it rejected our certificate",
                A::UnknownCA => "it does not know the CA of our certificate",
                A::CertificateExpired => "our certificate has expired",
                A::CertificateRevoked => "our certificate is revoked",
                A::CertificateUnknown | A::UnsupportedCertificate => {
                    "it did not accept our certificate"
                }
                A::ProtocolVersion => "no TLS version in common",
                A::HandshakeFailure => "no cipher suite or parameters in common",
                A::DecryptError | A::DecodeError => "our messages did not decode",
                _ => "",
            };
            if what.is_empty() {
                format!("the peer sent the alert '{a:?}'")
            } else {
                format!("the peer sent the alert '{a:?}': {what}")
            }
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("not TLS, or broken TLS ({e}); is the other side speaking plain text?")
        }
        e => e.to_string(),
    }
}

fn describe_cert_error(c: &CertificateError) -> String {
    let ago = |secs: u64| {
        if secs >= 2 * 86400 {
            format!("{} days", secs / 86400)
        } else if secs >= 7200 {
            format!("{} hours", secs / 3600)
        } else {
            format!("{secs} s")
        }
    };
    match c {
        CertificateError::Expired => "the certificate has expired".into(),
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the certificate has expired ({} ago)",
            ago(time.as_secs().saturating_sub(not_after.as_secs()))
        ),
        CertificateError::NotValidYet => "the certificate is not valid yet".into(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the certificate is not valid yet (for another {})",
            ago(not_before.as_secs().saturating_sub(time.as_secs()))
        ),
        CertificateError::UnknownIssuer => {
            "the certificate is signed by an unknown CA (not one trusted here)".into()
        }
        CertificateError::NotValidForName => "the certificate is for another name".into(),
        c @ CertificateError::NotValidForNameContext { .. } => {
            format!("wrong name: {c}")
        }
        CertificateError::Revoked => "the certificate is revoked".into(),
        CertificateError::BadSignature => "the certificate's signature is not valid".into(),
        CertificateError::Other(o) if format!("{o:?}").contains("UnsupportedCertVersion") => {
            "the certificate is X.509 version 1 (openssl x509 -req makes one without -extfile); version 3 is needed".into()
        }
        c => format!("the certificate is not valid: {c}"),
    }
}

/// Who a verified client certificate says the peer is: its subject, and
/// its first DNS name or email address (subject alternative names), as a
/// log line and `--prefix-peer` write them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsId {
    /// The subject, RFC 4514 style: `CN=alice,O=Example` (most specific
    /// attribute first), its values escaped already: control characters,
    /// TAB, backslash, `,` and `+` as `\xNN`.
    pub subject: String,
    /// `DNS:name` or `email:address`, the first of either.
    pub san: Option<String>,
}

impl TlsId {
    /// The identity in a certificate (DER); `None` if it does not parse.
    pub fn from_cert(der: &[u8]) -> Option<TlsId> {
        let (subject, exts) = der::subject_and_extensions(der)?;
        Some(TlsId {
            subject: der::name_string(subject)?,
            san: exts.and_then(der::first_san),
        })
    }
}

/// `CN=alice,O=Example DNS:alice.example`: the subject, then the SAN
/// after a space, with control characters, TAB and backslash written as
/// `\xNN` so that the identity can neither end a log line nor a
/// `--prefix-peer` prefix (which ends at a TAB), nor fake an escape (the
/// subject was escaped so when it was read, `,` and `+` in values too).
impl fmt::Display for TlsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.subject)?;
        if let Some(s) = &self.san {
            write!(f, " {}", escape(s))?;
        }
        Ok(())
    }
}

/// Control characters (C0, DEL, C1), TAB and backslash as `\xNN` (C1 as
/// the two bytes of their UTF-8).
pub fn escape(s: &str) -> String {
    escape_also(s, &[])
}

/// [`escape`], and the characters of `also` too.
fn escape_also(s: &str, also: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if ch.is_control() || ch == '\\' || also.contains(&ch) {
            let mut b = [0u8; 4];
            for byte in ch.encode_utf8(&mut b).bytes() {
                out.push_str(&format!("\\x{byte:02x}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Just enough DER to read a certificate's subject and subject
/// alternative names. The certificate was verified by webpki before any
/// of this runs; still, every read is bounds-checked and a malformed one
/// gives `None`, never a panic.
mod der {
    /// Reads one element: its tag and contents; advances `data`.
    pub fn next<'a>(data: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
        let d = *data;
        let tag = *d.first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let first = *d.get(1)? as usize;
        let (len, head) = if first < 0x80 {
            (first, 2)
        } else {
            let n = first & 0x7f;
            if n == 0 || n > 4 {
                return None;
            }
            let mut len = 0usize;
            for b in d.get(2..2 + n)? {
                len = (len << 8) | *b as usize;
            }
            (len, 2 + n)
        };
        let content = d.get(head..head.checked_add(len)?)?;
        *data = &d[head + len..];
        Some((tag, content))
    }

    fn expect<'a>(data: &mut &'a [u8], want: u8) -> Option<&'a [u8]> {
        match next(data)? {
            (t, c) if t == want => Some(c),
            _ => None,
        }
    }

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;

    /// The subject Name and the extensions (if any) of a certificate.
    pub fn subject_and_extensions(cert: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
        let mut d = cert;
        let mut c = expect(&mut d, SEQUENCE)?;
        let mut tbs = expect(&mut c, SEQUENCE)?;
        // [0] version, optional.
        if tbs.first() == Some(&0xa0) {
            next(&mut tbs)?;
        }
        next(&mut tbs)?; // serial
        next(&mut tbs)?; // signature algorithm
        next(&mut tbs)?; // issuer
        next(&mut tbs)?; // validity
        let subject = expect(&mut tbs, SEQUENCE)?;
        next(&mut tbs)?; // subject public key info
        let mut exts = None;
        while !tbs.is_empty() {
            let (tag, content) = next(&mut tbs)?;
            if tag == 0xa3 {
                let mut e = content;
                exts = Some(expect(&mut e, SEQUENCE)?);
            }
        }
        Some((subject, exts))
    }

    /// An OID in dotted form.
    fn oid(b: &[u8]) -> Option<String> {
        let mut parts: Vec<u64> = Vec::new();
        let mut v: u64 = 0;
        for (i, byte) in b.iter().enumerate() {
            v = v.checked_mul(128)? | u64::from(byte & 0x7f);
            if byte & 0x80 == 0 {
                if parts.is_empty() {
                    let first = (v / 40).min(2);
                    parts.push(first);
                    parts.push(v - first * 40);
                } else {
                    parts.push(v);
                }
                v = 0;
            } else if i == b.len() - 1 {
                return None;
            }
        }
        (!parts.is_empty()).then(|| {
            parts
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(".")
        })
    }

    fn attribute_name(oid: &str) -> &str {
        match oid {
            "2.5.4.3" => "CN",
            "2.5.4.6" => "C",
            "2.5.4.7" => "L",
            "2.5.4.8" => "ST",
            "2.5.4.9" => "STREET",
            "2.5.4.10" => "O",
            "2.5.4.11" => "OU",
            "2.5.4.5" => "serialNumber",
            "0.9.2342.19200300.100.1.25" => "DC",
            "0.9.2342.19200300.100.1.1" => "UID",
            "1.2.840.113549.1.9.1" => "emailAddress",
            other => other,
        }
    }

    /// A directory string's text: UTF8String, PrintableString,
    /// IA5String, TeletexString (taken as Latin-1), BMPString; anything
    /// else as `#` and hex, as RFC 4514 does.
    fn text(tag: u8, v: &[u8]) -> String {
        match tag {
            0x0c | 0x13 | 0x16 | 0x1a => String::from_utf8_lossy(v).into_owned(),
            0x14 => v.iter().map(|&b| b as char).collect(),
            0x1e => char::decode_utf16(
                v.chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])),
            )
            .map(|r| r.unwrap_or('\u{fffd}'))
            .collect(),
            _ => std::iter::once("#".to_string())
                .chain(v.iter().map(|b| format!("{b:02x}")))
                .collect(),
        }
    }

    /// A Name as RFC 4514 writes it: the last RDN first, `,` between
    /// RDNs, `+` inside one; values escaped (`super::escape`), and a `,`
    /// or `+` inside one written `\x2c` or `\x2b` so that it cannot be
    /// taken for a separator.
    pub fn name_string(name: &[u8]) -> Option<String> {
        let mut rdns = Vec::new();
        let mut d = name;
        while !d.is_empty() {
            let mut set = expect(&mut d, SET)?;
            let mut atvs = Vec::new();
            while !set.is_empty() {
                let mut atv = expect(&mut set, SEQUENCE)?;
                let o = oid(expect(&mut atv, OID)?)?;
                let (tag, v) = next(&mut atv)?;
                let value = super::escape_also(&text(tag, v), &[',', '+']);
                atvs.push(format!("{}={value}", attribute_name(&o)));
            }
            rdns.push(atvs.join("+"));
        }
        rdns.reverse();
        Some(rdns.join(","))
    }

    /// The first DNS name or email address of the subjectAltName
    /// extension, as `DNS:name` or `email:address`.
    pub fn first_san(exts: &[u8]) -> Option<String> {
        let mut d = exts;
        while !d.is_empty() {
            let mut ext = expect(&mut d, SEQUENCE)?;
            let o = expect(&mut ext, OID)?;
            // 2.5.29.17: subjectAltName.
            if o != [0x55, 0x1d, 0x11] {
                continue;
            }
            let (mut tag, mut value) = next(&mut ext)?;
            if tag == 0x01 {
                // critical
                (tag, value) = next(&mut ext)?;
            }
            if tag != 0x04 {
                return None;
            }
            let mut v = value;
            let mut names = expect(&mut v, SEQUENCE)?;
            while !names.is_empty() {
                match next(&mut names)? {
                    (0x81, e) => return Some(format!("email:{}", String::from_utf8_lossy(e))),
                    (0x82, n) => return Some(format!("DNS:{}", String::from_utf8_lossy(n))),
                    _ => {}
                }
            }
            return None;
        }
        None
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn oids_in_dotted_form() {
            assert_eq!(oid(&[0x55, 0x04, 0x03]).as_deref(), Some("2.5.4.3"));
            assert_eq!(
                oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01]).as_deref(),
                Some("1.2.840.113549.1.9.1")
            );
            assert_eq!(oid(&[0x86]), None);
        }

        #[test]
        fn truncated_input_is_none_not_a_panic() {
            for bad in [
                &b""[..],
                b"\x30",
                b"\x30\x85",
                b"\x30\x84\xff\xff\xff\xff",
                b"\x1f\x00",
            ] {
                let mut d = bad;
                assert!(next(&mut d).is_none());
                assert!(subject_and_extensions(bad).is_none());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_cannot_break_a_line_or_a_prefix() {
        assert_eq!(
            escape_also("a\tb\\c\nd\u{85},+", &[',']),
            "a\\x09b\\x5cc\\x0ad\\xc2\\x85\\x2c+"
        );
        let id = TlsId {
            subject: "CN=a".into(),
            san: Some("DNS:x\r\\".into()),
        };
        assert_eq!(id.to_string(), "CN=a DNS:x\\x0d\\x5c");
    }
}
