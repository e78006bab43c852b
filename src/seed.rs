//! Sample tenants in the source layout, for `reversa demo`, the tests and the benchmarks.
//!
//! The data looks like a town council's: citizens, case files with amounts and dates, a register
//! of correspondence, and tags; NULLs, unicode, REAL extremes, BLOBs, an empty table, a table
//! without a primary key, a WITHOUT ROWID table, and full-text (FTS5) tables, one holding its own
//! text and one indexing another table. Files have varied sizes, unicode names and deep
//! paths, some compressible (text) and most not (scans, photos). Everything is deterministic for a
//! given seed, so two runs produce the same bytes.

use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rusqlite::params;

/// How big a sample tenant is.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Rows in the main case table; the other tables scale with it.
    pub rows: usize,
    /// Total bytes of attachments and documents, approximately.
    pub file_bytes: u64,
    /// Fraction of file bytes that are incompressible.
    pub incompressible: f64,
}

impl Scale {
    /// A few MB: quick to back up, enough to show dedup and every edge case.
    pub const DEMO: Scale = Scale { rows: 2_000, file_bytes: 6 << 20, incompressible: 0.7 };
}

const FIRST: &[&str] =
    &["Giulia", "Marco", "Anna", "Luca", "Chiara", "Giovanni", "Sofia", "Niccolò", "Zoë", "José", "Åsa", "Łukasz"];
const LAST: &[&str] =
    &["Rossi", "Bianchi", "Esposito", "Colombo", "D'Angelo", "Müller", "Ferrari", "Gallo", "Conti", "Dvořák"];
const KINDS: &[&str] = &[
    "carta d'identità",
    "residenza",
    "TARI",
    "permesso di costruire",
    "accesso agli atti",
    "SUAP",
    "mensa scolastica",
];
const STATES: &[&str] = &["aperta", "in istruttoria", "sospesa", "chiusa", "archiviata"];
const WORDS: &[&str] = &[
    "il",
    "comune",
    "di",
    "richiesta",
    "del",
    "cittadino",
    "protocollo",
    "ufficio",
    "tributi",
    "anagrafe",
    "determina",
    "dirigenziale",
    "pagamento",
    "scadenza",
    "allegato",
    "verbale",
    "seduta",
    "giunta",
    "è",
    "città",
];

fn words(rng: &mut StdRng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s
}

/// Create `<root>/<tenant>/` with a database and files.
pub fn seed_tenant(root: &Path, tenant: &str, scale: Scale, seed: u64) -> std::io::Result<()> {
    let dir = root.join(tenant);
    std::fs::create_dir_all(&dir)?;
    let mut rng = StdRng::seed_from_u64(seed);
    seed_database(&dir.join(crate::source::DATABASE_FILE), scale, &mut rng).map_err(std::io::Error::other)?;
    seed_files(&dir, scale, &mut rng)
}

