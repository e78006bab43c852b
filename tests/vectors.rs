//! Test vectors for the sealed-object format (docs/FORMAT.md), in tests/vectors/sealed.json.
//! Every rejection case has its own vector and its expected error. Regenerate with
//! `UPDATE_VECTORS=1 cargo test --test tests vectors`; review the diff, since a changed vector
//! means a changed format.

use reversa::crypto::{self, Context, Kind, OpenError, SecretKey, CHUNK_LEN, HEADER_LEN, TAG_LEN};
use serde::{Deserialize, Serialize};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/sealed.json");

#[derive(Serialize, Deserialize)]
struct Vectors {
    comment: String,
    /// The tenant encryption key every vector is sealed under (hex).
    key: String,
    cases: Vec<Case>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Case {
    name: String,
    /// The context the reader opens with.
    tenant: String,
    kind: u8,
    id: String,
    key_version: u32,
    /// Open with this key instead (hex), for the wrong-key case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    other_key: Option<String>,
    /// The sealed bytes (base64), for valid vectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
    /// For rejections: the valid vector it starts from, and what is done to its bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mutation: Option<Mutation>,
    /// Expected plaintext (hex) for valid vectors: byte i is i mod 251 unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plaintext_len: Option<usize>,
    /// Expected error for rejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What a rejection vector does to the bytes of its base vector.
#[derive(Serialize, Deserialize, Clone, Debug)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Mutation {
    /// XOR byte `at` with `mask`.
    Xor { at: usize, mask: u8 },
    /// Set byte `at` to `value`.
    Set { at: usize, value: u8 },
    /// Keep only the first `len` bytes.
    Truncate { len: usize },
    /// Append `len` zero bytes.
    Append { len: usize },
    /// Exchange the sealed chunks `a` and `b` (each CHUNK_LEN + 16 bytes, after the header).
    SwapChunks { a: usize, b: usize },
    /// Nothing: the same bytes, opened with another context or key.
    Same,
}

fn apply(base: &[u8], m: &Mutation) -> Vec<u8> {
    let mut v = base.to_vec();
    let full = CHUNK_LEN + TAG_LEN;
    match *m {
        Mutation::Xor { at, mask } => v[at] ^= mask,
        Mutation::Set { at, value } => v[at] = value,
        Mutation::Truncate { len } => v.truncate(len),
        Mutation::Append { len } => v.extend(std::iter::repeat_n(0u8, len)),
        Mutation::SwapChunks { a, b } => {
            let (ra, rb) = (HEADER_LEN + a * full, HEADER_LEN + b * full);
            let ca = base[ra..ra + full].to_vec();
            let cb = base[rb..rb + full].to_vec();
            v[ra..ra + full].copy_from_slice(&cb);
            v[rb..rb + full].copy_from_slice(&ca);
        }
        Mutation::Same => {}
    }
    v
}

fn b64(b: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b)
}

fn error_name(e: &OpenError) -> String {
    match e {
        OpenError::NotSealed => "NotSealed".into(),
        OpenError::UnsupportedVersion(v) => format!("UnsupportedVersion({v})"),
        OpenError::BadHeader(_) => "BadHeader".into(),
        OpenError::WrongKind { .. } => "WrongKind".into(),
        OpenError::WrongKeyVersion { .. } => "WrongKeyVersion".into(),
        OpenError::WrongKeyOrContext => "WrongKeyOrContext".into(),
        OpenError::ChunkAuth(i) => format!("ChunkAuth({i})"),
        OpenError::Truncated => "Truncated".into(),
        OpenError::TrailingData => "TrailingData".into(),
    }
}

fn plaintext(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn generate() -> Vectors {
    let key = SecretKey::from_bytes(std::array::from_fn(|i| i as u8));
    let ctx = |id: &'static str| Context { tenant: "comune-a", kind: Kind::Blob, id, key_version: 1 };
    let case = |name: &str, c: Context| Case {
        name: name.into(),
        tenant: c.tenant.into(),
        kind: c.kind as u8,
        id: c.id.into(),
        key_version: c.key_version,
        other_key: None,
        sealed: None,
        from: None,
        mutation: None,
        plaintext_len: None,
        error: None,
    };
    let mut cases = Vec::new();
    // Valid objects, sealed with fixed salts so the bytes are reproducible.
    for (name, id, salt, len) in [
        ("empty", "e", 1u8, 0usize),
        ("short", "s", 2, 7),
        ("two full chunks", "x", 5, 2 * CHUNK_LEN),
        ("three chunks", "m", 4, 2 * CHUNK_LEN + 100),
    ] {
        let c = ctx(id);
        let sealed = crypto::seal_with_salt(&key, &c, &[salt; 32], &plaintext(len));
        cases.push(Case { sealed: Some(b64(&sealed)), plaintext_len: Some(len), ..case(name, c) });
    }
    let full = CHUNK_LEN + TAG_LEN;
    let three_len = HEADER_LEN + 2 * full + 100 + TAG_LEN;
    let reject = |name: &str, c: Context, from: &str, m: Mutation, error: &str| Case {
        from: Some(from.into()),
        mutation: Some(m),
        error: Some(error.into()),
        ..case(name, c)
    };
    use Mutation::*;
    let m = ctx("m");
    cases.extend([
        reject(
            "bit flipped in chunk 1",
            m,
            "three chunks",
            Xor { at: HEADER_LEN + full + 10, mask: 1 },
            "ChunkAuth(1)",
        ),
        reject(
            "bit flipped in the tag of chunk 0",
            m,
            "three chunks",
            Xor { at: HEADER_LEN + full - 1, mask: 1 },
            "ChunkAuth(0)",
        ),
        reject("bit flipped in the salt", m, "three chunks", Xor { at: 20, mask: 1 }, "WrongKeyOrContext"),
        reject("bit flipped in the key commitment", m, "three chunks", Xor { at: 50, mask: 1 }, "WrongKeyOrContext"),
        reject("kind byte changed", m, "three chunks", Set { at: 5, value: Kind::Index as u8 }, "WrongKind"),
        reject("unknown format version", m, "three chunks", Set { at: 4, value: 2 }, "UnsupportedVersion(2)"),
        reject("bad magic", m, "three chunks", Set { at: 0, value: b'X' }, "NotSealed"),
        reject("reserved byte set", m, "three chunks", Xor { at: 7, mask: 1 }, "BadHeader"),
        reject("shorter than a header", m, "three chunks", Truncate { len: HEADER_LEN - 1 }, "NotSealed"),
        reject("header only", m, "three chunks", Truncate { len: HEADER_LEN }, "Truncated"),
        reject(
            "final chunk cut off at a chunk boundary",
            ctx("x"),
            "two full chunks",
            Truncate { len: HEADER_LEN + full },
            "Truncated",
        ),
        reject("truncated inside the final chunk", m, "three chunks", Truncate { len: three_len - 5 }, "ChunkAuth(2)"),
        reject("data appended after the final chunk", ctx("x"), "two full chunks", Append { len: 40 }, "TrailingData"),
        reject("chunks 0 and 1 swapped", m, "three chunks", SwapChunks { a: 0, b: 1 }, "ChunkAuth(0)"),
        reject(
            "moved to another tenant",
            Context { tenant: "comune-b", ..m },
            "three chunks",
            Same,
            "WrongKeyOrContext",
        ),
        reject("moved to another id", ctx("m2"), "three chunks", Same, "WrongKeyOrContext"),
        reject("opened as another kind", Context { kind: Kind::Generation, ..m }, "three chunks", Same, "WrongKind"),
        reject(
            "opened with another key version",
            Context { key_version: 2, ..m },
            "three chunks",
            Same,
            "WrongKeyVersion",
        ),
        Case {
            other_key: Some(hex::encode([0xEE; 32])),
            ..reject("wrong key", m, "three chunks", Same, "WrongKeyOrContext")
        },
    ]);
    Vectors {
        comment: "reversa sealed-object test vectors; see docs/FORMAT.md. Generated by tests/vectors.rs.".into(),
        key: hex::encode(key.expose()),
        cases,
    }
}

#[test]
fn sealed_object_vectors() {
    let fresh = generate();
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(std::path::Path::new(PATH).parent().unwrap()).unwrap();
        std::fs::write(PATH, serde_json::to_string_pretty(&fresh).unwrap() + "\n").unwrap();
    }
    let stored: Vectors =
        serde_json::from_str(&std::fs::read_to_string(PATH).expect("tests/vectors/sealed.json exists")).unwrap();
    // The format is pinned: today's implementation must produce the stored bytes exactly.
    assert_eq!(
        serde_json::to_value(&fresh.cases).unwrap(),
        serde_json::to_value(&stored.cases).unwrap(),
        "the sealed format changed"
    );
    let key: [u8; 32] = hex::decode(&stored.key).unwrap().try_into().unwrap();
    assert!(stored.cases.iter().filter(|c| c.error.is_some()).count() >= 15);
    let base = |name: &str| -> Vec<u8> {
        let c = stored.cases.iter().find(|c| c.name == name).expect("base vector exists");
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, c.sealed.as_ref().unwrap()).unwrap()
    };
    for c in &stored.cases {
        let k = SecretKey::from_bytes(match &c.other_key {
            Some(o) => hex::decode(o).unwrap().try_into().unwrap(),
            None => key,
        });
        let ctx =
            Context { tenant: &c.tenant, kind: Kind::from_u8(c.kind).unwrap(), id: &c.id, key_version: c.key_version };
        let bytes = match (&c.from, &c.mutation) {
            (Some(from), Some(m)) => apply(&base(from), m),
            _ => base(&c.name),
        };
        let got = crypto::open(&k, &ctx, &bytes);
        match (c.plaintext_len, &c.error, got) {
            (Some(n), None, Ok(plain)) => assert_eq!(plain, plaintext(n), "{}", c.name),
            (None, Some(e), Err(got)) => assert_eq!(&error_name(&got), e, "{}", c.name),
            (_, _, got) => panic!("{}: unexpected result {:?}", c.name, got.map(|p| p.len())),
        }
    }
}