fn seed_database(path: &Path, scale: Scale, rng: &mut StdRng) -> rusqlite::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut db = rusqlite::Connection::open(path)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA user_version = 7;
         CREATE TABLE cittadini (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             codice_fiscale TEXT UNIQUE NOT NULL,
             nome TEXT NOT NULL, cognome TEXT NOT NULL,
             nato_il TEXT, email TEXT, note TEXT,
             creato_il TEXT NOT NULL DEFAULT (datetime('now')));
         CREATE TABLE pratiche (
             id INTEGER PRIMARY KEY,
             cittadino_id INTEGER REFERENCES cittadini(id),
             tipo TEXT NOT NULL, stato TEXT NOT NULL,
             aperta_il TEXT NOT NULL, chiusa_il TEXT,
             importo REAL, urgente INTEGER NOT NULL DEFAULT 0,
             descrizione TEXT, firma BLOB);
         CREATE INDEX pratiche_stato ON pratiche(stato, aperta_il);
         CREATE TABLE protocollo (anno INTEGER, numero INTEGER, oggetto TEXT, mittente TEXT,
             PRIMARY KEY (anno, numero)) WITHOUT ROWID;
         CREATE TABLE log_eventi (quando TEXT, chi TEXT, cosa TEXT);
         CREATE TABLE sospesi (id INTEGER PRIMARY KEY, motivo TEXT);
         CREATE TABLE valori_limite (etichetta TEXT, valore REAL, intero INTEGER);
         CREATE VIRTUAL TABLE ricerca_atti USING fts5(titolo, testo);
         CREATE VIRTUAL TABLE cittadini_fts USING fts5(nome, cognome, content='cittadini', content_rowid='id');
         CREATE VIEW pratiche_aperte AS SELECT * FROM pratiche WHERE stato <> 'chiusa';
         CREATE TRIGGER pratiche_chiusura AFTER UPDATE OF stato ON pratiche WHEN NEW.stato = 'chiusa'
             BEGIN UPDATE pratiche SET chiusa_il = datetime('now') WHERE id = NEW.id; END;",
    )?;
    let tx = db.transaction()?;
    let citizens = (scale.rows / 4).max(10);
    {
        let mut st = tx.prepare("INSERT INTO cittadini (codice_fiscale, nome, cognome, nato_il, email, note, creato_il) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
        for i in 0..citizens {
            let nome = FIRST[rng.random_range(0..FIRST.len())];
            let cognome = LAST[rng.random_range(0..LAST.len())];
            let cf = format!(
                "{}{}{:02}A{:02}H501{:X}",
                &cognome.to_uppercase()[..3.min(cognome.len())],
                &nome.to_uppercase()[..2],
                i % 100,
                i % 28 + 1,
                i
            );
            let nato = (rng.random_bool(0.9)).then(|| format!("{}-{:02}-{:02}", 1930 + i % 80, i % 12 + 1, i % 28 + 1));
            let email = (rng.random_bool(0.7))
                .then(|| format!("{}.{}{}@example.it", nome.to_lowercase(), cognome.to_lowercase(), i));
            let note = match i % 7 {
                0 => Some("=SOMMA(A1:A3) scritto dal cittadino".to_string()),
                1 => Some("riga uno\nriga due, con \"virgolette\"".to_string()),
                2 => Some(format!("{} 🏛️", words(rng, 12))),
                _ => None,
            };
            st.execute(params![
                cf,
                nome,
                cognome,
                nato,
                email,
                note,
                format!("2024-{:02}-{:02} 09:{:02}:00", i % 12 + 1, i % 28 + 1, i % 60)
            ])?;
        }
        let mut st = tx.prepare("INSERT INTO pratiche (id, cittadino_id, tipo, stato, aperta_il, chiusa_il, importo, urgente, descrizione, firma) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)")?;
        let mut sig = vec![0u8; 2048];
        for i in 0..scale.rows {
            let stato = STATES[rng.random_range(0..STATES.len())];
            let aperta = format!("2025-{:02}-{:02}T{:02}:{:02}:00", i % 12 + 1, i % 28 + 1, i % 24, i % 60);
            let chiusa = (stato == "chiusa").then(|| format!("2026-{:02}-{:02}", i % 12 + 1, i % 28 + 1));
            let importo = (i % 5 != 0).then(|| (rng.random_range(0..10_000_000) as f64) / 100.0);
            let firma = (i % 3 == 0).then(|| {
                rng.fill_bytes(&mut sig);
                sig.clone()
            });
            st.execute(params![
                (i as i64) * 3 + 1,
                (i % citizens) as i64 + 1,
                KINDS[rng.random_range(0..KINDS.len())],
                stato,
                aperta,
                chiusa,
                importo,
                (i % 11 == 0) as i64,
                words(rng, 20 + i % 40),
                firma
            ])?;
        }
        let mut st = tx.prepare("INSERT INTO protocollo VALUES (?1, ?2, ?3, ?4)")?;
        for i in 0..scale.rows / 2 {
            st.execute(params![
                2020 + (i % 6) as i64,
                i as i64,
                words(rng, 8),
                format!("{} {}", FIRST[i % FIRST.len()], LAST[i % LAST.len()])
            ])?;
        }
        let mut st = tx.prepare("INSERT INTO log_eventi VALUES (?1, ?2, ?3)")?;
        for i in 0..scale.rows / 2 {
            st.execute(params![format!("2026-01-{:02}T10:00:{:02}Z", i % 28 + 1, i % 60), "operatore", words(rng, 5)])?;
        }
        // The same event twice: a table without a key may hold duplicate rows.
        st.execute(params!["2026-02-01T00:00:00Z", "sistema", "duplicato"])?;
        st.execute(params!["2026-02-01T00:00:00Z", "sistema", "duplicato"])?;
        let mut st = tx.prepare("INSERT INTO valori_limite VALUES (?1, ?2, ?3)")?;
        for (label, v, n) in [
            ("massimo", f64::MAX, i64::MAX),
            ("minimo", f64::MIN_POSITIVE, i64::MIN),
            ("negativo", -f64::MAX, -1),
            ("zero negativo", -0.0, 0),
            ("infinito", f64::INFINITY, 1),
            ("meno infinito", f64::NEG_INFINITY, -1),
            ("subnormale", 5e-324, 2),
            ("pi", std::f64::consts::PI, 3),
        ] {
            st.execute(params![label, v, n])?;
        }
        st.execute(params![Option::<String>::None, Option::<f64>::None, Option::<i64>::None])?;
    }
    {
        let mut st = tx.prepare("INSERT INTO ricerca_atti (titolo, testo) VALUES (?1, ?2)")?;
        for i in 0..(scale.rows / 10).max(5) {
            st.execute(params![format!("delibera {i}"), words(rng, 30)])?;
        }
    }
    tx.execute_batch("INSERT INTO cittadini_fts(cittadini_fts) VALUES('rebuild');")?;
    tx.commit()?;
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

fn seed_files(dir: &Path, scale: Scale, rng: &mut StdRng) -> std::io::Result<()> {
    let write = |path: &Path, data: &[u8]| -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().expect("file path has a parent"))?;
        std::fs::File::create(path)?.write_all(data)
    };
    // Edge cases first: empty, unicode, deep, spaces, a name that looks like a formula.
    write(&dir.join("attachments/vuoto.txt"), b"")?;
    write(&dir.join("attachments/certificato medico Mario Rossi.pdf"), b"%PDF-1.4\n% certificato\n")?;
    write(&dir.join("attachments/ñandú/日本語/Zoë — résumé.txt"), "città è già così\n".as_bytes())?;
    let deep = (0..12).map(|i| format!("livello-{i}")).collect::<Vec<_>>().join("/");
    write(&dir.join(format!("attachments/{deep}/profondo.txt")), b"in fondo\n")?;
    write(&dir.join("documents/=cmd|' calc'!A0.txt"), b"not a formula\n")?;

    let mut written = 0u64;
    let mut n = 0usize;
    let mut buf = Vec::new();
    while written < scale.file_bytes {
        n += 1;
        // Log-uniform sizes from 1 KiB up to 8 MiB (or 1/40 of the total for small tenants):
        // many small files, a few large ones.
        let max_exp = ((scale.file_bytes / 40).clamp(64 << 10, 8 << 20) as f64 / 1024.0).log2();
        let size = (1024f64 * 2f64.powf(rng.random_range(0.0..max_exp))) as usize;
        let size = size.min((scale.file_bytes - written) as usize + 1);
        buf.resize(size, 0);
        let random = rng.random_bool(scale.incompressible);
        let path = if random {
            rng.fill_bytes(&mut buf);
            dir.join(format!("attachments/{}/{:02}/scansione-{n:05}.pdf", 2020 + n % 6, n % 12 + 1))
        } else {
            let mut text = Vec::with_capacity(size);
            while text.len() < size {
                text.extend_from_slice(words(rng, 16).as_bytes());
                text.push(b'\n');
            }
            text.truncate(size);
            buf.copy_from_slice(&text);
            dir.join(format!("documents/delibere/{}/delibera-{n:05}.txt", 2020 + n % 6))
        };
        write(&path, &buf)?;
        written += size as u64;
    }
    Ok(())
}
